#!/usr/bin/env python3
"""Fixed-count HTTP load against a Matrix homeserver on loopback (client-server API v3).

Same client for every server: aiohttp, one connection pool of `--concurrency` keep-alive
connections, `--concurrency` workers each sending requests back to back until `--count`
requests have been sent (after `--warmup` requests that are not counted).

Endpoints (`--endpoint`):
  login     POST /_matrix/client/v3/login, m.login.password (identifier m.id.user), no device_id
            (every login creates a new device + access token, as a fresh client would)
  whoami    GET  /_matrix/client/v3/account/whoami with a Bearer token from one login
  versions  GET  /_matrix/client/versions (no auth)

Unless --user is given, a fresh user is registered first (POST /v3/register completing
m.login.dummy), so every run starts from the same state on every server.

Server CPU: utime+stime of --pid from /proc/PID/stat before/after the measured requests
(single process, threads included, children not). Server RSS: VmRSS sampled every 50 ms
during the run, VmHWM at the end. Client CPU: this process's own user+sys time.

Output: human summary on stderr, one JSON line on stdout. Exit 0 if no request failed.
Loopback targets only.
"""
from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
import resource
import secrets
import socket
import sys
import time
import urllib.parse

import aiohttp

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is state (field 3); utime is field 14, stime field 15
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def status_kib(pid: int, key: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def self_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def pct(xs: list[float], p: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    k = min(len(xs) - 1, max(0, round(p / 100 * (len(xs) - 1))))
    return xs[k]


def check_loopback(base_url: str) -> None:
    host = urllib.parse.urlsplit(base_url).hostname or ""
    addrs = {ai[4][0] for ai in socket.getaddrinfo(host, None)}
    if not addrs or not all(ipaddress.ip_address(a).is_loopback for a in addrs):
        sys.exit(f"refusing non-loopback target {base_url} ({addrs})")


async def register(s: aiohttp.ClientSession, base: str, user: str, password: str) -> None:
    url = base + "/_matrix/client/v3/register"
    body: dict = {"username": user, "password": password, "inhibit_login": True}
    async with s.post(url, json=body) as r:
        j = await r.json(content_type=None)
        if r.status == 200:
            return
        if r.status != 401 or "session" not in j:
            sys.exit(f"register: HTTP {r.status} {j}")
    body["auth"] = {"type": "m.login.dummy", "session": j["session"]}
    async with s.post(url, json=body) as r:
        j = await r.json(content_type=None)
        if r.status != 200:
            sys.exit(f"register (dummy stage): HTTP {r.status} {j}")


def login_body(user: str, password: str) -> dict:
    return {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user},
            "password": password}


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base-url", default="http://127.0.0.1:8008")
    p.add_argument("--endpoint", choices=["login", "whoami", "versions"], default="login")
    p.add_argument("--count", type=int, default=2000, help="measured requests")
    p.add_argument("--warmup", type=int, default=50, help="requests before measuring")
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--pid", type=int, help="server PID for CPU/RSS from /proc")
    p.add_argument("--user", help="existing user (localpart); default: register a fresh one")
    p.add_argument("--password", default="bench-password-1")
    p.add_argument("--timeout", type=float, default=120.0, help="per request, seconds")
    p.add_argument("--max-runtime", type=float, default=1800.0, help="whole measured phase, seconds")
    p.add_argument("--label", default="")
    a = p.parse_args()
    check_loopback(a.base_url)
    base = a.base_url.rstrip("/")

    conn = aiohttp.TCPConnector(limit=a.concurrency, force_close=False)
    timeout = aiohttp.ClientTimeout(total=a.timeout)
    async with aiohttp.ClientSession(connector=conn, timeout=timeout) as s:
        user = a.user
        if user is None and a.endpoint != "versions":
            user = "lb" + secrets.token_hex(5)
            await register(s, base, user, a.password)
        token = None
        if a.endpoint == "whoami":
            async with s.post(base + "/_matrix/client/v3/login", json=login_body(user, a.password)) as r:
                j = await r.json(content_type=None)
                if r.status != 200:
                    sys.exit(f"login: HTTP {r.status} {j}")
                token = j["access_token"]

        if a.endpoint == "login":
            method, url = "POST", base + "/_matrix/client/v3/login"
            body = json.dumps(login_body(user, a.password)).encode()
            headers = {"Content-Type": "application/json"}
        elif a.endpoint == "whoami":
            method, url, body = "GET", base + "/_matrix/client/v3/account/whoami", None
            headers = {"Authorization": f"Bearer {token}"}
        else:
            method, url, body, headers = "GET", base + "/_matrix/client/versions", None, {}

        async def one() -> tuple[float, int | str]:
            t0 = time.perf_counter()
            try:
                async with s.request(method, url, data=body, headers=headers) as r:
                    await r.read()
                    st: int | str = r.status
            except Exception as e:  # noqa: BLE001 - counted as an error
                st = type(e).__name__
            return time.perf_counter() - t0, st

        # warm-up: not measured
        remaining = [a.warmup]

        async def warm() -> None:
            while remaining[0] > 0:
                remaining[0] -= 1
                await one()
        await asyncio.gather(*(warm() for _ in range(a.concurrency)))

        lat: list[float] = []
        statuses: dict[str, int] = {}
        left = [a.count]
        deadline = time.monotonic() + a.max_runtime

        async def worker() -> None:
            while left[0] > 0 and time.monotonic() < deadline:
                left[0] -= 1
                dt, st = await one()
                statuses[str(st)] = statuses.get(str(st), 0) + 1
                if st == 200:
                    lat.append(dt)

        rss_max = [0]
        stop = asyncio.Event()

        async def sampler() -> None:
            while not stop.is_set():
                v = status_kib(a.pid, "VmRSS") if a.pid else None
                if v:
                    rss_max[0] = max(rss_max[0], v)
                try:
                    await asyncio.wait_for(stop.wait(), 0.05)
                except asyncio.TimeoutError:
                    pass

        loadavg_start = [float(x) for x in open("/proc/loadavg").read().split()[:3]]
        samp = asyncio.create_task(sampler())
        rss_before = status_kib(a.pid, "VmRSS") if a.pid else None
        scpu0 = cpu_s(a.pid) if a.pid else None
        ccpu0 = self_cpu_s()
        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(a.concurrency)))
        wall = time.perf_counter() - t0
        ccpu1 = self_cpu_s()
        scpu1 = cpu_s(a.pid) if a.pid else None
        stop.set()
        await samp

    n = sum(statuses.values())
    ok = statuses.get("200", 0)
    res = {
        "loadavg_start": loadavg_start, "loadavg_end": [float(x) for x in open("/proc/loadavg").read().split()[:3]],
        "label": a.label, "endpoint": a.endpoint, "concurrency": a.concurrency, "count": n, "ok": ok,
        "statuses": statuses, "wall_s": round(wall, 3), "req_per_s": round(ok / wall, 1),
        "latency_ms": {k: round(v * 1000, 2) if v is not None else None for k, v in
                       (("p50", pct(lat, 50)), ("p90", pct(lat, 90)), ("p99", pct(lat, 99)),
                        ("max", max(lat) if lat else None))},
        "server_cpu_s": round(scpu1 - scpu0, 2) if scpu0 is not None else None,
        "server_cpu_ms_per_req": round((scpu1 - scpu0) * 1000 / n, 3) if scpu0 is not None and n else None,
        "client_cpu_s": round(ccpu1 - ccpu0, 2),
        "server_rss_kib": {"before": rss_before, "max_sampled": rss_max[0] or None,
                           "after": status_kib(a.pid, "VmRSS") if a.pid else None,
                           "hwm": status_kib(a.pid, "VmHWM") if a.pid else None},
    }
    print(f"{a.label} {a.endpoint} c={a.concurrency}: {ok}/{n} ok in {wall:.2f}s = {res['req_per_s']} req/s, "
          f"p50 {res['latency_ms']['p50']} ms p99 {res['latency_ms']['p99']} ms, "
          f"server CPU {res['server_cpu_ms_per_req']} ms/req, client CPU {res['client_cpu_s']} s, "
          f"statuses {statuses}", file=sys.stderr)
    print(json.dumps(res))
    sys.exit(0 if ok == n else 1)


if __name__ == "__main__":
    asyncio.run(main())
