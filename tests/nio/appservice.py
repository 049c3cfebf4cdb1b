"""A small bridge built with mautrix-python (the framework of the mautrix bridges) against the
appliance, through the registration file the test wrote (tests/nio_client.rs, `appservice`).

Usage: appservice.py PHASE BASE_URL STATE_FILE

STATE_FILE (JSON, written by the test) holds the bridge's port and tokens, alice's token and
room, and what this phase must see. Phases:
  live     the bridge starts, registers its bot and a ghost through
           m.login.application_service, the ghost joins alice's room; a message of alice
           reaches the bridge in a transaction, one of the ghost (sent as the ghost with
           `user_id`) reaches alice; alice's typing, read receipt and presence reach the
           bridge as ephemeral events, and a to-device message of alice to a device of the
           ghost as one (MSC2409); the registration has no `org.matrix.msc3202`, so no device
           list change, one-time key count or fallback key type comes with them; then the
           bridge stops.
  catchup  the bridge starts again (after the appliance was restarted with events and a
           to-device message queued for it, and with `org.matrix.msc3202: true` added to the
           registration) and must get `expect` (alice's messages sent while it was down) in
           order and the to-device message, then a message sent now; then (MSC3202) a new
           device of alice as a device list change, and the one-time key counts and fallback
           key types of the ghost's device after it uploads keys.
"""

import asyncio
import json
import sys
import time

import aiohttp
from mautrix.appservice import AppService
from mautrix.appservice.state_store.file import FileASStateStore
from mautrix.types import EventType, UserID

DOMAIN = "test.local"
GHOST = UserID(f"@bridge_bob:{DOMAIN}")
GHOST_DEVICE = "GHOSTDEV"
TIMEOUT = 90


def check(condition, what):
    if not condition:
        raise AssertionError(what)
    print(f"ok: {what}", flush=True)


async def wait_for(what, predicate):
    deadline = time.monotonic() + TIMEOUT
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)
    print(f"ok: {what}", flush=True)


