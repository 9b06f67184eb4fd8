"""Search on a freshly loaded PostgreSQL database that was never analyzed, and the import rate.

This server runs autovacuum off, so right after a bulk load the planner has no statistics. The
bench loads ``--observations`` Observations without ANALYZE, prints the plan of "one patient's
weights of the last 30 days, newest first, 20 per page" (EXPLAIN ANALYZE) and of the other
common queries, measures that search at concurrency 4 per authorization mode (oauth: bearer
token and audit; open), and last the rate of ``telemon import`` of an NDJSON file (which
analyzes the tables it loaded, so it runs after the searches).

    .venv/bin/python bench/stale_search.py                          # 1,000,000 Observations
    .venv/bin/python bench/stale_search.py --observations 200000 --seconds 10   # a quick run
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any
from zoneinfo import ZoneInfo

import orjson
from sqlalchemy import Connection, event, text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import ingest
from service.core.registry import default_registry
from service.fhir.search import parse_search
from service.storage import search_sql
from service.storage.db import Database

#: (resource type, query parameters, $lastn) — {p}: a patient id, {since}: 30 days ago.
QUERIES = [
    ("Observation", "patient={p}&code=http://loinc.org|29463-7&date=ge{since}&_sort=-date", False),
    ("Observation", "patient={p}&code=29463-7&_sort=-date", False),
    ("Observation", "patient={p}&code=http://loinc.org|29463-7", True),
    ("Flag", "patient={p}&status=active&_sort=-date", False),
]


def never_analyzed(url: str) -> list[tuple[str, Any, Any]]:
    """(table, last_analyze, reltuples) of the resource and token tables."""
    db = Database(url, pool_size=1)
    with db.read() as conn:
        rows = conn.execute(
            text(
                "SELECT c.relname, s.last_analyze, c.reltuples FROM pg_class c "
                "JOIN pg_stat_user_tables s ON s.relid = c.oid "
                "WHERE c.relname IN ('resources', 'sp_token') ORDER BY 1"
            )
        ).all()
    db.dispose()
    return [tuple(r) for r in rows]


def explain(url: str, patient: str) -> None:
    """Print EXPLAIN ANALYZE of each common query as the server runs it."""
    registry = default_registry()
    since = (datetime.now(UTC) - timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    db = Database(url, pool_size=1)
    seen: list[tuple[str, Any]] = []

    def capture(*args: Any) -> None:
        seen.append((args[2], args[3]))

    for res_type, raw, is_lastn in QUERIES:
        rtype = registry.get(res_type)
        assert rtype is not None
        params = [
            tuple(p.split("=", 1)) for p in raw.format(p=patient, since=since).split("&")
        ]
        query, _ = parse_search(
            rtype, params, registry=registry, zone=ZoneInfo("Europe/Amsterdam"),
            default_count=20, max_count=100, strict=False,
        )  # fmt: skip
        with db.read() as conn:
            event.listen(db.engine, "before_cursor_execute", capture)
            try:
                if is_lastn:
                    search_sql.lastn(conn, query, 1)
                else:
                    search_sql.search(conn, query)
            finally:
                event.remove(db.engine, "before_cursor_execute", capture)
            statement, parameters = seen[-1]
            plan = _explain(conn, statement, parameters)
        print(f"\n{res_type}{'/$lastn' if is_lastn else ''}?{raw}\n{plan}", flush=True)
    db.dispose()


def _explain(conn: Connection, statement: str, parameters: Any) -> str:
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) " + statement, parameters)
        return "\n".join("    " + row[0] for row in cursor.fetchall())
    finally:
        cursor.close()


def import_rate(url: str, patients: list[str], count: int) -> float:
    """Observations/s of ``telemon import`` of an NDJSON file of ``count`` Observations."""
    rng = random.Random(5)
    now = datetime.now(UTC) - timedelta(days=400)
    with TemporaryDirectory() as tmp:
        path = Path(tmp) / "observations.ndjson"
        with path.open("wb") as out:
            for i in range(count):
                obs = ingest.observation(
                    patients[i % len(patients)], now - timedelta(minutes=i), rng
                )
                out.write(orjson.dumps(obs) + b"\n")
        env = {**os.environ, "TELEMON_DATABASE_URL": url}
        t0 = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "service.cli", "import", str(path)],
            env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        return count / (time.perf_counter() - t0)


def main() -> None:
    """Load without ANALYZE, explain, measure the search per mode, then the import rate."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--admin-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--database", default="telemon_bench_stale")
    parser.add_argument("--observations", type=int, default=1_000_000)
    parser.add_argument("--patients", type=int, default=1000)
    parser.add_argument("--days", type=int, default=365, help="span of the loaded history")
    parser.add_argument("--seconds", type=float, default=20.0, help="per search phase")
    parser.add_argument("--workers", type=int, default=2, help="server worker processes")
    parser.add_argument("--port", type=int, default=8766)
    parser.add_argument("--import-count", type=int, default=20_000, help="0: skip")
    parser.add_argument("--auth", default="oauth,open")
    args = parser.parse_args()
    modes = [m.strip() for m in args.auth.split(",") if m.strip()]

    url = ingest.reset_database(args.admin_url, args.database)
    key = ingest.register_backend(url, ingest.BENCH_CLIENT, ingest.BENCH_SCOPE)
    ingest.BASE = f"http://127.0.0.1:{args.port}/fhir"
    server = ingest.start_server(url, modes[0], args)
    try:
        ingest.authorize(modes[0], key)
        patients = ingest.ensure_patients(args.patients)
        print(f"loading {args.observations:,} Observations (no ANALYZE) …", flush=True)
        t0 = time.perf_counter()
        ingest.bulk_load(url, patients, args.observations, args.days)
        print(f"  loaded in {time.perf_counter() - t0:,.0f} s", flush=True)
        print(f"  statistics: {never_analyzed(url)}", flush=True)
        explain(url, patients[len(patients) // 2])
        for index, mode in enumerate(modes):
            if index > 0:
                ingest.stop_server(server)
                server = ingest.start_server(url, mode, args)
            ingest.authorize(mode, key)
            per_s, s50, s95, per = asyncio.run(ingest.bench_search(patients, args.seconds))
            print(
                f"TELEMON_AUTH={mode}, {args.workers} workers, {os.cpu_count()} cores, "
                f"{ingest.count_observations(url):,} Observations, never analyzed: search "
                f"(one patient's weights, last 30 days, newest first), concurrency 4: "
                f"{per_s:,.0f} searches/s, p50 {s50:.1f} ms, p95 {s95:.1f} ms "
                f"({per} matches per search); load average {os.getloadavg()[0]:.1f}",
                flush=True,
            )
        print(f"  statistics after the searches: {never_analyzed(url)}", flush=True)
    finally:
        ingest.stop_server(server)
    if args.import_count:
        rate = import_rate(url, patients, args.import_count)
        print(
            f"telemon import of {args.import_count:,} Observations (NDJSON): "
            f"{rate:,.0f} Observations/s; load average {os.getloadavg()[0]:.1f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
