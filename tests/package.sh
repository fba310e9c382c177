#!/usr/bin/env bash
# The Debian package: build it with cargo-deb, check what it holds, and (as
# root, e.g. in CI) install it, verify the installed systemd unit, start the
# installed binary with the installed config, check /health, stop it with
# SIGTERM (exit 0), and remove the package again.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! cargo deb --version >/dev/null 2>&1; then
    echo "==> cargo install cargo-deb --locked" >&2
    cargo install cargo-deb --locked
fi
echo "==> cargo deb -p odradek" >&2
cargo deb -p odradek
deb=$(ls -t target/debian/odradek_*.deb | head -1)
echo "==> $deb"
dpkg-deb -f "$deb" Package Version Architecture Depends
contents=$(dpkg-deb -c "$deb")
for path in ./usr/bin/odradek ./lib/systemd/system/odradek.service ./etc/odradek/odradek.toml \
    ./usr/share/doc/odradek/deploy.md; do
    grep -q " $path\$" <<<"$contents" || { echo "package lacks $path"; echo "$contents"; exit 1; }
done
info=$(dpkg-deb -I "$deb")
grep -q postinst <<<"$info" || { echo "package lacks its postinst"; exit 1; }
[ "$(dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./conffiles)" = /etc/odradek/odradek.toml ] ||
    { echo "the config is not a conffile"; exit 1; }

if [ "$(id -u)" != 0 ]; then
    echo "package: not root, skipping install, systemd-analyze verify and the start check"
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
dpkg -i "$deb"
trap 'dpkg -r odradek >/dev/null 2>&1 || true' EXIT
getent passwd odradek >/dev/null || { echo "postinst did not create the odradek user"; exit 1; }
[ "$(stat -c %U /var/lib/odradek)" = odradek ] || { echo "/var/lib/odradek is not owned by odradek"; exit 1; }
echo "==> systemd-analyze verify"
systemd-analyze verify /lib/systemd/system/odradek.service
/usr/bin/odradek --version

# Start the installed binary as the service would (its user, its config),
# on free ports and a scratch data directory.
data=$(mktemp -d)
chown odradek:odradek "$data"
log=$(mktemp)
setpriv --reuid=odradek --regid=odradek --init-groups -- /usr/bin/odradek serve --config /etc/odradek/odradek.toml \
    --listeners 127.0.0.1:0 --metrics-listener 127.0.0.1:0 --log-dirs "$data" >"$log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do
    grep -q "odradek broker listening" "$log" && break
    sleep 0.1
done
grep -q "odradek broker listening" "$log" || { cat "$log"; kill "$pid"; exit 1; }
url=$(grep -o 'http://[0-9.:]*/metrics' "$log" | head -1)
health=$(python3 -c "import sys,urllib.request;print(urllib.request.urlopen(sys.argv[1]).read().decode().strip())" "${url%/metrics}/health")
[ "$health" = ok ] || { echo "health: $health"; exit 1; }
kill -TERM "$pid"
rc=0
wait "$pid" || rc=$?
[ "$rc" = 0 ] || { echo "installed broker exited with $rc after SIGTERM"; cat "$log"; exit 1; }
rm -rf "$data" "$log"
echo "package: ok"
