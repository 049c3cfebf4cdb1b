#!/usr/bin/env python3
"""appservice.py - events pushed to an application service (a bridge), appliance vs Synapse.

One registration file for both servers (`bench` service: the users `@ghost-…` exclusive,
`rate_limited: false`, `url` a receiver started here) and a small receiver: a plain asyncio
HTTP/1.1 server in a process of its own that answers `PUT /_matrix/app/v1/transactions/{txnId}`
with `200 {}`, checks the `hs_token`, and records each event's arrival time (CLOCK_MONOTONIC,
shared by the processes) and each transaction's size.

One server at a time on loopback (`localhost:<port>`, TLS with a CA made here, the helpers of
`federation_join.py`), fresh for each round, `--rounds` rounds alternating which goes first.
Set-up (not measured): `--clients` users with passwords, each creating `--rooms` private rooms
and inviting a ghost (one per room, registered with `m.login.application_service`) who joins
with `user_id=`, so that the service is interested in every room. Then:

* **(a) live**: the `--clients` users send `--messages` messages each, as fast as the server
  accepts them (one request at a time per user, kept-alive connections, their rooms in turn):
  messages accepted per second, events delivered per second (first send to last arrival),
  delivery latency (send request started -> event received by the service, p50/p95), events per
  transaction, and the server's CPU (utime + stime of its process, /proc) per delivered event
  over that window (the sends' own handling included).
* **(b) backlog**: the receiver is stopped (connections refused), the users send `--backlog`
  messages, the receiver starts again: the wait until the first transaction (the server's
  retry backoff), the time to drain the backlog once transactions come again, transactions and
  events per transaction, and CPU per event from the restart to the last event (delivery only).
* **(c) bridge sending**: the service sends `--ghost-messages` messages as its ghosts
  (`as_token` + `user_id`, `--workers` requests in flight, each ghost into its own room):
  messages accepted per second, CPU per message until the last echo reached the service.

Run with the Synapse venv's interpreter (it has Synapse and `cryptography`), e.g.
  target/synapse-venv/bin/python benches/appservice.py \
      --appliance target/release/appliance --json-out /tmp/appservice.json
Results: one JSON object on stdout's last line (and `--json-out`); progress on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import http.client
import json
import os
import secrets
import ssl
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import federation_join as fj  # noqa: E402  (the shared helpers: CA, servers, /proc)

PASSWORD = "bench-password-1234"
TRANSACTIONS = "/_matrix/app/v1/transactions/"

# Set-up must not wait for rate limits (room creation, invites, logins); `rc_message` and
# `rc_registration` are lifted by federation_join's NO_RATE_LIMITS, for both servers.
BENCH_NO_LIMITS = """rc_room_creation: {per_second: 100000, burst_count: 100000}
rc_invites:
  per_room: {per_second: 100000, burst_count: 100000}
  per_user: {per_second: 100000, burst_count: 100000}
  per_issuer: {per_second: 100000, burst_count: 100000}
rc_login:
  address: {per_second: 100000, burst_count: 100000}
  account: {per_second: 100000, burst_count: 100000}
  failed_attempts: {per_second: 100000, burst_count: 100000}
