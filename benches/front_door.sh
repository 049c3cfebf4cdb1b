#!/usr/bin/env bash
# The front door next to Debian's nginx: TLS handshakes per second and requests per second for a
# ~1 MB JavaScript file served as Element's main bundle, both servers with the same certificate
# (ECDSA P-256) and the same files, on 127.0.0.1, measured with wrk; then the RSS of each.
#
#   bash benches/front_door.sh [appliance-binary]     (default target/release/appliance)
#
# Needs wrk, nginx (nginx-light is enough) and openssl. Prints a Markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."
binary="${1:-target/release/appliance}"
duration="${DURATION:-10}"
work="$(mktemp -d)"
chmod 755 "$work" # nginx workers run as www-data
trap 'kill $appliance_pid $nginx_pid 2>/dev/null || true; rm -rf "$work"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# One certificate for both.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
    -subj /CN=localhost -addext subjectAltName=DNS:localhost \
    -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null

# An Element-shaped release with a 1 MiB main bundle.
release="$work/element"
mkdir -p "$release/bundles/0123456789abcdef"
echo '<!doctype html><title>Element</title>' >"$release/index.html"
echo 'v1.0.0-bench' >"$release/version"
head -c 786432 /dev/urandom | base64 -w 100 | sed 's/^/var x="/; s/$/";/' \
    >"$release/bundles/0123456789abcdef/main.js"
bundle=/bundles/0123456789abcdef/main.js
ls -l "$release$bundle" >&2

# The appliance: one TLS listener, Element on the host `localhost`.
a_port="$(free_port)"
cat >"$work/appliance.yaml" <<YAML
server_name: localhost
log_level: warn
tls_certificate_path: $work/cert.pem
tls_private_key_path: $work/key.pem
element:
  enabled: true
  host: localhost
  path: $release
listeners:
  - port: $a_port
    bind_addresses: ['127.0.0.1']
    tls: true
    resources: [{names: [client]}]
YAML
"$binary" --config "$work/appliance.yaml" --data-dir "$work/data" serve 2>"$work/appliance.log" &
appliance_pid=$!

# nginx: the same files, certificate and headers; as Debian ships it (worker_processes auto).
n_port="$(free_port)"
mkdir -p "$work/nginx"
cat >"$work/nginx.conf" <<NGINX
worker_processes auto;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 1024; }
http {
    include /etc/nginx/mime.types;
    access_log off;
    sendfile on;
    tcp_nopush on;
    client_body_temp_path $work/nginx;
    proxy_temp_path $work/nginx;
    fastcgi_temp_path $work/nginx;
    uwsgi_temp_path $work/nginx;
    scgi_temp_path $work/nginx;
    server {
        listen 127.0.0.1:$n_port ssl;
        server_name localhost;
        ssl_certificate $work/cert.pem;
        ssl_certificate_key $work/key.pem;
        ssl_protocols TLSv1.2 TLSv1.3;
        root $release;
        add_header X-Frame-Options SAMEORIGIN;
        add_header X-Content-Type-Options nosniff;
        add_header Content-Security-Policy "frame-ancestors 'self'";
        add_header Strict-Transport-Security "max-age=63072000";
        location /bundles/ { add_header Cache-Control "public, max-age=31536000, immutable"; }
    }
}
NGINX
nginx -c "$work/nginx.conf" -g 'daemon off;' &
nginx_pid=$!
sleep 1
for port in "$a_port" "$n_port"; do
    curl -sfk "https://localhost:$port$bundle" -o /dev/null || { cat "$work/appliance.log" "$work/nginx/error.log" >&2; exit 1; }
done

rss_kib() { # the server and its children
    local total=0
    for pid in $1 $(pgrep -P "$1" || true); do
        total=$((total + $(awk '/VmRSS/ {print $2}' "/proc/$pid/status")))
    done
    echo "$total"
}
rate() { awk '/Requests\/sec/ {print $2}'; }

declare -A result
for round in 1 2 3; do
    for name in appliance nginx; do
        port=$a_port; [[ $name == nginx ]] && port=$n_port
        # A new TLS connection (full handshake) for every request of a tiny file.
        result[$name,handshakes,$round]=$(wrk -t2 -c16 -d"${duration}s" -H 'Connection: close' \
            "https://localhost:$port/version" | rate)
        # Keep-alive requests for the 1 MiB bundle.
        result[$name,bundle,$round]=$(wrk -t2 -c32 -d"${duration}s" "https://localhost:$port$bundle" | rate)
    done
done
median() { printf '%s\n' "$@" | sort -g | sed -n 2p; }
echo "| figure (median of 3, ${duration} s each) | appliance | nginx | appliance / nginx |"
echo "| --- | ---: | ---: | ---: |"
for figure in handshakes bundle; do
    a=$(median "${result[appliance,$figure,1]}" "${result[appliance,$figure,2]}" "${result[appliance,$figure,3]}")
    n=$(median "${result[nginx,$figure,1]}" "${result[nginx,$figure,2]}" "${result[nginx,$figure,3]}")
    label="TLS handshakes/s (new connection per request, \`/version\`, c=16)"
    [[ $figure == bundle ]] && label="requests/s, 1 MiB main bundle, keep-alive, c=32"
    echo "| $label | $a | $n | $(awk -v a="$a" -v n="$n" 'BEGIN {printf "%.2f", a/n}') |"
done
a_rss=$(rss_kib "$appliance_pid"); n_rss=$(rss_kib "$nginx_pid")
echo "| RSS after the runs (nginx: master + workers) | $((a_rss / 1024)) MiB | $((n_rss / 1024)) MiB | |"
echo "raw: ${result[*]}" >&2
