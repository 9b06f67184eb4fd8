"""Fixtures for the dashboard tests: apps in open and oauth mode, the demo data, a login."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.auth.identity import UZI_SYSTEM
from service.core.clock import Clock
from service.demo.data import CLINICIAN_UZI, DemoSummary, load_demo
from service.fhir.service import FhirService
from service.settings import Settings

PROFILES = Path(__file__).resolve().parents[2] / "fhir_profiles"
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """English pages: these tests read the English catalogue (the browser test reads Dutch, the
    default)."""
    return settings.model_copy(update={"language": "en"})


@pytest.fixture
def dash(settings: Settings, clock: Clock) -> Iterator[TestClient]:
    """The app in open mode (as ``make run``): the dashboard still needs a login."""
    with TestClient(create_app(settings, clock=clock), base_url="http://testserver") as c:
        yield c


@pytest.fixture
def oauth_dash(database_url: str, clock: Clock) -> Iterator[TestClient]:
    """The app in oauth mode: the dashboard's accesses are audited."""
    settings = Settings(
        database_url=database_url,
        auth="oauth",
        base_url="http://testserver/fhir",
        profiles_dir=PROFILES,
        language="en",
    )
    with TestClient(create_app(settings, clock=clock), base_url="http://testserver") as c:
        yield c


def fhir_of(client: TestClient) -> FhirService:
    """The FHIR service inside a test client's app."""
    service: FhirService = client.app.state.telemon.fhir  # type: ignore[attr-defined]
    return service


#: Three weeks of demo data still raise the demo's alerts, at a third of the eight weeks' cost.
DEMO_WEEKS = 3


@pytest.fixture
def demo(dash: TestClient) -> DemoSummary:
    """The demo patients, their alerts and the demo clinician, in the open-mode app."""
    return load_demo(fhir_of(dash), weeks=DEMO_WEEKS)


@pytest.fixture
def oauth_demo(oauth_dash: TestClient) -> DemoSummary:
    """The demo data in the oauth-mode app."""
    return load_demo(fhir_of(oauth_dash), weeks=DEMO_WEEKS)


def add_clinician(client: TestClient) -> str:
    """Store the demo clinician (a Practitioner with the demo UZI number); returns its id."""
    practitioner = {
        "resourceType": "Practitioner",
        "active": True,
        "identifier": [{"system": UZI_SYSTEM, "value": CLINICIAN_UZI}],
        "name": [{"prefix": ["dr."], "given": ["Eva"], "family": "Visser"}],
    }
    return fhir_of(client).create(practitioner).res_id


@pytest.fixture
def clinician(dash: TestClient) -> str:
    """Only the demo clinician, without the demo patients; returns its id."""
    return add_clinician(dash)


def csrf_of(page: str) -> str:
    """The CSRF token of the first form on a page."""
    match = _CSRF.search(page)
    assert match, "the page has no form with a CSRF token"
    return html.unescape(match.group(1))


def login(client: TestClient, uzi: str = CLINICIAN_UZI, next_path: str = "/dashboard") -> Any:
    """Open the login page and log in; returns the login POST's response (not followed)."""
    page = client.get("/dashboard/login", params={"next": next_path})
    assert page.status_code == 200, page.text
    return client.post(
        "/dashboard/login",
        data={"csrf_token": csrf_of(page.text), "uzi": uzi, "next": next_path},
        follow_redirects=False,
    )


@pytest.fixture
def logged_in(dash: TestClient, demo: DemoSummary) -> TestClient:
    """The open-mode app with the demo data and the demo clinician logged in."""
    response = login(dash)
    assert response.status_code == 303, response.text
    return dash


def form_post(client: TestClient, path: str, **fields: str) -> httpx.Response:
    """POST a form without following the redirect."""
    return client.post(path, data=fields, follow_redirects=False)
