#!/usr/bin/env python3
"""code_order.py - writes packaging/symbol-order.txt, the order in which the linker places the
functions of the appliance's release binary.

Why: the kernel maps a program's code page by page as it runs, and 64 KiB around each page it
faults in. Left in the compiler's order, the functions that start-up and requests run are spread
over the whole 24 MB of code, so the process ends up with ~20 MiB of its code resident although it
runs ~4 MiB of it. Placed together at the front (lld's `--symbol-ordering-file`, passed by
`build.rs` for x86_64 release builds), they fill ~7 MiB (BENCHMARKS.md, "Element X", session 14).
Nothing else changes: the same functions, only their addresses.

How: the release binary, with its symbols, runs under Valgrind's callgrind while a training run
speaks to it over loopback (start-up; Element X's sliding sync: the room list, an incremental
answer, long polls; an Element Web session over `/sync`: messages, state, profile, keys, to-device,
receipts, typing, account data, media; registration and password log-in; a room on a second
appliance joined over federation, a message each way). Every function of the binary that ran is
listed: first those of start-up, then those each phase of the training ran for the first time
(the account's filling, Element X, Element Web, federation), the most executed first within a
phase.

Symbol names carry a hash of the toolchain and the dependencies' versions, so after a rustc
upgrade or a Cargo.lock change the list stops matching (the binary still works; its code is just
spread again): run this again, e.g.
  target/synapse-venv/bin/python benches/code_order.py            # builds, trains, writes
  target/synapse-venv/bin/python benches/code_order.py --check     # how much of the list matches
It needs `valgrind` and the Python of the benches (`cryptography`, as in target/synapse-venv).
"""

from __future__ import annotations

import argparse
import collections
import http.client
import json
import os
import re
import secrets
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import federation_join as fj  # noqa: E402  (CA, server start/stop, the JSON client)
import sliding_sync as ss  # noqa: E402  (filling an account, Element X's room list)

ROOT = Path(__file__).resolve().parent.parent
ORDER_FILE = ROOT / "packaging" / "symbol-order.txt"


def build_with_symbols() -> Path:
    """The release binary exactly as `cargo build --release` makes it (same crates, same
    symbol names), but not stripped: `cargo rustc` passes `-C strip=none` to the last crate
    only, which changes neither its hash nor anyone else's."""
    fj.log("building the release binary with its symbols")
    subprocess.run(
        ["cargo", "rustc", "--release", "--locked", "--bin", "appliance", "--",
         "-C", "strip=none"], cwd=ROOT, check=True)
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    return (target if target.is_absolute() else ROOT / target) / "release" / "appliance"


def function_addresses(binary: Path) -> dict[str, int]:
    out = subprocess.run(["nm", str(binary)], capture_output=True, text=True, check=True).stdout
    return {p[2]: int(p[0], 16) for p in (line.split() for line in out.splitlines())
            if len(p) == 3 and p[1] in "tT"}


def function_symbols(binary: Path) -> set[str]:
    return set(function_addresses(binary))


def raw_call(client: fj.Client, method: str, path: str, data: bytes, token: str,
             content_type: str) -> bytes:
    """A request whose body or answer is not JSON (media)."""
    connection = http.client.HTTPSConnection("localhost", client.port, context=client.context,
                                             timeout=600)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": content_type}
    try:
        connection.request(method, path, body=data, headers=headers)
        response = connection.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"{method} {path}: {response.status} {body[:200]!r}")
        return body
    finally:
        connection.close()


