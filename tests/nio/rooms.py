#!/usr/bin/env python3
"""matrix-nio against the appliance: rooms, messages and sync.

Two users: Alice creates a room and invites Bob, who sees the invite in his sync and joins;
they exchange messages both ways, each seeing the other's in sync; Bob pages back through the
history with room_messages; Alice redacts a message and Bob sees the redaction; Alice types
and Bob sees it; Bob sends a read receipt and Alice sees it. The invite shows the inviter's
name; Bob's per-room display name (his own member event sent as state) reaches Alice.

Usage: rooms.py HOMESERVER_URL   (exit status 0 when every check held)
"""

from __future__ import annotations

import time

import nio

from niocheck import CheckFailed, Checks, ensure, expect, expect_equal, main

ROOM_NAME = "Nio room \N{CRAB}"


async def sync_until(client: nio.AsyncClient, what: str, done, timeout_s: float = 20.0):
    """Syncs (long-polling) until `done(response)` holds; returns that response."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        response = expect(
            await client.sync(timeout=2000, full_state=False),
            nio.SyncResponse,
            f"sync while waiting for {what}",
        )
        if done(response):
            return response
    raise CheckFailed(f"{what}: not seen in sync within {timeout_s}s")


def timeline(response: nio.SyncResponse, room_id: str) -> list:
    room = response.rooms.join.get(room_id)
    return list(room.timeline.events) if room else []


def texts(events) -> list[str]:
    return [e.body for e in events if isinstance(e, nio.RoomMessageText)]


async def scenario(t: Checks) -> None:
    alice = await t.register("nio-alice")
    bob = await t.register("nio-bob")
    a, b = alice.client, bob.client
    # First syncs, so that later ones are incremental.
    expect(await a.sync(timeout=0), nio.SyncResponse, "alice's first sync")
    expect(await b.sync(timeout=0), nio.SyncResponse, "bob's first sync")
    expect(await a.set_displayname("Alice Nio"), nio.ProfileSetDisplayNameResponse, "name")
    expect(await b.set_displayname("Bob Nio"), nio.ProfileSetDisplayNameResponse, "name")
    t.ok("two users registered, named and synced")

    created = expect(
        await a.room_create(name=ROOM_NAME, topic="testing nio", invite=[bob.user_id]),
        nio.RoomCreateResponse,
        "room_create",
    )
    room_id = created.room_id
    t.ok(f"alice created {room_id} inviting bob")

    await sync_until(b, "the invite", lambda r: room_id in r.rooms.invite)
    ensure(room_id in b.invited_rooms, f"nio does not list {room_id} as invited: {b.invited_rooms}")
    invited = b.invited_rooms[room_id]
    expect_equal(invited.name, ROOM_NAME, "room name in the invite")
    expect_equal(invited.inviter, alice.user_id, "inviter of the invite")
    expect_equal(invited.user_name(alice.user_id), "Alice Nio", "inviter's name in the invite")
    expect_equal(invited.user_name(bob.user_id), "Bob Nio", "invitee's name in the invite")
    t.ok("bob sees the invite with the room's and the inviter's names")

    expect(await b.join(room_id), nio.JoinResponse, "bob joins")
    await sync_until(b, "the joined room", lambda r: room_id in r.rooms.join)
    room = b.rooms[room_id]
    expect_equal(room.name, ROOM_NAME, "room name after joining")
    expect_equal(room.topic, "testing nio", "room topic after joining")
    ensure(alice.user_id in room.users, f"alice not among the members: {list(room.users)}")
    t.ok("bob joined and has the room's state")
    await sync_until(
        a,
        "bob's join",
        lambda r: any(
            isinstance(e, nio.RoomMemberEvent) and e.state_key == bob.user_id
            for e in timeline(r, room_id)
        ),
    )
    ensure(bob.user_id in a.rooms[room_id].users, "alice does not see bob as a member")
    t.ok("alice sees bob's join")

    # Messages both ways.
    async def send(client: nio.AsyncClient, body: str) -> str:
        response = expect(
            await client.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": body}),
            nio.RoomSendResponse,
            f"send {body!r}",
        )
        return response.event_id

    hello = await send(a, "hello bob")
    await sync_until(b, "alice's message", lambda r: "hello bob" in texts(timeline(r, room_id)))
    await send(b, "hi alice")
    seen = await sync_until(a, "bob's reply", lambda r: "hi alice" in texts(timeline(r, room_id)))
    reply = [e for e in timeline(seen, room_id) if isinstance(e, nio.RoomMessageText)][-1]
    expect_equal(reply.sender, bob.user_id, "sender of the reply")
    t.ok("messages both ways arrive through sync")

    # Pagination: Bob pages back through history from his sync position.
    bodies = [f"history {i}" for i in range(15)]
    for body in bodies:
        await send(a, body)
    await sync_until(b, "the history", lambda r: "history 14" in texts(timeline(r, room_id)))
    collected: list[str] = []
    token = b.next_batch
    for _ in range(20):
        page = expect(
            await b.room_messages(room_id, start=token, limit=4),
            nio.RoomMessagesResponse,
            "room_messages",
        )
        collected.extend(texts(page.chunk))
        if not page.end or not page.chunk:
            break
        token = page.end
    expect_equal(
        list(reversed(collected)),
        ["hello bob", "hi alice", *bodies],
        "history paged back with room_messages",
    )
    forward = expect(
        await b.room_messages(room_id, start=page.start, direction=nio.MessageDirection.front, limit=3),
        nio.RoomMessagesResponse,
        "room_messages forwards",
    )
    ensure(len(forward.chunk) <= 3, "room_messages forwards: more than the limit")
    t.ok(f"room_messages pages back through {len(collected)} messages in order")

    # Redaction.
    redacted = expect(
        await a.room_redact(room_id, hello, reason="oops"),
        nio.RoomRedactResponse,
        "room_redact",
    )
    seen = await sync_until(
        b,
        "the redaction",
        lambda r: any(isinstance(e, nio.RedactionEvent) for e in timeline(r, room_id)),
    )
    redaction = [e for e in timeline(seen, room_id) if isinstance(e, nio.RedactionEvent)][0]
    expect_equal(redaction.redacts, hello, "redacts of the redaction event")
    expect_equal(redaction.event_id, redacted.event_id, "redaction event ID")
    expect_equal(redaction.reason, "oops", "redaction reason")
    page = expect(
        await b.room_messages(room_id, start=b.next_batch, limit=50),
        nio.RoomMessagesResponse,
        "room_messages after the redaction",
    )
    gone = [e for e in page.chunk if e.event_id == hello]
    ensure(len(gone) == 1, f"redacted event missing from history: {page.chunk}")
    ensure(
        isinstance(gone[0], nio.RedactedEvent),
        f"the redacted message is not a RedactedEvent: {gone[0]!r}",
    )
    ensure("hello bob" not in texts(page.chunk), "redacted text still in history")
    t.ok("a redaction reaches the other user and strips the message")

    # Typing.
    expect(await a.room_typing(room_id, True, timeout=30000), nio.RoomTypingResponse, "typing")
    await sync_until(b, "alice typing", lambda r: alice.user_id in b.rooms[room_id].typing_users)
    expect(await a.room_typing(room_id, False), nio.RoomTypingResponse, "stop typing")
    await sync_until(b, "alice stopped typing", lambda r: not b.rooms[room_id].typing_users)
    t.ok("bob sees alice typing, then stopping")

    # Read receipts.
    last = await send(a, "read me")
    await sync_until(b, "the message to read", lambda r: "read me" in texts(timeline(r, room_id)))
    expect(
        await b.room_read_markers(room_id, fully_read_event=last, read_event=last),
        nio.RoomReadMarkersResponse,
        "room_read_markers",
    )
    await sync_until(
        a,
        "bob's read receipt",
        lambda r: (receipt := a.rooms[room_id].read_receipts.get(bob.user_id)) is not None
        and receipt.event_id == last,
    )
    t.ok("alice sees bob's read receipt")
    expect(
        await b.update_receipt_marker(room_id, last),
        nio.UpdateReceiptMarkerResponse,
        "update_receipt_marker (thread main)",
    )
    await sync_until(
        a,
        "bob's threaded receipt",
        lambda r: a.rooms[room_id].threaded_read_receipts.get(bob.user_id, {}).get("main")
        is not None,
    )
    t.ok("alice sees bob's receipt on the main thread")

    # A per-room display name: Bob's own member event, sent as state (Element's /myroomnick).
    expect(
        await b.room_put_state(
            room_id,
            "m.room.member",
            {"membership": "join", "displayname": "Bob in here"},
            state_key=bob.user_id,
        ),
        nio.RoomPutStateResponse,
        "per-room display name",
    )
    await sync_until(
        a, "bob's per-room name", lambda r: a.rooms[room_id].user_name(bob.user_id) == "Bob in here"
    )
    t.ok("alice sees bob's per-room display name")

    # Leaving.
    expect(await b.room_leave(room_id), nio.RoomLeaveResponse, "bob leaves")
    await sync_until(b, "the leave", lambda r: room_id in r.rooms.leave)
    await sync_until(a, "bob's leave", lambda r: bob.user_id not in a.rooms[room_id].users)
    t.ok("bob left; both sides see it")


if __name__ == "__main__":
    main(scenario, __doc__.splitlines()[0])
