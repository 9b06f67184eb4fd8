"""In oauth mode the public URL is configuration, never the request (issue 12, finding 2).

A backend client's assertion whose ``aud`` is another server's token URL, sent with that
server's ``Host``, used to be accepted when ``TELEMON_BASE_URL`` was unset (the documented
default), and the token then worked with that ``Host``. Now oauth mode does not start without
the setting, and the token audience, issuer, assertion audience and every link come from it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from service.app import create_app
from service.settings import Settings
from tests.auth.conftest import FHIR, TOKEN_URL, World, backend_token, make_backend
from tests.factories import weight

ROOT = Path(__file__).resolve().parents[2]
EVIL = "evil.example"
EVIL_HOST = {"Host": EVIL}


def test_oauth_mode_does_not_start_without_the_public_url(oauth_settings: Settings) -> None:
    unset = oauth_settings.model_copy(update={"base_url": None})
    with pytest.raises(ValueError, match="TELEMON_BASE_URL is required with TELEMON_AUTH=oauth"):
        create_app(unset)
    create_app(unset.model_copy(update={"auth": "open"})).state.telemon.fhir.db.dispose()


def test_serve_refuses_oauth_mode_without_the_public_url(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "TELEMON_DATABASE_URL": f"sqlite:///{tmp_path}/t.sqlite",
        "TELEMON_AUTH": "oauth",
        "TELEMON_BASE_URL": "",
    }
    result = subprocess.run(
        [sys.executable, "-m", "service.cli", "serve", "--port", "1", "--workers", "1"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    assert "TELEMON_BASE_URL is required with TELEMON_AUTH=oauth" in result.stderr
    assert "Host" in result.stderr
    assert not (tmp_path / "t.sqlite").exists()  # refused before touching the database


@pytest.mark.parametrize(
    "url", ["telemon.example.org/fhir", "ftp://x.example/fhir", "https://x.example/fhir?a=1",
            "https://x.example/fhir#top", "https://u:p@x.example/fhir", "https:///fhir"],
)
def test_the_public_url_must_be_an_absolute_http_url(url: str) -> None:
    with pytest.raises(ValidationError):
        Settings(base_url=url)
    assert Settings(base_url="https://t.example.org/fhir/").base_url == "https://t.example.org/fhir"


def test_an_assertion_for_another_servers_token_url_is_refused_with_its_host(
    oauth_client: TestClient, oauth_db: object
) -> None:
    backend = make_backend(oauth_db, "system/Observation.rs")  # type: ignore[arg-type]
    other = "http://evil.example/oauth/token"
    response = oauth_client.post(
        "/oauth/token",
        data={
            "grant_type": "client_credentials",
            "scope": "system/Observation.rs",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": backend.assertion(aud=other),
        },
        headers=EVIL_HOST,
    )
    assert response.status_code in (400, 401), response.text
    assert response.json()["error"] == "invalid_client"
    assert "'aud'" in response.json()["error_description"]
    # The same client, with an assertion for this server, from the same Host: a token for
    # this server (the Host changes nothing).
    ok = backend_token(oauth_client, backend, "system/Observation.rs")
    assert ok.status_code == 200, ok.text


def test_a_token_is_not_accepted_because_of_the_host_header(
    oauth_client: TestClient, world: World
) -> None:
    tokens = oauth_client.app.state.telemon.auth.tokens  # type: ignore[attr-defined]
    forged_for_evil = tokens.issue(
        issuer=f"http://{EVIL}",
        audience=f"http://{EVIL}/fhir",
        client_id="c",
        scope="system/Observation.rs",
        lifetime=60,
        subject="c",
    ).access_token
    for host in (EVIL_HOST, {}):
        refused = oauth_client.get(
            f"/fhir/Observation/{world.obs_a}",
            headers={"Authorization": f"Bearer {forged_for_evil}", **host},
        )
        assert refused.status_code == 401, host
    ours = tokens.issue(
        issuer=TOKEN_URL.removesuffix("/oauth/token"),
        audience=FHIR,
        client_id="c",
        scope="system/Observation.rs",
        lifetime=60,
        subject="c",
    ).access_token
    read = oauth_client.get(
        f"/fhir/Observation/{world.obs_a}", headers={"Authorization": f"Bearer {ours}", **EVIL_HOST}
    )
    assert read.status_code == 200


def test_links_and_discovery_ignore_the_host_header(
    oauth_client: TestClient, oauth_db: object, world: World
) -> None:
    backend = make_backend(oauth_db, "system/Observation.cruds")  # type: ignore[arg-type]
    token = backend_token(oauth_client, backend, "system/Observation.cruds").json()
    bearer = {"Authorization": f"Bearer {token['access_token']}", **EVIL_HOST}
    smart = oauth_client.get("/fhir/.well-known/smart-configuration", headers=EVIL_HOST).json()
    assert smart["token_endpoint"] == TOKEN_URL
    assert smart["authorization_endpoint"].startswith("http://testserver/oauth/")
    metadata = oauth_client.get("/fhir/metadata", headers=EVIL_HOST).json()
    assert EVIL not in str(metadata) and "http://testserver/fhir" in str(metadata)
    search = oauth_client.get("/fhir/Observation", params={"_count": "1"}, headers=bearer).json()
    assert EVIL not in str(search["link"]) + str(search["entry"][0]["fullUrl"])
    created = oauth_client.post(
        "/fhir/Observation",
        json=weight(world.a),
        headers={**bearer, "Content-Type": "application/fhir+json"},
    )
    assert created.status_code == 201, created.text
    assert created.headers["location"].startswith(f"{FHIR}/Observation/")
    # Starlette's trailing-slash redirect would have built its Location from the Host header.
    slash = oauth_client.get("/fhir/Observation/", headers=bearer, follow_redirects=False)
    assert slash.status_code == 404 and "location" not in slash.headers
