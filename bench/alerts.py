"""Alert evaluation cost and alert visibility, against a live telemon server on PostgreSQL.

Prints Observations/s for transaction Bundles of 100 (concurrency 4) for patients enrolled in
both programmes, with alert evaluation on and off (two server runs on the same data shape),
the relative cost, and the p50/p99 time from a triggering write's response to the alert being
visible to a reader.

    .venv/bin/python bench/alerts.py
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
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._http import Connection
from bench.ingest import percentile, reset_database
from service.storage import migrate
from service.storage.db import Database

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
PLANS = [
    "http://telemon.example.org/fhir/PlanDefinition/heart-failure",
    "http://telemon.example.org/fhir/PlanDefinition/copd",
]
# (code, unit, typical value, day-to-day spread): a stable patient's home measurements.
VITALS = [
    ("29463-7", "kg", 80.0, 0.3),
    ("8867-4", "/min", 70.0, 4.0),
    ("2708-6", "%", 95.0, 0.8),
    ("9279-1", "/min", 16.0, 1.0),
    ("8310-5", "Cel", 36.8, 0.2),
]


def measurement(pid: str, when: datetime, vital: tuple[str, str, float, float],
                rng: random.Random) -> dict[str, Any]:
    """One realistic, unremarkable home measurement."""
    code, unit, typical, spread = vital
    return {
        "resourceType": "Observation",
        "status": "final",
        "identifier": [{"system": "urn:telemon:bench", "value": str(uuid.uuid4())}],
        "code": {"coding": [{"system": LOINC, "code": code}]},
        "subject": {"reference": f"Patient/{pid}"},
        "effectiveDateTime": when.isoformat(timespec="seconds"),
        "valueQuantity": {"value": round(rng.gauss(typical, spread), 1), "unit": unit,
                          "system": UCUM, "code": unit},
    }


def backfill_bundle(pid: str, end: datetime, rng: random.Random) -> bytes:
    """20 days x 5 vitals for one patient, as one transaction Bundle of 100 entries."""
    entries = []
    for day in range(20):
        morning = end - timedelta(days=day, hours=rng.randint(0, 2), minutes=rng.randint(0, 59))
        for vital in VITALS:
            entries.append({"resource": measurement(pid, morning, vital, rng),
                            "request": {"method": "POST", "url": "Observation"}})
    return orjson.dumps({"resourceType": "Bundle", "type": "transaction", "entry": entries})


def enrol(client: httpx.Client, n: int) -> list[str]:
    """``n`` patients, each with an active CarePlan in both programmes."""
    ids = []
    for _ in range(n):
        entries = [
            {"fullUrl": "urn:uuid:p", "resource": {"resourceType": "Patient",
                                                   "name": [{"family": "Bench"}]},
             "request": {"method": "POST", "url": "Patient"}},
            {"resource": {"resourceType": "CarePlan", "status": "active", "intent": "plan",
                          "subject": {"reference": "urn:uuid:p"},
                          "instantiatesCanonical": PLANS},
             "request": {"method": "POST", "url": "CarePlan"}},
        ]
        r = client.post("", json={"resourceType": "Bundle", "type": "transaction",
                                  "entry": entries})
        r.raise_for_status()
        ids.append(r.json()["entry"][0]["response"]["location"].split("/")[1])
    return ids


async def bundles(base: str, patients: list[str], seconds: float) -> float:
    """Observations/s for backfill Bundles of 100 at concurrency 4 (a fresh patient each)."""
    rng = random.Random(11)
    queue = list(patients)
    done = 0
    end = datetime.now(UTC) - timedelta(hours=1)
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        conn = Connection(base)
        while time.perf_counter() < deadline and queue:
            body = backfill_bundle(queue.pop(), end, rng)
            status, payload = await conn.request("POST", "", body)
            if status != 200:
                raise RuntimeError(f"bundle failed: {status} {payload[:300]!r}")
            done += 100
        await conn.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(4)))
    return done / (time.perf_counter() - t0)


async def visibility(base: str, patients: list[str]) -> tuple[float, float]:
    """Time from a triggering write's response to the Flag being readable (p50, p99 ms)."""
    conn = Connection(base)
    reader = Connection(base)
    rng = random.Random(12)
    lags = []
    for pid in patients:
        now = datetime.now(UTC) - timedelta(minutes=2)
        body = orjson.dumps(measurement(pid, now, ("2708-6", "%", 84.0, 0.0), rng))
        status, _ = await conn.request("POST", "/Observation", body, {"Prefer": "return=minimal"})
        t0 = time.perf_counter()
        if status != 201:
            raise RuntimeError(f"create failed: {status}")
        while True:
            _, found = await reader.request(
                "GET", f"/Flag?patient={pid}&status=active&_summary=count")
            if orjson.loads(found).get("total", 0) > 0:
                break
            if time.perf_counter() - t0 > 10:
                raise RuntimeError("alert never became visible")
        lags.append(time.perf_counter() - t0)
    await conn.close()
    await reader.close()
    return percentile(lags, 50) * 1000, percentile(lags, 99) * 1000


def start_server(url: str, port: int, workers: int, alerts: bool) -> subprocess.Popen[bytes]:
    """``telemon serve`` with alert evaluation on or off; returns once it answers."""
    env = {**os.environ, "TELEMON_DATABASE_URL": url, "TELEMON_AUTH": "open",
           "TELEMON_ALERTS_ENABLED": "true" if alerts else "false",
           "TELEMON_ALERT_SWEEP_INTERVAL_SECONDS": "0"}
    server = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve", "--port", str(port),
         "--workers", str(workers)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(300):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/fhir/metadata", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            time.sleep(0.1)
    server.terminate()
    raise RuntimeError("server did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--admin-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--database", default="telemon_bench_alerts")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--patients", type=int, default=400, help="enrolled per phase")
    parser.add_argument("--visibility", type=int, default=200, help="alerts to time")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--port", type=int, default=8766)
    args = parser.parse_args()

    url = reset_database(args.admin_url, args.database)
    db = Database(url, pool_size=1)
    migrate.upgrade(db)
    db.dispose()
    base = f"http://127.0.0.1:{args.port}/fhir"
    rates = {}
    for alerts in (False, True):
        server = start_server(url, args.port, args.workers, alerts)
        try:
            with httpx.Client(base_url=base, timeout=60,
                              headers={"Content-Type": "application/fhir+json"}) as client:
                patients = enrol(client, args.patients)
            rates[alerts] = asyncio.run(bundles(base, patients, args.seconds))
            if alerts:
                with httpx.Client(base_url=base, timeout=60,
                                  headers={"Content-Type": "application/fhir+json"}) as client:
                    fresh = enrol(client, args.visibility)
                p50, p99 = asyncio.run(visibility(base, fresh))
        finally:
            server.terminate()
            server.wait(timeout=30)
    added = (rates[False] / rates[True] - 1) * 100
    print(f"telemon alert benchmark — PostgreSQL, {args.workers} server workers")
    print(f"transaction Bundles of 100 (20 days x 5 vitals, patients in HF and COPD), "
          f"concurrency 4: alerts off {rates[False]:,.0f} Observations/s, "
          f"alerts on {rates[True]:,.0f} Observations/s → evaluation adds {added:.0f} % "
          f"to ingest time")
    print(f"alert visible after its triggering write returned: p50 {p50:.1f} ms, "
          f"p99 {p99:.1f} ms ({args.visibility} alerts)")


if __name__ == "__main__":
    main()
