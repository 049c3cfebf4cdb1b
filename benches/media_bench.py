#!/usr/bin/env python3
"""Media benchmark for any Matrix homeserver on a loopback address (standard library only).

Registers a user, then for each file size: uploads a file of random bytes (streamed from disk,
`POST /_matrix/media/v3/upload`) and downloads it (`GET /_matrix/client/v1/media/download`,
read in 1 MiB pieces and checked by SHA-256), timing both and reading the server's peak RSS
(VmHWM, reset through /proc/PID/clear_refs before each transfer, so the figure is the peak
*during* that transfer). Then uploads a JPEG (e.g. 4000x3000) and times its first and cached
thumbnail requests, and an upload of random bytes of the same size for comparison (a server that
makes thumbnails at upload, like Synapse, spends the difference on them).

Usage: media_bench.py --base-url http://127.0.0.1:8009 --pid PID --label NAME \
           --sizes-mb 5,50 --jpeg /tmp/photo.jpg --json-out out.json
Needs root (or the server's user) for clear_refs. Prints one JSON object on the last line.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import secrets
import sys
import time
import urllib.parse

CHUNK = 1024 * 1024


def log(message: str) -> None:
    print(f"[media_bench] {message}", file=sys.stderr, flush=True)


class Server:
    def __init__(self, base_url: str, pid: int) -> None:
        url = urllib.parse.urlparse(base_url)
        if url.hostname not in ("127.0.0.1", "localhost", "::1"):
            sys.exit("refusing a non-loopback target")
        self.host, self.port, self.pid = url.hostname, url.port or 80, pid
        self.token = ""

    def connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, self.port, timeout=300)

    def json_request(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        conn = self.connection()
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        conn.request(method, path, body=json.dumps(body or {}), headers=headers)
        response = conn.getresponse()
        data = response.read()
        conn.close()
        return response.status, json.loads(data or b"{}")

    def register(self) -> None:
        user = f"media-{secrets.token_hex(4)}"
        status, body = self.json_request(
            "POST",
            "/_matrix/client/v3/register",
            {"username": user, "password": "bench-password-1", "auth": {"type": "m.login.dummy"}},
        )
        if status == 401 and "session" in body:
            status, body = self.json_request(
                "POST",
                "/_matrix/client/v3/register",
                {
                    "username": user,
                    "password": "bench-password-1",
                    "auth": {"type": "m.login.dummy", "session": body["session"]},
                },
            )
        if status != 200:
            sys.exit(f"register: {status} {body}")
        self.token = body["access_token"]

    def reset_peak(self) -> None:
        with open(f"/proc/{self.pid}/clear_refs", "w") as f:
            f.write("5")

    def memory_kib(self) -> dict[str, int]:
        values = {}
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    values[key] = int(value.split()[0])
        return values

    def upload(self, path: str, content_type: str) -> tuple[str, float]:
        size = os.path.getsize(path)
        conn = self.connection()
        started = time.monotonic()
        with open(path, "rb") as body:
            conn.request(
                "POST",
                "/_matrix/media/v3/upload?filename=" + urllib.parse.quote(os.path.basename(path)),
                body=body,
                headers={
                    "Authorization": f"Bearer {self.token}",
                    "Content-Type": content_type,
                    "Content-Length": str(size),
                },
                encode_chunked=False,
            )
            response = conn.getresponse()
            data = response.read()
        elapsed = time.monotonic() - started
        conn.close()
        if response.status != 200:
            sys.exit(f"upload {path}: {response.status} {data[:200]!r}")
        return json.loads(data)["content_uri"], elapsed

    def get(self, path: str) -> tuple[int, str, float, int]:
        """GET, reading the body in pieces; returns status, SHA-256, seconds, bytes."""
        conn = self.connection()
        started = time.monotonic()
        conn.request("GET", path, headers={"Authorization": f"Bearer {self.token}"})
        response = conn.getresponse()
        digest, length = hashlib.sha256(), 0
        while piece := response.read(CHUNK):
            digest.update(piece)
            length += len(piece)
        elapsed = time.monotonic() - started
        conn.close()
        return response.status, digest.hexdigest(), elapsed, length


def random_file(path: str, size: int) -> str:
    if not (os.path.exists(path) and os.path.getsize(path) == size):
        with open(path, "wb") as f:
            for offset in range(0, size, CHUNK):
                f.write(os.urandom(min(CHUNK, size - offset)))
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while piece := f.read(CHUNK):
            digest.update(piece)
    return digest.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--pid", type=int, required=True)
    parser.add_argument("--label", required=True)
    parser.add_argument("--sizes-mb", default="5,50", help="file sizes in MB (10^6 bytes)")
    parser.add_argument("--jpeg", help="a JPEG to thumbnail")
    parser.add_argument("--work", default="/tmp/media-bench-files")
    parser.add_argument("--json-out")
    args = parser.parse_args()

    server = Server(args.base_url, args.pid)
    server.register()
    os.makedirs(args.work, exist_ok=True)
    result: dict = {"label": args.label, "idle_kib": server.memory_kib(), "transfers": []}

    for mb in [int(s) for s in args.sizes_mb.split(",")]:
        size = mb * 1_000_000
        path = os.path.join(args.work, f"random-{mb}MB.bin")
        expected = random_file(path, size)
        server.reset_peak()
        mxc, up_s = server.upload(path, "application/octet-stream")
        up_peak = server.memory_kib()["VmHWM"]
        server_name, media_id = mxc[len("mxc://") :].split("/", 1)
        server.reset_peak()
        status, digest, down_s, length = server.get(
            f"/_matrix/client/v1/media/download/{server_name}/{media_id}"
        )
        down_peak = server.memory_kib()["VmHWM"]
        if status != 200 or digest != expected or length != size:
            sys.exit(f"download of {mb} MB: status {status}, {length} bytes, hash match {digest == expected}")
        entry = {
            "mb": mb,
            "upload_s": round(up_s, 3),
            "upload_mb_s": round(mb / up_s, 1),
            "upload_peak_rss_kib": up_peak,
            "download_s": round(down_s, 3),
            "download_mb_s": round(mb / down_s, 1),
            "download_peak_rss_kib": down_peak,
        }
        log(json.dumps(entry))
        result["transfers"].append(entry)

    if args.jpeg:
        size = os.path.getsize(args.jpeg)
        mxc, jpeg_up_s = server.upload(args.jpeg, "image/jpeg")
        server_name, media_id = mxc[len("mxc://") :].split("/", 1)
        baseline = os.path.join(args.work, f"random-{size}.bin")
        random_file(baseline, size)
        _, plain_up_s = server.upload(baseline, "application/octet-stream")
        thumbs = {}
        for width, height, method in [(320, 240, "scale"), (800, 600, "scale"), (96, 96, "crop")]:
            query = f"width={width}&height={height}&method={method}"
            url = f"/_matrix/client/v1/media/thumbnail/{server_name}/{media_id}?{query}"
            status, _, first_s, length = server.get(url)
            _, _, cached_s, _ = server.get(url)
            if status != 200:
                sys.exit(f"thumbnail {query}: {status}")
            thumbs[f"{width}x{height}-{method}"] = {
                "first_ms": round(first_s * 1000, 1),
                "cached_ms": round(cached_s * 1000, 1),
                "bytes": length,
            }
        result["thumbnail"] = {
            "jpeg_bytes": size,
            "jpeg_upload_ms": round(jpeg_up_s * 1000, 1),
            "same_size_plain_upload_ms": round(plain_up_s * 1000, 1),
            "requests": thumbs,
        }
        log(json.dumps(result["thumbnail"]))

    result["end_kib"] = server.memory_kib()
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(result, f, indent=1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
