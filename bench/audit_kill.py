"""The kill -9 audit trial: no Bundle is ever committed without its AuditEvent (NEN 7513).

Starts ``telemon serve`` in oauth mode on a fresh database, posts transaction Bundles of
Observations from several connections with a backend-service token, and kills the whole server
(SIGKILL to its process group: every worker at once, as a crash would) at a random moment while
Bundles are in flight; then starts it again and repeats. At the end it reads the database and
counts, per Bundle: committed or not, complete or partial, acknowledged (a 200 came back) or
not, and whether the transaction's AuditEvent names every Observation it wrote.

    .venv/bin/python bench/audit_kill.py                    # PostgreSQL, 20 rounds
    .venv/bin/python bench/audit_kill.py --rounds 5 --workers 1
    .venv/bin/python bench/audit_kill.py --database-url sqlite:////tmp/kill.sqlite

Prints the figures and exits 1 when any committed Bundle lacks its AuditEvent, any Bundle is
partial, or any acknowledged Bundle is missing.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson
from sqlalchemy import create_engine, select

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.ingest import register_backend, reset_database
from service.demo.clients import request_backend_token
from service.storage.db import normalize_url
from service.storage.tables import resources

ROOT = Path(__file__).resolve().parent.parent
CLIENT_ID = "kill-trial"
SCOPE = "system/Observation.cruds system/Patient.cruds"
TAG = "urn:telemon:kill-trial"  # identifier system: value "<bundle id>/<entry>"


@dataclass
class TrialResult:
    """What the database holds after the trial, per Bundle."""

    rounds: int
    sent: int = 0  # Bundles posted (answered or not)
    acknowledged: set[str] = field(default_factory=set)  # a 200 came back
    committed: set[str] = field(default_factory=set)  # at least one entry is stored
    partial: set[str] = field(default_factory=set)  # some entries stored, not all
    unaudited: set[str] = field(default_factory=set)  # stored, not named by an AuditEvent

    @property
    def in_flight_committed(self) -> set[str]:
        """Committed, but the answer never came back: the server died after the commit."""
        return self.committed - self.acknowledged

    @property
    def lost(self) -> set[str]:
        """Acknowledged but not stored (must never happen)."""
        return self.acknowledged - self.committed

    def ok(self) -> bool:
        """No unaudited, partial or lost Bundle."""
        return not (self.unaudited or self.partial or self.lost)

    def summary(self) -> str:
        """The figures, one per line."""
        return "\n".join(
            [
                f"rounds (kill -9 of every server process): {self.rounds}",
                f"Bundles posted: {self.sent}, acknowledged (200): {len(self.acknowledged)}",
                f"Bundles committed: {len(self.committed)} "
                f"(of which in flight when killed, committed but never answered: "
                f"{len(self.in_flight_committed)})",
                f"committed Bundles without their AuditEvent: {len(self.unaudited)} "
                f"of {len(self.committed)}",
                f"partial Bundles: {len(self.partial)}; acknowledged but lost: {len(self.lost)}",
            ]
        )


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def serving(url: str, port: int, workers: int) -> Iterator[subprocess.Popen[bytes]]:
    """``telemon serve`` in oauth mode in its own process group, answering when yielded."""
    base = f"http://127.0.0.1:{port}/fhir"
    env = {
        **os.environ,
        "TELEMON_DATABASE_URL": url,
        "TELEMON_AUTH": "oauth",
        "TELEMON_BASE_URL": base,
        "TELEMON_ALERT_SWEEP_INTERVAL_SECONDS": "0",
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve", "--port", str(port), "--workers",
         str(workers)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: one killpg reaches every worker
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"{base}/metadata", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("telemon serve did not start")
            time.sleep(0.1)
        yield server
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=30)


def _bundle(bundle_id: str, patient_id: str, entries: int) -> bytes:
    now = time.time()
    return orjson.dumps(
        {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [
                {
                    "request": {"method": "POST", "url": "Observation"},
                    "resource": {
                        "resourceType": "Observation",
                        "status": "final",
                        "identifier": [{"system": TAG, "value": f"{bundle_id}/{i}"}],
                        "category": [
                            {
                                "coding": [
                                    {
                                        "system": "http://terminology.hl7.org/CodeSystem/"
                                        "observation-category",
                                        "code": "vital-signs",
                                    }
                                ]
                            }
                        ],
                        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
                        "subject": {"reference": f"Patient/{patient_id}"},
                        "effectiveDateTime": time.strftime(
                            "%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 60 - i)
                        ),
                        "valueQuantity": {
                            "value": 60 + i % 40,
                            "unit": "/min",
                            "system": "http://unitsofmeasure.org",
                            "code": "/min",
                        },
                    },
                }
                for i in range(entries)
            ],
        }
    )


def _post_until_killed(
    base: str,
    headers: dict[str, str],
    patient_id: str,
    entries: int,
    result: TrialResult,
    lock: threading.Lock,
    stop: threading.Event,
) -> None:
    with httpx.Client(base_url=base, timeout=30, headers=headers) as http:
        while not stop.is_set():
            bundle_id = uuid.uuid4().hex
            with lock:
                result.sent += 1
            try:
                response = http.post("", content=_bundle(bundle_id, patient_id, entries))
            except httpx.HTTPError:
                return  # the server died under this request
            if response.status_code != 200:
                raise RuntimeError(f"Bundle refused: {response.status_code} {response.text}")
            with lock:
                result.acknowledged.add(bundle_id)


def run_trial(
    url: str,
    *,
    rounds: int,
    workers: int = 2,
    connections: int = 4,
    entries: int = 10,
    kill_after: tuple[float, float] = (0.3, 1.5),
    seed: int = 13,
) -> TrialResult:
    """Run ``rounds`` rounds of post-and-kill against ``telemon serve`` on ``url``."""
    key = register_backend(url, CLIENT_ID, SCOPE)
    rng = random.Random(seed)
    result = TrialResult(rounds)
    lock = threading.Lock()
    patient_id = ""
    for _ in range(rounds):
        port = free_port()
        base = f"http://127.0.0.1:{port}/fhir"
        with serving(url, port, workers) as server:
            token = request_backend_token(
                base.removesuffix("/fhir") + "/oauth/token", key, CLIENT_ID, SCOPE
            )["access_token"]
            headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"}
            if not patient_id:
                created = httpx.post(
                    f"{base}/Patient",
                    headers=headers,
                    content=orjson.dumps({"resourceType": "Patient", "name": [{"family": "K"}]}),
                    timeout=30,
                )
                created.raise_for_status()
                patient_id = created.json()["id"]
            stop = threading.Event()
            posters = [
                threading.Thread(
                    target=_post_until_killed,
                    args=(base, headers, patient_id, entries, result, lock, stop),
                    daemon=True,
                )
                for _ in range(connections)
            ]
            for poster in posters:
                poster.start()
            time.sleep(rng.uniform(*kill_after))
            os.killpg(server.pid, signal.SIGKILL)  # every worker, mid-request
            stop.set()
            for poster in posters:
                poster.join(timeout=60)
    _check(url, result, entries)
    return result


def _check(url: str, result: TrialResult, entries: int) -> None:
    """Read what the database holds into ``result``."""
    engine = create_engine(normalize_url(url))
    stored: dict[str, set[str]] = {}  # bundle → Observation ids
    audited: set[str] = set()
    with engine.connect() as conn:
        rows = conn.execute(
            select(resources.c.res_type, resources.c.res_id, resources.c.content).where(
                resources.c.res_type.in_(("Observation", "AuditEvent"))
            )
        )
        for res_type, res_id, content in rows:
            data = orjson.loads(content)
            if res_type == "Observation":
                for ident in data.get("identifier", []):
                    if ident.get("system") == TAG:
                        stored.setdefault(ident["value"].split("/")[0], set()).add(res_id)
            elif data.get("subtype", [{}])[0].get("code") == "transaction":
                for entity in data.get("entity", []):
                    ref = entity.get("what", {}).get("reference", "")
                    if ref.startswith("Observation/"):
                        audited.add(ref.split("/")[1])
    engine.dispose()
    result.committed = set(stored)
    result.partial = {b for b, ids in stored.items() if len(ids) != entries}
    result.unaudited = {b for b, ids in stored.items() if not ids <= audited}


def main() -> None:
    """Run the trial and print its figures."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--admin-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--database", default="telemon_bench_kill")
    parser.add_argument("--database-url", help="use this database as it is (e.g. sqlite:///…)")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--entries", type=int, default=10, help="Observations per Bundle")
    args = parser.parse_args()
    url = args.database_url or reset_database(args.admin_url, args.database)
    result = run_trial(
        url,
        rounds=args.rounds,
        workers=args.workers,
        connections=args.connections,
        entries=args.entries,
    )
    print(result.summary())
    raise SystemExit(0 if result.ok() else 1)


if __name__ == "__main__":
    main()
