#!/usr/bin/env bash
# Real-client integration tests: build the broker, make sure the Python
# clients and kcat are there, run pytest on tests/clients.
#
#   bash tests/run-clients.sh [pytest args...]
#
# Environment:
#   ODRADEK_VENV          virtualenv to use/create (default target/venv)
#   ODRADEK_BIN           broker binary (default target/debug/odradek)
#   ODRADEK_TEST_TIMEOUT  per-test watchdog in seconds (default 120)
#   PYTHON                interpreter used to create the venv (default python3)
#
# Exit code: pytest's (1 on a setup failure before pytest runs).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

echo "==> cargo build -p odradek" >&2
cargo build -p odradek

if ! command -v kcat >/dev/null 2>&1; then
    cat >&2 <<'MSG'
error: kcat not found on PATH.
Install it, e.g.:
  Debian/Ubuntu:  sudo apt-get install kcat      (older releases: kafkacat)
  Fedora:         sudo dnf install kcat
  macOS:          brew install kcat
MSG
    exit 1
fi

venv="${ODRADEK_VENV:-target/venv}"
req="tests/clients/requirements.txt"
if [ ! -x "$venv/bin/python" ]; then
    echo "==> creating venv $venv" >&2
    "${PYTHON:-python3}" -m venv "$venv"
fi
# Install (or update) the pinned clients when the requirements changed.
stamp="$venv/.odradek-requirements"
if ! cmp -s "$req" "$stamp" 2>/dev/null; then
    echo "==> pip install -r $req" >&2
    "$venv/bin/python" -m pip install --quiet -r "$req"
    cp "$req" "$stamp"
fi

echo "==> pytest tests/clients" >&2
set +e
PYTHONDONTWRITEBYTECODE=1 "$venv/bin/python" -m pytest -q -p no:cacheprovider tests/clients "$@"
rc=$?
set -e
exit "$rc"
