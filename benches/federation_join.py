#!/usr/bin/env python3
"""federation_join.py - joining a big room over federation, the appliance next to Synapse.

Three servers on loopback, all named `localhost:<port>` with certificates from a CA made here
(each trusts it through `federation_custom_ca_list`; loopback opened by `ip_range_whitelist`):

* **host**: a Synapse holding the big room (`--members` members, `--events` messages). It is
  filled through an application service registered on it (`m.login.application_service`
  registrations and `user_id=` masquerading: no password hashing, no per-user logins; Synapse
  does not evaluate push rules for an application service's exclusive users, so filling it stays
  linear). The filled host is kept in `--work`/host and reused by later runs with the same sizes.
* **joiners**: the appliance (`--appliance`, a release binary) and a second Synapse, each started
  fresh for each run, alternating, with one local user who joins `#big:<host>`.

Per join: wall time from `POST /join` to the room in the joiner's `/sync` (`appear_s`), and to the
room's full membership in its `/joined_members` (`complete_s`: Synapse joins with partial state
by default (MSC3706) and fetches the members in the background; the appliance joins with the full
state), the joiner's peak RSS over the join (VmHWM, reset just before `/join`; the RSS before it
is reported too) and its CPU seconds (utime + stime from /proc) over the
join. Then inbound throughput: with both joiners in the room, the host sends `--inbound` messages;
the CPU each joiner spends until the last one is in its `/sync`, per PDU.

Run with the Synapse venv's interpreter (it has Synapse and `cryptography`), e.g.
  target/synapse-venv/bin/python benches/federation_join.py --appliance target/release/appliance
Results: one JSON object on stdout's last line (and `--json-out`); progress on stderr.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import http.client
import json
import os
import random
import secrets
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- certificates ----


def make_ca(work: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "federation bench CA")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    (work / "ca.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert, key


def make_leaf(ca, ca_key, directory: Path) -> None:
    """`tls.crt` (leaf + CA) and `tls.key` for `localhost` in `directory`."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "tls.crt").write_bytes(
        cert.public_bytes(serialization.Encoding.PEM) + ca.public_bytes(serialization.Encoding.PEM)
    )
    (directory / "tls.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


# ---- HTTP ----


class Client:
    """JSON over HTTPS to one server on loopback, one connection per thread."""

    def __init__(self, port: int, ca_file: Path, token: str | None = None) -> None:
        self.port = port
        self.context = ssl.create_default_context(cafile=str(ca_file))
        self.token = token

    def call(self, method: str, path: str, body=None, token=None, timeout=300.0):
        connection = http.client.HTTPSConnection(
            "localhost", self.port, context=self.context, timeout=timeout
        )
        headers = {"Content-Type": "application/json"}
        if token or self.token:
            headers["Authorization"] = f"Bearer {token or self.token}"
        try:
            data = None if body is None else json.dumps(body).encode()
            for attempt in range(20):
                connection.request(method, path, body=data, headers=headers)
                response = connection.getresponse()
                raw = response.read()
                if response.status == 429 and attempt < 19:
                    time.sleep(json.loads(raw).get("retry_after_ms", 500) / 1000)
                    continue
                reply = json.loads(raw) if raw else {}
                if response.status != 200:
                    raise RuntimeError(f"{method} {path}: {response.status} {reply}")
                return reply
        finally:
            connection.close()


def q(segment: str) -> str:
    return urllib.parse.quote(segment, safe="")


# ---- processes ----


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def status_mib(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mib(pid: int) -> float:
    return status_mib(pid, "VmHWM")


def reset_peak_rss(pid: int) -> None:
    """Starts the peak (VmHWM) again from the current RSS (Linux's `clear_refs` value 5), so that
    the peak measured is the join's, not the start-up's or the joiner's registration's (the
    appliance's password hash holds 7 MiB for a moment)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def wait_listening(port: int, process: subprocess.Popen, what: str, timeout=180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode} while starting")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{what} did not listen within {timeout}s")


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


SYNAPSE_LOG_CONFIG = """version: 1
formatters:
  precise: {format: '%(asctime)s - %(name)s - %(levelname)s - %(message)s'}
handlers:
  console: {class: logging.StreamHandler, formatter: precise}
root: {level: WARNING, handlers: [console]}
disable_existing_loggers: false
"""

NO_RATE_LIMITS = """rc_message: {per_second: 100000, burst_count: 100000}
rc_registration: {per_second: 100000, burst_count: 100000}
rc_joins: {local: {per_second: 100000, burst_count: 100000}, remote: {per_second: 100000, burst_count: 100000}}
"""
# Synapse also limits joins per room, which filling the host's room would hit.
SYNAPSE_NO_RATE_LIMITS = NO_RATE_LIMITS + """rc_joins_per_room: {per_second: 100000, burst_count: 100000}
"""


def start_synapse(directory: Path, port: int, ca_file: Path, extra: str = "") -> subprocess.Popen:
    """Synapse from this interpreter's venv, data in `directory` (kept across starts)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "log.yaml").write_text(SYNAPSE_LOG_CONFIG)
    seed_file = directory / "signing.seed"
    if not seed_file.exists():
        import base64

        seed_file.write_text(base64.b64encode(secrets.token_bytes(32)).decode().rstrip("="))
    config = f"""server_name: 'localhost:{port}'
signing_key: 'ed25519 a_bench {seed_file.read_text()}'
report_stats: false
listeners:
  - port: {port}
    bind_addresses: ['127.0.0.1']
    type: http
    tls: true
    x_forwarded: false
    resources: [{{names: [client, federation], compress: false}}]
tls_certificate_path: '{directory}/tls.crt'
tls_private_key_path: '{directory}/tls.key'
federation_custom_ca_list: ['{ca_file}']
ip_range_whitelist: ['127.0.0.1/8', '::1/128']
trusted_key_servers: []
suppress_key_server_warning: true
enable_registration: true
enable_registration_without_verification: true
database: {{name: sqlite3, args: {{database: '{directory}/homeserver.db'}}}}
media_store_path: '{directory}/media_store'
log_config: '{directory}/log.yaml'
{SYNAPSE_NO_RATE_LIMITS}{extra}"""
    (directory / "homeserver.yaml").write_text(config)
    process = subprocess.Popen(
        [sys.executable, "-m", "synapse.app.homeserver", "--no-redirect-stdio",
         "--config-path", str(directory / "homeserver.yaml")],
        cwd=directory,
        stdin=subprocess.DEVNULL,
        stdout=open(directory / "synapse.log", "ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    wait_listening(port, process, f"Synapse in {directory}")
    return process


def start_appliance(
    binary: Path, directory: Path, port: int, ca_file: Path, extra: str = ""
) -> subprocess.Popen:
    directory.mkdir(parents=True, exist_ok=True)
    config = f"""server_name: 'localhost:{port}'
tls_certificate_path: {directory}/tls.crt
tls_private_key_path: {directory}/tls.key
listeners:
  - port: {port}
    bind_addresses: ['127.0.0.1']
    tls: true
    resources: [{{names: [client, federation]}}]
federation_custom_ca_list: ['{ca_file}']
ip_range_whitelist: ['127.0.0.0/8', '::1/128']
trusted_key_servers: []
enable_registration: true
enable_registration_without_verification: true
log_level: warn
{NO_RATE_LIMITS}{extra}"""
    (directory / "config.yaml").write_text(config)
    process = subprocess.Popen(
        [str(binary), "--config", str(directory / "config.yaml"),
         "--data-dir", str(directory / "data"), "serve"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=open(directory / "appliance.log", "ab"),
        start_new_session=True,
    )
    wait_listening(port, process, "the appliance")
    return process


def register(client: Client, username: str) -> tuple[str, str]:
    """(user ID, access token) of a new user, through the m.login.dummy flow."""
    body = {"username": username, "password": secrets.token_hex(12),
            "auth": {"type": "m.login.dummy"}, "initial_device_display_name": "bench"}
    reply = client.call("POST", "/_matrix/client/v3/register", body)
    return reply["user_id"], reply["access_token"]


# ---- the host and its big room ----


def fill_host(args, work: Path, ca_file: Path) -> dict:
    """Starts the host Synapse (filling it the first time); returns its facts."""
    host_dir = work / "host"
    facts_file = host_dir / "facts.json"
    facts = json.loads(facts_file.read_text()) if facts_file.exists() else None
    if facts and (facts["members"], facts["events"]) != (args.members, args.events):
        raise SystemExit(f"{host_dir} holds another room size; remove it or pick another --work")
    port = facts["port"] if facts else free_port()
    as_token = facts["as_token"] if facts else secrets.token_hex(16)
    host_dir.mkdir(parents=True, exist_ok=True)
    (host_dir / "appservice.yaml").write_text(
        f"""id: bench
url: null
as_token: {as_token}
hs_token: {secrets.token_hex(16)}
sender_localpart: bench-bot
namespaces:
  users: [{{exclusive: true, regex: '@bench-.*'}}]
  aliases: [{{exclusive: true, regex: '#big:.*'}}]
rate_limited: false
"""
    )
    extra = f"app_service_config_files: ['{host_dir}/appservice.yaml']\n"
    process = start_synapse(host_dir, port, ca_file, extra)
    server = f"localhost:{port}"
    if facts:
        log(f"host {server}: reusing its room {facts['room_id']}")
        return {**facts, "process": process}

    client = Client(port, ca_file, as_token)

    def as_register(localpart: str) -> str:
        client.call("POST", "/_matrix/client/v3/register",
                    {"type": "m.login.application_service", "username": localpart})
        return f"@{localpart}:{server}"

    creator = as_register("bench-creator")
    room_id = client.call(
        "POST", f"/_matrix/client/v3/createRoom?user_id={q(creator)}",
        {"preset": "public_chat", "room_alias_name": "big", "name": "Big room"},
    )["room_id"]
    log(f"host {server}: room {room_id}; {args.members} members join")
    started = time.monotonic()

    def join(i: int) -> str:
        user = as_register(f"bench-{i}")
        client.call("POST", f"/_matrix/client/v3/join/{q(room_id)}?user_id={q(user)}", {})
        return user

    with concurrent.futures.ThreadPoolExecutor(args.threads) as pool:
        members = list(pool.map(join, range(args.members)))
    log(f"  joined in {time.monotonic() - started:.0f}s; {args.events} messages")
    started = time.monotonic()

    def send(i: int) -> None:
        user = random.choice(members)
        client.call(
            "PUT",
            f"/_matrix/client/v3/rooms/{q(room_id)}/send/m.room.message/fill{i}?user_id={q(user)}",
            {"msgtype": "m.text", "body": f"message {i} " + secrets.token_hex(16)},
        )
        if i % 1000 == 0:
            log(f"  {i} messages ({time.monotonic() - started:.0f}s)")

    with concurrent.futures.ThreadPoolExecutor(args.threads) as pool:
        list(pool.map(send, range(args.events)))
    log(f"  sent in {time.monotonic() - started:.0f}s")
    facts = {"port": port, "as_token": as_token, "room_id": room_id, "members": args.members,
             "events": args.events, "member_ids": members}
    facts_file.write_text(json.dumps(facts))
    return {**facts, "process": process}


# ---- the measured joins ----


def measure_join(name: str, process, client: Client, host: dict) -> dict:
    alias = f"#big:localhost:{host['port']}"
    expected_members = host["members"] + 2  # the creator, and the joiner itself
    _, token = register(client, f"joiner{secrets.token_hex(3)}")
    client.token = token
    first = client.call("GET", "/_matrix/client/v3/sync?timeout=0")
    since = first["next_batch"]
    rss_before = status_mib(process.pid, "VmRSS")
    reset_peak_rss(process.pid)
    cpu_before = cpu_seconds(process.pid)
    started = time.monotonic()
    room_id = client.call("POST", f"/_matrix/client/v3/join/{q(alias)}", {}, timeout=3600)[
        "room_id"
    ]
    joined_s = time.monotonic() - started
    appear_s = None
    while appear_s is None:
        reply = client.call(
            "GET", f"/_matrix/client/v3/sync?timeout=10000&since={q(since)}", timeout=3600
        )
        since = reply["next_batch"]
        if room_id in reply.get("rooms", {}).get("join", {}):
            appear_s = time.monotonic() - started
    complete_s = None
    while complete_s is None:
        members = client.call(
            "GET", f"/_matrix/client/v3/rooms/{q(room_id)}/joined_members", timeout=3600
        )["joined"]
        if len(members) >= expected_members:
            complete_s = time.monotonic() - started
        else:
            time.sleep(0.5)
    result = {
        "server": name,
        "join_request_s": round(joined_s, 3),
        "appear_s": round(appear_s, 3),
        "complete_s": round(complete_s, 3),
        "cpu_s": round(cpu_seconds(process.pid) - cpu_before, 3),
        "peak_rss_mib": round(peak_rss_mib(process.pid), 1),
        "rss_before_mib": round(rss_before, 1),
        "room_id": room_id,
        "since": since,
    }
    log(f"  {name}: {result}")
    return result


def measure_inbound(args, host: dict, joiners: list, ca_file: Path) -> list:
    """The host sends `--inbound` messages; each joiner's CPU until it has the last one."""
    host_client = Client(host["port"], ca_file, host["as_token"])
    room_id = host["room_id"]
    marker = f"last-{secrets.token_hex(4)}"
    before = {name: cpu_seconds(process.pid) for name, process, _, _ in joiners}
    started = time.monotonic()

    def send(i: int) -> None:
        user = host["member_ids"][i % len(host["member_ids"])]
        body = marker if i == args.inbound - 1 else f"inbound {i}"
        host_client.call(
            "PUT",
            f"/_matrix/client/v3/rooms/{q(room_id)}/send/m.room.message/{marker}-{i}"
            f"?user_id={q(user)}",
            {"msgtype": "m.text", "body": body},
        )

    with concurrent.futures.ThreadPoolExecutor(args.threads) as pool:
        list(pool.map(send, range(args.inbound - 1)))
    send(args.inbound - 1)
    sent_s = time.monotonic() - started
    results = []
    for name, process, client, since in joiners:
        seen = False
        while not seen:
            reply = client.call(
                "GET", f"/_matrix/client/v3/sync?timeout=10000&since={q(since)}", timeout=600
            )
            since = reply["next_batch"]
            room = reply.get("rooms", {}).get("join", {}).get(room_id, {})
            seen = any(
                e.get("content", {}).get("body") == marker
                for e in room.get("timeline", {}).get("events", [])
            )
            if time.monotonic() - started > 3600:
                raise RuntimeError(f"{name} never received the last inbound message")
        cpu = cpu_seconds(process.pid) - before[name]
        results.append({
            "server": name, "pdus": args.inbound, "until_last_s": round(time.monotonic() - started, 3),
            "cpu_s": round(cpu, 3), "cpu_ms_per_pdu": round(1000 * cpu / args.inbound, 3),
        })
        log(f"  {name}: {results[-1]}")
    log(f"  host sent {args.inbound} in {sent_s:.1f}s")
    return results


def one_round(args, work: Path, ca, ca_key, ca_file: Path, host: dict, order: list) -> dict:
    started = {}
    try:
        for name in order:
            port = free_port()
            directory = work / f"{name}-{secrets.token_hex(3)}"
            make_leaf(ca, ca_key, directory)
            if name == "appliance":
                process = start_appliance(Path(args.appliance), directory, port, ca_file)
            else:
                process = start_synapse(directory, port, ca_file)
            started[name] = (process, Client(port, ca_file))
        joins = [measure_join(name, *started[name], host) for name in order]
        joiners = [
            (j["server"], started[j["server"]][0], started[j["server"]][1], j["since"])
            for j in joins
        ]
        inbound = measure_inbound(args, host, joiners, ca_file) if args.inbound else []
        return {"joins": joins, "inbound": inbound}
    finally:
        for process, _ in started.values():
            stop(process)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--appliance", help="the appliance's release binary")
    parser.add_argument("--work", default="/tmp/federation-bench", help="scratch directory")
    parser.add_argument("--members", type=int, default=2000)
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--inbound", type=int, default=1000, help="0: no inbound measurement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=8, help="requests in flight when filling")
    parser.add_argument("--json-out")
    parser.add_argument("--fill-only", action="store_true", help="fill the host, then stop")
    args = parser.parse_args()
    if not args.appliance and not args.fill_only:
        parser.error("--appliance is needed (except with --fill-only)")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    ca_file = work / "ca.pem"
    ca, ca_key = make_ca(work)
    make_leaf(ca, ca_key, work / "host")
    host = fill_host(args, work, ca_file)
    if args.fill_only:
        stop(host["process"])
        return
    try:
        rounds = []
        for i in range(args.rounds):
            order = ["appliance", "synapse"] if i % 2 == 0 else ["synapse", "appliance"]
            log(f"round {i + 1}/{args.rounds}: {' then '.join(order)}")
            rounds.append(one_round(args, work, ca, ca_key, ca_file, host, order))
    finally:
        stop(host["process"])

    def median(server: str, section: str, key: str) -> float:
        return statistics.median(
            r[key] for round_ in rounds for r in round_[section] if r["server"] == server
        )

    summary = {}
    for key in ("appear_s", "complete_s", "cpu_s", "peak_rss_mib"):
        summary[f"join_{key}"] = {s: median(s, "joins", key) for s in ("appliance", "synapse")}
    if args.inbound:
        summary["inbound_cpu_ms_per_pdu"] = {
            s: median(s, "inbound", "cpu_ms_per_pdu") for s in ("appliance", "synapse")
        }
    result = {
        "members": args.members, "events": args.events, "inbound": args.inbound,
        "rounds": rounds, "median": summary,
    }
    text = json.dumps(result)
    if args.json_out:
        Path(args.json_out).write_text(text + "\n")
    for key, values in summary.items():
        print(f"{key}: appliance {values['appliance']}, synapse {values['synapse']}")
    print(text)


if __name__ == "__main__":
    main()
