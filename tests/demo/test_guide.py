"""What ``telemon demo`` prints: every printed command is run against a live server.

Open mode (what ``make run`` serves) through the CLI in-process on both backends; OAuth mode as a
user runs it, with real ``telemon demo`` and ``telemon serve`` processes, a backend token signed
with the written key, and the PGO flow from the printed authorization URL to the patient's data.
"""

from __future__ import annotations

import html
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from typer.testing import CliRunner

from service.cli import app
from service.demo.guide import pkce_challenge
from service.settings import get_settings

ROOT = Path(__file__).resolve().parents[2]
#: `telemon` as the printed commands call it (the virtualenv's script; PYTHONPATH is inherited).
VENV_BIN = str(Path(sys.executable).parent)


def _commands(output: str, prefix: str = "curl ") -> list[str]:
    return [line.strip() for line in output.splitlines() if line.strip().startswith(prefix)]


def _curl(command: str, env: dict[str, str] | None = None) -> tuple[int, Any]:
    """Run a printed curl command in bash; its status code and JSON body."""
    result = subprocess.run(
        ["bash", "-c", command + " -w '\\n%{http_code}'"],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    body, _, status = result.stdout.rpartition("\n")
    return int(status), json.loads(body) if body else None


def test_pkce_challenge_is_rfc7636_s256() -> None:
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"  # RFC 7636 appendix B
    assert pkce_challenge(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


@pytest.fixture
def cli_env(
    database_url: str, live_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """The CLI on the live server's database, in open mode, in an empty working directory."""
    monkeypatch.setenv("TELEMON_DATABASE_URL", database_url)
    monkeypatch.setenv("TELEMON_AUTH", "open")
    monkeypatch.setenv("TELEMON_BASE_URL", live_server)
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    yield live_server
    get_settings.cache_clear()


def test_open_mode_printout_works_and_points_to_oauth(cli_env: str, tmp_path: Path) -> None:
    runner = CliRunner()

    first = runner.invoke(app, ["demo", "--weeks", "6"])
    secret = (tmp_path / "demo-keys" / "pgo-client-secret.txt").read_text()
    again = runner.invoke(app, ["demo", "--weeks", "6"])

    assert first.exit_code == 0, first.output
    assert again.exit_code == 0, again.output
    assert "0 resources created" in again.output
    assert (tmp_path / "demo-keys" / "pgo-client-secret.txt").read_text() == secret
    out = first.output
    assert "TELEMON_AUTH=open" in out
    assert f"Dashboard  {cli_env.removesuffix('/fhir')}/dashboard" in out
    for bsn in ("999990019", "999991115", "999995522"):
        assert f"BSN {bsn}" in out
    assert "TELEMON_AUTH=oauth make run" in out
    assert "/oauth/authorize" not in out  # no OAuth steps that open mode cannot serve
    commands = _commands(out)
    assert len(commands) == 5
    results = [_curl(c) for c in commands]
    assert all(status == 200 for status, _ in results), results
    alerts = results[0][1]
    rules = {
        e["resource"]["code"]["coding"][0]["code"]
        for e in alerts["entry"]
        if e["resource"]["resourceType"] == "Flag"
    }
    assert {"HF-WT-3D", "COPD-SPO2-ABS"} <= rules
    assert any(e["resource"]["resourceType"] == "Observation" for e in alerts["entry"])
    assert all(len(body["entry"]) >= 1 for _, body in results)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass(frozen=True)
class OAuthRun:
    """A demo loaded and served in oauth mode."""

    output: str  # what `telemon demo` printed
    root: str  # the server's root URL
    env: dict[str, str]  # what the user's shell has: PATH with `telemon`, TELEMON_BASE_URL
    cwd: Path  # where the user ran them (./demo-keys is there)


@pytest.fixture(scope="module")
def oauth_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OAuthRun]:
    """`telemon demo` then `telemon serve` with TELEMON_AUTH=oauth on a fresh SQLite file, as
    `TELEMON_AUTH=oauth make run` does (one server for the tests of this module)."""
    tmp_path = tmp_path_factory.mktemp("oauth-run")
    port = _free_port()
    root = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "TELEMON_DATABASE_URL": f"sqlite:///{tmp_path}/telemon.sqlite",
        "TELEMON_AUTH": "oauth",
        "TELEMON_BASE_URL": f"{root}/fhir",
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    demo = subprocess.run(
        [sys.executable, "-m", "service.cli", "demo", "--weeks", "6"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert demo.returncode == 0, demo.stderr
    server = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve", "--port", str(port), "--workers", "1"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{root}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "telemon serve did not start"
            time.sleep(0.1)
        shell = {k: env[k] for k in ("PATH", "TELEMON_BASE_URL")}
        yield OAuthRun(demo.stdout, root, shell, tmp_path)
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_oauth_mode_backend_token_with_the_written_key_reads_the_alerts(
    oauth_run: OAuthRun,
) -> None:
    out, env, cwd = oauth_run.output, oauth_run.env, oauth_run.cwd
    assert "TELEMON_AUTH=oauth" in out
    (token_line,) = _commands(out, "TOKEN=$(")
    assert token_line == "TOKEN=$(telemon demo token)"
    token = subprocess.run(
        ["bash", "-c", token_line + ' && printf %s "$TOKEN"'],
        cwd=cwd,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert token.count(".") == 2  # a JWT
    reads = [c for c in _commands(out) if "$TOKEN" in c]
    assert len(reads) == 5
    results = [_curl(c, {"TOKEN": token}) for c in reads]
    assert all(status == 200 for status, _ in results), results
    rules = {
        e["resource"]["code"]["coding"][0]["code"]
        for e in results[0][1]["entry"]
        if e["resource"]["resourceType"] == "Flag"
    }
    assert {"HF-WT-3D", "COPD-SPO2-ABS"} <= rules
    assert _curl(reads[0].replace("$TOKEN", "not-a-token"))[0] == 401

    (by_hand,) = [c for c in _commands(out) if "grant_type=client_credentials" in c]
    manual = subprocess.run(
        ["bash", "-c", by_hand],
        cwd=cwd,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    answer = json.loads(manual.stdout)
    assert answer["token_type"] == "Bearer" and answer["scope"] == "system/Flag.rs"
    assert answer["access_token"].count(".") == 2


_FIELDS = re.compile(r'name="(tx|csrf_token)" value="([^"]*)"')


def _fields(page: str) -> dict[str, str]:
    return {k: html.unescape(v) for k, v in _FIELDS.findall(page)}


def test_oauth_mode_pgo_flow_from_the_printed_url(
    oauth_run: OAuthRun,
) -> None:
    out, root = oauth_run.output, oauth_run.root
    (url,) = [line.strip() for line in out.splitlines() if "/oauth/authorize?" in line]
    bsn = re.search(r"Hendrik Jansen\s+BSN (\d{9})", out)
    assert bsn is not None
    with httpx.Client(timeout=30) as browser:
        login = browser.get(url)

        assert login.status_code == 200
        assert 'name="bsn"' in login.text and "Simulated DigiD" in login.text
        consent = browser.post(f"{root}/oauth/login", data={**_fields(login.text), "bsn": bsn[1]})
        assert consent.status_code == 200 and "Demo PGO" in consent.text
        back = browser.post(
            f"{root}/oauth/consent", data={**_fields(consent.text), "decision": "allow"}
        )
    assert back.status_code == 302
    location = urlsplit(back.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == (
        "http://127.0.0.1:8765/callback"
    )
    query = parse_qs(location.query)
    assert query["state"] == ["demo"]

    (exchange,) = [c for c in _commands(out) if "grant_type=authorization_code" in c]
    status, answer = _curl(exchange, {"CODE": query["code"][0]})
    assert status == 200, answer
    patient = answer["patient"]
    assert "patient/Observation.rs" in answer["scope"]
    reads = [c for c in _commands(out) if "$PGO_TOKEN" in c]
    assert len(reads) == 3
    results = [_curl(c, {"PGO_TOKEN": answer["access_token"], "PATIENT": patient}) for c in reads]
    assert all(status == 200 for status, _ in results), results
    observations, flags, audit = (body["entry"] for _, body in results)
    assert observations and all(
        e["resource"]["subject"]["reference"] == f"Patient/{patient}" for e in observations
    )
    assert {e["resource"]["code"]["coding"][0]["code"] for e in flags} >= {"HF-WT-3D"}
    assert audit  # the patient sees who read their data (at least this session's own reads)
    verifier = exchange.rsplit("code_verifier=", 1)[1]
    assert [pkce_challenge(verifier)] == parse_qs(urlsplit(url).query)["code_challenge"]
