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
  catchup  the bridge starts again, now listening on https (the appliance was restarted with
           the registration's url changed to https, the test CA in SSL_CERT_FILE, events and a
           to-device message queued for it, and `org.matrix.msc3202: true` added to the
           registration) and must get `expect` (alice's messages sent while it was down) in
           order and the to-device message, then a message sent now; then (MSC3202) a new
           device of alice as a device list change, and the one-time key counts and fallback
           key types of the ghost's device after it uploads keys. Then the third-party network
           it declares (`protocols: [testnet]`): alice sees its protocol, users and portal rooms
           through /thirdparty/*, which the appliance asks of the bridge; the bridge lists a
           portal room in its network's room directory, which alice finds with
           `third_party_instance_id`.
"""

import asyncio
import json
import sys
import time

import aiohttp
from mautrix.appservice import AppService
from mautrix.appservice.state_store.file import FileASStateStore
from aiohttp import web
from mautrix.types import EventType, RoomCreatePreset, UserID

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
        tls_cert=state.get("tls_cert"),
        tls_key=state.get("tls_key"),
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

    # The third-party network the bridge declares: what it answers to the appliance's lookups
    # (the Application Service API's /thirdparty/*), and the tokens those came with.
    lookups = []

    def thirdparty(answer):
        async def handler(request):
            lookups.append(request.headers.get("Authorization"))
            if request.headers.get("Authorization") != f"Bearer {state['hs_token']}":
                return web.json_response({"errcode": "M_FORBIDDEN"}, status=403)
            return web.json_response(answer(request))

        return handler

    def protocol(request):
        return {
            "user_fields": ["nick"],
            "location_fields": ["channel"],
            "icon": "mxc://test.local/testnet",
            "field_types": {
                "nick": {"regexp": "[a-z]+", "placeholder": "nick"},
                "channel": {"regexp": "#[a-z]+", "placeholder": "#channel"},
            },
            "instances": [{"desc": "Test network", "network_id": "testnet-1", "fields": {}}],
        }

    def users(request):
        userid = request.query.get("userid", "")
        nick = request.query.get("nick") or userid.split(":")[0].removeprefix("@bridge_")
        return [
            {"userid": f"@bridge_{nick}:{DOMAIN}", "protocol": "testnet", "fields": {"nick": nick}},
            # Invalid (no `userid`): the appliance drops it, as Synapse does.
            {"protocol": "testnet", "fields": {}},
        ]

    def locations(request):
        channel = request.query.get("channel", "lobby")
        return [
            {
                "alias": f"#bridge_{channel}:{DOMAIN}",
                "protocol": "testnet",
                "fields": {"channel": channel},
            }
        ]

    prefix = "/_matrix/app/v1/thirdparty"
    router = appservice.app.router
    router.add_route("GET", prefix + "/protocol/testnet", thirdparty(protocol))
    router.add_route("GET", prefix + "/user/testnet", thirdparty(users))
    router.add_route("GET", prefix + "/user", thirdparty(users))
    router.add_route("GET", prefix + "/location/testnet", thirdparty(locations))
    router.add_route("GET", prefix + "/location", thirdparty(locations))

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

                await third_party(session, base, appservice, state, lookups)
            else:
                raise SystemExit(f"unknown phase {phase}")
    finally:
        await appservice.stop()


async def third_party(session, base, appservice, state, lookups):
    """The bridge's network seen by alice through the appliance."""
    alice, bridge = state["alice_token"], state["as_token"]
    v3 = "/_matrix/client/v3"
    status, protocols = await client(session, base, "GET", v3 + "/thirdparty/protocols", alice)
    instances = protocols.get("testnet", {}).get("instances", [])
    check(
        status == 200
        and [i.get("instance_id") for i in instances] == ["testbridge|testnet-1"]
        and protocols["testnet"]["location_fields"] == ["channel"],
        f"alice sees the bridge's protocol with its instance ({status} {protocols})",
    )
    check(
        lookups and all(token == f"Bearer {state['hs_token']}" for token in lookups),
        "the appliance asked the bridge with the hs_token",
    )
    status, one = await client(session, base, "GET", v3 + "/thirdparty/protocol/testnet", alice)
    check(status == 200 and one["instances"] == instances, f"one protocol ({status} {one})")
    status, unknown = await client(session, base, "GET", v3 + "/thirdparty/protocol/nope", alice)
    check(
        status == 404 and unknown["errcode"] == "M_NOT_FOUND",
        f"an unknown protocol is 404 ({status} {unknown})",
    )
    status, users = await client(
        session, base, "GET", v3 + "/thirdparty/user/testnet?nick=dave", alice
    )
    check(
        status == 200
        and users
        == [{"userid": f"@bridge_dave:{DOMAIN}", "protocol": "testnet", "fields": {"nick": "dave"}}],
        f"a user of the network, the invalid result dropped ({status} {users})",
    )
    status, locations = await client(
        session, base, "GET", v3 + "/thirdparty/location/testnet?channel=lobby", alice
    )
    check(
        status == 200 and [l["alias"] for l in locations] == [f"#bridge_lobby:{DOMAIN}"],
        f"a portal room of the network ({status} {locations})",
    )
    status, by_id = await client(
        session, base, "GET", v3 + f"/thirdparty/user?userid=@bridge_erin:{DOMAIN}", alice
    )
    check(
        status == 200 and [u["fields"] for u in by_id] == [{"nick": "erin"}],
        f"the third-party user behind a ghost ({status} {by_id})",
    )
    status, by_alias = await client(
        session, base, "GET", v3 + f"/thirdparty/location?alias=%23bridge_lobby:{DOMAIN}", alice
    )
    check(status == 200 and len(by_alias) == 1, f"the location of a portal alias ({status})")
    status, none = await client(
        session, base, "GET", v3 + "/thirdparty/location/nope?channel=x", alice
    )
    check(status == 404, f"no portal room of an unknown protocol ({status} {none})")

    # The bridge's own room directory for its network.
    portal = await appservice.intent.create_room(
        preset=RoomCreatePreset.PUBLIC, name="Testnet portal"
    )
    listing = f"{v3}/directory/list/appservice/testnet-1/{portal}"
    status, refused = await client(session, base, "PUT", listing, alice, {"visibility": "public"})
    check(
        status == 403 and refused["errcode"] == "M_FORBIDDEN",
        f"a user cannot edit a bridge's list ({status} {refused})",
    )
    status, _ = await client(session, base, "PUT", listing, bridge, {"visibility": "public"})
    check(status == 200, "the bridge lists its portal in its network's directory")

    async def listed(body):
        status, page = await client(session, base, "POST", v3 + "/publicRooms", alice, body)
        assert status == 200, (status, page)
        return [room["room_id"] for room in page["chunk"]]

    network = {"third_party_instance_id": "testbridge|testnet-1"}
    check(portal in await listed(network), "alice finds the portal in the network's list")
    check(portal not in await listed({}), "not in the server's own list")
    check(portal in await listed({"include_all_networks": True}), "in all the networks' list")
    check(
        portal not in await listed({"third_party_instance_id": "testbridge|other"}),
        "not in another network's list",
    )
    status, _ = await client(session, base, "DELETE", listing, bridge)
    check(status == 200, "the bridge takes the portal off its list")
    check(portal not in await listed(network), "the portal is gone from the network's list")


asyncio.run(main())
