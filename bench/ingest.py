"""Ingest and search benchmark against a live telemon server on PostgreSQL.

Prints, per authorization mode: single creates/s with p50/p99 at concurrency 16; Observations/s
in transaction Bundles of 100 at concurrency 4; searches/s and p50/p95 at concurrency 4 for "one
patient's weights of the last 30 days, newest first" with at least --observations Observations
stored; and the resident memory of each server worker after the run.

``--auth oauth`` is production mode: a registered backend service (SMART Backend Services,
``private_key_jwt``) gets a bearer token from the server and every request carries it, so each
access is authorised and written to the audit trail; ``--auth open`` runs without either. The
default runs both, one after the other on the same database, oauth first.

    .venv/bin/python bench/ingest.py                       # defaults: 1,000,000 Observations
    .venv/bin/python bench/ingest.py --observations 100000 --seconds 10   # a quick run
    .venv/bin/python bench/ingest.py --auth oauth --reuse  # production mode only
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
from joserfc.jwk import ECKey
from sqlalchemy import create_engine, func, select, text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._http import Connection
from service.auth import clients
from service.bulk import importer
from service.core.registry import default_registry
from service.demo.clients import request_backend_token
from service.fhir.service import FhirService
from service.settings import Settings
from service.storage import migrate
from service.storage.db import Database
from service.storage.tables import resources
from service.validation import ProfileValidator

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
CATEGORY = [
    {
        "coding": [
            {
                "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                "code": "vital-signs",
            }
        ]
    }
]
VITALS = [
    ("29463-7", "kg", 60.0, 110.0),
    ("8867-4", "/min", 50.0, 110.0),
    ("2708-6", "%", 88.0, 99.0),
    ("9279-1", "/min", 10.0, 24.0),
]


def observation(
    patient_id: str,
    effective: datetime,
    rng: random.Random,
    vital: tuple[str, str, float, float] | None = None,
) -> dict[str, Any]:
    """A plausible home measurement."""
    code, unit, low, high = vital or rng.choice(VITALS)
    return {
        "resourceType": "Observation",
        "status": "final",
        "identifier": [{"system": "urn:telemon:bench", "value": str(uuid.uuid4())}],
        "category": CATEGORY,
        "code": {"coding": [{"system": LOINC, "code": code}]},
        "subject": {"reference": f"Patient/{patient_id}"},
        "effectiveDateTime": effective.isoformat(timespec="seconds"),
        "valueQuantity": {
            "value": round(rng.uniform(low, high), 1),
            "unit": unit,
            "system": UCUM,
            "code": unit,
        },
    }


def percentile(values: list[float], p: float) -> float:
    """The p-th percentile (0 to 100) of ``values``."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def reset_database(admin_url: str, name: str) -> str:
    """Drop and create the benchmark database; returns its URL."""
    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return admin_url.rsplit("/", 1)[0] + f"/{name}"


