#!/usr/bin/env python3
"""federation_e2ee_media.py - E2EE fan-out and remote media across servers, appliance vs Synapse.

Servers on loopback, each `localhost:<port>` with a certificate from a CA made here (the helpers
of `federation_join.py`, imported: CA, `start_synapse`, `start_appliance`, CPU seconds and peak
RSS from /proc):

* **B**: one Synapse for the whole run, the *remote side*: it holds the 50 receiving devices
  (`--users` users x `--devices` devices, each with signed device keys and `--otks` signed
  one-time keys uploaded through `/keys/upload`) and it is the *origin* of the remote media.
* **A**: the sender's homeserver, fresh for each round: the appliance (`--appliance`, a release
  binary) and a Synapse (same venv as B), one after the other (never both running), alternating
  which goes first (`--only` runs one of them). B has no login rate limits and cheap password
  hashing: its 50 logins per first message are set-up, not measured.

**E2EE first message** (per A): a user on A creates an encrypted room (`m.room.encryption` in
its initial state), invites the users of B, who join through B. Then the sender's client does
what an Olm/Megolm client does before its first message, driven as plain HTTP (no real Olm:
ciphertexts are random base64 of realistic sizes; the servers never look inside them):
`POST /keys/query` for B's users, `POST /keys/claim` of one `signed_curve25519` key per device,
one `PUT /sendToDevice/m.room.encrypted` with 50 messages (the room key, one per device), then
`PUT /rooms/{room}/send/m.room.encrypted`. Measured: each request's time at the client
(`query_s`, `claim_s`, `to_device_s`, `send_s`, `client_total_s`), the time until all 50
to-device messages and the room message are in the `/sync` of B's devices (`delivered_s`,
polled, so coarse), and A's CPU seconds over the whole thing (utime + stime of its process,
until delivery). A's cache of B's device lists is cold: each of the `--senders` first messages
per A has its own sender, room and 50 new devices on B, which A has never queried.

**Remote media** (per A): B's user uploads a small (`--small-kib`) and a big (`--big-mib`) file
of random bytes to B. A's user downloads each once through A
(`GET /_matrix/client/v1/media/download/<B>/<id>`: A fetches it from B over federation and
caches it: `cold_*`), then `--downloads` times more (cached) on one kept-alive connection: median
and p90 latency of the small file, MiB/s of the big one, and A's CPU milliseconds per download
(per MiB for the big file). Every download is checked by SHA-256.

Run with the Synapse venv's interpreter (it has Synapse and `cryptography`), e.g.
  target/synapse-venv/bin/python benches/federation_e2ee_media.py \
      --appliance target/release/appliance --json-out /tmp/e2ee-media.json
Results: one JSON object on stdout's last line (and `--json-out`); progress on stderr.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import http.client
import json
import secrets
import statistics
import sys
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

sys.path.insert(0, str(Path(__file__).resolve().parent))
import federation_join as fj  # noqa: E402  (the shared helpers: CA, servers, /proc)

log, q = fj.log, fj.q
OLM = "m.olm.v1.curve25519-aes-sha2"
MEGOLM = "m.megolm.v1.aes-sha2"


def b64(data: bytes) -> str:
    """Unpadded standard base64, as Matrix keys and signatures are written."""
    return base64.b64encode(data).decode().rstrip("=")


def canonical(value) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def signed(value: dict, user: str, device: str, key: Ed25519PrivateKey) -> dict:
    """`value` with its ed25519 signature by `user`'s `device` (over canonical JSON)."""
    signature = b64(key.sign(canonical(value)))
    return {**value, "signatures": {user: {f"ed25519:{device}": signature}}}


def upload_keys(client: fj.Client, token: str, user: str, device: str, otks: int) -> None:
    """Signed device keys and `otks` signed one-time keys for one device, as a client would."""
    key = Ed25519PrivateKey.generate()
    ed25519 = b64(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))
    device_keys = signed(
        {"user_id": user, "device_id": device, "algorithms": [OLM, MEGOLM],
         "keys": {f"curve25519:{device}": b64(secrets.token_bytes(32)),
                  f"ed25519:{device}": ed25519}},
        user, device, key,
    )
    one_time = {
        f"signed_curve25519:{b64(i.to_bytes(4, 'big'))}":
            signed({"key": b64(secrets.token_bytes(32))}, user, device, key)
        for i in range(otks)
    }
    reply = client.call("POST", "/_matrix/client/v3/keys/upload",
                        {"device_keys": device_keys, "one_time_keys": one_time}, token=token)
    if reply.get("one_time_key_counts", {}).get("signed_curve25519") != otks:
        raise RuntimeError(f"{device}: one-time keys not counted: {reply}")


