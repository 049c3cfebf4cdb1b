#!/usr/bin/env python3
"""matrix-nio against the appliance: media.

Alice uploads a PNG with nio's upload, sends it to a room she shares with Bob as an m.image
event; Bob sees the event in his sync, downloads the image with nio's download (the
authenticated /_matrix/client/v1/media endpoint) and gets the same bytes, then asks for a cropped
and a scaled thumbnail and checks their types and sizes.

Usage: media.py HOMESERVER_URL   (exit status 0 when every check held)
"""

from __future__ import annotations

import io
import struct
import time
import zlib

import nio

from niocheck import CheckFailed, Checks, ensure, expect, expect_equal, main

WIDTH, HEIGHT = 200, 100


def png(width: int, height: int) -> bytes:
    """An RGB PNG with a gradient, made with the standard library only."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(
        b"\x00" + bytes(v for x in range(width) for v in (x % 256, y % 256, (x + y) % 256))
        for y in range(height)
    )
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def png_size(data: bytes) -> tuple[int, int]:
    ensure(data.startswith(b"\x89PNG\r\n\x1a\n"), f"not a PNG: {data[:16]!r}")
    return struct.unpack(">II", data[16:24])


async def sync_until(client: nio.AsyncClient, what: str, done, timeout_s: float = 20.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        response = expect(
            await client.sync(timeout=2000, full_state=False),
            nio.SyncResponse,
            f"sync while waiting for {what}",
        )
        found = done(response)
        if found:
            return found
    raise CheckFailed(f"{what}: not seen in sync within {timeout_s}s")


async def scenario(t: Checks) -> None:
    alice = await t.register("nio-media-alice")
    bob = await t.register("nio-media-bob")
    a, b = alice.client, bob.client
    expect(await b.sync(timeout=0), nio.SyncResponse, "bob's first sync")

    image = png(WIDTH, HEIGHT)
    uploaded, _keys = await a.upload(
        io.BytesIO(image), content_type="image/png", filename="gradient.png", filesize=len(image)
    )
    uploaded = expect(uploaded, nio.UploadResponse, "upload")
    ensure(uploaded.content_uri.startswith("mxc://"), f"content_uri {uploaded.content_uri!r}")
    t.ok(f"alice uploaded a PNG: {uploaded.content_uri}")

    created = expect(
        await a.room_create(invite=[bob.user_id]), nio.RoomCreateResponse, "room_create"
    )
    room_id = created.room_id
    await sync_until(b, "the invite", lambda r: room_id in r.rooms.invite)
    expect(await b.join(room_id), nio.JoinResponse, "bob joins")
    expect(
        await a.room_send(
            room_id,
            "m.room.message",
            {
                "msgtype": "m.image",
                "body": "gradient.png",
                "url": uploaded.content_uri,
                "info": {"mimetype": "image/png", "w": WIDTH, "h": HEIGHT, "size": len(image)},
            },
        ),
        nio.RoomSendResponse,
        "send m.image",
    )
    t.ok("alice sent it as m.image")

    def image_event(response: nio.SyncResponse):
        room = response.rooms.join.get(room_id)
        events = room.timeline.events if room else []
        return next((e for e in events if isinstance(e, nio.RoomMessageImage)), None)

    event = await sync_until(b, "alice's image", image_event)
    expect_equal(event.url, uploaded.content_uri, "the image event's url")
    t.ok("bob sees the m.image event")

    downloaded = expect(await b.download(mxc=event.url), nio.DownloadResponse, "download")
    ensure(downloaded.body == image, f"downloaded {len(downloaded.body)} bytes differ from the upload")
    expect_equal(downloaded.content_type, "image/png", "downloaded content type")
    expect_equal(downloaded.filename, "gradient.png", "downloaded file name")
    t.ok("bob downloaded the same bytes")

    server_name, media_id = event.url[len("mxc://") :].split("/", 1)
    cropped = expect(
        await b.thumbnail(server_name, media_id, 32, 32, nio.ResizingMethod.crop),
        nio.ThumbnailResponse,
        "crop thumbnail",
    )
    expect_equal(cropped.content_type, "image/png", "thumbnail type")
    expect_equal(png_size(cropped.body), (32, 32), "cropped thumbnail size")
    scaled = expect(
        await b.thumbnail(server_name, media_id, 320, 240, nio.ResizingMethod.scale),
        nio.ThumbnailResponse,
        "scale thumbnail",
    )
    # Scaling keeps the aspect ratio and never enlarges: the 200x100 original fits as it is.
    expect_equal(png_size(scaled.body), (WIDTH, HEIGHT), "scaled thumbnail size")
    t.ok("bob got a 32x32 crop and a scaled thumbnail")


if __name__ == "__main__":
    main(scenario, __doc__.splitlines()[0])
