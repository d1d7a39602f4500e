"""Requests per second under uvicorn (one worker) and wrk, loopback only.

    python benchmarks/bench_peers.py [--seconds 10] [--connections 32] [--rounds 3]
                                     [--only bare-starlette,keystile-starlette]

Needs `wrk` (Debian package) and, for the peer variants, `slowapi` and
`fastapi-keygate` installed beside keystile[all]. Each variant is served by
its own uvicorn process on a free 127.0.0.1 port, all started up front; wrk
sends the variant's valid key in `x-api-key`. The rounds go through every
variant in turn, within a minute or so, so a slow patch of a shared machine
touches them all alike. Each ratio is taken within a round (against that
round's bare app or peer), and the median over the rounds is printed with
the lowest and highest: on a noisy machine that range, not the median, says
what the run can tell apart. The req/s column is each variant's best round.
The FastAPI variants run twice: with plain `def` endpoints and dependencies
(FastAPI's thread pool) and with `async def`. Many short rounds
(`--seconds 3 --rounds 7`) say more than a few long ones.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench_overhead import keystile_build

Variant = tuple[str, str]  # (name, endpoints)

VARIANTS = [
    ("bare-starlette", "async"),
    ("noop-starlette", "async"),
    ("spin-starlette", "async"),
    ("keystile-starlette", "async"),
    ("keystile-noheaders-starlette", "async"),
    *(
        (name, endpoints)
        for endpoints in ("sync", "async")
        for name in ("bare-fastapi", "keystile-fastapi", "handrolled-fastapi", "keygate-fastapi")
    ),
]
HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(variant: str, endpoints: str, workdir: Path) -> tuple[subprocess.Popen[bytes], int, str]:
    port = free_port()
    home = workdir / f"{variant}-{endpoints}"
    home.mkdir()
    key_file = home / "key.txt"
    env = {
        **os.environ,
        "BENCH_VARIANT": variant,
        "BENCH_ENDPOINTS": endpoints,
        "BENCH_DIR": str(home),
        "BENCH_KEY_FILE": str(key_file),
        "PYTHONPATH": str(HERE),
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "peer_apps:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        env=env,
        cwd=home,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    key = key_file.read_text() if key_file.exists() else ""
    return proc, port, key


def wrk(port: int, key: str, seconds: int, connections: int) -> tuple[float, str]:
    out = subprocess.run(
        [
            "wrk",
            "-t2",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            "-H",
            f"x-api-key: {key}",
            f"http://127.0.0.1:{port}/api/v1/events",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return rps, non2xx.group(1) if non2xx else "0"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", default="", help="comma-separated variant names")
    args = parser.parse_args()
    only = set(filter(None, args.only.split(",")))
    variants = [v for v in VARIANTS if not only or v[0] in only]
    if not shutil.which("wrk"):
        sys.exit("wrk is not installed (apt-get install wrk)")
    # Every round's figure per variant: a round measures all variants within
    # a minute, so ratios are taken within a round, and the median of the
    # rounds' ratios is reported with their range (the machine's own speed
    # moves between rounds far more than the variants differ).
    rounds: dict[Variant, list[tuple[float, str]]] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory() as tmp:
        servers = {v: serve(*v, Path(tmp)) for v in variants}
        try:
            for _, port, key in servers.values():
                wrk(port, key, 2, args.connections)  # warm-up
            for _ in range(args.rounds):
                for variant, (_, port, key) in servers.items():
                    rounds[variant].append(wrk(port, key, args.seconds, args.connections))
        finally:
            for variant, (proc, _, _) in servers.items():
                proc.terminate()
                proc.wait(10)
                if proc.stderr:
                    err = proc.stderr.read().decode()
                    proc.stderr.close()
                    if proc.returncode not in (0, -15) and err:
                        print(f"{variant}: {err[-400:]}", file=sys.stderr)
    rps = {v: [r for r, _ in runs] for v, runs in rounds.items()}
    print(
        f"uvicorn 1 worker, wrk -t2 -c{args.connections} -d{args.seconds}s, "
        f"{args.rounds} interleaved rounds; req/s is the best round, ratios the "
        "median of the rounds' own ratios [lowest-highest]"
    )
    print(f"keystile: {keystile_build()} build")
    print(f"{'variant':<30}{'endpoints':>10}{'req/s':>10}{'vs bare [range]':>22}{'non-2xx':>9}")
    for (name, endpoints), runs in rounds.items():
        base = rps.get((f"bare-{name.split('-')[-1]}", endpoints))
        ratio = per_round(rps[name, endpoints], base, lambda x, b: x / b) if base else "-"
        best = max(rps[name, endpoints])
        bad = max((b for _, b in runs), key=int)
        print(f"{name:<30}{endpoints:>10}{best:>10.0f}{ratio:>22}{bad:>9}")
    for endpoints in ("sync", "async"):
        ks = rps.get(("keystile-fastapi", endpoints))
        for peer in ("handrolled-fastapi", "keygate-fastapi"):
            other = rps.get((peer, endpoints))
            if ks and other:
                ratio = per_round(ks, other, lambda x, o: x / o)
                print(f"{endpoints:>5} endpoints: keystile-fastapi / {peer} = {ratio}")
        # Issue 13's yardstick: the time each layer adds per request,
        # 1/rps(with it) - 1/rps(bare), keystile's against the hand-rolled stack's.
        bare = rps.get(("bare-fastapi", endpoints))
        hand = rps.get(("handrolled-fastapi", endpoints))
        if ks and bare and hand:
            added = [(1 / k - 1 / b, 1 / h - 1 / b) for k, b, h in zip(ks, bare, hand, strict=True)]
            ours = statistics.median(a for a, _ in added)
            theirs = statistics.median(t for _, t in added)
            ours_each, theirs_each = [a for a, _ in added], [t for _, t in added]
            share = per_round(ours_each, theirs_each, lambda a, t: a / t if t > 0 else math.inf)
            print(
                f"{endpoints:>5} endpoints: time added per request (medians): keystile "
                f"{ours * 1e6:.0f} µs, hand-rolled {theirs * 1e6:.0f} µs; "
                f"ratio {share} (goal <= 0.33)"
            )


def per_round(
    ours: list[float], theirs: list[float], ratio: Callable[[float, float], float]
) -> str:
    """The median of each round's ``ratio(ours, theirs)``, and its range."""
    ratios = sorted(ratio(a, b) for a, b in zip(ours, theirs, strict=True))
    return f"{statistics.median(ratios):.2f} [{ratios[0]:.2f}-{ratios[-1]:.2f}]"


if __name__ == "__main__":
    main()
