"""`telemon serve` and `telemon db upgrade` as a user runs them (real processes)."""

from __future__ import annotations

import gc
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

from service.runtime import serving
from service.storage import migrate
from service.storage.db import Database
from tests.conftest import PG_ADMIN_URL

ROOT = Path(__file__).resolve().parents[2]


def _telemon(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *args],
        cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=60,
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def pg_empty() -> Iterator[str]:
    """The URL of an empty PostgreSQL database."""
    name = f"telemon_cli_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def test_serve_on_fresh_sqlite_migrates_and_answers(tmp_path: Path) -> None:
    port = _free_port()
    env = {**os.environ, "TELEMON_DATABASE_URL": f"sqlite:///{tmp_path}/t.sqlite",
           "TELEMON_AUTH": "open"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve", "--port", str(port), "--workers", "1"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        status = None
        for _ in range(150):
            try:
                status = httpx.get(f"http://127.0.0.1:{port}/fhir/metadata", timeout=1).status_code
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        assert status == 200
        db = Database(f"sqlite:///{tmp_path}/t.sqlite")
        assert migrate.is_current(db)
        db.dispose()
    finally:
        proc.terminate()
        output = proc.communicate(timeout=20)[0]
    assert "TELEMON_AUTH=open" in output  # the loud warning


def test_open_mode_refuses_public_address(tmp_path: Path) -> None:
    result = _telemon("serve", "--host", "0.0.0.0", env={
        "TELEMON_DATABASE_URL": f"sqlite:///{tmp_path}/t.sqlite", "TELEMON_AUTH": "open"})
    assert result.returncode == 2
    assert "Refusing to serve" in result.stderr
    assert not (tmp_path / "t.sqlite").exists()


def test_serve_refuses_outdated_postgresql_schema(pg_empty: str) -> None:
    result = _telemon("serve", "--port", str(_free_port()),
                      env={"TELEMON_DATABASE_URL": pg_empty, "TELEMON_AUTH": "open"})
    assert result.returncode == 3
    assert "telemon db upgrade" in result.stderr
    assert "--migrate" in result.stderr
    db = Database(pg_empty)
    assert migrate.current_revision(db) is None  # nothing was changed
    db.dispose()


def test_db_upgrade_brings_postgresql_to_head(pg_empty: str) -> None:
    result = _telemon("db", "upgrade", env={"TELEMON_DATABASE_URL": pg_empty})
    assert result.returncode == 0, result.stderr
    db = Database(pg_empty)
    assert migrate.is_current(db)
    db.dispose()
    assert "revision" in result.stdout


def test_several_workers_share_the_port_and_stop_together(tmp_path: Path) -> None:
    port = _free_port()
    env = {**os.environ, "TELEMON_DATABASE_URL": f"sqlite:///{tmp_path}/t.sqlite",
           "TELEMON_AUTH": "open"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve", "--port", str(port), "--workers", "2"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        status = None
        deadline = time.monotonic() + 30
        while status is None and time.monotonic() < deadline:
            try:
                status = httpx.get(f"http://127.0.0.1:{port}/fhir/metadata", timeout=1).status_code
            except httpx.HTTPError:
                time.sleep(0.1)
        assert status == 200
    finally:
        proc.terminate()
        output = proc.communicate(timeout=40)[0]
    assert proc.returncode == 0, output
    with pytest.raises(httpx.ConnectError):  # no worker is left listening
        httpx.get(f"http://127.0.0.1:{port}/fhir/metadata", timeout=1)


def test_workers_default_to_one_per_core(tmp_path: Path) -> None:
    """Without --workers, `telemon serve` runs one worker per core it may use (SQLite too)."""
    cores = len(os.sched_getaffinity(0))
    assert serving.default_workers() == cores
    help_text = _telemon("serve", "--help", env={"COLUMNS": "300"}).stdout
    assert "default: one per CPU core" in " ".join(help_text.replace("│", " ").split())
    port = _free_port()
    env = {**os.environ, "TELEMON_DATABASE_URL": f"sqlite:///{tmp_path}/t.sqlite",
           "TELEMON_AUTH": "open", "TELEMON_ALERT_SWEEP_INTERVAL_SECONDS": "0"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve", "--port", str(port)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    lines: list[str] = []
    assert proc.stdout is not None
    stdout = proc.stdout
    reader = threading.Thread(target=lambda: lines.extend(stdout), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if sum("Application startup complete" in line for line in lines) >= cores:
                break
            time.sleep(0.2)
        assert httpx.get(f"http://127.0.0.1:{port}/fhir/metadata", timeout=5).status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=40)
        reader.join(timeout=5)
        stdout.close()
    output = "".join(lines)
    started = output.count("Application startup complete")
    assert started == cores, output


def test_startup_heap_is_frozen_out_of_the_garbage_collector() -> None:
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    try:
        serving.freeze_startup_heap()
        assert gc.get_freeze_count() > 10_000  # the app's models and routes, imported by now
    finally:
        gc.unfreeze()
