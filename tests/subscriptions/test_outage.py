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
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from service.app import create_app
from service.settings import Settings
from service.storage.db import Database
from service.storage.tables import resources
from tests.factories import PROGRAMME
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
