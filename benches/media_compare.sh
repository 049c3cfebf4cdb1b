#!/usr/bin/env bash
# media_compare.sh - media upload/download throughput, peak RSS during transfers, and thumbnail
# time: the appliance and Synapse side by side on this machine (see BENCHMARKS.md, "Media").
# Loopback only: the appliance on 127.0.0.1:8019, Synapse on 127.0.0.1:8018 (ports and data
# dirs of their own, so that this does not disturb benches/run_compare.sh).
#
# Usage: benches/media_compare.sh
# Environment:
#   APPLIANCE   the release binary              (default target/release/appliance)
#   WORK        scratch dir                     (default /tmp/appl-media-bench)
#   SHARED      the shared bench harness        (default ../shared/bench)
#   SIZES_MB    file sizes, MB                  (default 5,50)
# Prerequisites: Synapse installed by $SHARED/setup_synapse.sh (it makes /tmp/synapse-venv, whose
# Pillow also draws the test JPEG); run as root (peak RSS is reset through /proc/PID/clear_refs).
set -euo pipefail
cd "$(dirname "$0")/.."

APPLIANCE=${APPLIANCE:-target/release/appliance}
WORK=${WORK:-/tmp/appl-media-bench}
SHARED=${SHARED:-../shared/bench}
SIZES_MB=${SIZES_MB:-5,50}
A_PORT=8019
S_PORT=8018
S_DIR=/tmp/synapse-media-bench
mkdir -p "$WORK"
log() { echo "[media_compare $(date +%T)] $*" >&2; }

# A 4000x3000 photo-like JPEG: gradients plus noise, so it compresses like a photograph.
JPEG=$WORK/photo-4000x3000.jpg
if [[ ! -f $JPEG ]]; then
  /tmp/synapse-venv/bin/python - "$JPEG" <<'PY'
import sys
from PIL import Image
w, h = 4000, 3000
noise = Image.effect_noise((w, h), 40)
r = Image.linear_gradient("L").resize((w, h))
g = r.rotate(90).resize((w, h))
b = Image.blend(noise, r, 0.5)
Image.merge("RGB", (Image.blend(r, noise, 0.3), Image.blend(g, noise, 0.3), b)).save(sys.argv[1], quality=90)
PY
fi
log "JPEG: $(stat -c %s "$JPEG") bytes"

# --- the appliance ---
rm -rf "$WORK/data"
cat > "$WORK/config.yaml" <<'YAML'
server_name: bench.test
enable_registration: true
enable_registration_without_verification: true
rc_registration: {per_second: 100000, burst_count: 100000}
rc_message: {per_second: 100000, burst_count: 100000}
rc_media_create: {per_second: 100000, burst_count: 100000}
log_level: warn
YAML
"$APPLIANCE" --config "$WORK/config.yaml" --data-dir "$WORK/data" serve --listen 127.0.0.1:$A_PORT \
  2> "$WORK/appliance.log" &
A_PID=$!
trap 'kill $A_PID 2>/dev/null || true; DATA_DIR=$S_DIR PORT=$S_PORT bash "$SHARED/setup_synapse.sh" --stop >/dev/null 2>&1 || true' EXIT
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$A_PORT/_matrix/client/versions" >/dev/null && break; sleep 0.1; done
log "appliance (pid $A_PID)"
python3 benches/media_bench.py --base-url "http://127.0.0.1:$A_PORT" --pid "$A_PID" --label appliance \
  --sizes-mb "$SIZES_MB" --jpeg "$JPEG" --work "$WORK/files" --json-out "$WORK/appliance.json" > /dev/null
kill "$A_PID"; wait "$A_PID" 2>/dev/null || true

# --- Synapse ---
S_PID=$(DATA_DIR=$S_DIR PORT=$S_PORT LOG_LEVEL=WARNING bash "$SHARED/setup_synapse.sh" --fresh | sed -n 's/^PID=//p' | tail -1)
for _ in $(seq 300); do curl -fs "http://127.0.0.1:$S_PORT/_matrix/client/versions" >/dev/null && break; sleep 0.2; done
log "synapse $(cat $S_DIR/synapse-version.txt 2>/dev/null) (pid $S_PID)"
python3 benches/media_bench.py --base-url "http://127.0.0.1:$S_PORT" --pid "$S_PID" --label synapse \
  --sizes-mb "$SIZES_MB" --jpeg "$JPEG" --work "$WORK/files" --json-out "$WORK/synapse.json" > /dev/null
DATA_DIR=$S_DIR PORT=$S_PORT bash "$SHARED/setup_synapse.sh" --stop > /dev/null

python3 - "$WORK/appliance.json" "$WORK/synapse.json" <<'PY'
import json, sys
runs = [json.load(open(p)) for p in sys.argv[1:]]
mib = lambda kib: f"{kib / 1024:.0f}"
print("| | " + " | ".join(r["label"] for r in runs) + " |")
print("| --- |" + " --- |" * len(runs))
print("| idle RSS (MiB) | " + " | ".join(mib(r["idle_kib"]["VmRSS"]) for r in runs) + " |")
for i, t in enumerate(runs[0]["transfers"]):
    mb = t["mb"]
    row = lambda key, fmt: " | ".join(fmt(r["transfers"][i][key]) for r in runs)
    print(f"| upload {mb} MB: MB/s | " + row("upload_mb_s", str) + " |")
    print(f"| upload {mb} MB: peak RSS during it (MiB) | " + row("upload_peak_rss_kib", mib) + " |")
    print(f"| download {mb} MB: MB/s | " + row("download_mb_s", str) + " |")
    print(f"| download {mb} MB: peak RSS during it (MiB) | " + row("download_peak_rss_kib", mib) + " |")
th = [r["thumbnail"] for r in runs]
print("| JPEG upload (ms) | " + " | ".join(str(t["jpeg_upload_ms"]) for t in th) + " |")
print("| same-size random-bytes upload (ms) | " + " | ".join(str(t["same_size_plain_upload_ms"]) for t in th) + " |")
for key in th[0]["requests"]:
    print(f"| thumbnail {key}: first request (ms) | " + " | ".join(str(t["requests"][key]["first_ms"]) for t in th) + " |")
    print(f"| thumbnail {key}: cached (ms) | " + " | ".join(str(t["requests"][key]["cached_ms"]) for t in th) + " |")
PY
