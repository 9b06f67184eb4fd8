"""Token endpoint benchmark: SMART Backend Services against a live ``telemon serve`` (oauth mode).

Registers a backend client with a fresh ES384 key (in-process, on the same database), signs one
client assertion per request (fresh ``jti``, signed before the clock starts so the load generator
does not compete with the server for the CPU), then POSTs ``client_credentials`` requests with
``private_key_jwt`` at the given concurrency. Prints req/s and p50/p95/p99 latency; the goal is
p99 ≤ 50 ms (issue #4).

    .venv/bin/python bench/token_endpoint.py                 # SQLite in a temp dir
    .venv/bin/python bench/token_endpoint.py --postgresql    # a fresh telemon_bench_token database
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import asyncio
import os
import subprocess
import tempfile
import time
import uuid
from urllib.parse import urlencode

import httpx
import orjson
from joserfc import jwt
from joserfc.jwk import ECKey

from bench._http import Connection
from bench.ingest import percentile, register_backend, reset_database

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
SCOPE = "system/Observation.rs"


def token_forms(client_id: str, key: ECKey, token_url: str, n: int) -> list[bytes]:
    """``n`` urlencoded token requests, each with its own signed assertion (fresh jti)."""
    now = int(time.time())
    header = {"alg": "ES384", "kid": key.kid, "typ": "JWT"}
    forms = []
    for _ in range(n):
        claims = {
            "iss": client_id,
            "sub": client_id,
            "aud": token_url,
            "iat": now,
            "exp": now + 240,
            "jti": uuid.uuid4().hex,
        }
        assertion = jwt.encode(header, claims, key, algorithms=["ES384"])
        form = {
            "grant_type": "client_credentials",
            "scope": SCOPE,
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": assertion,
        }
        forms.append(urlencode(form).encode())
    return forms


async def run(base: str, forms: list[bytes], concurrency: int) -> tuple[list[float], float]:
    """POST every form from ``concurrency`` connections; latencies (s) and elapsed time (s)."""
    queue = list(reversed(forms))
    latencies: list[float] = []

    async def worker() -> None:
        conn = Connection(base)
        try:
            while queue:
                body = queue.pop()
                t0 = time.perf_counter()
                status, payload = await conn.request(
                    "POST", "/oauth/token", body, content_type="application/x-www-form-urlencoded"
                )
                latencies.append(time.perf_counter() - t0)
                if status != 200 or b'"access_token"' not in payload:
                    raise RuntimeError(f"token request failed: {status} {payload[:300]!r}")
        finally:
            await conn.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database-url", help="default: a new SQLite file in a temp directory")
    parser.add_argument(
        "--postgresql",
        action="store_true",
        help="use a fresh database telemon_bench_token on the local PostgreSQL",
    )
    parser.add_argument("--admin-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--workers", type=int, default=1, help="server worker processes")
    parser.add_argument("--port", type=int, default=8766)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        url = args.database_url or f"sqlite:///{tmp}/token-bench.sqlite"
        if args.postgresql:
            url = reset_database(args.admin_url, "telemon_bench_token")
        client_id = f"bench-{uuid.uuid4().hex[:8]}"
        key = register_backend(url, client_id, SCOPE)
        base = f"http://127.0.0.1:{args.port}"
        env = {
            **os.environ,
            "TELEMON_DATABASE_URL": url,
            "TELEMON_AUTH": "oauth",
            "TELEMON_BASE_URL": f"{base}/fhir",
        }
        command = [sys.executable, "-m", "service.cli", "serve", "--port", str(args.port)]
        server = subprocess.Popen(
            [*command, "--workers", str(args.workers)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            discovery = f"{base}/fhir/.well-known/smart-configuration"
            for _ in range(300):
                try:
                    found = httpx.get(discovery, timeout=1)
                    if found.status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.1)
            else:
                raise RuntimeError("the server did not start")
            token_url = orjson.loads(found.content)["token_endpoint"]
            forms = token_forms(client_id, key, token_url, args.warmup + args.requests)
            asyncio.run(run(base, forms[: args.warmup], args.concurrency))
            latencies, elapsed = asyncio.run(run(base, forms[args.warmup :], args.concurrency))
        finally:
            server.terminate()
            server.wait(timeout=30)
    backend = "PostgreSQL" if url.startswith("postgresql") else "SQLite"
    p50, p95, p99 = (percentile(latencies, p) * 1000 for p in (50, 95, 99))
    print(
        f"telemon token benchmark — {backend}, {args.workers} server worker(s), "
        f"{os.cpu_count()} cores; client_credentials + private_key_jwt (ES384), fresh jti each"
    )
    print(
        f"{len(latencies)} requests at concurrency {args.concurrency}: "
        f"{len(latencies) / elapsed:,.0f} req/s, p50 {p50:.1f} ms, p95 {p95:.1f} ms, "
        f"p99 {p99:.1f} ms ({'meets' if p99 <= 50 else 'MISSES'} the p99 ≤ 50 ms goal)"
    )


if __name__ == "__main__":
    main()
