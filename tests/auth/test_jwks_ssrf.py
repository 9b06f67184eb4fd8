"""JWKS URLs are guarded against SSRF (docs/security.md, OWASP API7): https only, no loopback,
private, link-local (cloud metadata) or other non-public targets unless
``TELEMON_JWKS_ALLOW_PRIVATE`` is on (development). Only a loopback server is ever contacted."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from joserfc.jwk import ECKey
from typer.testing import CliRunner

from service.app import create_app
from service.auth import clients
from service.auth.jwks import JwksError, JwksFetcher, check_url, resolve_target
from service.cli import app
from service.core import ssrf
from service.settings import Settings, get_settings
from service.storage.db import Database
from tests.auth.conftest import Backend, backend_token, register

runner = CliRunner()
SCOPE = "system/Observation.rs"


class JwksServer:
    """A loopback HTTP server serving one JWKS and counting the requests it gets."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.requests: list[str] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.requests.append(self.path)
                if self.path == "/redirect":
                    self.send_response(302)
                    self.send_header("Location", "/jwks.json")
                    self.end_headers()
                    return
                body = json.dumps(document).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet."""

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/jwks.json"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def key() -> ECKey:
    """The backend client's ES384 key pair."""
    k = ECKey.generate_key("P-384", private=True)
    k.ensure_kid()
    return k


@pytest.fixture
def jwks_server(key: ECKey) -> Iterator[JwksServer]:
    """The loopback JWKS server for ``key``."""
    server = JwksServer({"keys": [key.as_dict(private=False)]})
    yield server
    server.close()


