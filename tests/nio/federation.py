#!/usr/bin/env python3
"""matrix-nio on two federating servers: the user's view of a room shared across servers.

Alice is on the first homeserver, Bob on the second. Alice creates a public room with an alias;
Bob joins it by that alias (his server resolves it and joins over federation). Each then sees,
through nio's sync on their own server: the other's messages, an edit and a redaction, Alice's
topic change, Bob's power being raised by Alice (before which his server refuses his name change
and after which it is accepted and reaches Alice), Bob typing, and Bob's read receipt.

Usage: federation.py FIRST_URL SECOND_URL --ca-file CA_PEM   (exit status 0 when every check held)
"""

from __future__ import annotations

import secrets
import time

import nio

from niocheck import CheckFailed, Checks, ensure, expect, expect_equal, main

# Federation round trips (key fetches, make_join/send_join, transactions) take longer than
# anything on one server.
FEDERATION_TIMEOUT_S = 45.0


async def sync_until(client: nio.AsyncClient, what: str, done) -> nio.SyncResponse:
    """Syncs (long-polling) until `done(response)` holds; returns that response."""
    deadline = time.monotonic() + FEDERATION_TIMEOUT_S
    while time.monotonic() < deadline:
        response = expect(
            await client.sync(timeout=2000, full_state=False),
            nio.SyncResponse,
            f"sync while waiting for {what}",
        )
        if done(response):
            return response
    raise CheckFailed(f"{what}: not seen in sync within {FEDERATION_TIMEOUT_S}s")


def timeline(response: nio.SyncResponse, room_id: str) -> list:
    room = response.rooms.join.get(room_id)
    return list(room.timeline.events) if room else []


def texts(events) -> list[str]:
    return [e.body for e in events if isinstance(e, nio.RoomMessageText)]