def login(client: fj.Client, user: str, password: str) -> tuple[str, str]:
    reply = client.call("POST", "/_matrix/client/v3/login", {
        "type": "m.login.password", "identifier": {"type": "m.id.user", "user": user},
        "password": password, "initial_device_display_name": "bench"})
    return reply["device_id"], reply["access_token"]


def sync(client: fj.Client, token: str, since: str | None = None, timeout_ms: int = 0) -> dict:
    path = f"/_matrix/client/v3/sync?timeout={timeout_ms}"
    if since:
        path += f"&since={q(since)}"
    return client.call("GET", path, token=token, timeout=120)


def wait_for(what: str, check, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.2)


# ---- E2EE: the first message into an encrypted room with 50 remote devices ----


def remote_devices(args, b: fj.Client, tag: str) -> list[dict]:
    """`--users` users on B with `--devices` devices each, keys uploaded, each with its token."""
    devices = []
    for u in range(args.users):
        password = secrets.token_hex(12)
        reply = b.call("POST", "/_matrix/client/v3/register", {
            "username": f"bob{tag}{u}", "password": password,
            "auth": {"type": "m.login.dummy"}, "initial_device_display_name": "bench"})
        user = reply["user_id"]
        logins = [(reply["device_id"], reply["access_token"])]
        logins += [login(b, user, password) for _ in range(args.devices - 1)]
        for device, token in logins:
            upload_keys(b, token, user, device, args.otks)
            devices.append({"user": user, "device": device, "token": token})
    return devices


def measure_e2ee(args, name: str, process, a: fj.Client, b: fj.Client, b_process) -> dict:
    tag = secrets.token_hex(3)
    a.token = None  # /register refuses a token
    sender, token = fj.register(a, f"alice{tag}")
    a.token = token
    devices = remote_devices(args, b, tag)
    users = sorted({d["user"] for d in devices})
    room_id = a.call("POST", "/_matrix/client/v3/createRoom", {
        "preset": "private_chat", "invite": users,
        "initial_state": [{"type": "m.room.encryption", "state_key": "",
                           "content": {"algorithm": MEGOLM}}]})["room_id"]
    firsts = {}
    for d in devices:
        if d["user"] not in firsts:
            firsts[d["user"]] = d
            wait_for(f"{d['user']}'s invite", lambda d=d: room_id in sync(
                b, d["token"]).get("rooms", {}).get("invite", {}))
            b.call("POST", f"/_matrix/client/v3/join/{q(room_id)}", {}, token=d["token"])

    def all_joined() -> bool:
        joined = a.call("GET", f"/_matrix/client/v3/rooms/{q(room_id)}/joined_members")["joined"]
        return len(joined) == len(users) + 1

    wait_for("B's users in the room on A", all_joined)
    for d in devices:
        d["since"] = sync(b, d["token"])["next_batch"]
    time.sleep(3)  # let A finish what the joins started (device list fetches, presence)

    ciphertext_olm = b64(secrets.token_bytes(680))  # an Olm pre-key message with a room key
    session_id = b64(secrets.token_bytes(32))
    sender_key = b64(secrets.token_bytes(32))
    cpu_before, b_cpu_before = fj.cpu_seconds(process.pid), fj.cpu_seconds(b_process.pid)
    started = time.monotonic()
    queried = a.call("POST", "/_matrix/client/v3/keys/query",
                     {"device_keys": {u: [] for u in users}, "timeout": 10000})
    query_s = time.monotonic() - started
    found = sum(len(queried.get("device_keys", {}).get(u, {})) for u in users)
    if found != len(devices):
        raise RuntimeError(f"{name}: /keys/query found {found} devices: {queried}")
    claimed = a.call("POST", "/_matrix/client/v3/keys/claim", {"one_time_keys": {
        u: {d["device"]: "signed_curve25519" for d in devices if d["user"] == u} for u in users},
        "timeout": 10000})
    claim_s = time.monotonic() - started - query_s
    got = sum(len(claimed.get("one_time_keys", {}).get(u, {})) for u in users)
    if got != len(devices):
        raise RuntimeError(f"{name}: /keys/claim gave {got} keys: {claimed}")
    messages = {u: {} for u in users}
    for d in devices:
        messages[d["user"]][d["device"]] = {
            "algorithm": OLM, "sender_key": sender_key,
            "ciphertext": {b64(secrets.token_bytes(32)): {"type": 0, "body": ciphertext_olm}}}
    mark = time.monotonic()
    a.call("PUT", f"/_matrix/client/v3/sendToDevice/m.room.encrypted/td{tag}",
           {"messages": messages})
    to_device_s = time.monotonic() - mark
    mark = time.monotonic()
    a.call("PUT", f"/_matrix/client/v3/rooms/{q(room_id)}/send/m.room.encrypted/m{tag}", {
        "algorithm": MEGOLM, "sender_key": sender_key, "session_id": session_id,
        "device_id": "SENDER", "ciphertext": b64(secrets.token_bytes(200))})
    send_s = time.monotonic() - mark
    client_total_s = time.monotonic() - started

    # Delivery at B: every device's to-device message, and the room message (one device's
    # timeline: B stores the event once for all). Polled with timeout=0 round-robin.
    pending = {d["device"]: d for d in devices}
    room_seen = False
    while pending or not room_seen:
        for device, d in list(pending.items()):
            reply = sync(b, d["token"], d["since"])
            d["since"] = reply["next_batch"]
            if any(e.get("sender") == sender and e.get("type") == "m.room.encrypted"
                   for e in reply.get("to_device", {}).get("events", [])):
                del pending[device]
            timeline = reply.get("rooms", {}).get("join", {}).get(room_id, {}).get("timeline", {})
            if any(e.get("type") == "m.room.encrypted" and e.get("sender") == sender
                   for e in timeline.get("events", [])):
                room_seen = True
        if not room_seen:
            d = devices[0]
            reply = sync(b, d["token"], d["since"], 500)
            d["since"] = reply["next_batch"]
            timeline = reply.get("rooms", {}).get("join", {}).get(room_id, {}).get("timeline", {})
            room_seen = any(e.get("type") == "m.room.encrypted" for e in timeline.get("events", []))
        if time.monotonic() - started > 120:
            raise RuntimeError(f"{name}: not delivered: {len(pending)} devices, room {room_seen}")
    delivered_s = time.monotonic() - started
    result = {
        "server": name, "devices": len(devices),
        "query_s": round(query_s, 4), "claim_s": round(claim_s, 4),
        "to_device_s": round(to_device_s, 4), "send_s": round(send_s, 4),
        "client_total_s": round(client_total_s, 4), "delivered_s": round(delivered_s, 3),
        "cpu_s": round(fj.cpu_seconds(process.pid) - cpu_before, 3),
        "b_cpu_s": round(fj.cpu_seconds(b_process.pid) - b_cpu_before, 3),
    }
    log(f"  e2ee {name}: {result}")
    return result


