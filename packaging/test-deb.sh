#!/usr/bin/env bash
# Tests the amd64 package on this machine, as root (CI runs it after the cargo tests):
# lintian-clean build, install, what postinst made, the unit (verify and security score), the
# binary started exactly as the unit's ExecStart as the service user answering with the setup
# wizard, an upgrade that keeps config and a database with a user in it, remove, and purge.
#
#   packaging/test-deb.sh [--binary PATH]   (default: the debug binary the tests built)
#
# It installs and purges the package `matrix-appliance` on this machine: don't run it on a box
# where the real package is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
binary="${CARGO_TARGET_DIR:-target}/debug/appliance"
[[ "${1:-}" == --binary ]] && binary="$2"
[[ $(id -u) -eq 0 ]] || { echo "run as root: it installs a package" >&2; exit 1; }
[[ -x "$binary" ]] || { echo "no binary at $binary (run the tests or cargo build first)" >&2; exit 1; }
if dpkg -s matrix-appliance >/dev/null 2>&1; then
    echo "matrix-appliance is installed on this machine already; not touching it" >&2
    exit 1
fi

USER=matrix-appliance
UNIT=/lib/systemd/system/matrix-appliance.service
out="$(mktemp -d)"
server_pid=""
cleanup() {
    [[ -n "$server_pid" ]] && kill "$server_pid" 2>/dev/null || true
    dpkg --purge matrix-appliance >/dev/null 2>&1 || true
    rm -rf /var/lib/matrix-appliance "$out"
}
trap cleanup EXIT

step() { printf '\n--- %s\n' "$*"; }
fail() { echo "FAIL: $*" >&2; exit 1; }
expect_mode() { # path mode owner
    local got
    got="$(stat -c '%a %U:%G' "$1")"
    [[ "$got" == "$2 $3" ]] || fail "$1 is $got, expected $2 $3"
}

# Runs the unit's ExecStart as the unit would: the service user, only CAP_NET_BIND_SERVICE.
start_like_the_unit() {
    local exec_start
    exec_start="$(sed -n 's/^ExecStart=//p' "$UNIT")"
    # shellcheck disable=SC2086 # the unit's command line is split as systemd splits it
    setpriv --reuid="$USER" --regid="$USER" --init-groups \
        --inh-caps=+net_bind_service --ambient-caps=+net_bind_service \
        -- $exec_start >"$out/server.log" 2>&1 &
    server_pid=$!
}
stop_server() {
    kill "$server_pid"
    wait "$server_pid" || true
    server_pid=""
}
wait_for() { # url, what to find in the body
    for _ in $(seq 100); do
        if body="$(curl -fsSL --max-time 2 "$1" 2>/dev/null)" && [[ "$body" == *"$2"* ]]; then
            return 0
        fi
        kill -0 "$server_pid" 2>/dev/null || { cat "$out/server.log"; fail "the server exited"; }
        sleep 0.2
    done
    cat "$out/server.log"
    fail "no answer with '$2' from $1"
}
as_user() { setpriv --reuid="$USER" --regid="$USER" --init-groups -- "$@"; }

step "build two versions (lintian runs in build-deb.sh)"
bash packaging/build-deb.sh amd64 --binary "$binary" --no-element --version 0.1.0~test1 --out "$out"
bash packaging/build-deb.sh amd64 --binary "$binary" --no-element --version 0.1.0~test2 --out "$out"

step "install"
apt-get install -y --no-install-recommends "$out/matrix-appliance_0.1.0~test1_amd64.deb" | tee "$out/install.log"
grep -q "setup wizard" "$out/install.log" || fail "postinst did not say where the setup wizard is"

step "what postinst made"
entry="$(getent passwd "$USER")" || fail "no user $USER"
uid="$(cut -d: -f3 <<<"$entry")"
[[ "$uid" -lt 1000 ]] || fail "$USER is not a system user (uid $uid)"
[[ "$(cut -d: -f7 <<<"$entry")" == /usr/sbin/nologin ]] || fail "$USER has a login shell"
getent group "$USER" >/dev/null || fail "no group $USER"
expect_mode /var/lib/matrix-appliance 750 "$USER:$USER"
expect_mode /etc/matrix-appliance 750 "$USER:$USER"
expect_mode /usr/bin/appliance 755 root:root
[[ -f "$UNIT" ]] || fail "no unit at $UNIT"
[[ -L /etc/systemd/system/multi-user.target.wants/matrix-appliance.service ]] || fail "unit not enabled"

step "systemd-analyze verify and security"
systemd-analyze verify "$UNIT"
score="$(systemd-analyze security --offline=true "$UNIT" | sed -n 's/.*Overall exposure level for .*: \([0-9.]*\).*/\1/p')"
echo "exposure level: $score"
awk -v s="$score" 'BEGIN { exit !(s != "" && s <= 2.0) }' || fail "exposure level $score is above 2.0"

step "ExecStart as the service user, no config: the setup wizard answers"
start_like_the_unit
wait_for http://127.0.0.1:8080/ "setup"
[[ -s /var/lib/matrix-appliance/setup-token ]] || fail "no setup token"
expect_mode /var/lib/matrix-appliance/setup-token 600 "$USER:$USER"
stop_server

step "a configured server with a user in its database"
cat >"$out/config.yaml" <<'YAML'
server_name: package.test
listeners:
  - port: 18008
    bind_addresses: ['127.0.0.1']
    type: http
    resources: [{names: [client, federation]}]
YAML
install -m 0600 -o "$USER" -g "$USER" "$out/config.yaml" /etc/matrix-appliance/config.yaml
before="$(sha256sum /etc/matrix-appliance/config.yaml)"
echo "correct horse battery staple" | as_user /usr/bin/appliance --config /etc/matrix-appliance/config.yaml \
    --data-dir /var/lib/matrix-appliance admin add-user alice --password-stdin
start_like_the_unit
wait_for http://127.0.0.1:18008/_matrix/client/versions '"versions"'
stop_server

step "upgrade keeps config and database"
apt-get install -y --no-install-recommends "$out/matrix-appliance_0.1.0~test2_amd64.deb"
[[ "$(dpkg-query -W -f '${Version}' matrix-appliance)" == 0.1.0~test2 ]] || fail "not upgraded"
[[ "$(sha256sum /etc/matrix-appliance/config.yaml)" == "$before" ]] || fail "upgrade changed the config"
as_user /usr/bin/appliance --config /etc/matrix-appliance/config.yaml --data-dir /var/lib/matrix-appliance \
    admin list-users | grep -q '@alice:package.test' || fail "alice is gone after the upgrade"
start_like_the_unit
wait_for http://127.0.0.1:18008/_matrix/client/versions '"versions"'
stop_server

step "remove keeps config and data"
apt-get remove -y matrix-appliance
[[ -f /etc/matrix-appliance/config.yaml ]] || fail "remove deleted the config"
[[ -f /var/lib/matrix-appliance/appliance.db ]] || fail "remove deleted the database"

step "purge deletes the config, keeps the database and says so"
apt-get purge -y matrix-appliance | tee "$out/purge.log"
[[ ! -e /etc/matrix-appliance ]] || fail "purge left /etc/matrix-appliance"
[[ -f /var/lib/matrix-appliance/appliance.db ]] || fail "purge deleted the database"
grep -q "kept /var/lib/matrix-appliance" "$out/purge.log" || fail "purge did not say it kept the data"

printf '\n--- package test passed\n'
