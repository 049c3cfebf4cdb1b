#!/usr/bin/env bash
# run_compare.sh - the appliance and Synapse side by side on this machine, same run (see
# BENCHMARKS.md). Loopback only: the appliance on 127.0.0.1:8009, Synapse on 127.0.0.1:8008.
#
# Usage: benches/run_compare.sh [startup|load|memory|all]     (default all)
# Environment:
#   APPLIANCE   the release binary          (default target/release/appliance)
#   WORK        scratch dir: config, data dirs (default /tmp/appl-bench)
#   OUT         result JSON files            (default $WORK/results)
#   SHARED      the shared bench harness     (default ../shared/bench)
#   VENV        venv with aiohttp            (default /tmp/bench-venv)
#   REPS        repetitions of each measure  (default 5 for startup, 3 for load)
#   LOGIN_COUNT logins per run               (default 1000)
#   CHEAP_COUNT whoami/versions per run      (default 20000)
#   WRK_SECONDS duration of each wrk run     (default 10; 0 skips wrk)
# Prerequisites: bash $SHARED/setup_synapse.sh --no-start (installs + configures Synapse; run it
# with LOG_LEVEL=WARNING to match the appliance's log_level: warn), the venv, wrk (optional).
set -euo pipefail
cd "$(dirname "$0")/.."

WHAT=${1:-all}
APPLIANCE=${APPLIANCE:-target/release/appliance}
WORK=${WORK:-/tmp/appl-bench}
OUT=${OUT:-$WORK/results}
SHARED=${SHARED:-../shared/bench}
VENV=${VENV:-/tmp/bench-venv}
PY=$VENV/bin/python
LOGIN_COUNT=${LOGIN_COUNT:-1000}
CHEAP_COUNT=${CHEAP_COUNT:-20000}
WRK_SECONDS=${WRK_SECONDS:-10}
A_PORT=8009
S_DIR=/tmp/synapse-bench
mkdir -p "$WORK" "$OUT"

cat > "$WORK/config.yaml" <<'YAML'
server_name: bench.test
enable_registration: true
enable_registration_without_verification: true
rc_login: {address: {per_second: 100000, burst_count: 100000}, account: {per_second: 100000, burst_count: 100000}, failed_attempts: {per_second: 100000, burst_count: 100000}}
rc_registration: {per_second: 100000, burst_count: 100000}
rc_message: {per_second: 100000, burst_count: 100000}
rc_room_creation: {per_second: 100000, burst_count: 100000}
rc_joins: {local: {per_second: 100000, burst_count: 100000}}
rc_invites: {per_room: {per_second: 100000, burst_count: 100000}, per_user: {per_second: 100000, burst_count: 100000}, per_issuer: {per_second: 100000, burst_count: 100000}}
log_level: warn
YAML
A_CMD="$APPLIANCE --config $WORK/config.yaml --data-dir $WORK/data serve --listen 127.0.0.1:$A_PORT"
S_CMD=$(bash "$SHARED/setup_synapse.sh" --print-cmd)

log() { echo "[run_compare $(date +%T)] $*" >&2; }

startup_one() {  # name port cmd json
  "$PY" "$SHARED/mxbench.py" --base-url "http://127.0.0.1:$2" --startup-cmd "$3" --startup-only \
    --startup-log "$WORK/$1-startup.log" --label "$1" --json-out "$4" > /dev/null
}

do_startup() {
  local reps=${REPS:-5} i
  for i in $(seq 1 "$reps"); do
    # cold: empty data dir (database created + migrated, signing key generated)
    rm -rf "$WORK/data"
    log "startup appliance cold #$i"; startup_one appliance $A_PORT "$A_CMD" "$OUT/startup-appliance-cold-$i.json"
    log "startup appliance warm #$i"; startup_one appliance $A_PORT "$A_CMD" "$OUT/startup-appliance-warm-$i.json"
    # Synapse cold: --fresh wipes its data dir and regenerates config + signing key (not timed),
    # the launch creates the SQLite schema.
    LOG_LEVEL=WARNING bash "$SHARED/setup_synapse.sh" --fresh --no-start > /dev/null
    rm -f "$S_DIR/homeserver.pid"
    log "startup synapse cold #$i"; startup_one synapse 8008 "$S_CMD" "$OUT/startup-synapse-cold-$i.json"
    rm -f "$S_DIR/homeserver.pid"
    log "startup synapse warm #$i"; startup_one synapse 8008 "$S_CMD" "$OUT/startup-synapse-warm-$i.json"
    rm -f "$S_DIR/homeserver.pid"
  done
}