"""


# ---- the receiver (a process of its own: `appservice.py --receiver PORT HS_TOKEN`) ----


class Receiver:
    """What the service received: arrival of each marked message (by body), transactions."""

    def __init__(self, hs_token: str) -> None:
        self.hs_token = hs_token
        self.arrivals: dict[str, float] = {}
        self.event_ids: set[str] = set()
        # (arrival, transaction ID, events in it, marked messages in it)
        self.transactions: list[tuple[float, str, int, int]] = []
        self.seen_txns: set[str] = set()
        self.bad_token = 0
        self.repeated_txns = 0
        # When this process began to accept connections: the service is "up" from then on.
        self.listening_since = 0.0

    def transaction(self, target: str, headers: dict, body: bytes, now: float) -> int:
        query = urllib.parse.urlsplit(target).query
        token = headers.get("authorization", "").removeprefix("Bearer ")
        if token != self.hs_token and urllib.parse.parse_qs(query).get("access_token") != [
            self.hs_token
        ]:
            self.bad_token += 1
            return 403
        txn = urllib.parse.unquote(urllib.parse.urlsplit(target).path[len(TRANSACTIONS):])
        if txn in self.seen_txns:
            self.repeated_txns += 1
            return 200
        self.seen_txns.add(txn)
        events = json.loads(body).get("events", [])
        marked = 0
        for event in events:
            if event.get("event_id") in self.event_ids:
                continue
            self.event_ids.add(event.get("event_id"))
            text = event.get("content", {}).get("body")
            if event.get("type") == "m.room.message" and isinstance(text, str) and "|" in text:
                self.arrivals.setdefault(text, now)
                marked += 1
        self.transactions.append((now, txn, len(events), marked))
        return 200

    def control(self, target: str) -> dict:
        parts = urllib.parse.urlsplit(target)
        prefix = urllib.parse.parse_qs(parts.query).get("prefix", [""])[0]
        if parts.path == "/_bench/count":
            times = [t for body, t in self.arrivals.items() if body.startswith(prefix)]
            return {"count": len(times), "last": max(times, default=None)}
        return {
            "arrivals": {b: t for b, t in self.arrivals.items() if b.startswith(prefix)},
            "transactions": self.transactions,
            "bad_token": self.bad_token,
            "repeated_txns": self.repeated_txns,
            "listening_since": self.listening_since,
        }


async def serve_connection(state: Receiver, reader, writer) -> None:
    try:
        while True:
            line = await reader.readline()
            if not line:
                return
            method, target, _ = line.decode("latin-1").split(" ", 2)
            headers = {}
            while True:
                header = await reader.readline()
                if header in (b"\r\n", b"\n", b""):
                    break
                key, value = header.decode("latin-1").split(":", 1)
                headers[key.strip().lower()] = value.strip()
            if headers.get("transfer-encoding", "").lower() == "chunked":
                body = b""
                while True:
                    size = int((await reader.readline()).split(b";")[0], 16)
                    if size == 0:
                        await reader.readline()
                        break
                    body += await reader.readexactly(size)
                    await reader.readline()
            else:
                body = await reader.readexactly(int(headers.get("content-length", "0")))
            now = time.monotonic()
            if method == "PUT" and target.startswith(TRANSACTIONS):
                status, reply = state.transaction(target, headers, body, now), {}
            elif method == "GET" and target.startswith("/_bench/"):
                status, reply = 200, state.control(target)
            else:
                status, reply = 404, {"errcode": "M_UNRECOGNIZED", "error": "not here"}
            data = json.dumps(reply).encode()
            writer.write(
                f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(data)}\r\n\r\n".encode() + data
            )
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError, ValueError):
        pass
    finally:
        writer.close()


def receiver_main(port: int, hs_token: str) -> None:
    state = Receiver(hs_token)

    async def run() -> None:
        server = await asyncio.start_server(
            lambda r, w: serve_connection(state, r, w), "127.0.0.1", port
        )
        state.listening_since = time.monotonic()
        async with server:
            await server.serve_forever()

    asyncio.run(run())


class ReceiverProcess:
    def __init__(self, port: int, hs_token: str) -> None:
        self.port = port
        self.hs_token = hs_token
        self.process = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--receiver", str(self.port), self.hs_token],
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        fj.wait_listening(self.port, self.process, "the receiver", timeout=30)

    def stop(self) -> None:
        if self.process:
            fj.stop(self.process)
            self.process = None

    def get(self, what: str, prefix: str) -> dict:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            connection.request("GET", f"/_bench/{what}?prefix={urllib.parse.quote(prefix)}")
            return json.loads(connection.getresponse().read())
        finally:
            connection.close()

    def wait_for(self, prefix: str, count: int, pid: int, timeout: float) -> tuple[float, float]:
        """Polls until `count` messages with `prefix` arrived; the server's CPU seconds then,
        and the last arrival."""
        deadline = time.monotonic() + timeout
        while True:
            cpu = fj.cpu_seconds(pid)
            reply = self.get("count", prefix)
            if reply["count"] >= count:
                return cpu, reply["last"]
            if time.monotonic() > deadline:
                raise RuntimeError(f"{reply['count']} of {count} `{prefix}` events arrived")
            time.sleep(0.05)


# ---- clients ----


class Connection:
    """One kept-alive HTTPS connection (one per sending thread)."""

    def __init__(self, port: int, context: ssl.SSLContext, token: str) -> None:
        self.port, self.context, self.token = port, context, token
        self.connection = None

    def call(self, method: str, path: str, body=None) -> dict:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {self.token}"}
        for attempt in range(20):
            if self.connection is None:
                self.connection = http.client.HTTPSConnection(
                    "localhost", self.port, context=self.context, timeout=300
                )
            try:
                self.connection.request(method, path, body=data, headers=headers)
                response = self.connection.getresponse()
                raw = response.read()
            except (ConnectionError, http.client.HTTPException):
                self.connection.close()
                self.connection = None
                continue
            if response.status == 429 and attempt < 19:
                time.sleep(json.loads(raw).get("retry_after_ms", 500) / 1000)
                continue
            reply = json.loads(raw) if raw else {}
            if response.status != 200:
                raise RuntimeError(f"{method} {path}: {response.status} {reply}")
            return reply
        raise RuntimeError(f"{method} {path}: no answer")

    def close(self) -> None:
        if self.connection:
            self.connection.close()


def send_path(room: str, txn: str, user_id: str | None = None) -> str:
    path = f"/_matrix/client/v3/rooms/{fj.q(room)}/send/m.room.message/{fj.q(txn)}"
    return path + (f"?user_id={fj.q(user_id)}" if user_id else "")


def send_all(server: dict, jobs: list[list[tuple[str, str, str | None]]], token_of) -> dict:
    """Runs one thread per job list (each a list of (room, body, user_id)), one request at a time
    each; returns {body: (started, answered)}."""
    context = ssl.create_default_context(cafile=str(server["ca_file"]))
    times: dict[str, tuple[float, float]] = {}
    lock = threading.Lock()

    def worker(i: int) -> None:
        connection = Connection(server["port"], context, token_of(i))
        try:
            for room, body, user_id in jobs[i]:
                started = time.monotonic()
                connection.call("PUT", send_path(room, body, user_id),
                                {"msgtype": "m.text", "body": body})
                answered = time.monotonic()
                with lock:
                    times[body] = (started, answered)
        finally:
            connection.close()

    with concurrent.futures.ThreadPoolExecutor(len(jobs)) as pool:
        list(pool.map(worker, range(len(jobs))))
    return times


def user_jobs(facts: dict, tag: str, per_client: int) -> list[list[tuple[str, str, None]]]:
    """Each user's messages, its rooms in turn; bodies `tag|client|k` (also the txn IDs)."""
    return [
        [(user["rooms"][k % len(user["rooms"])], f"{tag}|{i}|{k}", None) for k in range(per_client)]
        for i, user in enumerate(facts["users"])
    ]


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


