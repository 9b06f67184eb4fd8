"""Dashboard access: login in both modes, sessions, CSRF, headers, and what cannot get in."""

from __future__ import annotations

import dataclasses
import time
from urllib.parse import parse_qs, urlsplit

import orjson
import pytest
from fastapi.testclient import TestClient

from service.auth import clients
from service.auth.identity import UZI_SYSTEM
from service.dashboard import sessions
from service.demo.data import CLINICIAN_UZI, DemoSummary
from tests.dashboard.conftest import csrf_of, fhir_of, form_post, login
from tests.factories import patient

PAGES = ["/dashboard", "/dashboard/patients", "/dashboard/patients/some-id?days=90"]


@pytest.mark.parametrize("path", PAGES)
def test_pages_need_a_login_in_open_mode_too(dash: TestClient, path: str) -> None:
    response = dash.get(path, follow_redirects=False)
    assert response.status_code == 303
    location = urlsplit(response.headers["location"])
    assert location.path == "/dashboard/login"
    assert parse_qs(location.query)["next"] == [path]
    assert response.headers["cache-control"] == "no-store"


def test_login_shows_the_simulated_label_and_sets_a_strict_form_cookie(dash: TestClient) -> None:
    page = dash.get("/dashboard/login")
    assert page.status_code == 200
    assert "Simulated UZI login (test and demo only)" in page.text
    cookie = page.headers["set-cookie"]
    assert cookie.startswith(f"{sessions.LOGIN_COOKIE}=")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/dashboard" in cookie
    headers = page.headers
    assert headers["content-security-policy"].startswith("default-src 'self'; script-src 'none'")
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY"
    assert headers["x-content-type-options"] == "nosniff"
    assert "<script" not in page.text


def test_a_clinician_logs_in_and_gets_a_session_cookie(dash: TestClient, clinician: str) -> None:
    response = login(dash, next_path="/dashboard/patients")
    assert response.status_code == 303
    assert response.headers["location"] == "/dashboard/patients"
    cookie = next(
        c for c in response.headers.get_list("set-cookie") if c.startswith(sessions.COOKIE + "=")
    )
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/dashboard" in cookie
    assert "Secure" not in cookie  # plain http (the test server); https gets Secure
    assert "Max-Age=1800" in cookie  # TELEMON_DASHBOARD_SESSION_MINUTES=30
    page = dash.get("/dashboard/patients")
    assert page.status_code == 200 and "dr. Eva Visser" in page.text


def test_the_session_cookie_is_secure_over_https(settings: object, clinician: str) -> None:
    from service.app import create_app

    with TestClient(create_app(settings), base_url="https://testserver") as https:  # type: ignore[arg-type]
        response = login(https)
    cookies = response.headers.get_list("set-cookie")
    assert any(c.startswith(sessions.COOKIE + "=") and "Secure" in c for c in cookies)


@pytest.mark.parametrize(
    ("uzi", "message"),
    [
        ("123456789", "Unknown UZI number"),
        ("12ab", "This is not a valid UZI number"),
        ("999990019", "Unknown UZI number"),  # a patient's BSN is no clinician login
    ],
)
def test_only_a_stored_practitioner_can_log_in(
    dash: TestClient, clinician: str, uzi: str, message: str
) -> None:
    fhir_of(dash).create(patient("999990019"))
    response = login(dash, uzi=uzi)
    assert response.status_code == 400
    assert message in response.text
    assert sessions.COOKIE not in dash.cookies
    assert dash.get("/dashboard", follow_redirects=False).status_code == 303


def test_an_inactive_practitioner_cannot_log_in(dash: TestClient) -> None:
    fhir = fhir_of(dash)
    fhir.create(
        {
            "resourceType": "Practitioner",
            "active": False,
            "identifier": [{"system": UZI_SYSTEM, "value": "900099999"}],
            "name": [{"family": "Gone"}],
        }
    )
    response = login(dash, uzi="900099999")
    assert response.status_code == 400 and "not active" in response.text


