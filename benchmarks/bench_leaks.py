"""The leak endpoint: one signed report of 1,000 tokens, half of them ours.

    python benchmarks/bench_leaks.py [--stores sqlite,postgres,mysql] [--tokens 1000] [--rounds 3]

Each round mints ``tokens / 2`` fresh keys, then POSTs one report of
``tokens`` tokens through the WSGI door and, with fresh keys again, the ASGI
door: the keys (each looked up once and revoked), plus a quarter of
well-formed tokens that are nobody's (looked up, not found) and a quarter
with a wrong checksum (never looked up). The goal (issue 17): the answer
within a few seconds. As a same-run yardstick, the same store answers
``tokens`` plain ``find_by_digest`` calls one after another.

PostgreSQL and MariaDB are the ones the tests use (127.0.0.1, database
test; ``--postgres`` and ``--mysql`` take another URL). The tables are
emptied first.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import statistics
import tempfile
import time
from typing import Any

import sqlalchemy as sa
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from keystile import Keystile
from keystile.keys import KeyFormat
from keystile.leaks import asgi_app, wsgi_app
from keystile.stores.sql import metadata

STORES = {
    "sqlite": None,
    "postgres": "postgresql+psycopg://postgres@127.0.0.1:5432/test",
    "mysql": "mysql+pymysql://root@127.0.0.1:3306/test",
}
PEPPER = b"bench-pepper-0123456789abcdef"


class GitHub:
    """Signs reports as GitHub does (a P-256 key made for this run)."""

    identifier = "bench"

    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.pem = (
            self.key.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode()
        )

    def headers(self, body: bytes) -> dict[str, str]:
        signature = self.key.sign(body, ec.ECDSA(hashes.SHA256()))
        return {
            "Github-Public-Key-Identifier": self.identifier,
            "Github-Public-Key-Signature": base64.b64encode(signature).decode(),
        }


def report(ks: Keystile, tokens: int) -> tuple[bytes, int]:
    """A report body and how many of its tokens are our keys."""
    ours = [ks.keys.create(name=f"bench {i}", org="bench").secret for i in range(tokens // 2)]
    fmt = KeyFormat("sk_")
    strangers = [fmt.generate() for _ in range(tokens // 4)]
    wrong = [
        s[:-1] + ("A" if s[-1] != "A" else "B")
        for s in (fmt.generate() for _ in range(tokens - len(ours) - len(strangers)))
    ]
    entries = [
        {
            "token": t,
            "type": "keystile_secret",
            "url": f"https://github.com/b/b/blob/x/{i}",
            "source": "content",
        }
        for i, t in enumerate(ours + strangers + wrong)
    ]
    return json.dumps(entries).encode(), len(ours)


def post_wsgi(app: Any, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/",
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
        **{"HTTP_" + k.upper().replace("-", "_"): v for k, v in headers.items()},
    }
    status: list[int] = []
    out = b"".join(app(environ, lambda line, h, e=None: status.append(int(line.split()[0]))))
    return status[0], out


async def post_asgi(app: Any, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]
        + [(b"content-length", str(len(body)).encode())],
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


def check(status: int, answer: bytes, ours: int, tokens: int) -> None:
    labels = [item["label"] for item in json.loads(answer)]
    assert status == 200 and len(labels) == tokens, status
    assert labels.count("true_positive") == ours, labels.count("true_positive")


def run(url: str, tokens: int, rounds: int) -> dict[str, list[float]]:
    github = GitHub()
    times: dict[str, list[float]] = {"wsgi": [], "asgi": [], "yardstick": []}
    with Keystile({"store": url, "audit": {"log": False}}, pepper=PEPPER) as ks:
        ks.init_store()
        engine = getattr(ks.store, "engine", None)
        if engine is not None:
            with engine.begin() as conn:
                for table in reversed(metadata.sorted_tables):
                    conn.execute(sa.delete(table))
        keys = {github.identifier: github.pem}
        wsgi, asgi = wsgi_app(ks, public_keys=keys), asgi_app(ks, public_keys=keys)
        loop = asyncio.new_event_loop()
        for _ in range(rounds):
            body, ours = report(ks, tokens)
            started = time.perf_counter()
            check(*post_wsgi(wsgi, body, github.headers(body)), ours, tokens)
            times["wsgi"].append(time.perf_counter() - started)

            body, ours = report(ks, tokens)
            started = time.perf_counter()
            check(
                *loop.run_until_complete(post_asgi(asgi, body, github.headers(body))), ours, tokens
            )
            times["asgi"].append(time.perf_counter() - started)

            digests = [ks.digest(KeyFormat("sk_").generate()) for _ in range(tokens)]
            started = time.perf_counter()
            for digest in digests:
                ks.store.execute("find_by_digest", digest)
            times["yardstick"].append(time.perf_counter() - started)
        loop.run_until_complete(ks.arelease())
        loop.close()
        ks.audit.flush()
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--stores", default="sqlite,postgres")
    parser.add_argument("--tokens", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--postgres", default=STORES["postgres"])
    parser.add_argument("--mysql", default=STORES["mysql"])
    args = parser.parse_args()
    urls = {**STORES, "postgres": args.postgres, "mysql": args.mysql}
    print(
        f"one signed report of {args.tokens} tokens: {args.tokens // 2} ours (revoked), "
        f"{args.tokens // 4} well-formed strangers, the rest with a wrong checksum"
    )
    print(f"best and median of {args.rounds} rounds, seconds; goal: within a few seconds")
    print(f"{'store':<10}{'WSGI':>16}{'ASGI':>16}{'find_by_digest x' + str(args.tokens):>24}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.stores.split(","):
            url = urls[name] or f"sqlite:///{tmp}/leaks.db"
            times = run(url, args.tokens, args.rounds)
            cells = [f"{min(t):.2f} / {statistics.median(t):.2f}" for t in times.values()]
            print(f"{name:<10}{cells[0]:>16}{cells[1]:>16}{cells[2]:>24}")


if __name__ == "__main__":
    main()
