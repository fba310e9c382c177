#!/usr/bin/env bash
# The whole test suite: Rust unit, property and integration tests; real
# Kafka clients (kcat, confluent-kafka, kafka-python) against the real
# broker binary; the Debian package (built, installed, unit verified,
# started); a short fuzz run of every fuzz target.
#
# Needs: Rust stable, python3 with venv, kcat (apt-get install kcat).
# .ci/run installs what is missing and then runs exactly this script.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "==> cargo test --workspace"
cargo test --workspace

echo "==> real-client tests"
bash tests/run-clients.sh

echo "==> Debian package and systemd unit"
bash tests/package.sh

echo "==> replication simulator, 300 seeds (release)"
SIM_SEEDS=300 cargo test --release -p odradek --test raft_sim

echo "==> fuzz smoke"
bash fuzz/run.sh smoke
