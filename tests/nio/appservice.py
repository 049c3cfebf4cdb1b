"""A small bridge built with mautrix-python (the framework of the mautrix bridges) against the
appliance, through the registration file the test wrote (tests/nio_client.rs, `appservice`).

Usage: appservice.py PHASE BASE_URL STATE_FILE

STATE_FILE (JSON, written by the test) holds the bridge's port and tokens, alice's token and
room, and what this phase must see. Phases:
  live     the bridge starts, registers its bot and a ghost through
           m.login.application_service, the ghost joins alice's room; a message of alice
           reaches the bridge in a transaction, one of the ghost (sent as the ghost with
           `user_id`) reaches alice; alice's typing and read receipt reach the bridge as
           ephemeral events; then the bridge stops.
  catchup  the bridge starts again (after the appliance was restarted with events queued for
           it) and must get `expect` (alice's messages sent while it was down) in order, then
           a message sent now.
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
    async with session.request(
        method, base + path, json=body, headers={"Authorization": f"Bearer {token}"}
    ) as response:
        return response.status, await response.json()


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
            else:
                raise SystemExit(f"unknown phase {phase}")
    finally:
        await appservice.stop()


asyncio.run(main())
