"""The whole PGO flow in a real browser (headless Chromium): authorize → simulated DigiD
login → consent → the PGO's callback on another origin → token (PKCE) → a FHIR read; and the
deny path. The httpx-driven tests cannot see what broke here once: browsers apply the login and
consent pages' CSP ``form-action`` to the redirect after the form post, and ``form-action 'self'``
stopped the code on its way to the PGO."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from service.auth import clients
from service.storage.db import Database
from tests.auth.conftest import BSN_A, FHIR, REDIRECT, World, form_fields, pkce, register
from tests.chromium import chromium

SCOPE = "launch/patient patient/Patient.rs patient/Observation.rs"


class PgoCallback:
    """The PGO app's redirect endpoint: a real HTTP server on loopback that records what the
    browser brings back. Reached as ``localhost``, while telemon is ``127.0.0.1``: another
    origin (host and port), as a real PGO is."""

    def __init__(self) -> None:
        self.received: list[dict[str, str]] = []
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlsplit(self.path)
                if url.path != "/callback":  # the browser asks for /favicon.ico too
                    self.send_error(404)
                    return
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                received.append(query)
                body = f"<h1>PGO callback</h1><p id=result>{'code' in query}</p>".encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://localhost:{self.server.server_address[1]}/callback"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> PgoCallback:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def callback() -> Iterator[PgoCallback]:
    """The PGO's callback server."""
    with PgoCallback() as server:
        yield server


def _authorize_url(root: str, client_id: str, redirect: str, challenge: str, state: str) -> str:
    query = urlencode({
        "response_type": "code", "client_id": client_id, "redirect_uri": redirect,
        "scope": SCOPE, "state": state, "aud": f"{root}/fhir",
        "code_challenge": challenge, "code_challenge_method": "S256",
    })
    return f"{root}/oauth/authorize?{query}"


def _log_in_and_decide(
    page: Any, url: str, decision: str, callback: str, console: list[str]
) -> None:
    """What the patient does: open the PGO's link, log in with DigiD (simulated), decide."""
    page.goto(url)
    assert "Gesimuleerde DigiD" in page.inner_text("body")
    page.fill("#bsn", BSN_A)
    page.click("form[action='/oauth/login'] button[type=submit]")
    page.wait_for_selector("form[action='/oauth/consent']")
    assert "Voorbeeld PGO" in page.inner_text("body")
    page.click(f"button[name=decision][value={decision}]")
    try:
        page.wait_for_url(f"{callback}?**", timeout=10_000)
    except PlaywrightTimeout:
        pytest.fail(f"the browser never reached the PGO's callback; console errors: {console}")


def test_pgo_flow_in_chromium_with_the_callback_on_another_origin(
    oauth_live_server: str, oauth_db: Database, world: World, callback: PgoCallback
) -> None:
    root = oauth_live_server
    pgo, secret = clients.new_pgo("pgo.example.org", "Voorbeeld PGO", [callback.url])
    register(oauth_db, pgo)
    violations: list[str] = []
    with chromium() as browser:
        context = browser.new_context()
        page = context.new_page()
        page.on("console", lambda m: violations.append(m.text) if m.type == "error" else None)

        verifier, challenge = pkce()
        _log_in_and_decide(
            page, _authorize_url(root, pgo.client_id, callback.url, challenge, "allow-1"),
            "allow", callback.url, violations,
        )
        assert page.inner_text("#result") == "True"
        back = callback.received[-1]
        assert back["state"] == "allow-1" and "error" not in back

        # The PGO's backend exchanges the code (with the PKCE verifier) and reads.
        token = httpx.post(
            f"{root}/oauth/token",
            data={"grant_type": "authorization_code", "code": back["code"],
                  "redirect_uri": callback.url, "code_verifier": verifier},
            auth=(pgo.client_id, secret),
        )
        assert token.status_code == 200, token.text
        body = token.json()
        assert body["patient"] == world.a
        bearer = {"Authorization": f"Bearer {body['access_token']}"}
        me = httpx.get(f"{root}/fhir/Patient/{world.a}", headers=bearer)
        assert me.status_code == 200 and me.json()["id"] == world.a
        other = httpx.get(f"{root}/fhir/Patient/{world.b}", headers=bearer)
        assert other.status_code == 404  # the token is for this patient only

        # The deny path: the PGO hears access_denied, with its state, and gets no code.
        _log_in_and_decide(
            page, _authorize_url(root, pgo.client_id, callback.url, pkce()[1], "deny-2"),
            "deny", callback.url, violations,
        )
        assert page.inner_text("#result") == "False"
        denied = callback.received[-1]
        assert denied["error"] == "access_denied" and denied["state"] == "deny-2"
        assert "code" not in denied
        context.close()
    assert [v for v in violations if "Content Security Policy" in v] == []
    assert len(callback.received) == 2


def _form_action(response: Any) -> str:
    csp = response.headers["content-security-policy"]
    directive = next(d.strip() for d in csp.split(";") if d.strip().startswith("form-action"))
    assert "frame-ancestors 'none'" in csp and "default-src 'none'" in csp  # still strict
    return directive


def test_the_pages_allow_exactly_the_redirect_of_this_request(
    oauth_client: Any, world: World, pgo: tuple[str, str]
) -> None:
    """Login and consent pages: this server and the origin of the request's registered
    redirect URI; every other page: this server only."""
    challenge = pkce()[1]
    page = oauth_client.get(
        "/oauth/authorize",
        params={"response_type": "code", "client_id": pgo[0], "redirect_uri": REDIRECT,
                "scope": SCOPE, "state": "s", "aud": FHIR, "code_challenge": challenge,
                "code_challenge_method": "S256"},
    )
    assert page.status_code == 200
    expected = "form-action 'self' https://pgo.example.org"
    assert _form_action(page) == expected
    fields = form_fields(page.text)
    wrong = oauth_client.post("/oauth/login", data={**fields, "bsn": "123456789"})
    assert wrong.status_code == 400 and _form_action(wrong) == expected  # the login again
    consent = oauth_client.post("/oauth/login", data={**fields, "bsn": BSN_A})
    assert consent.status_code == 200 and _form_action(consent) == expected
    unknown = oauth_client.get("/oauth/authorize", params={"client_id": "nobody"})
    assert unknown.status_code == 400 and _form_action(unknown) == "form-action 'self'"