cpu_of() { awk '{ split($0, a, ") "); split(a[2], f, " "); print f[12] + f[13] }' "/proc/$1/stat"; }

wrk_one() {  # name pid url json [extra wrk args...]
  local name=$1 pid=$2 url=$3 json=$4; shift 4
  local c0 c1 out
  c0=$(cpu_of "$pid")
  out=$(wrk -t1 -c32 -d"${WRK_SECONDS}s" --latency "$@" "$url")
  c1=$(cpu_of "$pid")
  "$PY" - "$name" "$c0" "$c1" "$json" <<PYEOF
import json, re, sys, os
name, c0, c1, path = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
out = """$out"""
def ms(s):
    v, u = re.match(r"([\d.]+)(us|ms|s)", s).groups()
    return float(v) * {"us": 0.001, "ms": 1, "s": 1000}[u]
reqs = int(re.search(r"(\d+) requests in", out).group(1))
lat = {p: ms(re.search(rf"^\s+{p}%\s+(\S+)", out, re.M).group(1)) for p in ("50", "99")}
non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
errs = re.search(r"Socket errors: (.*)", out)
res = {"label": name, "tool": "wrk -t1 -c32", "loadavg_end": [float(x) for x in open("/proc/loadavg").read().split()[:3]], "requests": reqs,
       "req_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
       "latency_ms": {"p50": lat["50"], "p99": lat["99"]},
       "non_2xx": int(non2xx.group(1)) if non2xx else 0, "socket_errors": errs.group(1) if errs else None,
       "server_cpu_ms_per_req": round((c1 - c0) * 1000 / os.sysconf("SC_CLK_TCK") / reqs, 4)}
json.dump(res, open(path, "w"))
print(name, json.dumps(res), file=sys.stderr)
PYEOF
}

a_pid=
watchdog=
start_appliance() {
  stop_appliance
  nohup $A_CMD > "$WORK/appliance-load.log" 2>&1 < /dev/null &
  a_pid=$!
  echo "$a_pid" > "$WORK/appliance.pid"
  for _ in $(seq 1 100); do curl -fsS -o /dev/null "http://127.0.0.1:$A_PORT/_matrix/client/versions" 2>/dev/null && break; sleep 0.1; done
  log "appliance pid $a_pid"
}
stop_appliance() {
  [ -n "$a_pid" ] || return 0
  kill -TERM "$a_pid" 2>/dev/null || true
  for _ in $(seq 1 100); do [ -d "/proc/$a_pid" ] || break; sleep 0.1; done
  a_pid=
  rm -f "$WORK/appliance.pid"
}

