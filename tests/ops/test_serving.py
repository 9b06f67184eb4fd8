"""`telemon serve` as a real process: metrics over several workers, graceful stop on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.conftest import _free_port
from tests.factories import patient, post_entry, transaction
from tests.ops.helpers import sample

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Served:
    """A running ``telemon serve`` and the lines it has printed so far."""

    proc: subprocess.Popen[str]
    url: str
    lines: list[str] = field(default_factory=list)

    def count(self, text: str) -> int:
        """How many printed lines contain ``text``."""
        return sum(text in line for line in list(self.lines))

    def wait_ready(self, timeout: float = 60) -> None:
        """Until the listening socket answers (uvicorn logs start-up before it binds)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                httpx.get(f"{self.url}/health", timeout=5)
                return
            except httpx.TransportError:
                assert time.monotonic() < deadline, "".join(self.lines)
                time.sleep(0.05)

    def stop(self) -> int:
        """SIGTERM; the exit code."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)


@pytest.fixture
def serve(database_url: str) -> Iterator[object]:
    """Start ``telemon serve --workers N`` on the test database; waits until every worker runs."""
    started: list[Served] = []
    readers: list[threading.Thread] = []

    def _start(workers: int, **env: str) -> Served:
        port = _free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "serve", "--port", str(port),
             "--workers", str(workers)],
            cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            env={**os.environ, "TELEMON_DATABASE_URL": database_url, "TELEMON_AUTH": "open",
                 "TELEMON_ALERT_SWEEP_INTERVAL_SECONDS": "0", **env},
        )
        served = Served(proc, f"http://127.0.0.1:{port}")
        assert proc.stdout is not None
        stdout = proc.stdout
        reader = threading.Thread(target=lambda: served.lines.extend(stdout), daemon=True)
        reader.start()
        readers.append(reader)
        started.append(served)
        deadline = time.monotonic() + 60
        while served.count("Application startup complete") < workers:
            assert proc.poll() is None, "".join(served.lines)
            assert time.monotonic() < deadline, "".join(served.lines)
            time.sleep(0.05)
        return served

    yield _start
    for served, reader in zip(started, readers, strict=True):
        if served.proc.poll() is None:
            served.proc.kill()
            served.proc.wait()
        reader.join(timeout=10)  # it has read to the end: the pipe can be closed
        assert served.proc.stdout is not None
        served.proc.stdout.close()


def test_workers_share_their_metrics(serve: object, tmp_path: Path) -> None:
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    (metrics_dir / "counter_999999.db").write_bytes(b"left over from an earlier run")
    served = serve(2, PROMETHEUS_MULTIPROC_DIR=str(metrics_dir))  # type: ignore[operator]
    assert not (metrics_dir / "counter_999999.db").exists()  # emptied at start
    for _ in range(40):
        assert httpx.get(f"{served.url}/health").status_code == 200  # a new connection each
    labels = {"method": "GET", "route": "/health", "status": "200"}
    for _ in range(5):  # whichever worker answers the scrape, it reports the sum of both
        text = httpx.get(f"{served.url}/metrics").text
        assert sample(text, "telemon_http_requests_total", **labels) == 40
    pids = {p.name.split("_")[-1] for p in metrics_dir.glob("counter_*.db")}
    assert len(pids) == 2  # both workers served some of the requests
    assert served.stop() == 0


def test_single_process_json_logs(serve: object) -> None:
    served = serve(1)  # type: ignore[operator]
    httpx.get(f"{served.url}/health", headers={"X-Request-ID": "live-1"})
    assert served.stop() == 0
    records = [json.loads(line) for line in served.lines if line.startswith("{")]
    access = [r for r in records if r["logger"] == "telemon.access"]
    assert access and access[0]["request_id"] == "live-1"
    assert any(r["logger"] == "uvicorn.error" for r in records)  # uvicorn's lines too


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_lets_the_request_in_flight_finish(serve: object, workers: int) -> None:
    served = serve(workers, TELEMON_BUNDLE_MAX_ENTRIES="3000")  # type: ignore[operator]
    bundle = transaction(*(post_entry(patient()) for _ in range(3000)))
    result: dict[str, object] = {}

    body = json.dumps(bundle).encode()
    sent = threading.Event()

    def chunks() -> Iterator[bytes]:
        # The last chunk handed to the socket: the server has the whole request; only then
        # is the stop "in flight" (a fixed sleep raced the connection on a busy machine).
        yield body
        sent.set()

    def post() -> None:
        response = httpx.post(
            f"{served.url}/fhir", content=chunks(), timeout=120,
            headers={"Content-Type": "application/fhir+json",
                     "Content-Length": str(len(body))},
        )
        result["status"] = response.status_code
        result["entries"] = len(response.json().get("entry", []))
        result["done"] = time.monotonic()

    served.wait_ready()
    sender = threading.Thread(target=post)
    sender.start()
    assert sent.wait(timeout=60), "the request was not sent"
    time.sleep(0.2)  # the server reads it and starts writing 3000 resources
    assert "done" not in result, "the request finished too soon to test a stop in flight"
    signalled = time.monotonic()
    served.proc.send_signal(signal.SIGTERM)
    sender.join(timeout=120)
    assert served.proc.wait(timeout=60) == 0, "".join(served.lines)
    assert result["status"] == 200 and result["entries"] == 3000, result
    assert isinstance(result["done"], float) and result["done"] > signalled
    assert served.count("Finished server process") == workers


def test_rate_limits_count_the_forwarded_client_over_all_workers(serve: object) -> None:
    """Behind the (trusted, loopback) proxy the client is X-Forwarded-For's address, and the
    failures that two worker processes count add up in the database."""
    served = serve(2)  # type: ignore[operator]

    def wrong_login(forwarded_for: str | None) -> int:
        headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
        with httpx.Client(headers={**headers, "Connection": "close"}) as browser:
            page = browser.get(f"{served.url}/dashboard/login").text
            csrf = page.split('name="csrf_token" value="')[1].split('"')[0]
            return browser.post(
                f"{served.url}/dashboard/login",
                data={"csrf_token": csrf, "uzi": "999999999", "next": "/dashboard"},
            ).status_code

    statuses = [wrong_login("203.0.113.9") for _ in range(6)]
    assert statuses == [400] * 5 + [429]  # 5 per UZI number and address, over both workers
    assert wrong_login("198.51.100.3") == 400  # another client behind the proxy
    assert wrong_login(None) == 400  # the proxy itself
    assert served.stop() == 0
