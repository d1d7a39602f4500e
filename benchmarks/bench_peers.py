"""Requests per second under uvicorn (one worker) and wrk, loopback only.

    python benchmarks/bench_peers.py [--seconds 10] [--connections 32] [--rounds 3]
                                     [--only bare-starlette,keystile-starlette]

Needs `wrk` (Debian package) and, for the peer variants, `slowapi` and
`fastapi-keygate` installed beside keystile[all]. Each variant is served by
its own uvicorn process on a free 127.0.0.1 port, all started up front; wrk
sends the variant's valid key in `x-api-key`. The rounds go through every
variant in turn, so a slow patch of a shared machine touches them all
alike; the best round per variant is kept, and ratios are taken against the
bare app of the same run. The FastAPI variants run twice: with plain `def`
endpoints and dependencies (FastAPI's thread pool) and with `async def`.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VARIANTS = [
    ("bare-starlette", "async"),
    ("noop-starlette", "async"),
    ("spin-starlette", "async"),
    ("keystile-starlette", "async"),
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
    results: dict[tuple[str, str], tuple[float, str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        servers = {v: serve(*v, Path(tmp)) for v in variants}
        try:
            for _, port, key in servers.values():
                wrk(port, key, 2, args.connections)  # warm-up
            for _ in range(args.rounds):
                for variant, (_, port, key) in servers.items():
                    run = wrk(port, key, args.seconds, args.connections)
                    results[variant] = max(results.get(variant, run), run)
        finally:
            for variant, (proc, _, _) in servers.items():
                proc.terminate()
                proc.wait(10)
                if proc.stderr:
                    err = proc.stderr.read().decode()
                    proc.stderr.close()
                    if proc.returncode not in (0, -15) and err:
                        print(f"{variant}: {err[-400:]}", file=sys.stderr)
    print(
        f"uvicorn 1 worker, wrk -t2 -c{args.connections} -d{args.seconds}s, "
        f"best of {args.rounds} interleaved rounds"
    )
    print(f"{'variant':<22}{'endpoints':>10}{'req/s':>10}{'vs bare':>9}{'non-2xx':>9}")
    for (variant, endpoints), (rps, bad) in results.items():
        framework = variant.split("-")[-1]
        base = results.get((f"bare-{framework}", endpoints), (0.0, ""))[0]
        ratio = f"{rps / base:>9.2f}" if base else f"{'-':>9}"
        print(f"{variant:<22}{endpoints:>10}{rps:>10.0f}{ratio}{bad:>9}")
    for endpoints in ("sync", "async"):
        ks = results.get(("keystile-fastapi", endpoints))
        for peer in ("handrolled-fastapi", "keygate-fastapi"):
            other = results.get((peer, endpoints))
            if ks and other:
                ratio = ks[0] / other[0]
                print(f"{endpoints:>5} endpoints: keystile-fastapi / {peer} = {ratio:.2f}x")
        # Issue 13's yardstick: the time each layer adds per request,
        # 1/rps(with it) - 1/rps(bare), keystile's against the hand-rolled stack's.
        bare = results.get(("bare-fastapi", endpoints))
        hand = results.get(("handrolled-fastapi", endpoints))
        if ks and bare and hand:
            ours = 1 / ks[0] - 1 / bare[0]
            theirs = 1 / hand[0] - 1 / bare[0]
            share = ours / theirs if theirs > 0 else float("inf")
            print(
                f"{endpoints:>5} endpoints: time added per request: keystile {ours * 1e6:.0f} µs, "
                f"hand-rolled {theirs * 1e6:.0f} µs, ratio {share:.2f} (goal <= 0.33)"
            )


if __name__ == "__main__":
    main()