do_load() {
  local reps=${REPS:-3} i s_pid
  # both servers fresh, both running for the whole load phase; the appliance process (not its
  # data) is restarted before each login run, because its RSS grows by GiBs under concurrent
  # logins (glibc keeps the freed 19 MiB argon2 blocks, see BENCHMARKS.md)
  rm -rf "$WORK/data"
  start_appliance
  LOG_LEVEL=WARNING bash "$SHARED/setup_synapse.sh" --fresh > /dev/null
  s_pid=$(cat "$S_DIR/homeserver.pid")
  log "synapse pid $s_pid"
  # safety: stop the appliance if it ever exceeds 10 GiB RSS (shared machine)
  ( while sleep 0.5; do p=$(cat "$WORK/appliance.pid" 2>/dev/null) || continue
      r=$(awk '/VmRSS/{print $2}' "/proc/$p/status" 2>/dev/null) || continue
      [ "${r:-0}" -gt 10485760 ] && grep -q appliance "/proc/$p/comm" && { echo "watchdog: appliance RSS ${r} KiB > 10 GiB, killing" >&2; kill -KILL "$p"; }
    done ) &
  watchdog=$!
  trap 'kill "${watchdog:-}" 2>/dev/null; stop_appliance; bash "$SHARED/setup_synapse.sh" --stop >/dev/null' EXIT
  local LL="$PY benches/login_load.py"
  for i in $(seq 1 "$reps"); do
    # alternate which server goes first in each repetition
    local order="appliance synapse"; [ $((i % 2)) = 0 ] && order="synapse appliance"
    for what in "versions 32 $CHEAP_COUNT" "whoami 32 $CHEAP_COUNT" "login 8 $LOGIN_COUNT" "login 32 $LOGIN_COUNT"; do
      set -- $what
      if [ "$1" != whoami ]; then start_appliance; fi
      for srv in $order; do
        local port=$A_PORT pid=$a_pid; [ "$srv" = synapse ] && { port=8008; pid=$s_pid; }
        log "$srv $1 c=$2 n=$3 #$i (load $(cut -d' ' -f1 /proc/loadavg))"
        $LL --base-url "http://127.0.0.1:$port" --pid "$pid" --endpoint "$1" --concurrency "$2" \
            --count "$3" --warmup 50 --label "$srv" > "$OUT/load-$srv-$1-c$2-$i.json" \
          || log "$srv $1 c=$2 #$i: some requests failed (see $OUT/load-$srv-$1-c$2-$i.json)"
      done
    done
    if [ "$WRK_SECONDS" != 0 ] && command -v wrk > /dev/null; then
      start_appliance
      for srv in $order; do
        local port=$A_PORT pid=$a_pid; [ "$srv" = synapse ] && { port=8008; pid=$s_pid; }
        local tok
        tok=$(curl -fsS -X POST "http://127.0.0.1:$port/_matrix/client/v3/register" -H 'Content-Type: application/json' \
          -d "{\"username\":\"wrk$i$RANDOM\",\"password\":\"bench-password-1\",\"auth\":{\"type\":\"m.login.dummy\"}}" \
          | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
        log "$srv wrk versions/whoami #$i"
        wrk_one "$srv" "$pid" "http://127.0.0.1:$port/_matrix/client/versions" "$OUT/wrk-$srv-versions-$i.json"
        wrk_one "$srv" "$pid" "http://127.0.0.1:$port/_matrix/client/v3/account/whoami" "$OUT/wrk-$srv-whoami-$i.json" \
          -H "Authorization: Bearer $tok"
      done
    fi
  done
  log "RSS at the end: appliance $(grep -E 'VmRSS|VmHWM' /proc/$a_pid/status | tr -s ' \n' ' '), synapse $(grep -E 'VmRSS|VmHWM' /proc/$s_pid/status | tr -s ' \n' ' ')"
  kill "$watchdog" 2>/dev/null || true
  stop_appliance
  bash "$SHARED/setup_synapse.sh" --stop > /dev/null
  trap - EXIT
}

# RSS of the appliance after batches of 100 logins, default allocator settings and with glibc's
# dynamic mmap threshold pinned (MALLOC_MMAP_THRESHOLD_), a fresh server each (port 8010).
do_memory() {
  local envs
  for envs in "MXB=default" "MALLOC_MMAP_THRESHOLD_=131072"; do
    rm -rf "$WORK/data-mem"
    env $envs $APPLIANCE --config "$WORK/config.yaml" --data-dir "$WORK/data-mem" serve --listen 127.0.0.1:8010 \
      > "$WORK/mem.log" 2>&1 < /dev/null &
    local p=$! c line
    for _ in $(seq 1 100); do curl -fsS -o /dev/null http://127.0.0.1:8010/_matrix/client/versions 2>/dev/null && break; sleep 0.1; done
    line="$envs: idle $(awk '/VmRSS/{print $2}' /proc/$p/status)"
    for c in 1 1 1 8 32; do
      $PY benches/login_load.py --base-url http://127.0.0.1:8010 --pid $p --endpoint login --concurrency $c \
        --count 100 --warmup 0 > /dev/null 2>&1 || true
      line="$line | +100 logins c=$c: $(awk '/VmRSS/{print $2}' /proc/$p/status)"
    done
    echo "$line (VmRSS KiB), VmHWM $(awk '/VmHWM/{print $2}' /proc/$p/status), threads $(awk '/Threads/{print $2}' /proc/$p/status)" \
      | tee -a "$OUT/memory.txt"
    kill -TERM $p; wait $p || true
  done
}

case "$WHAT" in
  startup) do_startup ;;
  load) do_load ;;
  memory) do_memory ;;
  all) do_startup; do_load; do_memory ;;
  *) echo "usage: $0 [startup|load|memory|all]" >&2; exit 2 ;;
esac
log "results in $OUT; summary: $PY benches/summarize.py $OUT"