def element_web_session(client: fj.Client, facts: dict) -> None:
    """What Element Web does in a session, over the classic `/sync`."""
    bench, alice, room = facts["bench"], facts["alice"], facts["rooms"][0]
    v3 = "/_matrix/client/v3"
    for path in ("/_matrix/client/versions", f"{v3}/capabilities", f"{v3}/pushrules/",
                 f"{v3}/account/whoami", f"{v3}/joined_rooms", f"{v3}/devices",
                 f"{v3}/publicRooms", f"{v3}/voip/turnServer", f"/_matrix/client/v1/media/config"):
        try:
            client.call("GET", path, token=bench)
        except RuntimeError:
            pass  # e.g. no TURN configured: the error path is part of the session too
    whoami = client.call("GET", f"{v3}/account/whoami", token=bench)
    user, device = whoami["user_id"], whoami.get("device_id")
    filter_id = client.call("POST", f"{v3}/user/{fj.q(user)}/filter", {
        "room": {"state": {"lazy_load_members": True}, "timeline": {"limit": 20}}},
        token=bench)["filter_id"]
    first = client.call("GET", f"{v3}/sync?filter={filter_id}&timeout=0", token=bench)
    since = first["next_batch"]
    client.call("GET", f"{v3}/profile/{fj.q(user)}", token=bench)
    client.call("PUT", f"{v3}/profile/{fj.q(user)}/displayname", {"displayname": "Bench"},
                token=bench)
    client.call("GET", f"{v3}/rooms/{fj.q(room)}/state", token=bench)
    client.call("GET", f"{v3}/rooms/{fj.q(room)}/members", token=bench)
    client.call("GET", f"{v3}/rooms/{fj.q(room)}/messages?dir=b&limit=30", token=bench)
    client.call("PUT", f"{v3}/user/{fj.q(user)}/account_data/im.vector.setting",
                {"theme": "dark"}, token=bench)
    client.call("PUT", f"{v3}/rooms/{fj.q(room)}/typing/{fj.q(user)}",
                {"typing": True, "timeout": 5000}, token=bench)
    keys = {"device_keys": {"user_id": user, "device_id": device,
                            "algorithms": ["m.olm.v1.curve25519-aes-sha2"],
                            "keys": {f"curve25519:{device}": "x" * 43,
                                     f"ed25519:{device}": "y" * 43}},
            "one_time_keys": {f"signed_curve25519:K{i}": {"key": "z" * 43} for i in range(5)}}
    try:
        client.call("POST", f"{v3}/keys/upload", keys, token=bench)
    except RuntimeError:
        pass  # unsigned keys are refused: the refusal runs the checks all the same
    client.call("POST", f"{v3}/keys/query", {"device_keys": {user: []}}, token=bench)
    client.call("POST", f"{v3}/keys/claim",
                {"one_time_keys": {user: {device: "signed_curve25519"}}}, token=bench)
    client.call("PUT", f"{v3}/sendToDevice/m.room_key_request/{secrets.token_hex(6)}",
                {"messages": {user: {"*": {"action": "request_cancellation"}}}}, token=alice)
    uri = json.loads(raw_call(
        client, "POST", "/_matrix/media/v3/upload?filename=a.txt", b"hello " * 1000, bench,
        "text/plain"))["content_uri"]
    server, media = uri[len("mxc://"):].split("/", 1)
    raw_call(client, "GET", f"/_matrix/client/v1/media/download/{fj.q(server)}/{fj.q(media)}",
             b"", bench, "text/plain")
    for k in range(3):
        event = client.call(
            "PUT", f"{v3}/rooms/{fj.q(room)}/send/m.room.message/web{k}{secrets.token_hex(4)}",
            {"msgtype": "m.text", "body": f"from alice {k}"}, token=alice)["event_id"]
        reply = client.call("GET", f"{v3}/sync?filter={filter_id}&timeout=30000&since="
                            f"{urllib.parse.quote(since)}", token=bench, timeout=600)
        since = reply["next_batch"]
        client.call("POST", f"{v3}/rooms/{fj.q(room)}/receipt/m.read/{fj.q(event)}", {},
                    token=bench)
        client.call("POST", f"{v3}/rooms/{fj.q(room)}/read_markers",
                    {"m.fully_read": event, "m.read": event}, token=bench)
    client.call("POST", f"{v3}/logout", {}, token=ss.login(client, "bench"))


