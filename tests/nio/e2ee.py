#!/usr/bin/env python3
"""matrix-nio with end-to-end encryption against the appliance.

Alice and Bob, each on a nio client with encryption (vodozemac), share an encrypted room: nio
uploads device and one-time keys, queries and claims them, shares Megolm sessions over Olm
to-device messages, and each decrypts the other's messages. Alice then backs her room keys up
on the server (`m.megolm_backup.v1.curve25519-aes-sha2`) and a third device of hers, logged in
later, cannot read the history until it restores the keys from that backup. nio has no key-backup
support, so the backup is written and read here with plain HTTP calls and vodozemac's PK
encryption (what Element's crypto uses for the same algorithm). Last, Bob's client learns of the
new device from /sync's device_lists and shares his next session with it too.

Usage: e2ee.py HOMESERVER_URL   (exit status 0 when every check held)
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import nio
import vodozemac
from nio.crypto import InboundGroupSession

from niocheck import Checks, ensure, expect, expect_equal, main
from niocrypto import e2e_sync, send_text, sync_until, texts_in

BACKUP_ALGORITHM = "m.megolm_backup.v1.curve25519-aes-sha2"


async def http(
    t: Checks, client: nio.AsyncClient, method: str, path: str, body: Any = None
) -> tuple[int, Any]:
    """A plain client-server API call with the client's access token."""
    async with aiohttp.ClientSession() as session:
        async with session.request(
            method,
            f"{t.homeserver}/_matrix/client/v3{path}",
            headers={"Authorization": f"Bearer {client.access_token}"},
            json=body,
        ) as reply:
            return reply.status, await reply.json()


def decrypted_texts(events: list) -> list[str]:
    return [e.body for e in events if isinstance(e, nio.RoomMessageText)]


async def history(client: nio.AsyncClient, room_id: str, since: str) -> list:
    """The room's events back from `since`, as nio gives them (decrypted where it can)."""
    response = expect(
        await client.room_messages(room_id, start=since, limit=50),
        nio.RoomMessagesResponse,
        "room_messages",
    )
    return response.chunk


