"""Who may manage Subscriptions: backend services (system tokens) allowed to read Flags; never
a patient's app, whatever its scopes say."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.auth import clients
from service.auth.policy import Principal, require
from service.auth.scopes import Grants
from service.core.outcome import FhirError
from service.settings import Settings
from service.storage.db import Database
from tests.auth.conftest import BSN_A, REDIRECT, backend_token, make_backend, pgo_token, register
from tests.factories import patient, subscription
from tests.subscriptions.conftest import Receiver, fhir_of

FULL = "system/Subscription.cruds system/Flag.rs"


@pytest.fixture
def http(settings: Settings) -> Iterator[TestClient]:
    """The app in oauth mode."""
    oauth = settings.model_copy(update={"auth": "oauth", "base_url": "http://testserver/fhir"})
    with TestClient(create_app(oauth), base_url="http://testserver") as c:
        yield c


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"}


def _backend(http: TestClient, db: Database, scope: str) -> dict[str, str]:
    backend = make_backend(db, scope)
    response = backend_token(http, backend, scope)
    assert response.status_code == 200, response.text
    return _bearer(response.json()["access_token"])


def test_a_backend_service_manages_subscriptions(
    http: TestClient, db: Database, receiver: Receiver
) -> None:
    headers = _backend(http, db, FULL)
    created = http.post("/fhir/Subscription", json=subscription(receiver.url), headers=headers)
    assert created.status_code == 201, created.text
    sub_id = created.json()["id"]
    assert http.get(f"/fhir/Subscription/{sub_id}", headers=headers).status_code == 200
    assert http.delete(f"/fhir/Subscription/{sub_id}", headers=headers).status_code == 200
    audited = fhir_of(http).search("AuditEvent", [("_count", "500")])
    actions = sorted(
        event["action"]
        for event in (orjson.loads(m.content or "{}") for m in audited.matches)
        if f"Subscription/{sub_id}" in str(event.get("entity"))
    )
    assert actions == ["C", "D", "R"]  # every access is on the NEN 7513 trail


def test_a_backend_that_may_not_read_flags_cannot_subscribe_to_them(
    http: TestClient, db: Database, receiver: Receiver
) -> None:
    headers = _backend(http, db, "system/Subscription.cruds")
    response = http.post("/fhir/Subscription", json=subscription(receiver.url), headers=headers)
    assert response.status_code == 403, response.text
    assert "system/Flag.r" in response.json()["issue"][0]["diagnostics"]


def test_a_patient_app_cannot_subscribe_even_with_the_scope(
    http: TestClient, db: Database, receiver: Receiver
) -> None:
    scope = "launch/patient patient/Subscription.cruds patient/Flag.rs"
    client, secret = clients.new_pgo("pgo.example.org", "PGO", [REDIRECT], scope=scope)
    register(db, client)
    fhir_of(http).create(patient(BSN_A))
    token = pgo_token(http, ("pgo.example.org", secret), BSN_A, scope=scope)
    assert "patient/Subscription.cruds" in token["scope"]  # granted, and still refused
    headers = _bearer(token["access_token"])

    created = http.post("/fhir/Subscription", json=subscription(receiver.url), headers=headers)
    searched = http.get("/fhir/Subscription", headers=headers)

    for response in (created, searched):
        assert response.status_code == 403, response.text
        assert "backend services" in response.json()["issue"][0]["diagnostics"]


@pytest.mark.parametrize("interaction", ["create", "read", "search", "update", "delete"])
def test_policy_keeps_subscriptions_to_system_tokens(interaction: Any) -> None:
    grants = Grants.parse("patient/Subscription.cruds patient/Flag.rs")
    with pytest.raises(FhirError) as refused:
        require(Principal("patient", "pgo", grants, "p1"), "Subscription", interaction)
    assert refused.value.status == 403
    system = Principal("system", "ehr", Grants.parse(FULL))
    require(system, "Subscription", interaction)  # allowed