def wait_for_message(client: fj.Client, token: str, room: str, body: str) -> None:
    """Until `body` is among the room's latest messages as `token`'s user reads them."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        chunk = client.call("GET", f"/_matrix/client/v3/rooms/{fj.q(room)}/messages?dir=b"
                            "&limit=10", token=token)["chunk"]
        if any(e.get("content", {}).get("body") == body for e in chunk):
            return
        time.sleep(0.5)
    raise RuntimeError(f"{body!r} did not arrive in {room}")


def federation_session(client: fj.Client, facts: dict, other: fj.Client, server: str) -> None:
    """A room on another server (a second appliance, not under callgrind): joined over
    federation, then a message each way."""
    _, remote = ss.register(other, "remote")
    room = other.call("POST", "/_matrix/client/v3/createRoom",
                      {"preset": "public_chat", "name": "Elsewhere"}, token=remote)["room_id"]
    client.call("POST", f"/_matrix/client/v3/join/{fj.q(room)}?server_name={fj.q(server)}", {},
                token=facts["bench"], timeout=600)
    other.call("PUT", f"/_matrix/client/v3/rooms/{fj.q(room)}/send/m.room.message/r1",
               {"msgtype": "m.text", "body": "from the other server"}, token=remote)
    wait_for_message(client, facts["bench"], room, "from the other server")
    client.call("PUT", f"/_matrix/client/v3/rooms/{fj.q(room)}/send/m.room.message/l1",
                {"msgtype": "m.text", "body": "from the trained one"}, token=facts["bench"])
    wait_for_message(other, remote, room, "from the trained one")


def train(binary: Path, work: Path) -> list[Path]:
    """Runs the training under callgrind, one profile per phase (start-up, filling an account,
    Element X, Element Web, federation): each holds only what ran in that phase."""
    wrapper = work / "under-callgrind"
    out = work / "callgrind.out"
    wrapper.write_text(
        "#!/bin/sh\nexec valgrind --tool=callgrind --demangle=no --dump-instr=no "
        f"--callgrind-out-file={out} {binary} \"$@\"\n")
    wrapper.chmod(0o755)
    ca, ca_key = fj.make_ca(work)
    ca_file = work / "ca.pem"
    directory = work / "appliance"
    fj.make_leaf(ca, ca_key, directory)
    port = fj.free_port()
    fj.log("starting the appliance under callgrind (about 50x slower)")
    process = fj.start_appliance(wrapper, directory, port, ca_file, ss.BENCH_NO_LIMITS)

    def end_of_phase(name: str) -> None:
        # Writes what ran since the last dump to <out>.<n> and starts counting again.
        subprocess.run(["callgrind_control", f"--dump={name}", str(process.pid)],
                       check=True, capture_output=True)

    try:
        client = fj.Client(port, ca_file)
        client.call("GET", "/_matrix/client/versions")
        end_of_phase("start-up")
        args = argparse.Namespace(rooms=25, messages=3, threads=2, requests=3, connections=5)
        fj.log("training: filling an account")
        facts = ss.fill(args, client)
        end_of_phase("filling")
        fj.log("training: Element X's sliding sync")
        ss.measure(args, "appliance", process, client, facts)
        end_of_phase("element-x")
        fj.log("training: an Element Web session over /sync")
        element_web_session(client, facts)
        end_of_phase("element-web")
        fj.log("training: a room on another server, over federation")
        other_directory = work / "other"
        fj.make_leaf(ca, ca_key, other_directory)
        other_port = fj.free_port()
        other = fj.start_appliance(binary, other_directory, other_port, ca_file,
                                   ss.BENCH_NO_LIMITS)
        try:
            federation_session(client, facts, fj.Client(other_port, ca_file),
                               f"localhost:{other_port}")
        finally:
            fj.stop(other)
    finally:
        fj.stop(process)
    # The dumps are <out>.1, <out>.2, … in the order asked; the last phase is <out> itself,
    # written at exit.
    profiles = sorted(work.glob("callgrind.out*"),
                      key=lambda p: int(p.suffix[1:]) if p.suffix[1:].isdigit() else 1 << 30)
    if len(profiles) != 5:
        raise SystemExit(f"callgrind wrote {len(profiles)} profiles, not 5: {profiles}")
    return profiles


def executed_functions(profile: Path, binary: Path) -> list[str]:
    """The binary's functions that ran in one profile, the most executed (own instructions)
    first."""
    names: dict[str, str] = {}
    objects: dict[str, str] = {}
    object_of: dict[str, str] = {}
    cost: collections.Counter = collections.Counter()
    entry = re.compile(r"^(ob|fn|cob|cfn)=\((\d+)\)(?: (.*))?$")
    current_object = current_function = None
    after_calls = False
    for line in profile.read_text().splitlines():
        match = entry.match(line)
        if match:
            kind, ident, name = match.groups()
            if kind in ("ob", "cob") and name:
                objects[ident] = name
            if kind in ("fn", "cfn") and name:
                names[ident] = name
            if kind == "ob":
                current_object = ident
            elif kind == "fn":
                current_function = ident
                object_of[ident] = current_object
            continue
        if line.startswith("calls="):
            after_calls = True  # the next cost line is the call's, not the function's own
        elif line[:1].isdigit() and current_function is not None:
            if not after_calls:
                cost[current_function] += int(line.split()[1])
            after_calls = False
    ours = [i for i, o in object_of.items() if objects.get(o) == str(binary) and cost[i] > 0]
    ours.sort(key=lambda i: (-cost[i], names[i]))
    defined = function_symbols(binary)
    return [names[i] for i in ours if names[i] in defined]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--binary", type=Path,
                        help="a release binary with symbols (default: build one)")
    parser.add_argument("--check", action="store_true",
                        help="only report how much of the list the binary has, and whether "
                        "it is linked in the list's order")
    parser.add_argument("--out", type=Path, default=ORDER_FILE)
    args = parser.parse_args()
    binary = (args.binary or build_with_symbols()).resolve()
    defined = function_symbols(binary)
    if not defined:
        raise SystemExit(f"{binary} has no symbols: build it with `-C strip=none`")
    if args.check:
        listed = [n for n in args.out.read_text().splitlines() if n]
        addresses = function_addresses(binary)
        placed = [addresses[n] for n in listed if n in addresses]
        # A few cannot move alone (assembly files with several functions in one section), so
        # the order shows as the share of neighbours in the list that are in address order
        # (about half in a binary linked without the list).
        in_order = sum(b > a for a, b in zip(placed, placed[1:])) / max(len(placed) - 1, 1)
        print(f"{len(placed)} of {len(listed)} listed functions are in {binary} "
              f"({100 * len(placed) / len(listed):.0f} %); {100 * in_order:.1f} % of them follow "
              "the list's order" + ("" if in_order > 0.95 else
                                    ": NOT linked in the list's order (was it passed to lld?)"))
        return
    with tempfile.TemporaryDirectory(prefix="code-order-") as work:
        # Start-up's functions first, then those each later phase ran for the first time: the
        # pages start-up touches are not mixed with those of requests, and a server used only by
        # Element X does not map the code only Element Web's calls run, or the other way round.
        order: list[str] = []
        seen: set[str] = set()
        for profile in train(binary, Path(work)):
            for name in executed_functions(profile, binary):
                if name not in seen:
                    seen.add(name)
                    order.append(name)
    args.out.write_text("".join(f"{name}\n" for name in order))
    fj.log(f"{len(order)} functions written to {args.out}")


if __name__ == "__main__":
    main()