async def client(session, base, method, path, token, body=None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with session.request(method, base + path, json=body, headers=headers) as response:
        return response.status, await response.json()


def ghost_keys(first, count):
    """`count` one-time keys and a fallback key for the ghost's device (not checked by the
    server: only clients verify them)."""
    def key(n):
        return {
            "key": f"{n:043d}",
            "signatures": {GHOST: {f"ed25519:{GHOST_DEVICE}": "c2ln"}},
        }
    return {
        "one_time_keys": {
            f"signed_curve25519:K{n}": key(n) for n in range(first, first + count)
        },
        "fallback_keys": {"signed_curve25519:F1": {**key(0), "fallback": True}},
    }


async def main():
    phase, base, state_file = sys.argv[1], sys.argv[2], sys.argv[3]
    state = json.load(open(state_file))
    appservice = AppService(
        server=base,
        domain=DOMAIN,
        as_token=state["as_token"],
        hs_token=state["hs_token"],
        bot_localpart="bridgebot",
        id="testbridge",
        state_store=FileASStateStore(state["store"], binary=False),
        ephemeral_events=True,
        encryption_events=True,
    )
    # What the bridge relays: every message of the room, in the order the transactions bring
    # them.
    seen = []
    # Ephemeral events (MSC2409): (type, room, what) of typing users and receipts.
    ephemeral = []

    @appservice.matrix_event_handler
    async def on_event(event):
        if event.type == EventType.ROOM_MESSAGE:
            seen.append((event.sender, event.content.body))
        elif event.type.t == "m.typing":
            ephemeral.append(("m.typing", event.room_id, tuple(event.content.user_ids)))
        elif event.type.t == "m.presence":
            ephemeral.append(("m.presence", event.sender, event.content.presence.value))
        elif event.type.t == "m.receipt":
            for event_id, receipts in event.serialize()["content"].items():
                for users in receipts.values():
                    for user in users:
                        ephemeral.append(("m.receipt", event.room_id, (event_id, user)))

    # Queries: the bridge makes a ghost or a portal room when the appliance asks about one.
    async def query_user(user_id):
        if user_id != UserID(f"@bridge_carol:{DOMAIN}"):
            return None
        ghost = appservice.intent.user(user_id)
        await ghost.ensure_registered()
        await ghost.set_displayname("Carol (bridged)")
        # mautrix answers 404 for an empty (falsy) answer.
        return {"created": True}

    async def query_alias(alias):
        if alias != f"#bridge_lobby:{DOMAIN}":
            return None
        await appservice.intent.create_room(alias_localpart="bridge_lobby", is_direct=False)
        return {"created": True}

    appservice.query_user = query_user
    appservice.query_alias = query_alias

    # Encryption data (MSC2409 to-device, MSC3202), as mautrix hands it to a bridge; the keys
    # mautrix does not read itself stay in `extra_data` (fallback key types).
    to_device, device_lists, otk_counts, extra = [], [], [], []

    async def on_to_device(event):
        to_device.append(event.serialize())

    async def on_device_lists(lists):
        device_lists.append(lists)

    async def on_otk_counts(counts):
        otk_counts.append(counts)

    handle_transaction = appservice.handle_transaction

    async def recording_handle_transaction(txn_id, **kwargs):
        extra.append(dict(kwargs["extra_data"]))
        return await handle_transaction(txn_id, **kwargs)

    appservice.to_device_handler = on_to_device
    appservice.device_list_handler = on_device_lists
    appservice.otk_handler = on_otk_counts
    appservice.handle_transaction = recording_handle_transaction
    as_token = state["as_token"]
    as_ghost_device = f"?user_id={GHOST}&org.matrix.msc3202.device_id={GHOST_DEVICE}"
    await appservice.start(host="127.0.0.1", port=state["port"])
    room, alice = state["room"], state["alice_token"]
    try:
        async with aiohttp.ClientSession() as session:
            if phase == "live":
                took = await appservice.ping_self("live-ping")
                check(took >= 0, f"the bridge pings itself through the appliance ({took} ms)")
                bot = appservice.intent
                await bot.ensure_registered()
                ghost = bot.user(GHOST)
                await ghost.ensure_registered()
                whoami = await ghost.whoami()
                check(whoami.user_id == GHOST, "the ghost acts as itself through user_id")
                mxc = await ghost.upload_media(b"bridged file", mime_type="text/plain")
                check(mxc.startswith("mxc://"), "the ghost uploads media as itself")
                status, _ = await client(
                    session, base, "POST", f"/_matrix/client/v3/rooms/{room}/invite", alice,
                    {"user_id": GHOST},
                )
                check(status == 200, "alice invites the ghost")
                await ghost.join_room_by_id(room)
                status, profile = await client(
                    session, base, "GET",
                    f"/_matrix/client/v3/profile/@bridge_carol:{DOMAIN}", alice,
                )
                check(
                    status == 200 and profile.get("displayname") == "Carol (bridged)",
                    f"a profile lookup makes the bridge create its ghost ({status} {profile})",
                )
                status, lobby = await client(
                    session, base, "GET",
                    f"/_matrix/client/v3/directory/room/%23bridge_lobby:{DOMAIN}", alice,
                )
                check(
                    status == 200 and lobby["room_id"].startswith("!"),
                    f"an alias lookup makes the bridge create its portal ({status} {lobby})",
                )
                status, _ = await client(
                    session, base, "PUT",
                    f"/_matrix/client/v3/rooms/{room}/send/m.room.message/live1", alice,
                    {"msgtype": "m.text", "body": "hello bridge"},
                )
                check(status == 200, "alice sends a message")
                await wait_for(
                    "the bridge gets alice's message in a transaction",
                    lambda: (state["alice"], "hello bridge") in seen,
                )
                event_id = await ghost.send_text(room, "hello from the other side")
                status, messages = await client(
                    session, base, "GET",
                    f"/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=5", alice,
                )
                bodies = [
                    (e["sender"], e["content"].get("body"))
                    for e in messages["chunk"]
                    if e["type"] == "m.room.message"
                ]
                check(
                    (GHOST, "hello from the other side") in bodies,
                    "alice sees the ghost's message",
                )
                status, _ = await client(
                    session, base, "PUT",
                    f"/_matrix/client/v3/rooms/{room}/typing/{state['alice']}", alice,
                    {"typing": True, "timeout": 30000},
                )
                check(status == 200, "alice types")
                await wait_for(
                    "the bridge gets alice's typing",
                    lambda: ("m.typing", room, (state["alice"],)) in ephemeral,
                )
                status, _ = await client(
                    session, base, "POST",
                    f"/_matrix/client/v3/rooms/{room}/receipt/m.read/{event_id}", alice, {},
                )
                check(status == 200, "alice reads the ghost's message")
                await wait_for(
                    "the bridge gets alice's read receipt",
                    lambda: ("m.receipt", room, (event_id, state["alice"])) in ephemeral,
                )
                status, _ = await client(
                    session, base, "PUT",
                    f"/_matrix/client/v3/presence/{state['alice']}/status", alice,
                    {"presence": "unavailable"},
                )
                check(status == 200, "alice sets her presence")
                await wait_for(
                    "the bridge gets alice's presence (she shares a room with its ghost)",
                    lambda: ("m.presence", state["alice"], "unavailable") in ephemeral,
                )

                # A device of the ghost, as bridges that encrypt make them.
                status, login = await client(
                    session, base, "POST", "/_matrix/client/v3/login", as_token,
                    {
                        "type": "m.login.application_service",
                        "identifier": {"type": "m.id.user", "user": GHOST},
                        "device_id": GHOST_DEVICE,
                    },
                )
                check(status == 200, f"the ghost gets a device ({status} {login})")
                status, _ = await client(
                    session, base, "PUT",
                    "/_matrix/client/v3/sendToDevice/org.example.bridge.test/td1", alice,
                    {"messages": {GHOST: {GHOST_DEVICE: {"hello": "ghost device"}}}},
                )
                check(status == 200, "alice sends a to-device message to the ghost's device")
                await wait_for(
                    "the bridge gets it with its recipient (MSC2409)",
                    lambda: any(
                        m["type"] == "org.example.bridge.test"
                        and m["sender"] == state["alice"]
                        and m["to_user_id"] == GHOST
                        and m["to_device_id"] == GHOST_DEVICE
                        and m["content"] == {"hello": "ghost device"}
                        for m in to_device
                    ),
                )
                status, uploaded = await client(
                    session, base, "POST", "/_matrix/client/v3/keys/upload" + as_ghost_device,
                    as_token, ghost_keys(1, 1),
                )
                check(
                    status == 200
                    and uploaded["one_time_key_counts"]["signed_curve25519"] == 1,
                    f"the ghost's device uploads keys as itself ({status} {uploaded})",
                )
                status, _ = await client(
                    session, base, "POST", "/_matrix/client/v3/login", None,
                    {
                        "type": "m.login.password",
                        "identifier": {"type": "m.id.user", "user": state["alice"]},
                        "password": state["alice_password"],
                    },
                )
                check(status == 200, "alice logs in a new device")
                status, _ = await client(
                    session, base, "PUT",
                    f"/_matrix/client/v3/rooms/{room}/send/m.room.message/live2", alice,
                    {"msgtype": "m.text", "body": "after the keys"},
                )
                await wait_for(
                    "a message sent after them arrives",
                    lambda: (state["alice"], "after the keys") in seen,
                )
                check(
                    not device_lists
                    and not otk_counts
                    and not any(k.startswith("org.matrix.msc3202") for e in extra for k in e),
                    "without org.matrix.msc3202, no device lists, key counts or fallback keys",
                )
            elif phase == "catchup":
                expected = [(state["alice"], body) for body in state["expect"]]
                await wait_for(
                    "the messages queued while the bridge was down arrive",
                    lambda: [m for m in seen if m in expected] == expected,
                )
                check(
                    [m for m in seen if m in expected] == expected,
                    "in the order they were sent",
                )
                await wait_for(
                    "and the to-device message sent to the ghost's device meanwhile",
                    lambda: any(m["content"] == {"hello": "while down"} for m in to_device),
                )
                status, _ = await client(
                    session, base, "PUT",
                    f"/_matrix/client/v3/rooms/{room}/send/m.room.message/after", alice,
                    {"msgtype": "m.text", "body": "after the catch-up"},
                )
                check(status == 200, "alice sends another message")
                await wait_for(
                    "a new message follows",
                    lambda: (state["alice"], "after the catch-up") in seen,
                )

                # MSC3202, now in the registration.
                status, _ = await client(
                    session, base, "POST", "/_matrix/client/v3/login", None,
                    {
                        "type": "m.login.password",
                        "identifier": {"type": "m.id.user", "user": state["alice"]},
                        "password": state["alice_password"],
                    },
                )
                check(status == 200, "alice logs in another device")
                await wait_for(
                    "the bridge gets alice's device list change (she shares a room with a ghost)",
                    lambda: any(state["alice"] in lists.changed for lists in device_lists),
                )
                status, uploaded = await client(
                    session, base, "POST", "/_matrix/client/v3/keys/upload" + as_ghost_device,
                    as_token, ghost_keys(2, 2),
                )
                check(
                    status == 200
                    and uploaded["one_time_key_counts"]["signed_curve25519"] == 3,
                    f"the ghost's device uploads more keys ({status} {uploaded})",
                )
                status, _ = await client(
                    session, base, "PUT",
                    f"/_matrix/client/v3/rooms/{room}/send/m.room.message/e2ee", alice,
                    {"msgtype": "m.text", "body": "counted"},
                )
                check(status == 200, "alice sends a message to the ghost's room")
                await wait_for(
                    "its transaction counts the ghost device's one-time keys",
                    lambda: any(
                        counts.get(GHOST, {}).get(GHOST_DEVICE) is not None
                        and counts[GHOST][GHOST_DEVICE].signed_curve25519 == 3
                        for counts in otk_counts
                    ),
                )
                fallback = "org.matrix.msc3202.device_unused_fallback_key_types"
                check(
                    any(
                        e.get(fallback, {}).get(GHOST, {}).get(GHOST_DEVICE)
                        == ["signed_curve25519"]
                        for e in extra
                    ),
                    "and lists its unused fallback key type",
                )
            else:
                raise SystemExit(f"unknown phase {phase}")
    finally:
        await appservice.stop()


asyncio.run(main())