async def scenario(t: Checks) -> None:
    alice = await t.register("e2e-alice")
    bob = await t.register("e2e-bob")
    a = await t.login(alice, "alice's first device", encryption=True)
    b = await t.login(bob, "bob's device", encryption=True)
    for client, who in ((a, "alice"), (b, "bob")):
        await e2e_sync(client, f"{who}'s first sync")
        ensure(not client.should_upload_keys, f"{who}'s keys are not uploaded")
    t.ok("both nio clients uploaded device and one-time keys")

    created = expect(
        await a.room_create(
            name="secret",
            invite=[bob.user_id],
            initial_state=[
                {
                    "type": "m.room.encryption",
                    "state_key": "",
                    "content": {"algorithm": "m.megolm.v1.aes-sha2"},
                }
            ],
        ),
        nio.RoomCreateResponse,
        "room_create",
    )
    room_id = created.room_id
    await sync_until(b, "the invite", lambda r: room_id in r.rooms.invite)
    expect(await b.join(room_id), nio.JoinResponse, "bob joins")
    await sync_until(b, "the joined room", lambda r: room_id in r.rooms.join)
    await sync_until(
        a, "bob's join", lambda r: bob.user_id in a.rooms[room_id].users
    )
    ensure(a.rooms[room_id].encrypted, "nio does not see the room as encrypted")
    t.ok("alice and bob are in an encrypted room")

    await e2e_sync(a, "before sending")
    await send_text(a, room_id, "hello bob, this is encrypted")
    seen = await sync_until(
        b,
        "alice's encrypted message",
        lambda r: "hello bob, this is encrypted" in texts_in(r, room_id),
    )
    ensure(bool(seen), "bob did not decrypt")
    t.ok("bob decrypted alice's message (Megolm session shared over Olm to-device)")

    await e2e_sync(b, "before replying")
    await send_text(b, room_id, "hi alice, encrypted too")
    await sync_until(
        a,
        "bob's encrypted reply",
        lambda r: "hi alice, encrypted too" in texts_in(r, room_id),
    )
    t.ok("alice decrypted bob's reply")

    # The messages are ciphertext on the server.
    status, raw = await http(t, a, "GET", f"/rooms/{room_id}/messages?dir=b&limit=20")
    expect_equal(status, 200, "raw /messages")
    kinds = {e["type"] for e in raw["chunk"]}
    ensure("m.room.encrypted" in kinds, f"no m.room.encrypted events on the server: {kinds}")
    ensure(
        "hello bob" not in json.dumps(raw) and "hi alice" not in json.dumps(raw),
        "plaintext found on the server",
    )
    t.ok("the server stores only ciphertext")

    # Alice backs her room keys up, encrypted to a backup key only she holds.
    # Like Element, the device signs the backup's auth_data so that other devices can trust it.
    backup_key = vodozemac.PkDecryption()
    public_key = backup_key.public_key.to_base64()
    auth_data: dict[str, Any] = {"public_key": public_key}
    auth_data["signatures"] = {alice.user_id: {f"ed25519:{a.device_id}": a.olm.sign_json(auth_data)}}
    status, body = await http(
        t,
        a,
        "POST",
        "/room_keys/version",
        {"algorithm": BACKUP_ALGORITHM, "auth_data": auth_data},
    )
    expect_equal(status, 200, f"create backup version: {body}")
    version = body["version"]
    encryptor = vodozemac.PkEncryption.from_key(vodozemac.Curve25519PublicKey.from_base64(public_key))
    rooms: dict[str, Any] = {}
    sessions = list(a.olm.inbound_group_store)
    ensure(len(sessions) >= 2, f"alice should hold her and bob's sessions, has {len(sessions)}")
    for session in sessions:
        plaintext = {
            "algorithm": "m.megolm.v1.aes-sha2",
            "sender_key": session.sender_key,
            "sender_claimed_keys": {"ed25519": session.ed25519},
            "forwarding_curve25519_key_chain": session.forwarding_chain,
            "session_key": session.export_session(session.first_known_index),
        }
        ephemeral, mac, ciphertext = encryptor.encrypt(json.dumps(plaintext).encode()).to_base64()
        rooms.setdefault(session.room_id, {"sessions": {}})["sessions"][session.id] = {
            "first_message_index": session.first_known_index,
            "forwarded_count": 0,
            "is_verified": False,
            "session_data": {"ephemeral": ephemeral, "ciphertext": ciphertext, "mac": mac},
        }
    status, body = await http(t, a, "PUT", f"/room_keys/keys?version={version}", {"rooms": rooms})
    expect_equal(status, 200, f"upload backup: {body}")
    expect_equal(body["count"], len(sessions), "backup count")
    t.ok(f"alice backed up {len(sessions)} room keys (version {version}, etag {body['etag']})")

    # A new device of alice's: the history is unreadable until it restores the backup.
    a3 = await t.login(alice, "alice's new device", encryption=True)
    first = await e2e_sync(a3, "alice's new device")
    ensure(room_id in first.rooms.join, "the new device does not see the room")
    end = first.next_batch
    before = await history(a3, room_id, end)
    ensure(
        not decrypted_texts(before),
        f"the new device read history without keys: {decrypted_texts(before)}",
    )
    ensure(
        any(isinstance(e, nio.MegolmEvent) for e in before),
        "no undecryptable events before the restore",
    )
    t.ok("alice's new device cannot read the history yet")

    status, info = await http(t, a3, "GET", "/room_keys/version")
    expect_equal(status, 200, f"backup version from the new device: {info}")
    expect_equal(info["version"], version, "current backup version")
    expect_equal(info["auth_data"]["public_key"], public_key, "backup public key")
    # The new device trusts the backup: signed by alice's first device, whose keys it queried in
    # its first sync.
    signer = a3.device_store[alice.user_id][a.device_id]
    ensure(
        a3.olm.verify_json(dict(info["auth_data"]), signer.ed25519, alice.user_id, a.device_id),
        "the backup's auth_data signature does not verify with alice's device key",
    )
    status, backup = await http(t, a3, "GET", f"/room_keys/keys?version={info['version']}")
    expect_equal(status, 200, "download backup")
    restored = 0
    for backup_room, room_backup in backup["rooms"].items():
        for session_id, key in room_backup["sessions"].items():
            data = key["session_data"]
            message = vodozemac.Message.from_base64(data["ciphertext"], data["mac"], data["ephemeral"])
            plaintext = json.loads(backup_key.decrypt(message))
            session = InboundGroupSession.import_session(
                plaintext["session_key"],
                plaintext["sender_claimed_keys"]["ed25519"],
                plaintext["sender_key"],
                backup_room,
                plaintext["forwarding_curve25519_key_chain"],
            )
            expect_equal(session.id, session_id, "restored session id")
            a3.olm.inbound_group_store.add(session)
            a3.olm.save_inbound_group_session(session)
            restored += 1
    expect_equal(restored, len(sessions), "restored sessions")
    after = await history(a3, room_id, end)
    texts = decrypted_texts(after)
    for expected in ("hello bob, this is encrypted", "hi alice, encrypted too"):
        ensure(expected in texts, f"{expected!r} not readable after the restore: {texts}")
    t.ok("alice's new device restored the keys from the backup and reads both messages")

    # Bob's client learns of the new device from device_lists and shares his next session
    # with it: the new device reads it without any backup.
    await sync_until(
        b,
        "alice's new device in bob's device list",
        lambda r: any(
            d.id == a3.device_id for d in b.device_store.active_user_devices(alice.user_id)
        ),
    )
    await send_text(b, room_id, "new session for all of alice's devices")
    await sync_until(
        a3,
        "bob's message on the new device",
        lambda r: "new session for all of alice's devices" in texts_in(r, room_id),
    )
    t.ok("bob's client saw alice's new device via device_lists and the new device decrypted")


if __name__ == "__main__":
    main(scenario, __doc__.splitlines()[0])
