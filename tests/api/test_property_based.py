"""Property-based API testing (schemathesis): no generated request gets a server error.

Requests come from the service's own OpenAPI document (``app.openapi()``, so the test does not
depend on ``/openapi.json`` being public): every FHIR interaction per resource type with its
search parameters and resource bodies, the OAuth endpoints and the browser forms, both data that
fits the document and data that does not. Runs on both backends, in ``open`` mode (with a
clinician logged in to the dashboard) and in ``oauth`` mode (with a real backend token).

Bounded for ``make test``: ``TELEMON_FUZZ_EXAMPLES`` cases per operation and mode, a fixed
seed. A longer run by hand explores anew each time, e.g.::

    TELEMON_FUZZ_EXAMPLES=100 TELEMON_FUZZ_RANDOM=1 .venv/bin/pytest -s -n 0 \
        tests/api/test_property_based.py
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.dashboard import sessions
from service.settings import Settings
from tests.api.fuzzing import FuzzReport, fuzz
from tests.auth.conftest import backend_token, make_backend
from tests.dashboard.conftest import add_clinician, login
from tests.factories import patient, weight

EXAMPLES = int(os.environ.get("TELEMON_FUZZ_EXAMPLES", "3"))
SEED = None if os.environ.get("TELEMON_FUZZ_RANDOM") else 0
PROFILES = Path(__file__).resolve().parents[2] / "fhir_profiles"
SCOPE = " ".join(
    f"system/{t}.cruds"
    for t in ("Patient", "Observation", "Device", "Flag", "CarePlan", "Goal", "Practitioner")
) + " system/AuditEvent.rs system/Subscription.cruds"


def _seed_data(client: TestClient) -> None:
    """A patient with a measurement, so that searches, reads and includes find something."""
    fhir = client.app.state.telemon.fhir  # type: ignore[attr-defined]
    pid = fhir.create(patient()).res_id
    fhir.create(weight(pid))


def _check(report: FuzzReport, label: str) -> None:
    print(f"\nschemathesis {label}: {report.summary()}")
    assert report.cases >= report.operations * EXAMPLES, report.summary()
    assert not report.server_errors, "\n".join(report.server_errors[:20])


@pytest.fixture
def open_app(settings: Settings) -> Iterator[TestClient]:
    """The open-mode app with data and a clinician's dashboard session."""
    with TestClient(create_app(settings), base_url="http://testserver") as client:
        add_clinician(client)
        _seed_data(client)
        assert login(client).status_code == 303
        yield client


@pytest.fixture
def oauth_app(database_url: str) -> Iterator[TestClient]:
    """The oauth-mode app with data."""
    settings = Settings(
        database_url=database_url,
        auth="oauth",
        base_url="http://testserver/fhir",
        profiles_dir=PROFILES,
        alerts_enabled=False,
    )
    with TestClient(create_app(settings), base_url="http://testserver") as client:
        _seed_data(client)
        yield client


def test_no_server_errors_in_open_mode(open_app: TestClient, database_url: str) -> None:
    """Generated requests in open mode, with a dashboard session: 0 answers of 5xx."""
    session = {sessions.COOKIE: open_app.cookies[sessions.COOKIE]}
    report = fuzz(open_app.app, examples=EXAMPLES, cookies=session, seed=SEED)  # type: ignore[arg-type]
    _check(report, f"open/{database_url.split(':')[0]}")


def test_no_server_errors_in_oauth_mode(oauth_app: TestClient, database_url: str) -> None:
    """Generated requests in oauth mode with a real backend token: 0 answers of 5xx."""
    db = oauth_app.app.state.telemon.fhir.db  # type: ignore[attr-defined]
    backend = make_backend(db, SCOPE)
    token = backend_token(oauth_app, backend, SCOPE)
    assert token.status_code == 200, token.text
    bearer = {"Authorization": f"Bearer {token.json()['access_token']}"}
    report = fuzz(oauth_app.app, examples=EXAMPLES, headers=bearer, seed=SEED)  # type: ignore[arg-type]
    _check(report, f"oauth/{database_url.split(':')[0]}")
