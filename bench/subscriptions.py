"""Subscription delivery latency against live processes on PostgreSQL.

Starts `telemon serve` (2 workers) and `telemon worker` on a fresh database of its own
(``telemon_bench_subscriptions``, never ``test``), a receiver on loopback that records when each
notification arrives, and one rest-hook Subscription on every alert Flag (full resource, HMAC
signed). Then it raises ``--alerts`` alerts (SpO2 84 % for enrolled heart-failure patients,
``--concurrency`` writers at once) and prints, per event, the time from queueing (in the alert's
own transaction, just before it commits) to arrival at the receiver, and from the write's HTTP
response to arrival: p50/p95/p99/max, plus how many were lost or repeated.

    .venv/bin/python bench/subscriptions.py [--alerts 1000] [--concurrency 4]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._http import Connection
from bench.ingest import percentile, reset_database
from service.storage import migrate
from service.storage.db import Database

HF = "http://telemon.example.org/fhir/PlanDefinition/heart-failure"
SECRET_URL = "http://telemon.example.org/fhir/StructureDefinition/subscription-signing-secret"


class Receiver:
    """Records (arrival time, event timestamp, focus, patient) of every notification event."""

    def __init__(self) -> None:
        self.events: list[tuple[float, datetime, str, str]] = []
        self.lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                arrived = time.time()
                entries = orjson.loads(body)["entry"]
                patients = {
                    e["resource"]["id"]: e["resource"]["subject"]["reference"].split("/")[1]
                    for e in entries[1:]
                }
                with owner.lock:
                    for p in entries[0]["resource"]["parameter"]:
                        if p["name"] == "notification-event":
                            parts = {q["name"]: q for q in p["part"]}
                            stamp = datetime.fromisoformat(parts["timestamp"]["valueInstant"])
                            focus = parts["focus"]["valueReference"]["reference"]
                            flag = focus.split("/")[1]
                            owner.events.append((arrived, stamp, focus, patients[flag]))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet."""

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/notify"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def start(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    """A telemon command in the background."""
    return subprocess.Popen(
        [sys.executable, "-m", "service.cli", *args],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def enrol(client: httpx.Client, n: int) -> list[str]:
    """``n`` patients enrolled in heart failure, in transactions of 100."""
    ids: list[str] = []
    while len(ids) < n:
        entries = []
        for _ in range(min(100, n - len(ids))):
            ref = f"urn:uuid:{uuid.uuid4()}"
            entries += [
                {"fullUrl": ref, "resource": {"resourceType": "Patient",
                                              "name": [{"family": "Bench"}]},
                 "request": {"method": "POST", "url": "Patient"}},
                {"resource": {"resourceType": "CarePlan", "status": "active", "intent": "plan",
                              "subject": {"reference": ref}, "instantiatesCanonical": [HF]},
                 "request": {"method": "POST", "url": "CarePlan"}},
            ]
        r = client.post("", json={"resourceType": "Bundle", "type": "transaction",
                                  "entry": entries})
        r.raise_for_status()
        ids += [e["response"]["location"].split("/")[1]
                for e in r.json()["entry"] if e["response"]["location"].startswith("Patient/")]
    return ids


async def raise_alerts(base: str, patients: list[str], concurrency: int) -> dict[str, float]:
    """POST one alerting SpO2 per patient; when each patient's write was answered."""
    queue = list(patients)
    answered: dict[str, float] = {}

    async def writer() -> None:
        conn = Connection(base)
        while queue:
            pid = queue.pop()
            when = (datetime.now(UTC) - timedelta(minutes=1)).isoformat(timespec="seconds")
            body = orjson.dumps({
                "resourceType": "Observation", "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": "2708-6"}]},
                "subject": {"reference": f"Patient/{pid}"}, "effectiveDateTime": when,
                "valueQuantity": {"value": 84, "unit": "%",
                                  "system": "http://unitsofmeasure.org", "code": "%"},
            })
            status, payload = await conn.request(
                "POST", "/Observation", body, {"Prefer": "return=minimal"}
            )
            if status != 201:
                raise RuntimeError(f"create failed: {status} {payload[:200]!r}")
            answered[pid] = time.time()
            await asyncio.sleep(0.005)  # a steady stream rather than one burst
        await conn.close()

    await asyncio.gather(*(writer() for _ in range(concurrency)))
    return answered


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--admin-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--database", default="telemon_bench_subscriptions")
    parser.add_argument("--alerts", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--port", type=int, default=8767)
    args = parser.parse_args()

    url = reset_database(args.admin_url, args.database)
    db = Database(url, pool_size=1)
    migrate.upgrade(db)
    db.dispose()
    receiver = Receiver()
    env = {**os.environ, "TELEMON_DATABASE_URL": url, "TELEMON_AUTH": "open",
           "TELEMON_ALERT_SWEEP_INTERVAL_SECONDS": "0",
           "TELEMON_SUBSCRIPTION_ALLOW_PRIVATE": "true", "TELEMON_LOG_FORMAT": "text"}
    base = f"http://127.0.0.1:{args.port}/fhir"
    server = start(["serve", "--port", str(args.port), "--workers", "2"], env)
    worker = start(["worker", "--threads", "2"], env)
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{base}/metadata", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        with httpx.Client(base_url=base, timeout=120,
                          headers={"Content-Type": "application/fhir+json"}) as client:
            client.post("/Subscription", json={
                "resourceType": "Subscription", "status": "requested", "reason": "bench",
                "criteria": "Flag",
                "channel": {"type": "rest-hook", "endpoint": receiver.url,
                            "payload": "application/fhir+json",
                            "extension": [{"url": SECRET_URL, "valueString": "b" * 40}]},
            }).raise_for_status()
            patients = enrol(client, args.alerts)
        answered = asyncio.run(raise_alerts(base, patients, args.concurrency))
        deadline = time.time() + 60
        while len({e[2] for e in receiver.events}) < args.alerts and time.time() < deadline:
            time.sleep(0.05)
    finally:
        worker.terminate()
        server.terminate()
        worker.wait(timeout=30)
        server.wait(timeout=30)
    events = list(receiver.events)
    first: dict[str, tuple[float, datetime, str]] = {}
    for arrived, stamp, focus, pid in events:
        first.setdefault(focus, (arrived, stamp, pid))
    queued = [(a - s.timestamp()) * 1000 for a, s, _ in first.values()]
    # A notification may even arrive before the write's own response does: that counts as 0.
    after_response = [max(0.0, (a - answered[p]) * 1000) for a, _, p in first.values()]
    lost = args.alerts - len(first)
    print(f"telemon subscription benchmark — PostgreSQL, serve --workers 2 + telemon worker, "
          f"{os.cpu_count()} cores; {args.alerts} alerts from {args.concurrency} writers")
    print(f"delivered {len(first)} alerts ({lost} lost, {len(events) - len(first)} repeated)")
    for name, values in (("queued in the alert's transaction → received", queued),
                         ("write's HTTP response → received", after_response)):
        print(f"{name}: p50 {percentile(values, 50):.1f} ms, p95 {percentile(values, 95):.1f} ms, "
              f"p99 {percentile(values, 99):.1f} ms, max {max(values):.1f} ms")


if __name__ == "__main__":
    main()
