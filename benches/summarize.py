#!/usr/bin/env python3
"""Median figures of a benches/run_compare.sh result directory, as a markdown table.

Usage: summarize.py RESULT_DIR
Every figure is the median over the repetitions (n shown); the ratio column is
appliance / Synapse for rates and Synapse / appliance for costs (so > 1 = appliance better).
"""
from __future__ import annotations

import glob
import json
import os
import statistics
import sys


def load(pattern: str) -> list[dict]:
    out = []
    for f in sorted(glob.glob(pattern)):
        with open(f) as fh:
            out.append(json.load(fh))
    return out


def med(xs: list[float | None]) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def g(d: dict, *path):
    for p in path:
        if not isinstance(d, dict):
            return None
        d = d.get(p)
    return d


def fmt(v: float | None, nd: int = 1) -> str:
    if v is None:
        return "–"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.{nd}f}"


def main() -> None:
    d = sys.argv[1]
    rows: list[tuple[str, float | None, float | None, str, int, int]] = []

    def add(name: str, a: list[float | None], s: list[float | None], better: str, nd: int = 1) -> None:
        rows.append((name, med(a), med(s), better, len([x for x in a if x is not None]),
                     len([x for x in s if x is not None]), nd))

    for kind in ("cold", "warm"):
        A = load(os.path.join(d, f"startup-appliance-{kind}-*.json"))
        S = load(os.path.join(d, f"startup-synapse-{kind}-*.json"))
        if not A and not S:
            continue
        add(f"start-up to first 200 on /versions, {kind} data dir (s)",
            [g(x, "startup", "startup_s") for x in A], [g(x, "startup", "startup_s") for x in S], "low", 3)
        add(f"idle RSS 2 s after start-up, {kind} (MiB)",
            [(g(x, "rss_kib", "idle", "VmRSS_kib") or 0) / 1024 or None for x in A],
            [(g(x, "rss_kib", "idle", "VmRSS_kib") or 0) / 1024 or None for x in S], "low")
        add(f"threads at idle, {kind}",
            [g(x, "rss_kib", "idle", "Threads") for x in A], [g(x, "rss_kib", "idle", "Threads") for x in S], "low", 0)
        add(f"/versions sequential p50 latency, {kind} (ms)",
            [g(x, "versions", "latency_ms", "p50") for x in A], [g(x, "versions", "latency_ms", "p50") for x in S],
            "low", 2)
        add(f"SIGTERM to exit, {kind} (s)",
            [g(x, "startup", "stop_s") for x in A], [g(x, "startup", "stop_s") for x in S], "low", 3)

    for ep, c in (("versions", 32), ("whoami", 32), ("login", 8), ("login", 32)):
        A = load(os.path.join(d, f"load-appliance-{ep}-c{c}-*.json"))
        S = load(os.path.join(d, f"load-synapse-{ep}-c{c}-*.json"))
        if not A and not S:
            continue
        n = (A or S)[0]["count"]
        label = f"{ep} c={c} (aiohttp client, {n} req/run)"
        add(f"{label}: req/s", [x["req_per_s"] for x in A], [x["req_per_s"] for x in S], "high")
        add(f"{label}: p50 latency (ms)", [g(x, "latency_ms", "p50") for x in A],
            [g(x, "latency_ms", "p50") for x in S], "low", 2)
        add(f"{label}: p99 latency (ms)", [g(x, "latency_ms", "p99") for x in A],
            [g(x, "latency_ms", "p99") for x in S], "low", 2)
        add(f"{label}: server CPU per request (ms)", [x["server_cpu_ms_per_req"] for x in A],
            [x["server_cpu_ms_per_req"] for x in S], "low", 3)
        add(f"{label}: client CPU per request (ms)", [x["client_cpu_s"] * 1000 / x["count"] for x in A],
            [x["client_cpu_s"] * 1000 / x["count"] for x in S], "low", 3)
        add(f"{label}: server RSS max sampled (MiB)",
            [(g(x, "server_rss_kib", "max_sampled") or 0) / 1024 or None for x in A],
            [(g(x, "server_rss_kib", "max_sampled") or 0) / 1024 or None for x in S], "low")
        errs_a = sum(x["count"] - x["ok"] for x in A)
        errs_s = sum(x["count"] - x["ok"] for x in S)
        rows.append((f"{label}: failed requests (all runs)", errs_a, errs_s, "none", len(A), len(S), 0))

    for ep in ("versions", "whoami"):
        A = load(os.path.join(d, f"wrk-appliance-{ep}-*.json"))
        S = load(os.path.join(d, f"wrk-synapse-{ep}-*.json"))
        if not A and not S:
            continue
        label = f"{ep} c=32 (wrk -t1, fixed duration)"
        add(f"{label}: req/s", [x["req_per_s"] for x in A], [x["req_per_s"] for x in S], "high")
        add(f"{label}: p50 latency (ms)", [g(x, "latency_ms", "p50") for x in A],
            [g(x, "latency_ms", "p50") for x in S], "low", 2)
        add(f"{label}: p99 latency (ms)", [g(x, "latency_ms", "p99") for x in A],
            [g(x, "latency_ms", "p99") for x in S], "low", 2)
        add(f"{label}: server CPU per request (ms)", [x["server_cpu_ms_per_req"] for x in A],
            [x["server_cpu_ms_per_req"] for x in S], "low", 4)
        rows.append((f"{label}: non-2xx / socket errors (all runs)",
                     sum(x["non_2xx"] for x in A), sum(x["non_2xx"] for x in S), "none", len(A), len(S), 0))

    print("| figure (median of n runs) | appliance | Synapse | ratio | n |")
    print("| --- | ---: | ---: | ---: | --- |")
    for name, a, s, better, na, ns, nd in rows:
        ratio = "–"
        if a and s and better == "high":
            ratio = f"{a / s:.1f}×" if a / s >= 0.95 else f"{a / s:.2f}×"
        elif a and s and better == "low":
            ratio = f"{s / a:.1f}×" if s / a >= 0.95 else f"{s / a:.2f}×"
        print(f"| {name} | {fmt(a, nd)} | {fmt(s, nd)} | {ratio} | {na}/{ns} |")
    loads = [x.get("loadavg_start", [None])[0] for x in load(os.path.join(d, "load-*.json"))]
    loads += [g(x, "machine", "loadavg_start", 0) for x in load(os.path.join(d, "startup-*.json"))]
    loads = [x for x in loads if x is not None]
    if loads:
        print(f"\n1-min load average at the start of the runs: min {min(loads):.2f}, "
              f"median {statistics.median(loads):.2f}, max {max(loads):.2f} (2 CPUs)")
    mem = os.path.join(d, "memory.txt")
    if os.path.exists(mem):
        print("\nmemory (benches/run_compare.sh memory):\n")
        with open(mem) as fh:
            for line in fh:
                print("    " + line.rstrip())


if __name__ == "__main__":
    main()
