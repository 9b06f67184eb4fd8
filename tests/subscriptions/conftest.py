"""Subscription tests: a real receiver on loopback, an app whose worker retries quickly, helpers.

The receiver is a small HTTP server in a thread that records every notification and can be
switched down (nothing listens: connection refused), up again, or made to answer an error or
slowly. Every test runs on SQLite and PostgreSQL (the root ``database_url`` fixture).
"""

from __future__ import annotations

import hashlib
import hmac
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.fhir import bundles
from service.fhir.service import FhirService
from service.settings import Settings
from service.storage import subscription_store
from service.storage.db import Database
from tests.factories import alert_bundle, subscription

PROFILES = Path(__file__).resolve().parents[2] / "fhir_profiles"
SECRET = "s3cret-" + "x" * 30


@dataclass
class Received:
    """One notification as the receiver got it."""

    headers: dict[str, str]
    body: bytes
    bundle: dict[str, Any]
    at: float

    def parameter(self, name: str) -> Any:
        """The value of a top-level SubscriptionStatus parameter."""
        status = self.bundle["entry"][0]["resource"]
        for p in status["parameter"]:
            if p["name"] == name:
                return next(v for k, v in p.items() if k.startswith("value"))
        return None

    @property
    def subscription_id(self) -> str:
        """The id of the Subscription the notification is for."""
        reference: str = self.parameter("subscription")["reference"]
        return reference.rsplit("/", 1)[1]

    @property
    def events(self) -> list[tuple[int, str | None]]:
        """``(event number, focus reference)`` of each notification-event, in order."""
        out = []
        for p in self.bundle["entry"][0]["resource"]["parameter"]:
            if p["name"] == "notification-event":
                parts = {q["name"]: q for q in p["part"]}
                focus = parts.get("focus", {}).get("valueReference", {}).get("reference")
                out.append((int(parts["event-number"]["valueString"]), focus))
        return out

    @property
    def resources(self) -> list[dict[str, Any]]:
        """The resources after the status entry (full-resource content)."""
        return [e["resource"] for e in self.bundle["entry"][1:]]


class Receiver:
    """An EHR's notification endpoint on loopback that records what it is sent."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.paths: list[str] = []  # of every request, answered 2xx or not
        self.status = 200
        self.delay = 0.0
        self.redirect_to: str | None = None
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port: int = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/notify"
        self.up()

    def up(self) -> None:
        """Listen (again) on the same port."""
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if owner.delay:
                    time.sleep(owner.delay)
                with owner._lock:
                    owner.paths.append(self.path)
                    if owner.redirect_to is not None:
                        self.send_response(307)
                        self.send_header("Location", owner.redirect_to)
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    status = owner.status
                    if 200 <= status < 300:
                        owner.received.append(
                            Received(dict(self.headers), body, orjson.loads(body), time.time())
                        )
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet."""

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    def down(self) -> None:
        """Stop listening: connections are refused until :meth:`up`."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def notifications(self, subscription_id: str | None = None) -> list[Received]:
        """The notifications received so far (of one Subscription), in arrival order."""
        with self._lock:
            return [
                r
                for r in self.received
                if subscription_id is None or r.subscription_id == subscription_id
            ]

    def events(self, subscription_id: str) -> list[tuple[int, str | None]]:
        """Every event received for a Subscription, in arrival order (repeats included)."""
        return [e for r in self.notifications(subscription_id) for e in r.events]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """The receiver, up."""
    r = Receiver()
    yield r
    r.down()


@pytest.fixture
def settings(database_url: str) -> Settings:
    """Open access, alerts on, the delivery worker in the app, quick retries, loopback allowed."""
    return Settings(
        database_url=database_url,
        auth="open",
        alerts_enabled=True,
        alert_sweep_interval_seconds=0,
        language="en",  # the assertions read the English alert texts
        profiles_dir=PROFILES,
        subscription_allow_private=True,
        delivery_worker="on",
        subscription_timeout_seconds=2.0,
        subscription_max_failures=3,
        subscription_retry_base_seconds=0.05,
        subscription_retry_max_seconds=0.3,
        subscription_poll_seconds=0.2,
    )


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    """The app (with its delivery worker) through the ASGI stack."""
    with TestClient(create_app(settings), base_url="http://testserver") as c:
        c.headers["Content-Type"] = "application/fhir+json"
        yield c


def fhir_of(client: TestClient) -> FhirService:
    """The FHIR service of the app behind ``client``."""
    fhir: FhirService = client.app.state.telemon.fhir  # type: ignore[attr-defined]
    return fhir


def subscribe(client: TestClient, endpoint: str, criteria: str = "Flag", **kw: Any) -> str:
    """Create a Subscription through the API; its id."""
    response = client.post("/fhir/Subscription", json=subscription(endpoint, criteria, **kw))
    assert response.status_code == 201, response.text
    sub_id: str = response.json()["id"]
    return sub_id


def raise_alerts(fhir: FhirService, count: int, per_bundle: int = 100, **kw: Any) -> None:
    """Raise ``count`` alerts (one per new patient) in transactions of ``per_bundle``."""
    while count > 0:
        n = min(per_bundle, count)
        bundles.process(fhir, alert_bundle(n, **kw))
        count -= n


def wait_until(condition: Callable[[], Any], timeout: float = 20.0, what: str = "") -> None:
    """Poll ``condition`` until it is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what or condition}"
        time.sleep(0.02)


def verify_signature(received: Received, secret: str = SECRET) -> bool:
    """What a receiver does: recompute X-Telemon-Signature over the raw body, check the time."""
    fields = dict(p.split("=", 1) for p in received.headers["X-Telemon-Signature"].split(","))
    timestamp = int(fields["t"])
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + received.body, hashlib.sha256)
    return abs(time.time() - timestamp) < 300 and hmac.compare_digest(
        mac.hexdigest(), fields["v1"]
    )


def check_in_order(events: list[tuple[int, str | None]], expected: int) -> int:
    """Assert at-least-once, in-order delivery of events 1..``expected``: each event number is
    at most one past the highest seen so far (a repeat is a resent batch, never a skip), and
    all of 1..expected arrived. Returns how many repeats there were."""
    highest = 0
    repeats = 0
    for number, _ in events:
        assert number <= highest + 1, f"event {number} arrived before {highest + 1}"
        if number <= highest:
            repeats += 1
        highest = max(highest, number)
    assert {n for n, _ in events} == set(range(1, expected + 1))
    return repeats


def backlog(db: Database) -> int:
    """Events queued and not delivered."""
    with db.read() as conn:
        return subscription_store.backlog(conn)
