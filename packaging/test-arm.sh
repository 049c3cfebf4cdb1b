#!/usr/bin/env bash
# Cross-builds the release binary for an ARM board and runs it under qemu-user:
# `appliance --version`, then the server answering /_matrix/client/versions on loopback.
#
#   packaging/test-arm.sh <arm64|armhf>
#
# Needs root the first time (apt-get installs Debian's rustc-web, the cross linker and qemu).
# Too slow for CI on two cores (a full release build of every dependency); its last recorded
# output is in packaging/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
arch="${1:-arm64}"
case "$arch" in
    arm64) triple=aarch64-unknown-linux-gnu qemu=qemu-aarch64-static ;;
    armhf) triple=armv7-unknown-linux-gnueabihf qemu=qemu-arm-static ;;
    *) echo "usage: $0 <arm64|armhf>" >&2; exit 2 ;;
esac

# build-deb.sh installs the toolchain, builds the binary and the package.
bash packaging/build-deb.sh "$arch" --no-element
binary="${CARGO_TARGET_DIR:-target}/cross/$triple/release/appliance"

echo "--- $(file -b "$binary")"
echo "--- binary size: $(stat -c %s "$binary") bytes ($(du -h "$binary" | cut -f1))"
echo "--- deb size: $(du -h target/deb/matrix-appliance_*_"$arch".deb | cut -f1 | tail -1)"
echo "--- $qemu $binary --version"
"$qemu" "$binary" --version

dir="$(mktemp -d)"
server=""
trap '[[ -n "$server" ]] && kill "$server" 2>/dev/null; rm -rf "$dir"' EXIT
echo "server_name: arm.test" >"$dir/config.yaml"
port=$((20000 + RANDOM % 20000))
"$qemu" "$binary" --config "$dir/config.yaml" --data-dir "$dir/data" serve --listen "127.0.0.1:$port" \
    >"$dir/log" 2>&1 &
server=$!
for _ in $(seq 150); do
    if body="$(curl -fsS --max-time 2 "http://127.0.0.1:$port/_matrix/client/versions" 2>/dev/null)"; then
        echo "--- GET /_matrix/client/versions under qemu: $body"
        grep -q '"versions"' <<<"$body"
        echo "--- $arch: OK"
        exit 0
    fi
    kill -0 "$server" 2>/dev/null || { cat "$dir/log"; echo "the server exited" >&2; exit 1; }
    sleep 0.2
done
cat "$dir/log"
echo "no answer from the server under qemu" >&2
exit 1