# ---- one server, one round ----


def fill(args, server: dict) -> dict:
    client = fj.Client(server["port"], server["ca_file"])
    name = server["server_name"]

    def register_user(i: int) -> dict:
        body = {"username": f"user{i}", "password": PASSWORD,
                "auth": {"type": "m.login.dummy"}, "initial_device_display_name": "bench"}
        reply = client.call("POST", "/_matrix/client/v3/register", body)
        return {"user_id": reply["user_id"], "token": reply["access_token"], "rooms": []}

    def register_ghost(g: int) -> str:
        client.call("POST", "/_matrix/client/v3/register",
                    {"type": "m.login.application_service", "username": f"ghost-{g}"},
                    token=server["as_token"])
        return f"@ghost-{g}:{name}"

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        users = list(pool.map(register_user, range(args.clients)))
        ghosts = list(pool.map(register_ghost, range(args.clients * args.rooms)))

    def portal(g: int) -> tuple[str, str]:
        user, ghost = users[g // args.rooms], ghosts[g]
        room = client.call("POST", "/_matrix/client/v3/createRoom", {
            "preset": "private_chat", "name": f"Portal {g}", "invite": [ghost],
        }, token=user["token"])["room_id"]
        client.call("POST", f"/_matrix/client/v3/join/{fj.q(room)}?user_id={fj.q(ghost)}", {},
                    token=server["as_token"])
        return room, ghost

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        portals = list(pool.map(portal, range(len(ghosts))))
    for g, (room, _) in enumerate(portals):
        users[g // args.rooms]["rooms"].append(room)
    return {"users": users, "portals": portals}


def live(args, server: dict, receiver: ReceiverProcess, facts: dict, tag: str) -> dict:
    pid = server["pid"]
    total = args.clients * args.messages
    cpu_before, client_cpu = fj.cpu_seconds(pid), time.process_time()
    times = send_all(server, user_jobs(facts, tag, args.messages),
                     lambda i: facts["users"][i]["token"])
    client_cpu = time.process_time() - client_cpu
    cpu_after, _ = receiver.wait_for(tag + "|", total, pid, timeout=600)
    stats = receiver.get("stats", tag + "|")
    arrivals = stats["arrivals"]
    first_send = min(t[0] for t in times.values())
    last_answer = max(t[1] for t in times.values())
    last_arrival = max(arrivals.values())
    latencies = [(arrivals[body] - started) * 1000 for body, (started, _) in times.items()]
    after_answer = [(arrivals[body] - answered) * 1000 for body, (_, answered) in times.items()]
    txns = [t for t in stats["transactions"] if t[3] > 0]
    return {
        "events": total,
        "sent_per_s": total / (last_answer - first_send),
        # The benchmark's own CPU per second of sending (1.0: one core): near 1, the Python
        # clients limit the rate, not the server.
        "client_cores": client_cpu / (last_answer - first_send),
        "delivered_per_s": total / (last_arrival - first_send),
        "latency_p50_ms": percentile(latencies, 50),
        "latency_p95_ms": percentile(latencies, 95),
        "after_answer_p50_ms": percentile(after_answer, 50),
        "after_answer_p95_ms": percentile(after_answer, 95),
        "transactions": len(txns),
        "events_per_txn": statistics.fmean(t[2] for t in txns),
        "cpu_s": cpu_after - cpu_before,
        "cpu_ms_per_event": (cpu_after - cpu_before) * 1000 / total,
    }


def backlog(args, server: dict, receiver: ReceiverProcess, facts: dict, tag: str) -> dict:
    pid = server["pid"]
    per_client = max(1, args.backlog // args.clients)
    total = per_client * args.clients
    receiver.stop()
    cpu_before = fj.cpu_seconds(pid)
    started = time.monotonic()
    send_all(server, user_jobs(facts, tag, per_client), lambda i: facts["users"][i]["token"])
    sent_s = time.monotonic() - started
    cpu_sending = fj.cpu_seconds(pid) - cpu_before
    time.sleep(args.down_after)
    # The server may retry while the receiver's start is being polled for: the CPU from before
    # the start, the moment it listened from the receiver itself.
    cpu_up = fj.cpu_seconds(pid)
    receiver.start()
    cpu_after, last_arrival = receiver.wait_for(tag + "|", total, pid, timeout=900)
    stats = receiver.get("stats", tag + "|")
    up = stats["listening_since"]
    txns = [t for t in stats["transactions"] if t[3] > 0]
    first_txn = min(t[0] for t in stats["transactions"])
    return {
        "events": total,
        "send_s": sent_s,
        "down_s": up - started,
        "cpu_ms_per_event_while_down": cpu_sending * 1000 / total,
        "first_txn_after_up_s": first_txn - up,
        "drain_s": last_arrival - first_txn,
        "up_to_drained_s": last_arrival - up,
        "drain_events_per_s": total / max(last_arrival - first_txn, 1e-3),
        "transactions": len(txns),
        "events_per_txn": statistics.fmean(t[2] for t in txns),
        "cpu_ms_per_event_drain": (cpu_after - cpu_up) * 1000 / total,
    }


def bridge_sending(args, server: dict, receiver: ReceiverProcess, facts: dict, tag: str) -> dict:
    pid = server["pid"]
    portals = facts["portals"]
    total = args.ghost_messages
    jobs = [[] for _ in range(args.workers)]
    for k in range(total):
        room, ghost = portals[k % len(portals)]
        # Each worker sends for a fixed set of ghosts (worker = ghost modulo workers).
        jobs[(k % len(portals)) % args.workers].append((room, f"{tag}|{k}", ghost))
    jobs = [job for job in jobs if job]
    cpu_before, client_cpu = fj.cpu_seconds(pid), time.process_time()
    times = send_all(server, jobs, lambda i: server["as_token"])
    cpu_sent, client_cpu = fj.cpu_seconds(pid), time.process_time() - client_cpu
    cpu_after, last_arrival = receiver.wait_for(tag + "|", total, pid, timeout=600)
    first_send = min(t[0] for t in times.values())
    last_answer = max(t[1] for t in times.values())
    return {
        "messages": total,
        "accepted_per_s": total / (last_answer - first_send),
        "client_cores": client_cpu / (last_answer - first_send),
        "request_p50_ms": percentile([(t[1] - t[0]) * 1000 for t in times.values()], 50),
        "request_p95_ms": percentile([(t[1] - t[0]) * 1000 for t in times.values()], 95),
        "cpu_ms_per_message_sending": (cpu_sent - cpu_before) * 1000 / total,
        "cpu_ms_per_message": (cpu_after - cpu_before) * 1000 / total,
        "echo_delivered_s": last_arrival - first_send,
    }


def registration(args, work: Path, receiver_port: int) -> dict:
    tokens = {"as_token": secrets.token_hex(16), "hs_token": secrets.token_hex(16)}
    path = work / "registration.yaml"
    path.write_text(
        f"""id: bench
url: 'http://127.0.0.1:{receiver_port}'
as_token: {tokens['as_token']}
hs_token: {tokens['hs_token']}
sender_localpart: bridge-bot
namespaces:
  users: [{{exclusive: true, regex: '@ghost-.*'}}]
  aliases: []
  rooms: []
rate_limited: false
"""
    )
    return {**tokens, "path": path}


def load() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def one_server(args, name: str, i: int, work: Path, ca, ca_key, reg: dict, receiver) -> dict:
    directory = work / f"{name}-{i}-{secrets.token_hex(3)}"
    port = fj.free_port()
    fj.make_leaf(ca, ca_key, directory)
    extra = BENCH_NO_LIMITS + f"app_service_config_files: ['{reg['path']}']\n"
    ca_file = work / "ca.pem"
    if name == "appliance":
        process = fj.start_appliance(Path(args.appliance), directory, port, ca_file, extra)
    else:
        process = fj.start_synapse(directory, port, ca_file, extra)
    receiver.start()
    try:
        server = {"port": port, "ca_file": ca_file, "pid": process.pid,
                  "server_name": f"localhost:{port}", "as_token": reg["as_token"]}
        fj.log(f"  {name}: set-up ({args.clients} users, {args.clients * args.rooms} portals)")
        facts = fill(args, server)
        time.sleep(2)  # let the set-up's transactions go
        result = {"server": name, "load_1min": load()}
        tag = secrets.token_hex(3)
        result["live"] = live(args, server, receiver, facts, f"A{tag}")
        fj.log(f"  {name} live: {fmt(result['live'])}")
        result["backlog"] = backlog(args, server, receiver, facts, f"B{tag}")
        fj.log(f"  {name} backlog: {fmt(result['backlog'])}")
        result["bridge"] = bridge_sending(args, server, receiver, facts, f"C{tag}")
        fj.log(f"  {name} bridge: {fmt(result['bridge'])}")
        result["rss_mib"] = fj.status_mib(process.pid, "VmRSS")
        stats = receiver.get("stats", "-")
        result["bad_token"], result["repeated_txns"] = stats["bad_token"], stats["repeated_txns"]
        result["load_1min_end"] = load()
        return result
    finally:
        receiver.stop()
        fj.stop(process)


def fmt(values: dict) -> str:
    return ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}"
                     for k, v in values.items())


# Figures where more is better (ratio appliance / Synapse); for the others Synapse / appliance.
MORE_IS_BETTER = {"sent_per_s", "delivered_per_s", "drain_events_per_s", "accepted_per_s",
                  "events_per_txn"}


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--receiver":
        receiver_main(int(sys.argv[2]), sys.argv[3])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--appliance", help="the appliance's release binary")
    parser.add_argument("--work", default="/tmp/appservice-bench", help="scratch directory")
    parser.add_argument("--clients", type=int, default=8, help="users sending at once")
    parser.add_argument("--rooms", type=int, default=3, help="portal rooms per user")
    parser.add_argument("--messages", type=int, default=150, help="(a) messages per user")
    parser.add_argument("--backlog", type=int, default=1000, help="(b) messages while down")
    parser.add_argument("--down-after", type=float, default=1.0,
                        help="(b) seconds the receiver stays down after the last send")
    parser.add_argument("--ghost-messages", type=int, default=1000, help="(c) messages")
    parser.add_argument("--workers", type=int, default=8, help="(c) requests in flight")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", choices=["appliance", "synapse"], help="one server only")
    parser.add_argument("--json-out")
    args = parser.parse_args()
    names = [args.only] if args.only else ["appliance", "synapse"]
    if "appliance" in names and not args.appliance:
        parser.error("--appliance is needed (except with --only synapse)")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    ca, ca_key = fj.make_ca(work)
    receiver_port = fj.free_port()
    reg = registration(args, work, receiver_port)
    receiver = ReceiverProcess(receiver_port, reg["hs_token"])
    rounds = []
    for i in range(args.rounds):
        order = names if i % 2 == 0 else names[::-1]
        fj.log(f"round {i + 1}/{args.rounds}: {' then '.join(order)} (load {load()})")
        for name in order:
            rounds.append(one_server(args, name, i, work, ca, ca_key, reg, receiver))

    summary = {}
    for section in ("live", "backlog", "bridge"):
        for key in rounds[0][section]:
            values = {
                s: statistics.median(r[section][key] for r in rounds if r["server"] == s)
                for s in names
            }
            if len(values) == 2 and values["appliance"] and values["synapse"]:
                a, s = values["appliance"], values["synapse"]
                values["ratio"] = a / s if key in MORE_IS_BETTER else s / a
            summary[f"{section}.{key}"] = values
    result = {
        "clients": args.clients, "rooms_per_client": args.rooms, "messages": args.messages,
        "backlog": args.backlog, "ghost_messages": args.ghost_messages, "workers": args.workers,
        "nproc": os.cpu_count(), "rounds": rounds, "median": summary,
    }
    text = json.dumps(result)
    if args.json_out:
        Path(args.json_out).write_text(text + "\n")
    for key, values in summary.items():
        print(f"{key}: " + ", ".join(f"{k} {v:.2f}" for k, v in values.items()))
    print(text)


if __name__ == "__main__":
    main()
