#!/usr/bin/env python3
"""sliding_sync.py - simplified sliding sync (MSC4186, Element X's sync), appliance vs Synapse.

One server at a time on loopback (`localhost:<port>`, a certificate from a CA made here; the
helpers of `federation_join.py`, imported), each filled the same way once and kept in `--work`:
a user (`bench`) in `--rooms` rooms (mxbench-style: each a private chat with a name, two more
members, `--messages` messages from the three of them, so that every room has a different
recency). Then, in `--rounds` rounds that alternate which server goes first (never both running):

* **first response**: a new connection (`conn_id` never used) asks for the list Element X's
  room list asks for (the 20 most recent rooms, `timeline_limit` 1, the room list's
  `required_state` with `$LAZY` and `$ME` members): wall time at the client and the server's CPU
  (utime + stime from /proc, ticks of 10 ms: the CPU figure is the mean over all requests) per
  request, `--requests` times (the first of a round is reported
  apart as `cold`, right after the server started). Each request on a new HTTPS connection (a
  TLS handshake each time), then `--requests` more over one kept-alive connection, as Element X
  keeps its connection (`first_kept_alive`).
* **incremental response**: on one connection, another member sends a message to a random room,
  then the client asks with its `pos` (`timeout=0`): time and CPU per request; each answer is
  checked to hold the room with that message (a wrong answer fails the run).
* **50 connections**: 50 devices of the user (password logins: set-up, not measured) each open a
  connection and then hold a long poll (`timeout` 30 s); the server's RSS with the 50 polls
  waiting (VmRSS, against the RSS before the logins; RssAnon, the allocated part, beside it),
  then one message wakes them all: the time until the last of the 50 has its answer.

Run with the Synapse venv's interpreter (it has Synapse and `cryptography`), e.g.
  target/synapse-venv/bin/python benches/sliding_sync.py \
      --appliance target/release/appliance --json-out /tmp/sliding-sync.json
Results: one JSON object on stdout's last line (and `--json-out`); progress on stderr.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import http.client
import json
import random
import secrets
import statistics
import sys
import time
import urllib.parse
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import federation_join as fj  # noqa: E402  (the shared helpers: CA, servers, /proc)

SLIDING_SYNC = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync"
PASSWORD = "bench-password-1234"

# What matrix-sdk-ui's RoomListService asks for in its "all_rooms" list.
ROOM_LIST_REQUIRED_STATE = [
    ["m.room.encryption", ""],
    ["m.room.member", "$LAZY"],
    ["m.room.member", "$ME"],
    ["m.room.name", ""],
    ["m.room.topic", ""],
    ["m.room.avatar", ""],
    ["m.room.canonical_alias", ""],
    ["m.room.power_levels", ""],
    ["m.room.join_rules", ""],
    ["m.room.create", ""],
    ["m.room.history_visibility", ""],
    ["m.room.pinned_events", ""],
]


def room_list_body(conn_id: str) -> dict:
    return {
        "conn_id": conn_id,
        "lists": {
            "all_rooms": {
                "ranges": [[0, 19]],
                "timeline_limit": 1,
                "required_state": ROOM_LIST_REQUIRED_STATE,
                "filters": {"not_room_types": ["m.space"]},
            }
        },
        "extensions": {
            "account_data": {"enabled": True},
            "receipts": {"enabled": True, "rooms": ["*"], "lists": ["*"]},
            "typing": {"enabled": True},
        },
    }


class KeptAlive(fj.Client):
    """One HTTPS connection used for every request, as Element X (matrix-rust-sdk's HTTP
    client) keeps its connection to the server: no TLS handshake per request."""

    def __init__(self, client: fj.Client) -> None:
        self.port, self.context, self.token = client.port, client.context, None
        self.connection = http.client.HTTPSConnection("localhost", self.port,
                                                      context=self.context, timeout=300)

    def call(self, method: str, path: str, body=None, token=None, timeout=300.0):
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
        self.connection.request(method, path, body=json.dumps(body).encode(), headers=headers)
        response = self.connection.getresponse()
        reply = json.loads(response.read())
        if response.status != 200:
            raise RuntimeError(f"{method} {path}: {response.status} {reply}")
        return reply

    def close(self) -> None:
        self.connection.close()


def sliding_sync(client: fj.Client, token: str, body: dict, pos=None, timeout_ms=0) -> dict:
    query = {"timeout": str(timeout_ms)}
    if pos is not None:
        query["pos"] = pos
    path = f"{SLIDING_SYNC}?{urllib.parse.urlencode(query)}"
    return client.call("POST", path, body, token=token, timeout=timeout_ms / 1000 + 120)


def register(client: fj.Client, username: str) -> tuple[str, str]:
    body = {"username": username, "password": PASSWORD,
            "auth": {"type": "m.login.dummy"}, "initial_device_display_name": "bench"}
    reply = client.call("POST", "/_matrix/client/v3/register", body)
    return reply["user_id"], reply["access_token"]


def login(client: fj.Client, username: str) -> str:
    body = {"type": "m.login.password", "password": PASSWORD,
            "identifier": {"type": "m.id.user", "user": username}}
    return client.call("POST", "/_matrix/client/v3/login", body)["access_token"]


def fill(args, client: fj.Client) -> dict:
    """The user in `--rooms` rooms; returns the tokens and room IDs."""
    bench_id, bench = register(client, "bench")
    alice_id, alice = register(client, "alice")
    bob_id, bob = register(client, "bob")
    senders = [bench, alice, bob]

    def one_room(i: int) -> str:
        room = client.call("POST", "/_matrix/client/v3/createRoom", {
            "preset": "private_chat", "name": f"Room {i}", "topic": f"topic of room {i}",
            "invite": [alice_id, bob_id],
        }, token=bench)["room_id"]
        for token in (alice, bob):
            client.call("POST", f"/_matrix/client/v3/rooms/{fj.q(room)}/join", {}, token=token)
        return room

    with concurrent.futures.ThreadPoolExecutor(args.threads) as pool:
        rooms = list(pool.map(one_room, range(args.rooms)))

    def messages(i: int) -> None:
        for m in range(args.messages):
            client.call(
                "PUT",
                f"/_matrix/client/v3/rooms/{fj.q(rooms[i])}/send/m.room.message/f{i}-{m}",
                {"msgtype": "m.text", "body": f"message {m} in room {i}"},
                token=senders[m % 3],
            )

    # Rooms in order, messages of one room in sequence: room i's last message is newer than
    # room i-1's for most rooms (threads overlap a little), as in a real account.
    with concurrent.futures.ThreadPoolExecutor(args.threads) as pool:
        list(pool.map(messages, range(args.rooms)))
    return {"bench": bench, "alice": alice, "rooms": rooms}


def timed(pid: int, call):
    cpu = fj.cpu_seconds(pid)
    started = time.perf_counter()
    reply = call()
    return reply, (time.perf_counter() - started) * 1000, (fj.cpu_seconds(pid) - cpu) * 1000


def rss_by_mapping(pid: int, field: str = "Rss") -> dict:
    """Resident MiB per mapped file (the program, each library) and `[anon]` for the rest, from
    /proc/PID/smaps: what VmRSS is made of. With `field="Referenced"`: the part of it touched
    since the last `clear_refs` (the working set; readahead and fault-around map more)."""
    totals: dict = {}
    name = "[anon]"
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head = line.split()
        if head and "-" in head[0] and not head[0].endswith(":"):
            name = head[5] if len(head) > 5 and head[5].startswith("/") else "[anon]"
        elif head and head[0] == f"{field}:":
            totals[name] = totals.get(name, 0.0) + int(head[1]) / 1024
    return {k: round(v, 2) for k, v in sorted(totals.items(), key=lambda kv: -kv[1]) if v >= 0.1}


def measure(args, name: str, process, client: fj.Client, facts: dict) -> dict:
    pid = process.pid
    bench, alice, rooms = facts["bench"], facts["alice"], facts["rooms"]
    rss_idle = fj.status_mib(pid, "VmRSS")
    # VmRSS counts the pages of the program's own code and libraries mapped from files (shared,
    # clean, in the kernel's page cache, mapped by fault-around as much as used), so the
    # anonymous part (heap, stacks: what the process allocated) is recorded too.
    anon_idle = fj.status_mib(pid, "RssAnon")
    # From here on, which mapped pages the requests touch (Linux: 1 clears the referenced bits).
    Path(f"/proc/{pid}/clear_refs").write_text("1")

    def first_responses(over: fj.Client) -> list:
        series = []
        for k in range(args.requests):
            body = room_list_body(f"first-{k}-{secrets.token_hex(4)}")
            reply, wall, cpu = timed(pid, lambda: sliding_sync(over, bench, body))
            listed = reply["lists"]["all_rooms"]["count"]
            sent = len(reply.get("rooms", {}))
            if listed != len(rooms) or sent != 20:
                raise RuntimeError(f"{name}: a list of {listed} rooms, {sent} of them sent")
            series.append({"wall_ms": wall, "cpu_ms": cpu})
        return series

    # A new connection (and TLS handshake) per request, as since session 11; then the same
    # requests over one kept-alive connection, as Element X sends them.
    first = first_responses(client)
    kept_alive = KeptAlive(client)
    try:
        first_kept_alive = first_responses(kept_alive)
    finally:
        kept_alive.close()

    body = room_list_body(f"incremental-{secrets.token_hex(4)}")
    pos = sliding_sync(client, bench, body)["pos"]
    incremental = []
    for k in range(args.requests):
        room = random.choice(rooms)
        event = client.call(
            "PUT", f"/_matrix/client/v3/rooms/{fj.q(room)}/send/m.room.message/inc{k}-{fj.q(pos)}",
            {"msgtype": "m.text", "body": f"incremental {k}"}, token=alice,
        )["event_id"]
        reply, wall, cpu = timed(pid, lambda: sliding_sync(client, bench, body, pos=pos))
        timeline = reply.get("rooms", {}).get(room, {}).get("timeline", [])
        if event not in [e.get("event_id") for e in timeline]:
            raise RuntimeError(f"{name}: incremental answer lacks {event} in {room}: {reply}")
        pos = reply["pos"]
        incremental.append({"wall_ms": wall, "cpu_ms": cpu})

    rss_before = fj.status_mib(pid, "VmRSS")
    touched = rss_by_mapping(pid, "Referenced")
    tokens = [login(client, "bench") for _ in range(args.connections)]
    positions = []
    for token in tokens:
        positions.append(sliding_sync(client, token, room_list_body("room-list"))["pos"])
    rss_connected = fj.status_mib(pid, "VmRSS")

    def poll(i: int) -> float:
        sliding_sync(client, tokens[i], room_list_body("room-list"), pos=positions[i],
                     timeout_ms=30000)
        return time.perf_counter()

    with concurrent.futures.ThreadPoolExecutor(args.connections) as pool:
        futures = [pool.submit(poll, i) for i in range(args.connections)]
        time.sleep(3)
        if any(f.done() for f in futures):
            raise RuntimeError(f"{name}: a long poll returned before any news")
        rss_polling = fj.status_mib(pid, "VmRSS")
        anon_polling = fj.status_mib(pid, "RssAnon")
        mapped_polling = rss_by_mapping(pid)
        sent = time.perf_counter()
        # A new transaction ID each round: the same one again would be answered with the
        # first round's event, which wakes nobody.
        txn = secrets.token_hex()
        wake = f"/_matrix/client/v3/rooms/{fj.q(rooms[0])}/send/m.room.message/{txn}"
        client.call("PUT", wake, {"msgtype": "m.text", "body": "wake up"}, token=alice)
        woken = max(f.result() for f in futures)
    return {
        "server": name,
        "cold_first_ms": first[0]["wall_ms"],
        "first": first[1:],
        "first_kept_alive": first_kept_alive,
        "incremental": incremental,
        "rss_idle_mib": rss_idle,
        "rss_before_connections_mib": rss_before,
        "rss_connected_mib": rss_connected,
        "rss_polling_mib": rss_polling,
        "anon_idle_mib": anon_idle,
        "anon_polling_mib": anon_polling,
        "rss_polling_by_mapping_mib": mapped_polling,
        "touched_by_requests_mib": touched,
        "wake_all_ms": (woken - sent) * 1000,
    }


# Set-up, not what is measured, must not wait for rate limits: the two other members are invited
# to 500 rooms the user creates, and the 50 connections are 50 password logins of one account.
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


def start(name: str, args, directory: Path, port: int, ca_file: Path):
    if name == "appliance":
        return fj.start_appliance(Path(args.appliance), directory, port, ca_file, BENCH_NO_LIMITS)
    return fj.start_synapse(directory, port, ca_file, BENCH_NO_LIMITS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--appliance", help="the appliance's release binary")
    parser.add_argument("--work", default="/tmp/sliding-sync-bench", help="scratch directory")
    parser.add_argument("--rooms", type=int, default=500)
    parser.add_argument("--messages", type=int, default=4, help="messages per room")
    parser.add_argument("--requests", type=int, default=20, help="requests per measurement")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=4, help="requests in flight when filling")
    parser.add_argument("--only", choices=["appliance", "synapse"], help="one server only")
    parser.add_argument("--json-out")
    args = parser.parse_args()
    names = [args.only] if args.only else ["appliance", "synapse"]
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    ca_file = work / "ca.pem"
    ca, ca_key = fj.make_ca(work)
    servers = {}
    if "appliance" in names and not args.appliance:
        parser.error("--appliance is needed (except with --only synapse)")
    for name in names:
        directory = work / f"{name}-{args.rooms}x{args.messages}"
        facts_file = directory / "facts.json"
        port = fj.free_port()
        fj.make_leaf(ca, ca_key, directory)
        if facts_file.exists():
            facts = json.loads(facts_file.read_text())
            port = facts["port"]
        else:
            fj.log(f"filling {name}: {args.rooms} rooms x {args.messages} messages")
            process = start(name, args, directory, port, ca_file)
            try:
                facts = fill(args, fj.Client(port, ca_file))
            finally:
                fj.stop(process)
            facts["port"] = port
            facts_file.write_text(json.dumps(facts))
        servers[name] = (directory, facts)

    rounds = []
    for i in range(args.rounds):
        order = names if i % 2 == 0 else names[::-1]
        fj.log(f"round {i + 1}/{args.rounds}: {' then '.join(order)}")
        for name in order:
            directory, facts = servers[name]
            process = start(name, args, directory, facts["port"], ca_file)
            try:
                rounds.append(measure(args, name, process, fj.Client(facts["port"], ca_file),
                                      facts))
            finally:
                fj.stop(process)

    def median(server: str, section: str, key: str) -> float:
        values = [m[key] for r in rounds if r["server"] == server for m in r[section]]
        # /proc counts CPU in ticks of 10 ms: one request's CPU is 0, 10 or 20 ms, so the CPU
        # per request is the mean over all of them (the ticks fall where the work is).
        return statistics.fmean(values) if key == "cpu_ms" else statistics.median(values)

    def median_of(server: str, key: str) -> float:
        return statistics.median(r[key] for r in rounds if r["server"] == server)

    summary = {}
    for section in ("first", "first_kept_alive", "incremental"):
        for key in ("wall_ms", "cpu_ms"):
            summary[f"{section}_{key}"] = {s: median(s, section, key) for s in names}
    for key in ("cold_first_ms", "rss_idle_mib", "rss_before_connections_mib",
                "rss_connected_mib", "rss_polling_mib", "anon_idle_mib", "anon_polling_mib",
                "wake_all_ms"):
        summary[key] = {s: median_of(s, key) for s in names}
    result = {"rooms": args.rooms, "messages": args.messages, "connections": args.connections,
              "rounds": rounds, "median": summary}
    text = json.dumps(result)
    if args.json_out:
        Path(args.json_out).write_text(text + "\n")
    for key, values in summary.items():
        figures = ", ".join(f"{server} {value:.2f}" for server, value in values.items())
        if len(values) == 2 and values["appliance"]:
            figures += f" (synapse/appliance {values['synapse'] / values['appliance']:.1f}x)"
        print(f"{key}: {figures}")
    print(text)


if __name__ == "__main__":
    main()