# ---- remote media: cached downloads through A of a file on B ----


class Raw:
    """Byte downloads over one kept-alive HTTPS connection."""

    def __init__(self, client: fj.Client, token: str) -> None:
        self.connection = http.client.HTTPSConnection(
            "localhost", client.port, context=client.context, timeout=300)
        self.token = token

    def get(self, path: str) -> bytes:
        self.connection.request("GET", path, headers={"Authorization": f"Bearer {self.token}"})
        response = self.connection.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"GET {path}: {response.status} {body[:200]!r}")
        return body


def upload(b: fj.Client, token: str, data: bytes) -> str:
    connection = http.client.HTTPSConnection("localhost", b.port, context=b.context, timeout=300)
    connection.request("POST", "/_matrix/media/v3/upload?filename=bench.bin", body=data,
                       headers={"Authorization": f"Bearer {token}",
                                "Content-Type": "application/octet-stream"})
    response = connection.getresponse()
    reply = json.loads(response.read())
    connection.close()
    if response.status != 200:
        raise RuntimeError(f"upload: {response.status} {reply}")
    return reply["content_uri"]


def measure_media(args, name: str, process, a: fj.Client, files: dict) -> dict:
    a.token = None  # /register refuses a token
    _, token = fj.register(a, f"viewer{secrets.token_hex(2)}")
    raw = Raw(a, token)
    result = {"server": name}
    for label, (uri, digest, size) in files.items():
        path = "/_matrix/client/v1/media/download/" + uri.removeprefix("mxc://")
        started = time.monotonic()
        if hashlib.sha256(raw.get(path)).hexdigest() != digest:
            raise RuntimeError(f"{name}: {label} differs from the origin's")
        result[f"cold_{label}_s"] = round(time.monotonic() - started, 4)
        times = []
        cpu_before = fj.cpu_seconds(process.pid)
        for _ in range(args.downloads):
            started = time.monotonic()
            body = raw.get(path)
            times.append(time.monotonic() - started)
            if len(body) != size:
                raise RuntimeError(f"{name}: {label}: {len(body)} bytes")
        if hashlib.sha256(body).hexdigest() != digest:
            raise RuntimeError(f"{name}: cached {label} differs from the origin's")
        cpu = fj.cpu_seconds(process.pid) - cpu_before
        times.sort()
        result[f"cached_{label}_median_ms"] = round(1000 * statistics.median(times), 2)
        result[f"cached_{label}_p90_ms"] = round(1000 * times[int(0.9 * (len(times) - 1))], 2)
        result[f"cached_{label}_mib_s"] = round(len(times) * size / 2**20 / sum(times), 1)
        result[f"cached_{label}_cpu_ms_per_download"] = round(1000 * cpu / len(times), 3)
        result[f"cached_{label}_cpu_ms_per_mib"] = round(
            1000 * cpu / (len(times) * size / 2**20), 3)
    result["peak_rss_mib"] = round(fj.peak_rss_mib(process.pid), 1)
    log(f"  media {name}: {result}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--appliance", required=True, help="the appliance's release binary")
    parser.add_argument("--work", default="/tmp/federation-e2ee-media", help="scratch directory")
    parser.add_argument("--users", type=int, default=5, help="users on B")
    parser.add_argument("--devices", type=int, default=10, help="devices per user on B")
    parser.add_argument("--otks", type=int, default=5, help="one-time keys per device")
    parser.add_argument("--senders", type=int, default=3,
                        help="first messages per A (each a new sender, room and 50 devices)")
    parser.add_argument("--small-kib", type=int, default=64)
    parser.add_argument("--big-mib", type=int, default=20)
    parser.add_argument("--downloads", type=int, default=50, help="cached downloads per file")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", choices=["appliance", "synapse"], help="one sender server only")
    parser.add_argument("--json-out")
    args = parser.parse_args()
    machine_load = {"loadavg_start": Path("/proc/loadavg").read_text().split()[:3]}
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    ca_file = work / "ca.pem"
    ca, ca_key = fj.make_ca(work)
    b_dir = work / f"b-{secrets.token_hex(3)}"
    fj.make_leaf(ca, ca_key, b_dir)
    b_port = fj.free_port()
    # Cheap password hashing and no login limits on B: its 50 logins per sender are set-up.
    b_extra = "bcrypt_rounds: 4\n" + "rc_login: {%s}\n" % ", ".join(
        f"{k}: {{per_second: 100000, burst_count: 100000}}"
        for k in ("address", "account", "failed_attempts"))
    b_process = fj.start_synapse(b_dir, b_port, ca_file, b_extra)
    b = fj.Client(b_port, ca_file)
    rounds = []
    try:
        _, b_token = fj.register(b, "origin")
        files = {}
        for label, size in (("small", args.small_kib * 1024), ("big", args.big_mib * 2**20)):
            data = secrets.token_bytes(size)
            files[label] = (upload(b, b_token, data), hashlib.sha256(data).hexdigest(), size)
        for i in range(args.rounds):
            order = ["appliance", "synapse"] if i % 2 == 0 else ["synapse", "appliance"]
            order = [name for name in order if args.only in (None, name)]
            log(f"round {i + 1}/{args.rounds}: {' then '.join(order)}")
            e2ee, media = [], []
            for name in order:
                port = fj.free_port()
                directory = work / f"{name}-{secrets.token_hex(3)}"
                fj.make_leaf(ca, ca_key, directory)
                if name == "appliance":
                    process = fj.start_appliance(Path(args.appliance), directory, port, ca_file)
                else:
                    process = fj.start_synapse(directory, port, ca_file)
                try:
                    a = fj.Client(port, ca_file)
                    for _ in range(args.senders):
                        e2ee.append(measure_e2ee(args, name, process, a, b, b_process))
                    media.append(measure_media(args, name, process, a, files))
                finally:
                    fj.stop(process)
            rounds.append({"e2ee": e2ee, "media": media})
    finally:
        fj.stop(b_process)
    machine_load["loadavg_end"] = Path("/proc/loadavg").read_text().split()[:3]

    def median(server: str, section: str, key: str) -> float:
        return round(statistics.median(
            r[key] for round_ in rounds for r in round_[section] if r["server"] == server), 4)

    def mean(server: str, section: str, key: str) -> float:
        return round(statistics.mean(
            r[key] for round_ in rounds for r in round_[section] if r["server"] == server), 4)

    summary = {}
    for section in ("e2ee", "media"):
        keys = [k for k, v in rounds[0][section][0].items() if isinstance(v, (int, float))]
        for key in keys:
            summary[f"{section}_{key}"] = {
                s: median(s, section, key) for s in order}
    # CPU seconds come in clock ticks (10 ms): the mean over all first messages resolves better.
    summary["e2ee_cpu_s_mean"] = {s: mean(s, "e2ee", "cpu_s") for s in order}
    result = {"senders": args.senders, "users": args.users, "devices_per_user": args.devices,
              "otks": args.otks,
              "small_kib": args.small_kib, "big_mib": args.big_mib,
              "downloads": args.downloads, "rounds": rounds, "median": summary,
              "machine_load": machine_load}
    text = json.dumps(result)
    if args.json_out:
        Path(args.json_out).write_text(text + "\n")
    for key, values in summary.items():
        print(f"{key}: " + ", ".join(f"{s} {v}" for s, v in values.items()))
    print(text)


if __name__ == "__main__":
    main()