def bulk_load(url: str, patients: list[str], total: int, days: int) -> None:
    """Store ``total`` Observations spread over ``patients`` and ``days`` with ``telemon
    import``'s own path (in-process: the same checks, COPY on PostgreSQL), without the
    closing ANALYZE (the caller's)."""
    db = Database(url, pool_size=2)
    settings = Settings(database_url=url)
    service = FhirService(
        db, default_registry(), ProfileValidator.load(settings.profiles_dir), settings
    )
    started = time.perf_counter()

    def lines() -> Iterator[bytes]:
        rng = random.Random(1)
        now = datetime.now(UTC) - timedelta(hours=1)
        per_patient = max(1, total // len(patients))
        for done in range(total):
            if done and done % 100_000 == 0:
                rate = done / (time.perf_counter() - started)
                print(f"  loaded about {done:,} Observations ({rate:,.0f}/s)", flush=True)
            k = done // len(patients)
            when = now - timedelta(days=days * (k / per_patient), minutes=rng.randint(0, 600))
            res = observation(patients[done % len(patients)], when, rng, VITALS[k % len(VITALS)])
            yield orjson.dumps(res)

    summary = importer.import_lines(service, Path("bench.ndjson"), lines())
    if summary.rejected or summary.created != total:
        raise SystemExit(f"the preload created {summary.created:,} of {total:,}: {summary.reasons}")
    seconds = time.perf_counter() - started
    print(f"  loaded {total:,} Observations in {seconds:,.0f} s ({total / seconds:,.0f}/s)")
    db.dispose()


async def run_for(seconds: float, concurrency: int, make_call: Any) -> list[float]:
    """Run ``make_call(conn)`` from ``concurrency`` connections for ``seconds``; latencies (s)."""
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        conn = Connection(BASE)
        try:
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                await make_call(conn)
                latencies.append(time.perf_counter() - t0)
        finally:
            await conn.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies


BASE = ""
#: The bearer token header of the mode being measured (empty in open mode).
AUTH: dict[str, str] = {}
BENCH_CLIENT = "telemon-bench"
BENCH_SCOPE = "system/Observation.cruds system/Patient.cruds"


def register_backend(url: str, client_id: str, scope: str) -> ECKey:
    """Migrate the database and (re-)register a backend service with a fresh ES384 key; its
    private key."""
    db = Database(url, pool_size=1)
    try:
        migrate.upgrade(db)
        key = ECKey.generate_key("P-384", private=True)
        key.ensure_kid()
        client = clients.new_backend(
            client_id, client_id, scope, jwks={"keys": [key.as_dict(private=False)]}
        )
        with db.write() as conn:
            clients.save(conn, client)
    finally:
        db.dispose()
    return key


def authorize(mode: str, key: ECKey) -> None:
    """Get a fresh access token for the next phase (tokens live 5 minutes) in oauth mode."""
    AUTH.clear()
    if mode == "oauth":
        token_url = BASE.removesuffix("/fhir") + "/oauth/token"
        token = request_backend_token(token_url, key, BENCH_CLIENT, BENCH_SCOPE)
        AUTH["Authorization"] = f"Bearer {token['access_token']}"


async def bench_single(patients: list[str], seconds: float) -> tuple[float, float, float]:
    rng = random.Random(2)
    now = datetime.now(UTC) - timedelta(minutes=5)

    async def call(conn: Connection) -> None:
        body = orjson.dumps(observation(rng.choice(patients), now, rng))
        status, payload = await conn.request(
            "POST", "/Observation", body, {"Prefer": "return=minimal", **AUTH}
        )
        if status != 201:
            raise RuntimeError(f"create failed: {status} {payload[:300]!r}")

    t0 = time.perf_counter()
    lat = await run_for(seconds, 16, call)
    elapsed = time.perf_counter() - t0
    return len(lat) / elapsed, percentile(lat, 50) * 1000, percentile(lat, 99) * 1000


async def bench_bundles(patients: list[str], seconds: float) -> tuple[float, float, float]:
    rng = random.Random(3)
    now = datetime.now(UTC) - timedelta(minutes=5)

    async def call(conn: Connection) -> None:
        pid = rng.choice(patients)
        entries = [
            {
                "resource": observation(pid, now - timedelta(hours=i), rng),
                "request": {"method": "POST", "url": "Observation"},
            }
            for i in range(100)
        ]
        body = orjson.dumps({"resourceType": "Bundle", "type": "transaction", "entry": entries})
        status, payload = await conn.request("POST", "", body, AUTH)
        if status != 200:
            raise RuntimeError(f"bundle failed: {status} {payload[:300]!r}")

    t0 = time.perf_counter()
    lat = await run_for(seconds, 4, call)
    elapsed = time.perf_counter() - t0
    return len(lat) * 100 / elapsed, percentile(lat, 50) * 1000, percentile(lat, 99) * 1000


async def bench_search(patients: list[str], seconds: float) -> tuple[float, float, float, int]:
    """Searches/s, p50 and p95 (ms) at concurrency 4, and the matches a search: one patient's
    weights of the last 30 days, newest first, 20 a page (the issue's query; the server's
    default page is 50)."""
    rng = random.Random(4)
    since = (datetime.now(UTC) - timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    matches = 0

    async def call(conn: Connection) -> None:
        nonlocal matches
        pid = rng.choice(patients)
        path = f"/Observation?patient={pid}&code={LOINC}|29463-7&date=ge{since}&_sort=-date"
        path += "&_count=20"
        status, body = await conn.request("GET", path, b"", AUTH)
        if status != 200:
            raise RuntimeError(f"search failed: {status} {body[:300]!r}")
        matches += body.count(b'"mode":"match"')

    t0 = time.perf_counter()
    lat = await run_for(seconds, 4, call)
    elapsed = time.perf_counter() - t0
    return (
        len(lat) / elapsed,
        percentile(lat, 50) * 1000,
        percentile(lat, 95) * 1000,
        matches // len(lat),
    )


def worker_rss_mib(server: subprocess.Popen[bytes]) -> list[float]:
    """Resident memory (MiB) of each server worker process (the server itself with one)."""
    pids = [server.pid]
    children = Path(f"/proc/{server.pid}/task/{server.pid}/children").read_text().split()
    workers = [
        int(c)
        for c in children
        if b"resource_tracker" not in Path(f"/proc/{c}/cmdline").read_bytes()
    ]
    out = []
    for pid in workers or pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                out.append(int(line.split()[1]) / 1024)
    return out


def start_server(url: str, mode: str, args: argparse.Namespace) -> subprocess.Popen[bytes]:
    """``telemon serve`` on the benchmark database in ``mode``, once it answers."""
    env = {
        **os.environ,
        "TELEMON_DATABASE_URL": url,
        "TELEMON_AUTH": mode,
        "TELEMON_BASE_URL": BASE,
    }
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "service.cli",
            "serve",
            "--port",
            str(args.port),
            "--workers",
            str(args.workers),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(300):
        try:
            if httpx.get(f"{BASE}/metadata", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    time.sleep(1.0)  # every worker up, not just the first
    return server


def stop_server(server: subprocess.Popen[bytes]) -> None:
    """Stop the server and wait for it."""
    server.terminate()
    server.wait(timeout=30)


def main() -> None:
    global BASE
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--admin-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--database", default="telemon_bench")
    parser.add_argument("--observations", type=int, default=1_000_000)
    parser.add_argument("--patients", type=int, default=1000)
    parser.add_argument("--days", type=int, default=365, help="span of the loaded history")
    parser.add_argument("--seconds", type=float, default=20.0, help="per phase")
    parser.add_argument("--workers", type=int, default=2, help="server worker processes")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--reuse", action="store_true", help="keep the database of an earlier run")
    parser.add_argument(
        "--auth",
        default="oauth,open",
        help="modes to measure, in order: oauth (bearer token, audit on), open, or both "
        "comma-separated (default oauth,open)",
    )
    args = parser.parse_args()
    modes = [m.strip() for m in args.auth.split(",") if m.strip()]
    if not modes or any(m not in ("oauth", "open") for m in modes):
        parser.error("--auth takes oauth, open or both (oauth,open)")

    url = (
        args.admin_url.rsplit("/", 1)[0] + f"/{args.database}"
        if args.reuse
        else reset_database(args.admin_url, args.database)
    )
    key = register_backend(url, BENCH_CLIENT, BENCH_SCOPE)
    BASE = f"http://127.0.0.1:{args.port}/fhir"
    server = start_server(url, modes[0], args)
    try:
        authorize(modes[0], key)
        patients = ensure_patients(args.patients)
        stored = count_observations(url)
        if stored < args.observations:
            print(f"loading {args.observations - stored:,} Observations …", flush=True)
            bulk_load(url, patients, args.observations - stored, args.days)
        for index, mode in enumerate(modes):
            if index > 0:
                stop_server(server)
                server = start_server(url, mode, args)
            analyze(url)
            prewarm(url)
            print(f"telemon ingest benchmark — TELEMON_AUTH={mode}, PostgreSQL, "
                  f"{args.workers} server workers, {os.cpu_count()} cores, "
                  f"{count_observations(url):,} Observations stored", flush=True)
            authorize(mode, key)
            rate, p50, p99 = asyncio.run(bench_single(patients, args.seconds))
            print(f"  single create, concurrency 16: {rate:,.0f} creates/s, p50 {p50:.1f} ms, "
                  f"p99 {p99:.1f} ms", flush=True)
            authorize(mode, key)
            obs_rate, b50, b99 = asyncio.run(bench_bundles(patients, args.seconds))
            print(f"  transaction Bundles of 100, concurrency 4: {obs_rate:,.0f} Observations/s "
                  f"(bundle p50 {b50:.0f} ms, p99 {b99:.0f} ms)", flush=True)
            analyze(url)
            stored = count_observations(url)
            authorize(mode, key)
            per_s, s50, s95, per = asyncio.run(bench_search(patients, args.seconds))
            print(f"  search (one patient's weights, last 30 days, newest first), concurrency 4, "
                  f"{stored:,} Observations: {per_s:,.0f} searches/s, p50 {s50:.1f} ms, "
                  f"p95 {s95:.1f} ms ({per} matches per search)", flush=True)
            rss = ", ".join(f"{r:.0f}" for r in worker_rss_mib(server))
            print(f"  resident memory per worker after the run: {rss} MiB", flush=True)
    finally:
        stop_server(server)


def count_observations(url: str) -> int:
    """How many current Observations the database holds."""
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.connect() as conn:
        stored: int = conn.execute(
            select(func.count())
            .select_from(resources)
            .where(resources.c.res_type == "Observation", resources.c.deleted.is_(False))
        ).scalar_one()
    engine.dispose()
    return stored


def analyze(url: str) -> None:
    """Vacuum and refresh the planner's statistics, as autovacuum would given time.

    Without it, autovacuum wakes up after a bulk load and competes with the measurement for
    the machine's two cores.
    """
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text("VACUUM (ANALYZE)"))
    engine.dispose()


def prewarm(url: str) -> None:
    """Read every table and index once, so the measurement starts with a warm cache.

    A running server keeps its working set in memory; a benchmark database that sat idle may
    have had its pages dropped by the operating system (this VM reclaims idle page cache), and
    the phases would then measure the disk instead (seen: 110 creates/s, 95 Observations/s in
    Bundles). Uses the pg_prewarm extension (PostgreSQL contrib) into the OS cache.
    """
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text("CREATE EXTENSION IF NOT EXISTS pg_prewarm"))
        blocks = conn.execute(
            text(
                "SELECT sum(pg_prewarm(c.oid::regclass, 'read')) FROM pg_class c "
                "WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'i')"
            )
        ).scalar()
    engine.dispose()
    print(f"  prewarmed {blocks or 0:,} pages", flush=True)


def ensure_patients(n: int) -> list[str]:
    """Patients to attach measurements to (created once, found again on --reuse)."""
    with httpx.Client(
        base_url=BASE, timeout=60, headers={"Content-Type": "application/fhir+json", **AUTH}
    ) as client:
        found = client.get("/Patient", params={"_count": 500, "identifier": "urn:telemon:bench|"})
        ids: list[str] = []
        page: dict[str, Any] | None = found.json()
        while page:
            ids += [
                e["resource"]["id"]
                for e in page.get("entry", [])
                if "resource" in e and e["resource"]["resourceType"] == "Patient"
            ]
            nxt = [link["url"] for link in page.get("link", []) if link["relation"] == "next"]
            page = client.get(nxt[0]).json() if nxt else None
        while len(ids) < n:
            chunk = min(100, n - len(ids))
            entries = [
                {
                    "resource": {
                        "resourceType": "Patient",
                        "identifier": [{"system": "urn:telemon:bench", "value": str(uuid.uuid4())}],
                        "name": [{"family": f"Bench{len(ids) + i}"}],
                    },
                    "request": {"method": "POST", "url": "Patient"},
                }
                for i in range(chunk)
            ]
            r = client.post(
                "", json={"resourceType": "Bundle", "type": "transaction", "entry": entries}
            )
            r.raise_for_status()
            ids += [e["response"]["location"].split("/")[1] for e in r.json()["entry"]]
        return ids[:n]


if __name__ == "__main__":
    main()