async def scenario(t: Checks) -> None:
    ensure(len(t.others) == 1, "usage: federation.py FIRST_URL SECOND_URL --ca-file CA_PEM")
    alice = await t.register("nio-alice")
    bob = await t.register("nio-bob", homeserver=t.others[0])
    a, b = alice.client, bob.client
    ensure(
        alice.user_id.split(":", 1)[1] != bob.user_id.split(":", 1)[1],
        f"alice ({alice.user_id}) and bob ({bob.user_id}) are on the same server",
    )
    expect(await a.sync(timeout=0), nio.SyncResponse, "alice's first sync")
    expect(await b.sync(timeout=0), nio.SyncResponse, "bob's first sync")
    t.ok(f"{alice.user_id} and {bob.user_id} registered on their own servers")

    alias_name = f"nio-fed-{secrets.token_hex(4)}"
    created = expect(
        await a.room_create(
            visibility=nio.RoomVisibility.public,
            alias=alias_name,
            name="Across servers",
            preset=nio.RoomPreset.public_chat,
        ),
        nio.RoomCreateResponse,
        "room_create",
    )
    room_id = created.room_id
    alias = f"#{alias_name}:{alice.user_id.split(':', 1)[1]}"
    expect(await b.join(alias), nio.JoinResponse, f"bob joins {alias}")
    await sync_until(b, "the joined room", lambda r: room_id in r.rooms.join)
    expect_equal(b.rooms[room_id].name, "Across servers", "room name on bob's server")
    t.ok(f"bob joined {alias} over federation and has the room's state")
    await sync_until(a, "bob's join", lambda r: bob.user_id in a.rooms[room_id].users)
    t.ok("alice sees bob's join")

    async def send(client: nio.AsyncClient, content: dict) -> str:
        response = expect(
            await client.room_send(room_id, "m.room.message", content),
            nio.RoomSendResponse,
            f"send {content}",
        )
        return response.event_id

    hello = await send(a, {"msgtype": "m.text", "body": "hello from alice"})
    seen = await sync_until(
        b, "alice's message", lambda r: "hello from alice" in texts(timeline(r, room_id))
    )
    message = [e for e in timeline(seen, room_id) if isinstance(e, nio.RoomMessageText)][-1]
    expect_equal(message.event_id, hello, "event ID of alice's message on bob's server")
    reply = await send(b, {"msgtype": "m.text", "body": "hello from bob"})
    await sync_until(a, "bob's message", lambda r: "hello from bob" in texts(timeline(r, room_id)))
    t.ok("messages both ways, with the same event IDs on both servers")

    # An edit (m.replace) made on alice's server reaches bob's.
    edit = await send(
        a,
        {
            "msgtype": "m.text",
            "body": "* hello again",
            "m.new_content": {"msgtype": "m.text", "body": "hello again"},
            "m.relates_to": {"rel_type": "m.replace", "event_id": hello},
        },
    )

    def has_edit(response: nio.SyncResponse) -> bool:
        return any(
            e.event_id == edit
            and e.source["content"].get("m.relates_to", {}).get("event_id") == hello
            for e in timeline(response, room_id)
        )

    await sync_until(b, "alice's edit", has_edit)
    t.ok("an edit reaches the other server with its relation")

    # A redaction made on bob's server reaches alice's.
    redaction = expect(
        await b.room_redact(room_id, reply, reason="typo"),
        nio.RoomRedactResponse,
        "bob redacts his message",
    )
    seen = await sync_until(
        a,
        "bob's redaction",
        lambda r: any(isinstance(e, nio.RedactionEvent) for e in timeline(r, room_id)),
    )
    redacted = [e for e in timeline(seen, room_id) if isinstance(e, nio.RedactionEvent)][0]
    expect_equal(redacted.redacts, reply, "what the redaction redacts")
    expect_equal(redacted.event_id, redaction.event_id, "redaction event ID")
    page = expect(
        await a.room_messages(room_id, start=a.next_batch, limit=50),
        nio.RoomMessagesResponse,
        "alice's history after the redaction",
    )
    ensure("hello from bob" not in texts(page.chunk), "the redacted text is still in history")
    t.ok("a redaction reaches the other server and strips the message there")

    # State both ways, with power levels honoured by both servers.
    expect(
        await a.room_put_state(room_id, "m.room.topic", {"topic": "federated topic"}),
        nio.RoomPutStateResponse,
        "alice sets the topic",
    )
    await sync_until(b, "the topic", lambda r: b.rooms[room_id].topic == "federated topic")
    t.ok("alice's topic change reaches bob")
    refused = await b.room_put_state(room_id, "m.room.name", {"name": "Bob's name"})
    ensure(
        isinstance(refused, nio.ErrorResponse) and refused.status_code == "M_FORBIDDEN",
        f"bob (power 0) set the room name: {refused!r}",
    )
    levels = expect(
        await a.room_get_state_event(room_id, "m.room.power_levels"),
        nio.RoomGetStateEventResponse,
        "alice reads the power levels",
    ).content
    levels.setdefault("users", {})[bob.user_id] = 50
    expect(
        await a.room_put_state(room_id, "m.room.power_levels", levels),
        nio.RoomPutStateResponse,
        "alice raises bob to 50",
    )
    await sync_until(
        b, "bob's new power level", lambda r: b.rooms[room_id].power_levels.get_user_level(
            bob.user_id
        ) == 50
    )
    expect(
        await b.room_put_state(room_id, "m.room.name", {"name": "Bob's name"}),
        nio.RoomPutStateResponse,
        "bob sets the room name once he may",
    )
    await sync_until(a, "bob's room name", lambda r: a.rooms[room_id].name == "Bob's name")
    t.ok("power levels are honoured on both servers: bob may set the name only once raised")

    # Ephemeral events across servers: typing, then a read receipt.
    expect(await b.room_typing(room_id, True, timeout=30000), nio.RoomTypingResponse, "typing")
    await sync_until(a, "bob typing", lambda r: bob.user_id in a.rooms[room_id].typing_users)
    t.ok("alice sees bob typing")
    last = await send(a, {"msgtype": "m.text", "body": "read me"})
    await sync_until(b, "the message to read", lambda r: "read me" in texts(timeline(r, room_id)))
    expect(
        await b.room_read_markers(room_id, fully_read_event=last, read_event=last),
        nio.RoomReadMarkersResponse,
        "bob's read markers",
    )
    await sync_until(
        a,
        "bob's read receipt",
        lambda r: (receipt := a.rooms[room_id].read_receipts.get(bob.user_id)) is not None
        and receipt.event_id == last,
    )
    t.ok("alice sees bob's read receipt")


if __name__ == "__main__":
    main(scenario, __doc__.splitlines()[0])
