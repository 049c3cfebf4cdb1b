"""End-to-end encryption helpers shared by the nio scripts (e2ee.py, federation_e2ee.py)."""

from __future__ import annotations

import time
from typing import Callable

import nio

from niocheck import CheckFailed, expect


async def e2e_sync(client: nio.AsyncClient, what: str) -> nio.SyncResponse:
    """One sync plus the key traffic nio's sync_forever would do after it."""
    response = expect(await client.sync(timeout=1000), nio.SyncResponse, f"sync ({what})")
    if client.should_upload_keys:
        expect(await client.keys_upload(), nio.KeysUploadResponse, f"keys_upload ({what})")
    if client.should_query_keys:
        expect(await client.keys_query(), nio.KeysQueryResponse, f"keys_query ({what})")
    if client.should_claim_keys:
        expect(
            await client.keys_claim(client.get_users_for_key_claiming()),
            nio.KeysClaimResponse,
            f"keys_claim ({what})",
        )
    await client.send_to_device_messages()
    return response


async def sync_until(
    client: nio.AsyncClient, what: str, done: Callable[[nio.SyncResponse], bool], timeout_s=30.0
) -> nio.SyncResponse:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        response = await e2e_sync(client, what)
        if done(response):
            return response
    raise CheckFailed(f"{what}: not seen in sync within {timeout_s}s")


def texts_in(response: nio.SyncResponse, room_id: str) -> list[str]:
    room = response.rooms.join.get(room_id)
    events = room.timeline.events if room else []
    return [e.body for e in events if isinstance(e, nio.RoomMessageText)]


async def send_text(client: nio.AsyncClient, room_id: str, body: str) -> None:
    expect(
        await client.room_send(
            room_id,
            "m.room.message",
            {"msgtype": "m.text", "body": body},
            ignore_unverified_devices=True,
        ),
        nio.RoomSendResponse,
        f"send {body!r}",
    )
