"""The issue's scenario: 1,000 alerts while the receiver is down, then up; real `telemon worker`
processes, one of them killed with SIGKILL half-way and started again.

Every alert must reach the receiver at least once, in order per subscription, none lost. On
PostgreSQL two workers run at once (row locks keep them apart; the killed one's lock dies with
its connection); on SQLite one worker runs and its lease on the subscription it was delivering
expires.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from service.app import create_app
from service.settings import Settings
from service.storage.db import Database
from service.storage.tables import resources
from tests.factories import PROGRAMME, alert_bundle, subscription
from tests.subscriptions.conftest import (
    Receiver,
    backlog,
    check_in_order,
    fhir_of,
    raise_alerts,
    subscribe,
    wait_until,
)

ROOT = Path(__file__).resolve().parents[2]
ALERTS = 1000
BATCH = 20


class Workers:
    """`telemon worker` processes on the test database."""

    def __init__(self, settings: Settings, logs: Path) -> None:
        self.env = {
            **os.environ,
            "TELEMON_DATABASE_URL": settings.database_url,
            "TELEMON_LOG_FORMAT": "text",
            "TELEMON_SUBSCRIPTION_ALLOW_PRIVATE": "true",
            "TELEMON_SUBSCRIPTION_TIMEOUT_SECONDS": "1",
            "TELEMON_SUBSCRIPTION_MAX_FAILURES": "3",
            "TELEMON_SUBSCRIPTION_RETRY_BASE_SECONDS": "0.2",
            "TELEMON_SUBSCRIPTION_RETRY_MAX_SECONDS": "1",
            "TELEMON_SUBSCRIPTION_POLL_SECONDS": "1",
            "TELEMON_SUBSCRIPTION_BATCH_SIZE": str(BATCH),
        }
        self.logs = logs
        self.processes: list[subprocess.Popen[bytes]] = []
        self._files: list[IO[bytes]] = []

    def start(self) -> subprocess.Popen[bytes]:
        """Start one more worker."""
        log = (self.logs / f"worker-{len(self.processes)}.log").open("wb")
        self._files.append(log)
        process = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "worker", "--threads", "2"],
            cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
        )
        self.processes.append(process)
        return process

    def stop_all(self) -> None:
        """Stop every worker still running."""
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
        for f in self._files:
            f.close()


@pytest.fixture
def workers(settings: Settings, tmp_path: Path) -> Iterator[Workers]:
    """Worker processes, stopped after the test."""
    w = Workers(settings, tmp_path)
    yield w
    w.stop_all()


def test_outage_and_kill_9_lose_nothing(
    settings: Settings, receiver: Receiver, db: Database, workers: Workers
) -> None:
    quiet = settings.model_copy(update={"delivery_worker": "off"})
    postgres = not db.is_sqlite
    with TestClient(create_app(quiet), base_url="http://testserver") as client:
        client.headers["Content-Type"] = "application/fhir+json"

        def status(sub_id: str) -> Any:
            return client.get(f"/fhir/Subscription/{sub_id}").json()["status"]

        receiver.down()
        subs = [
            subscribe(client, receiver.url, "Flag"),
            subscribe(client, receiver.url, f"Flag?programme={PROGRAMME['HF']}&status=active"),
        ]
        victim = workers.start()
        if postgres:
            workers.start()
        raise_alerts(fhir_of(client), ALERTS, per_bundle=100)
        wait_until(lambda: all(status(s) == "error" for s in subs), what="the error status")
        assert receiver.notifications() == []
        assert backlog(db) == 2 * ALERTS

        receiver.delay = 0.02  # slow enough to be killed mid-way
        receiver.up()
        wait_until(lambda: len(receiver.notifications()) >= 15, what="delivery to resume")
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=10)
        got_before_kill = len(receiver.notifications())
        workers.start()
        wait_until(lambda: backlog(db) == 0, timeout=90, what="every event delivered")
        wait_until(lambda: all(status(s) == "active" for s in subs), what="status active")
        with db.read() as conn:
            flags = {
                r.res_id
                for r in conn.execute(
                    select(resources.c.res_id).where(resources.c.res_type == "Flag")
                )
            }

    assert got_before_kill < 2 * ALERTS / BATCH  # the kill came half-way
    for sub_id in subs:
        events = receiver.events(sub_id)
        repeats = check_in_order(events, ALERTS)
        assert repeats <= 2 * BATCH  # only batches in flight at the kill are sent again
        assert {f.split("/")[1] for _, f in events if f} == flags  # every alert, none other
    assert len(flags) == ALERTS


def test_serve_alone_delivers_with_several_processes(
    settings: Settings, receiver: Receiver, db: Database, tmp_path: Path
) -> None:
    # `telemon serve --workers 2` with its own delivery (SQLite's default; on PostgreSQL
    # TELEMON_DELIVERY_WORKER=on): each process runs a worker, and still every event arrives
    # once and in order (leases on SQLite, row locks on PostgreSQL).
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**Workers(settings, tmp_path).env, "TELEMON_AUTH": "open",
           "TELEMON_DELIVERY_WORKER": "on", "TELEMON_ALERT_SWEEP_INTERVAL_SECONDS": "0",
           "TELEMON_SUBSCRIPTION_BATCH_SIZE": "2"}
    log = (tmp_path / "serve.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve", "--port", str(port), "--workers", "2"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}/fhir"
    try:
        with httpx.Client(base_url=base, timeout=30,
                          headers={"Content-Type": "application/fhir+json"}) as http:
            # Two worker processes import the app: slow on a busy machine, so a generous bound.
            wait_until(lambda: _answers(http), timeout=90, what="serve to start")
            subs = [http.post("/Subscription", json=subscription(receiver.url)).json()["id"]
                    for _ in range(2)]
            for _ in range(4):
                assert http.post("", json=alert_bundle(5)).status_code == 200
            wait_until(lambda: backlog(db) == 0 and all(
                len(receiver.events(s)) >= 20 for s in subs), what="delivery by serve")
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
        log.close()
    assert server.returncode == 0
    for sub_id in subs:
        assert check_in_order(receiver.events(sub_id), 20) == 0


def _answers(http: httpx.Client) -> bool:
    try:
        return http.get("/metadata").status_code == 200
    except httpx.HTTPError:
        return False