@pytest.fixture
def cli_env(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The CLI on the test database, with private JWKS targets not allowed."""
    monkeypatch.setenv("TELEMON_DATABASE_URL", database_url)
    monkeypatch.delenv("TELEMON_JWKS_ALLOW_PRIVATE", raising=False)
    get_settings.cache_clear()
    yield database_url
    get_settings.cache_clear()


def _add_backend(client_id: str, url: str) -> Any:
    return runner.invoke(
        app,
        ["clients", "add-backend", "--client-id", client_id, "--jwks-url", url, "--scope", SCOPE],
    )


def test_cli_refuses_a_loopback_jwks_url(
    cli_env: str, oauth_db: Database, jwks_server: JwksServer
) -> None:
    https_loopback = jwks_server.url.replace("http://", "https://")
    for url, message in (
        (jwks_server.url, "must use https"),
        (https_loopback, "is not a public address"),
        ("https://localhost/jwks.json", "loopback name"),
    ):
        result = _add_backend("ehr-loop", url)
        assert result.exit_code == 1, result.output
        assert "Refused" in result.output and message in result.output, result.output
    with oauth_db.read() as conn:
        assert clients.get(conn, "ehr-loop", include_inactive=True) is None
    assert jwks_server.requests == []


def test_token_endpoint_refuses_a_loopback_jwks_url(
    oauth_client: TestClient, oauth_db: Database, key: ECKey, jwks_server: JwksServer
) -> None:
    # Registered behind the CLI's back (e.g. a database edited by hand): the fetch guard holds.
    register(oauth_db, clients.new_backend("ehr-loop", "EHR", SCOPE, jwks_url=jwks_server.url))
    backend = Backend("ehr-loop", key, "ES384")

    response = backend_token(oauth_client, backend, SCOPE)

    assert response.status_code in (400, 401), response.text
    assert response.json()["error"] == "invalid_client"
    assert "must use https" in response.json()["error_description"]
    assert jwks_server.requests == []


def test_loopback_jwks_url_works_when_allowed(
    cli_env: str,
    oauth_settings: Settings,
    key: ECKey,
    jwks_server: JwksServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TELEMON_JWKS_ALLOW_PRIVATE", "true")
    get_settings.cache_clear()
    registered = _add_backend("ehr-dev", jwks_server.url)
    assert registered.exit_code == 0, registered.output
    assert jwks_server.requests == []  # registration does not fetch
    dev = oauth_settings.model_copy(update={"jwks_allow_private": True})
    backend = Backend("ehr-dev", key, "ES384")

    with TestClient(create_app(dev), base_url="http://testserver") as http:
        first = backend_token(http, backend, SCOPE)
        second = backend_token(http, backend, SCOPE, h_jku=jwks_server.url)

    assert first.status_code == 200, first.text
    assert first.json()["scope"] == SCOPE
    assert second.status_code == 200, second.text
    assert jwks_server.requests == ["/jwks.json", "/jwks.json"]  # no Cache-Control: no caching


REFUSED_URLS = [
    "http://jwks.example.com/jwks.json",  # not https
    "https://10.0.0.5/jwks.json",
    "https://10.255.255.255:8443/jwks.json",
    "https://172.16.0.1/jwks.json",
    "https://192.168.1.10/jwks.json",
    "https://169.254.169.254/latest/meta-data/",  # cloud metadata (link-local)
    "https://100.64.0.1/jwks.json",  # carrier-grade NAT
    "https://127.0.0.1/jwks.json",
    "https://0.0.0.0/jwks.json",
    "https://[::1]/jwks.json",
    "https://[fd00::1]/jwks.json",
    "https://[fe80::1]/jwks.json",
    "https://[::ffff:169.254.169.254]/jwks.json",  # IPv4-mapped IPv6
    "https://224.0.0.1/jwks.json",
    "https://localhost/jwks.json",
    "https://user:pw@jwks.example.com/jwks.json",
    "https:///jwks.json",
]


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if the guard ever lets an HTTP client be built."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the SSRF guard let a request through")

    monkeypatch.setattr(httpx, "Client", refuse)


@pytest.mark.parametrize("url", REFUSED_URLS)
def test_guard_refuses_non_public_targets(url: str, no_network: None) -> None:
    with pytest.raises(JwksError):
        check_url(url, allow_private=False)
    if "@" not in url:  # credentials are a registration rule; the fetch pins the IP anyway
        with pytest.raises(JwksError):
            JwksFetcher(allow_private=False, timeout=1).get(url)


def test_guard_checks_what_a_dns_name_resolves_to(
    monkeypatch: pytest.MonkeyPatch, no_network: None
) -> None:
    # A public-looking name that resolves to the metadata address (or rebinds to it later) is
    # refused at fetch time, whatever it resolved to at registration.
    def fake_getaddrinfo(host: str, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        address = {"rebind.example.com": "169.254.169.254", "mixed.example.com": "10.1.2.3"}
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address[host], port))]

    monkeypatch.setattr(ssrf.socket, "getaddrinfo", fake_getaddrinfo)
    check_url("https://rebind.example.com/jwks.json", allow_private=False)  # a name: deferred
    for host in ("rebind.example.com", "mixed.example.com"):
        with pytest.raises(JwksError, match="non-public address"):
            resolve_target(f"https://{host}/jwks.json", allow_private=False)


def test_guard_pins_the_checked_public_address(monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_getaddrinfo(host: str, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.215.14", port))]

    monkeypatch.setattr(ssrf.socket, "getaddrinfo", fake_getaddrinfo)
    pinned, host, ip = resolve_target("https://ehr.example.com/keys/jwks.json", allow_private=False)
    assert (pinned, host, ip) == (
        "https://93.184.215.14/keys/jwks.json",
        "ehr.example.com",
        "93.184.215.14",
    )
    check_url("https://ehr.example.com/keys/jwks.json", allow_private=False)
    check_url("https://93.184.215.14/jwks.json", allow_private=False)


def test_redirects_are_not_followed(jwks_server: JwksServer) -> None:
    fetcher = JwksFetcher(allow_private=True, timeout=2)
    with pytest.raises(JwksError, match="answered 302"):
        fetcher.get(jwks_server.url.replace("/jwks.json", "/redirect"))
    assert jwks_server.requests == ["/redirect"]


def test_allow_private_is_off_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TELEMON_JWKS_ALLOW_PRIVATE", raising=False)
    assert Settings(_env_file=None).jwks_allow_private is False  # type: ignore[call-arg]
    monkeypatch.setenv("TELEMON_JWKS_ALLOW_PRIVATE", "true")
    assert Settings(_env_file=None).jwks_allow_private is True  # type: ignore[call-arg]