def test_the_login_form_needs_its_csrf_token(dash: TestClient, clinician: str) -> None:
    dash.get("/dashboard/login")
    no_token = form_post(dash, "/dashboard/login", uzi=CLINICIAN_UZI)
    assert no_token.status_code == 403
    wrong = form_post(dash, "/dashboard/login", uzi=CLINICIAN_UZI, csrf_token="forged")
    assert wrong.status_code == 403
    dash.cookies.clear()  # a cross-site post carries no (SameSite=Strict) cookie
    cross_site = form_post(dash, "/dashboard/login", uzi=CLINICIAN_UZI, csrf_token="x")
    assert cross_site.status_code == 403
    assert sessions.COOKIE not in dash.cookies


def test_login_never_redirects_off_the_dashboard(dash: TestClient, clinician: str) -> None:
    for target in ("https://evil.example/", "//evil.example/x", "/fhir/Patient", "/dashboardx"):
        response = login(dash, next_path=target)
        assert response.headers["location"] == "/dashboard", target
        dash.cookies.clear()


def test_a_pgo_token_does_not_open_the_dashboard(
    oauth_dash: TestClient, oauth_demo: DemoSummary
) -> None:
    from tests.auth.conftest import REDIRECT, pgo_token, register

    fhir = fhir_of(oauth_dash)
    client, secret = clients.new_pgo("pgo.example.org", "Voorbeeld PGO", [REDIRECT])
    register(fhir.db, client)  # type: ignore[arg-type]
    token = pgo_token(oauth_dash, (client.client_id, secret), oauth_demo.patients[0].bsn)
    bearer = {"Authorization": f"Bearer {token['access_token']}"}
    page = oauth_dash.get("/dashboard", headers=bearer, follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"].startswith("/dashboard/login")
    flag = fhir.search("Flag", [("status", "active")]).matches[0]
    action = oauth_dash.post(
        f"/dashboard/alerts/{flag.res_id}/acknowledge",
        data={"version": str(flag.version_id), "csrf_token": "x"},
        headers=bearer,
        follow_redirects=False,
    )
    assert action.status_code == 303
    assert fhir.read("Flag", flag.res_id).version_id == flag.version_id  # nothing changed


def test_a_tampered_or_foreign_cookie_is_no_session(dash: TestClient, clinician: str) -> None:
    login(dash)
    sealed = dash.cookies[sessions.COOKIE]
    head, payload, signature = sealed.split(".")
    flipped = signature[:-2] + ("AA" if signature[-2:] != "AA" else "BB")
    dash.cookies.set(sessions.COOKIE, f"{head}.{payload}.{flipped}", path="/dashboard")
    assert dash.get("/dashboard", follow_redirects=False).status_code == 303
    dash.cookies.set(sessions.COOKIE, "not-a-jwt", path="/dashboard")
    assert dash.get("/dashboard", follow_redirects=False).status_code == 303


def test_logout_ends_the_session_even_for_a_copied_cookie(dash: TestClient, clinician: str) -> None:
    login(dash)
    copied = dash.cookies[sessions.COOKIE]
    page = dash.get("/dashboard")
    refused = form_post(dash, "/dashboard/logout", csrf_token="forged")
    assert refused.status_code == 403
    out = form_post(dash, "/dashboard/logout", csrf_token=csrf_of(page.text))
    assert out.status_code == 303
    assert out.headers["location"] == "/dashboard/login?notice=logged-out"
    assert sessions.COOKIE not in dash.cookies
    dash.cookies.set(sessions.COOKIE, copied, path="/dashboard")
    assert dash.get("/dashboard", follow_redirects=False).status_code == 303


def test_an_expired_session_is_refused(dash: TestClient, clinician: str) -> None:
    login(dash)
    key = dash.app.state.dashboard.signing_key()  # type: ignore[attr-defined]
    session = sessions.open_session(key, dash.cookies[sessions.COOKIE], int(time.time()))
    old = sessions.Session(
        session.practitioner_id,
        session.subject,
        session.name,
        session.sid,
        session.csrf,
        session.logged_in_at - 3600,
        int(time.time()) - 1,
    )
    dash.cookies.set(sessions.COOKIE, sessions.seal(key, old), path="/dashboard")
    assert dash.get("/dashboard", follow_redirects=False).status_code == 303


def test_a_session_in_use_is_renewed(dash: TestClient, clinician: str) -> None:
    login(dash)
    key = dash.app.state.dashboard.signing_key()  # type: ignore[attr-defined]
    now = int(time.time())
    session = sessions.open_session(key, dash.cookies[sessions.COOKIE], now)
    ending = dataclasses.replace(session, expires_at=now + 60)  # less than half left
    dash.cookies.clear()
    dash.cookies.set(sessions.COOKIE, sessions.seal(key, ending), path="/dashboard")
    page = dash.get("/dashboard")
    assert page.status_code == 200
    cookie = page.headers["set-cookie"]
    assert cookie.startswith(sessions.COOKIE + "=") and "HttpOnly" in cookie
    renewed = sessions.open_session(key, page.cookies[sessions.COOKIE], now)
    assert renewed.expires_at >= now + 1800 - 5 and renewed.sid == session.sid
    dash.cookies.clear()
    dash.cookies.set(sessions.COOKIE, page.cookies[sessions.COOKIE], path="/dashboard")
    fresh = dash.get("/dashboard")
    assert "set-cookie" not in fresh.headers  # plenty of time left: no new cookie


def test_static_files_are_served_by_telemon(dash: TestClient) -> None:
    css = dash.get("/dashboard/static/dashboard.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert "@import" not in css.text and "url(http" not in css.text  # nothing from elsewhere
    icon = dash.get("/dashboard/static/icon.svg")
    assert icon.status_code == 200 and icon.headers["content-type"] == "image/svg+xml"
    assert dash.get("/dashboard/static/../routes.py").status_code == 404
    assert dash.get("/dashboard/static/other.css").status_code == 404


def _audit_events(client: TestClient) -> list[dict[str, object]]:
    fhir = fhir_of(client)
    rows = fhir.search("AuditEvent", [("_count", "500"), ("_sort", "date")]).matches
    return [orjson.loads(r.content or "{}") for r in rows]


def _user(event: dict[str, object]) -> str | None:
    agents = event["agent"]
    assert isinstance(agents, list)
    who = agents[0]["who"]
    return who.get("reference")  # type: ignore[no-any-return]


def test_oauth_mode_audits_logins_views_and_logout_with_the_clinician_as_user(
    oauth_dash: TestClient, oauth_demo: DemoSummary
) -> None:
    fhir = fhir_of(oauth_dash)
    (practitioner,) = fhir.search(
        "Practitioner", [("identifier", f"{UZI_SYSTEM}|{CLINICIAN_UZI}")]
    ).matches
    me = f"Practitioner/{practitioner.res_id}"
    assert login(oauth_dash, uzi="123456789").status_code == 400
    assert login(oauth_dash).status_code == 303
    page = oauth_dash.get("/dashboard")
    assert page.status_code == 200
    form_post(oauth_dash, "/dashboard/logout", csrf_token=csrf_of(page.text))
    events = _audit_events(oauth_dash)
    failed, logged_in = [e for e in events if e["subtype"][0]["code"] == "110122"]  # type: ignore[index]
    assert failed["outcome"] == "4" and _user(failed) is None
    assert "Unknown UZI number" in str(failed["outcomeDesc"])
    assert logged_in["outcome"] == "0" and _user(logged_in) == me
    views = [e for e in events if e["subtype"][0]["code"] == "search-type"]  # type: ignore[index]
    patients_with_alerts = {p.patient_id for p in oauth_demo.patients if p.name != "Willem Bakker"}
    seen = {
        ent["what"]["reference"].removeprefix("Patient/")  # type: ignore[index]
        for e in views
        for ent in e["entity"]  # type: ignore[attr-defined]
        if ent.get("role", {}).get("code") == "1"
    }
    assert seen == patients_with_alerts  # one event per patient shown (BALP)
    assert all(_user(e) == me for e in views)
    assert all(e["agent"][0]["altId"] == "telemon-dashboard" for e in views)  # type: ignore[index]
    (out,) = [e for e in events if e["subtype"][0]["code"] == "110123"]  # type: ignore[index]
    assert _user(out) == me and out["action"] == "E"


def test_open_mode_writes_no_audit_trail(dash: TestClient, clinician: str) -> None:
    login(dash)
    assert dash.get("/dashboard").status_code == 200
    assert fhir_of(dash).search("AuditEvent", []).matches == []
