"""Regression cases for dashboard requests that once answered 500 (issue 12, finding 4):
non-ASCII digits in ``days`` and ``version``, non-ASCII CSRF tokens; on both backends."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.dashboard.conftest import csrf_of, fhir_of, form_post, login
from tests.factories import patient


@pytest.fixture
def session(dash: TestClient, clinician: str) -> TestClient:
    """The open-mode app with the demo clinician logged in."""
    assert login(dash).status_code == 303
    return dash


@pytest.mark.parametrize("days", ["²", "٣٠", "9" * 5000, "90"])
def test_a_patient_page_with_odd_days_falls_back_to_a_period(
    session: TestClient, days: str
) -> None:
    pid = fhir_of(session).create(patient()).res_id
    response = session.get(f"/dashboard/patients/{pid}", params={"days": days})
    assert response.status_code == 200, response.text
    expected = "90" if days == "90" else "30"
    assert f"?days={expected}" in response.text


@pytest.mark.parametrize("version", ["²", "٣", "9" * 30, ""])
def test_an_alert_action_with_an_odd_version_is_a_400(session: TestClient, version: str) -> None:
    csrf = csrf_of(session.get("/dashboard").text)
    response = form_post(
        session, "/dashboard/alerts/some-flag/acknowledge", csrf_token=csrf, version=version
    )
    assert response.status_code == 400, response.text
    assert "not a valid alert action" in response.text


@pytest.mark.parametrize("csrf", ["é", "\u2603" * 40])
def test_forms_with_a_non_ascii_csrf_token_are_refused(
    dash: TestClient, clinician: str, csrf: str
) -> None:
    dash.get("/dashboard/login")  # sets the login form's CSRF cookie
    refused_login = form_post(dash, "/dashboard/login", csrf_token=csrf, uzi="900012345")
    assert refused_login.status_code == 403, refused_login.text
    assert login(dash).status_code == 303
    refused_action = form_post(
        dash, "/dashboard/alerts/some-flag/acknowledge", csrf_token=csrf, version="1"
    )
    assert refused_action.status_code == 403, refused_action.text
