"""PATCH of a Subscription: the secrets stay where they are, and the type's content check (a DNS
lookup of the endpoint) runs once, before the write transaction, not while it holds locks."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from service.storage import subscription_store
from service.storage.db import Database
from tests.subscriptions.conftest import SECRET, fhir_of, subscribe

JSON_PATCH = {"Content-Type": "application/json-patch+json"}


def test_patch_keeps_secrets_and_checks_once(
    client: TestClient, receiver: Any, db: Database
) -> None:
    sub_id = subscribe(client, receiver.url, bearer="first")
    fhir = fhir_of(client)
    hook = fhir.content_hooks["Subscription"]
    calls: list[dict[str, Any]] = []
    original = hook.check

    def spy(data: dict[str, Any]) -> None:
        calls.append(data)
        original(data)

    hook.check = spy  # type: ignore[method-assign]
    try:
        ops = [{"op": "replace", "path": "/criteria", "value": "Flag?status=active"}]
        response = client.patch(f"/fhir/Subscription/{sub_id}", json=ops, headers=JSON_PATCH)
        bad = [{"op": "replace", "path": "/channel/endpoint", "value": "ftp://example.org/x"}]
        refused = client.patch(f"/fhir/Subscription/{sub_id}", json=bad, headers=JSON_PATCH)
    finally:
        hook.check = original  # type: ignore[method-assign]
    assert response.status_code == 200, response.text
    assert response.json()["criteria"] == "Flag?status=active"
    assert len(calls) == 1 + 2  # the good patch once; the refused one before and inside
    assert refused.status_code in (400, 422), refused.text
    with db.read() as conn:
        stored = subscription_store.get(conn, sub_id)
    assert stored is not None
    assert stored.secret == SECRET and stored.criteria == "Flag?status=active"
    assert stored.headers == [("Authorization", "Bearer first")]
