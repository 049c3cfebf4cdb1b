#!/usr/bin/env python3
"""matrix-nio with end-to-end encryption on two federating servers.

Alice is on the first homeserver (the appliance), Bob on the second (Synapse), each on a nio
client with encryption (vodozemac). Alice creates an encrypted room and invites Bob; each then
decrypts the other's messages, which needs every E2EE path across servers: keys queried and
one-time keys claimed from the other server, Megolm sessions sent as Olm-encrypted to-device
messages (`m.direct_to_device` EDUs). Keys are claimed across servers by hand as well, and a
server that never answers is reported in `failures` within the request's `timeout`. A new
device of Bob's appears in Alice's device list (an `m.device_list_update` from his server) and
gets the next session; once logged out it disappears. The same the other way: a new device of
Alice's reaches Bob's client and decrypts his next message. Last, cross-signing: each signs a
device of their own with a self-signing key and the other server shows the keys and the
signature; Alice signs Bob's master key with her user-signing key and sees her signature.

Usage: federation_e2ee.py FIRST_URL SECOND_URL --ca-file CA_PEM   (exit status 0 when every check
held)
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, Callable

import aiohttp
import nio
import vodozemac

import niocrypto
from niocheck import CheckFailed, Checks, ensure, expect, expect_equal, main
from niocrypto import e2e_sync, send_text, texts_in

# Federation round trips (key fetches, joins, transactions, device-list resyncs) take longer
# than anything on one server.
FEDERATION_TIMEOUT_S = 60.0


async def sync_until(
    client: nio.AsyncClient, what: str, done: Callable[[nio.SyncResponse], bool]
) -> nio.SyncResponse:
    return await niocrypto.sync_until(client, what, done, timeout_s=FEDERATION_TIMEOUT_S)


async def http(
    t: Checks,
    homeserver: str,
    client: nio.AsyncClient,
    method: str,
    path: str,
    body: Any = None,
    timeout_s: float = 120,
) -> tuple[int, Any]:
    """A plain client-server API call with the client's access token."""
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        async with session.request(
            method,
            f"{homeserver}/_matrix/client/v3{path}",
            headers={"Authorization": f"Bearer {client.access_token}"},
            json=body,
            ssl=t.ssl_context,
        ) as reply:
            return reply.status, await reply.json()


def device_ids(client: nio.AsyncClient, user_id: str) -> set[str]:
    return {d.id for d in client.device_store.active_user_devices(user_id)}


async def exchange(
    sender: nio.AsyncClient,
    receivers: list[nio.AsyncClient],
    room_id: str,
    body: str,
) -> None:
    """`sender` sends `body` encrypted; each of `receivers` syncs until it decrypted it."""
    await e2e_sync(sender, f"before sending {body!r}")
    await send_text(sender, room_id, body)
    for receiver in receivers:
        await sync_until(
            receiver,
            f"{body!r} decrypted on {receiver.user_id} {receiver.device_id}",
            lambda r: body in texts_in(r, room_id),
        )


