"""Request ids (X-Request-ID) and the JSON log lines that carry them."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from service.app import create_app
from service.runtime import logs
from service.settings import Settings


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    """Everything the ``telemon`` loggers write at INFO and above, as JSON lines."""
    stream = io.StringIO()
    handler = logs.make_handler("json", stream)
    logger = logging.getLogger("telemon")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield stream
    logger.removeHandler(handler)
    logger.setLevel(old_level)


def _records(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_sane_request_id_is_echoed(client: TestClient) -> None:
    response = client.get("/health", headers={"X-Request-ID": "pgo-42.retry_1"})
    assert response.headers["x-request-id"] == "pgo-42.retry_1"


def test_a_request_id_is_generated_when_absent(client: TestClient) -> None:
    first = client.get("/fhir/metadata").headers["x-request-id"]
    second = client.get("/fhir/metadata").headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", first) and first != second


@pytest.mark.parametrize(
    "bad", [b"x" * 65, b"two words", b"semi;colon", b'{"json":1}', "ümlaut".encode(), b""]
)
def test_an_insane_request_id_is_replaced(client: TestClient, bad: bytes) -> None:
    response = client.get("/health", headers={"X-Request-ID": bad})
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["x-request-id"])


def test_the_access_log_line_carries_the_request_id(
    client: TestClient, log_lines: io.StringIO, make_patient: Any
) -> None:
    pid = make_patient()
    client.get(f"/fhir/Patient/{pid}", headers={"X-Request-ID": "trace-me-1"})
    access = [r for r in _records(log_lines) if r["logger"] == "telemon.access"]
    line = access[-1]
    assert line["request_id"] == "trace-me-1"
    assert line["level"] == "INFO"
    assert (line["method"], line["route"], line["status"]) == (
        "GET", "/fhir/{res_type}/{res_id}", 200
    )
    assert isinstance(line["duration_ms"], float)
    assert line["message"].startswith("GET /fhir/{res_type}/{res_id} 200 ")
    assert pid not in json.dumps(access)  # the route template, never the path
    assert {"time", "level", "logger", "message"} <= set(line)


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    """The app with two extra routes: one that logs from a worker thread, one that fails."""
    application = create_app(settings)

    def sync_logs() -> dict[str, str]:  # a sync route runs in the thread pool
        logging.getLogger("telemon.test").warning("inside the request", extra={"answer": 42})
        return {}

    async def fails() -> None:
        raise RuntimeError("boom")

    application.add_api_route("/test/logs", sync_logs)
    application.add_api_route("/test/fails", fails)
    return application


def test_log_lines_inside_a_request_carry_its_id(app: FastAPI, log_lines: io.StringIO) -> None:
    with TestClient(app) as c:
        c.get("/test/logs", headers={"X-Request-ID": "inner-1"})
    inner = next(r for r in _records(log_lines) if r["message"] == "inside the request")
    assert inner["request_id"] == "inner-1"
    assert inner["answer"] == 42  # extras become fields


def test_an_unhandled_error_keeps_the_request_id(app: FastAPI, log_lines: io.StringIO) -> None:
    with TestClient(app, raise_server_exceptions=False) as c:
        response = c.get("/test/fails", headers={"X-Request-ID": "crash-1"})
    assert response.status_code == 500
    assert response.headers["x-request-id"] == "crash-1"  # for the bug report
    records = _records(log_lines)
    error = next(r for r in records if r["message"] == "unhandled error")
    assert error["request_id"] == "crash-1" and "RuntimeError: boom" in error["exc_info"]
    access = next(r for r in records if r["logger"] == "telemon.access")
    assert (access["status"], access["request_id"]) == (500, "crash-1")


def test_outside_requests_there_is_no_request_id() -> None:
    stream = io.StringIO()
    logger = logging.getLogger("telemon.test.outside")
    logger.propagate = False
    logger.addHandler(logs.make_handler("json", stream))
    logger.warning("sweep %s", "done", extra={"when": object()})
    line = json.loads(stream.getvalue())
    assert "request_id" not in line and line["message"] == "sweep done"
    assert line["when"].startswith("<object")  # not JSON: logged as its text


def test_text_format_shows_the_request_id() -> None:
    stream = io.StringIO()
    logger = logging.getLogger("telemon.test.text")
    logger.propagate = False
    logger.addHandler(logs.make_handler("text", stream))
    logger.warning("no request")
    token = logs.request_id.set("abc")
    try:
        logger.warning("in a request")
    finally:
        logs.request_id.reset(token)
    first, second = stream.getvalue().splitlines()
    assert first.endswith("WARNING telemon.test.text [-] no request")
    assert second.endswith("WARNING telemon.test.text [abc] in a request")


def test_log_format_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TELEMON_LOG_FORMAT", raising=False)
    assert Settings().log_format is None  # serve: json, other commands: text
    monkeypatch.setenv("TELEMON_LOG_FORMAT", "text")
    assert Settings().log_format == "text"