async def scenario(t: Checks) -> None:
    ensure(len(t.others) == 1, "usage: federation_e2ee.py FIRST_URL SECOND_URL --ca-file CA_PEM")
    synapse = t.others[0]
    alice = await t.register("e2e-fed-alice")
    bob = await t.register("e2e-fed-bob", homeserver=synapse)
    a = await t.login(alice, "alice's phone", encryption=True)
    b = await t.login(bob, "bob's laptop", encryption=True, homeserver=synapse)
    for client, who in ((a, "alice"), (b, "bob")):
        await e2e_sync(client, f"{who}'s first sync")
        ensure(not client.should_upload_keys, f"{who}'s keys are not uploaded")
    t.ok(f"{alice.user_id} and {bob.user_id} uploaded their keys on their own servers")

    created = expect(
        await a.room_create(
            name="secret across servers",
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
    await sync_until(a, "bob's join", lambda r: bob.user_id in a.rooms[room_id].users)
    ensure(a.rooms[room_id].encrypted, "nio does not see the room as encrypted")
    t.ok("alice and bob share an encrypted room across servers")

    # Alice's client fetches Bob's keys through the appliance, claims a one-time key of his
    # device there and sends the Megolm session to it as an m.direct_to_device EDU.
    await sync_until(a, "bob's device", lambda r: b.device_id in device_ids(a, bob.user_id))
    await exchange(a, [b], room_id, "hello bob, from the appliance")
    t.ok("bob (Synapse) decrypted alice's message (keys queried and claimed, to-device sent)")
    await sync_until(b, "alice's device", lambda r: a.device_id in device_ids(b, alice.user_id))
    await exchange(b, [a], room_id, "hi alice, from synapse")
    t.ok("alice (appliance) decrypted bob's reply (Synapse's to-device reached the appliance)")

    # The client API for other servers' users, by hand.
    status, body = await http(
        t, t.homeserver, a, "POST", "/keys/query", {"device_keys": {bob.user_id: []}}
    )
    expect_equal(status, 200, f"/keys/query for bob: {body}")
    ensure(not body.get("failures"), f"failures in /keys/query: {body.get('failures')}")
    keys = body["device_keys"].get(bob.user_id, {}).get(b.device_id)
    ensure(keys is not None, f"bob's device keys not in /keys/query: {json.dumps(body)[:500]}")
    expect_equal(keys["user_id"], bob.user_id, "queried keys' user_id")
    expect_equal(
        keys["keys"][f"ed25519:{b.device_id}"], b.olm.account.identity_keys["ed25519"],
        "bob's ed25519 key as the appliance gives it",
    )
    status, body = await http(
        t,
        t.homeserver,
        a,
        "POST",
        "/keys/claim",
        {"one_time_keys": {bob.user_id: {b.device_id: "signed_curve25519"}}},
    )
    expect_equal(status, 200, f"/keys/claim for bob: {body}")
    ensure(not body.get("failures"), f"failures in /keys/claim: {body.get('failures')}")
    claimed = body["one_time_keys"].get(bob.user_id, {}).get(b.device_id, {})
    ensure(
        any(k.startswith("signed_curve25519:") for k in claimed),
        f"no one-time key of bob's device claimed: {body}",
    )
    status, body = await http(
        t,
        synapse,
        b,
        "POST",
        "/keys/claim",
        {"one_time_keys": {alice.user_id: {a.device_id: "signed_curve25519"}}},
    )
    expect_equal(status, 200, f"Synapse's /keys/claim for alice: {body}")
    ensure(not body.get("failures"), f"failures in Synapse's /keys/claim: {body.get('failures')}")
    claimed = body["one_time_keys"].get(alice.user_id, {}).get(a.device_id, {})
    ensure(
        any(k.startswith("signed_curve25519:") for k in claimed),
        f"Synapse claimed no one-time key of alice's device from the appliance: {body}",
    )
    t.ok("one-time keys claimed across servers, both ways, without failures")

    # A server that accepts connections and never answers: within the request's `timeout` it
    # is named in `failures`, and Synapse's answer about Bob is still there.
    silent = await asyncio.start_server(lambda reader, writer: None, "127.0.0.1", 0)
    silent_server = f"localhost:{silent.sockets[0].getsockname()[1]}"
    try:
        for path, body, field in (
            (
                "/keys/query",
                {"device_keys": {bob.user_id: [], f"@nobody:{silent_server}": []}, "timeout": 2000},
                "device_keys",
            ),
            (
                "/keys/claim",
                {
                    "one_time_keys": {
                        bob.user_id: {b.device_id: "signed_curve25519"},
                        f"@nobody:{silent_server}": {"DEVICE": "signed_curve25519"},
                    },
                    "timeout": 2000,
                },
                "one_time_keys",
            ),
        ):
            # Well under the 60 s a request to another server may take: the 2 s must count.
            status, answer = await http(t, t.homeserver, a, "POST", path, body, timeout_s=30)
            expect_equal(status, 200, f"{path} with a silent server: {answer}")
            failure = answer.get("failures", {}).get(silent_server)
            ensure(failure is not None, f"{path}: the silent server is not in failures: {answer}")
            ensure(isinstance(failure.get("status"), int), f"{path}: failure without status")
            ensure(bob.user_id in answer[field], f"{path}: bob's keys missing beside a failure")
    finally:
        silent.close()
    t.ok("a silent server is reported in failures within the timeout, the others' keys kept")

    # A new device of Bob's: Synapse tells the appliance (m.device_list_update), Alice's sync
    # says Bob's list changed, and her next session goes to the new device too.
    b2 = await t.login(bob, "bob's phone", encryption=True, homeserver=synapse)
    await e2e_sync(b2, "bob's new device")
    await sync_until(
        a,
        "bob's new device in alice's list",
        lambda r: b2.device_id in device_ids(a, bob.user_id),
    )
    t.ok("bob's new device appeared to alice (device-list update across servers)")
    await exchange(a, [b2, b], room_id, "for both of bob's devices")
    t.ok("bob's new device decrypted alice's next message")

    # ... and once it is logged out (deleted), it disappears from Alice's list.
    gone = b2.device_id
    expect(await b2.logout(), nio.LogoutResponse, "bob's phone logs out")
    await sync_until(
        a,
        "bob's deleted device gone from alice's list",
        lambda r: gone not in device_ids(a, bob.user_id),
    )
    ensure(b.device_id in device_ids(a, bob.user_id), "bob's remaining device vanished too")
    t.ok("bob's deleted device disappeared from alice's list")

    # The other way: a new device of Alice's reaches Bob's client through Synapse.
    a2 = await t.login(alice, "alice's laptop", encryption=True)
    await e2e_sync(a2, "alice's new device")
    await sync_until(
        b,
        "alice's new device in bob's list",
        lambda r: a2.device_id in device_ids(b, alice.user_id),
    )
    t.ok("alice's new device appeared to bob (the appliance's device-list update)")
    await exchange(b, [a2, a], room_id, "for both of alice's devices")
    t.ok("alice's new device decrypted bob's next message")

    # Cross-signing: each signs their own device with a self-signing key on their server; the
    # other server's client sees the keys and the signature (m.signing_key_update and an
    # m.device_list_update carrying the signed device keys).
    alice_keys = await cross_sign(t, t.homeserver, alice, a)
    bob_keys = await cross_sign(t, synapse, bob, b)
    t.ok("alice and bob uploaded cross-signing keys and signed a device each")
    await wait_for_cross_signing(t, synapse, b, alice.user_id, a.device_id, alice_keys)
    t.ok("bob's server shows alice's cross-signing keys and her signed device")
    await wait_for_cross_signing(t, t.homeserver, a, bob.user_id, b.device_id, bob_keys)
    t.ok("alice's server shows bob's cross-signing keys and his signed device")

    # Alice verifies Bob: her user-signing key signs his master key (as her server has it);
    # the signature is hers alone to see.
    status, body = await http(
        t, t.homeserver, a, "POST", "/keys/query", {"device_keys": {bob.user_id: []}}
    )
    expect_equal(status, 200, "alice's /keys/query for bob's master key")
    master = unsigned_part(body["master_keys"][bob.user_id])
    master["signatures"] = {
        alice.user_id: {
            f"ed25519:{alice_keys.user_signing_public}": alice_keys.user_signing.sign(
                canonical(master)
            ).to_base64()
        }
    }
    status, body = await http(
        t,
        t.homeserver,
        a,
        "POST",
        "/keys/signatures/upload",
        {bob.user_id: {bob_keys.master_public: master}},
    )
    expect_equal(status, 200, f"alice signs bob's master key: {body}")
    ensure(not body.get("failures"), f"signing bob's master key failed: {body}")
    status, body = await http(
        t, t.homeserver, a, "POST", "/keys/query", {"device_keys": {bob.user_id: []}}
    )
    signatures = body["master_keys"][bob.user_id].get("signatures", {})
    ensure(
        f"ed25519:{alice_keys.user_signing_public}" in signatures.get(alice.user_id, {}),
        f"alice's signature on bob's master key is not shown to her: {signatures}",
    )
    t.ok("alice signed bob's (remote) master key with her user-signing key and sees it")


def canonical(value: Any) -> bytes:
    """Matrix's canonical JSON, what a signature covers."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode()


def unsigned_part(value: dict) -> dict:
    return {k: v for k, v in value.items() if k not in ("signatures", "unsigned")}


class CrossSigning:
    """A user's cross-signing key pairs (vodozemac accounts used for their ed25519 keys)."""

    def __init__(self) -> None:
        self.master = vodozemac.Account()
        self.self_signing = vodozemac.Account()
        self.user_signing = vodozemac.Account()

    @property
    def master_public(self) -> str:
        return self.master.ed25519_key.to_base64()

    @property
    def self_signing_public(self) -> str:
        return self.self_signing.ed25519_key.to_base64()

    @property
    def user_signing_public(self) -> str:
        return self.user_signing.ed25519_key.to_base64()


async def cross_sign(
    t: Checks, homeserver: str, account: Any, client: nio.AsyncClient
) -> CrossSigning:
    """Uploads new cross-signing keys for `account` and signs `client`'s device with them."""
    keys = CrossSigning()
    user = account.user_id

    def key(usage: str, public: str) -> dict:
        body = {"user_id": user, "usage": [usage], "keys": {f"ed25519:{public}": public}}
        if usage != "master":
            body["signatures"] = {
                user: {
                    f"ed25519:{keys.master_public}": keys.master.sign(canonical(body)).to_base64()
                }
            }
        return body

    upload = {
        "master_key": key("master", keys.master_public),
        "self_signing_key": key("self_signing", keys.self_signing_public),
        "user_signing_key": key("user_signing", keys.user_signing_public),
    }
    status, body = await http(t, homeserver, client, "POST", "/keys/device_signing/upload", upload)
    if status == 401:
        upload["auth"] = {
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": user},
            "password": account.password,
            "session": body.get("session"),
        }
        status, body = await http(
            t, homeserver, client, "POST", "/keys/device_signing/upload", upload
        )
    expect_equal(status, 200, f"cross-signing keys of {user}: {body}")
    status, body = await http(
        t, homeserver, client, "POST", "/keys/query", {"device_keys": {user: [client.device_id]}}
    )
    expect_equal(status, 200, f"{user} queries their own device")
    device = unsigned_part(body["device_keys"][user][client.device_id])
    device["signatures"] = {
        user: {
            f"ed25519:{keys.self_signing_public}": keys.self_signing.sign(
                canonical(device)
            ).to_base64()
        }
    }
    status, body = await http(
        t, homeserver, client, "POST", "/keys/signatures/upload", {user: {client.device_id: device}}
    )
    expect_equal(status, 200, f"{user} signs their device: {body}")
    ensure(not body.get("failures"), f"{user}'s device signature refused: {body}")
    return keys


async def wait_for_cross_signing(
    t: Checks,
    homeserver: str,
    viewer: nio.AsyncClient,
    user: str,
    device_id: str,
    keys: CrossSigning,
) -> None:
    """Queries `user`'s keys on `homeserver` until its master and self-signing keys are `keys`'
    and `device_id` carries the self-signing key's signature."""
    deadline = time.monotonic() + FEDERATION_TIMEOUT_S
    seen: Any = None
    while time.monotonic() < deadline:
        status, body = await http(
            t, homeserver, viewer, "POST", "/keys/query", {"device_keys": {user: []}}
        )
        expect_equal(status, 200, f"/keys/query for {user}")
        seen = body
        master = body.get("master_keys", {}).get(user, {}).get("keys", {})
        self_signing = body.get("self_signing_keys", {}).get(user, {}).get("keys", {})
        device = body.get("device_keys", {}).get(user, {}).get(device_id, {})
        signed = device.get("signatures", {}).get(user, {})
        if (
            f"ed25519:{keys.master_public}" in master
            and f"ed25519:{keys.self_signing_public}" in self_signing
            and f"ed25519:{keys.self_signing_public}" in signed
        ):
            return
        await asyncio.sleep(0.5)
    raise CheckFailed(
        f"{user}'s cross-signing not seen on {homeserver} within {FEDERATION_TIMEOUT_S}s: "
        f"{json.dumps(seen)[:1500]}"
    )


if __name__ == "__main__":
    main(scenario, __doc__.splitlines()[0])
