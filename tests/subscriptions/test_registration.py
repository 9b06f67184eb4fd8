"""Creating, reading, updating and deleting Subscriptions: checks, secrets, server-owned status."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.core import ssrf
from service.settings import Settings
from service.storage import subscription_store
from service.storage.db import Database
from tests.factories import (
    SIGNING_SECRET_URL,
    expressions,
    post_entry,
    subscription,
    transaction,
)
from tests.subscriptions.conftest import SECRET, subscribe

REDACTED = "[redacted]"


def _secret_of(resource: dict[str, Any]) -> str | None:
    for ext in resource["channel"].get("extension", []):
        if ext["url"] == SIGNING_SECRET_URL:
            value: str = ext["valueString"]
            return value
    return None


def test_create_stores_the_secrets_apart_and_never_returns_them(
    client: TestClient, receiver: Any, db: Database
) -> None:
    body = subscription(receiver.url, "Flag?status=active", bearer="tok-123")
    response = client.post("/fhir/Subscription", json=body)

    assert response.status_code == 201, response.text
    created = response.json()
    sub_id = created["id"]
    assert created["status"] == "active"  # requested → active: the status is the server's
    reads = [
        created,
        client.get(f"/fhir/Subscription/{sub_id}").json(),
        client.get(f"/fhir/Subscription/{sub_id}/_history/1").json(),
        client.get("/fhir/Subscription").json()["entry"][0]["resource"],
        client.get(f"/fhir/Subscription/{sub_id}/_history").json()["entry"][0]["resource"],
    ]
    for resource in reads:
        assert resource["channel"]["header"] == [f"Authorization: {REDACTED}"]
        assert _secret_of(resource) == REDACTED
    for text in (response.text, client.get(f"/fhir/Subscription?_id={sub_id}").text):
        assert "tok-123" not in text and SECRET not in text
    with db.read() as conn:
        row = subscription_store.get(conn, sub_id)
    assert row is not None
    assert row.headers == [("Authorization", "Bearer tok-123")]
    assert row.secret == SECRET
    assert (row.criteria, row.content, row.active) == ("Flag?status=active", "full-resource", True)


def test_update_keeps_redacted_secrets_and_replaces_given_ones(
    client: TestClient, receiver: Any, db: Database
) -> None:
    sub_id = subscribe(client, receiver.url, bearer="first")
    current = client.get(f"/fhir/Subscription/{sub_id}").json()

    current["criteria"] = "Flag?status=active"  # read-modify-write with the redacted values
    kept = client.put(f"/fhir/Subscription/{sub_id}", json=current)
    with db.read() as conn:
        after_keep = subscription_store.get(conn, sub_id)
    current = kept.json()
    current["channel"]["header"] = ["Authorization: Bearer second"]
    replaced = client.put(f"/fhir/Subscription/{sub_id}", json=current)
    with db.read() as conn:
        after_replace = subscription_store.get(conn, sub_id)

    assert kept.status_code == 200, kept.text
    assert after_keep is not None and after_replace is not None
    assert after_keep.headers == [("Authorization", "Bearer first")]
    assert after_keep.secret == SECRET and after_keep.criteria == "Flag?status=active"
    assert replaced.status_code == 200, replaced.text
    assert after_replace.headers == [("Authorization", "Bearer second")]
    assert replaced.json()["channel"]["header"] == [f"Authorization: {REDACTED}"]


def test_a_redacted_value_with_nothing_stored_is_refused(
    client: TestClient, receiver: Any
) -> None:
    body = subscription(receiver.url, secret=REDACTED)
    response = client.post("/fhir/Subscription", json=body)
    assert response.status_code == 422, response.text
    assert "Subscription.channel.extension" in expressions(response.json())


def test_status_is_the_servers(client: TestClient, receiver: Any, db: Database) -> None:
    body = subscription(receiver.url)
    body["error"] = "made up by the client"
    created = client.post("/fhir/Subscription", json=body).json()
    off = dict(created, status="off")
    turned_off = client.put(f"/fhir/Subscription/{created['id']}", json=off).json()
    with db.read() as conn:
        row = subscription_store.get(conn, created["id"])

    assert created["status"] == "active" and "error" not in created
    assert turned_off["status"] == "off"
    assert row is not None and row.active is False


BAD_CRITERIA = [
    ("Flag?colour=red", "Unknown search parameter"),
    ("Observation?code=8867-4", "Flag only"),
    ("Flag?status=active&_sort=date", "_sort"),
    ("Flag?date=yesterday", "Invalid date"),
    ("Patient", "Flag only"),
]


def test_criteria_are_checked_with_the_search_parser(client: TestClient, receiver: Any) -> None:
    for criteria, message in BAD_CRITERIA:
        response = client.post("/fhir/Subscription", json=subscription(receiver.url, criteria))
        assert response.status_code == 422, (criteria, response.text)
        outcome = response.json()
        assert expressions(outcome) == ["Subscription.criteria"], criteria
        assert message in outcome["issue"][0]["diagnostics"], criteria
    assert client.get("/fhir/Subscription").json().get("entry", []) == []


BAD_CHANNELS: list[tuple[dict[str, Any], str]] = [
    ({"type": "websocket"}, "Subscription.channel.type"),
    ({"payload": "application/xml"}, "Subscription.channel.payload"),
    ({"header": ["Host: elsewhere.example"]}, "Subscription.channel.header[0]"),
    ({"header": ["no colon here"]}, "Subscription.channel.header[0]"),
    ({"extension": [{"url": SIGNING_SECRET_URL, "valueString": "short"}]},
     "Subscription.channel.extension[0].valueString"),
    # neither a header nor a signing secret
    ({"extension": [{"url": "urn:other", "valueString": "x"}]}, "Subscription.channel"),
]


def test_channels_that_cannot_be_delivered_are_refused(
    client: TestClient, receiver: Any
) -> None:
    for change, where in BAD_CHANNELS:
        body = subscription(receiver.url)
        body["channel"].update(change)
        response = client.post("/fhir/Subscription", json=body)
        assert response.status_code == 422, (change, response.text)
        assert where in expressions(response.json()), change


@pytest.fixture
def guarded(settings: Settings) -> Settings:
    """Settings with the SSRF guard at its production default."""
    return settings.model_copy(update={"subscription_allow_private": False})


@pytest.fixture
def guarded_client(guarded: Settings, monkeypatch: pytest.MonkeyPatch) -> Any:
    """An app with the guard on; ``ehr.example.com`` resolves to loopback, ``rebind.example``
    to a public address."""
    from fastapi.testclient import TestClient as Client

    from service.app import create_app

    real = socket.getaddrinfo
    fake = {"ehr.example.com": "127.0.0.1", "public.example": "93.184.215.14"}

    def getaddrinfo(host: str, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host in fake:
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (fake[host], port))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(ssrf.socket, "getaddrinfo", getaddrinfo)
    with Client(create_app(guarded), base_url="http://testserver") as c:
        c.headers["Content-Type"] = "application/fhir+json"
        yield c


SSRF_TARGETS = [
    "http://public.example/notify",  # not https
    "https://127.0.0.1/notify",
    "https://10.1.2.3/notify",
    "https://192.168.0.10/notify",
    "https://169.254.169.254/latest/meta-data/",  # cloud metadata
    "https://100.64.0.1/notify",  # CGNAT
    "https://[::1]/notify",
    "https://[::ffff:127.0.0.1]/notify",
    "https://[fd00:ec2::254]/notify",  # AWS IPv6 metadata
    "https://192.0.0.8/notify",  # IETF protocol assignments (the attack run's finding)
    "https://[3fff::1]/notify",  # IPv6 documentation
    "https://localhost/notify",
    "https://ehr.example.com/notify",  # a name that resolves to loopback
    "https://user:pw@public.example/notify",
]


def test_ssrf_targets_are_refused_at_create(guarded_client: TestClient) -> None:
    for endpoint in SSRF_TARGETS:
        response = guarded_client.post("/fhir/Subscription", json=subscription(endpoint))
        assert response.status_code == 422, (endpoint, response.text)
        assert expressions(response.json()) == ["Subscription.channel.endpoint"], endpoint
    assert guarded_client.get("/fhir/Subscription").json().get("entry", []) == []


def test_a_public_endpoint_is_accepted_with_the_guard_on(guarded_client: TestClient) -> None:
    response = guarded_client.post(
        "/fhir/Subscription", json=subscription("https://public.example/notify")
    )
    assert response.status_code == 201, response.text


def test_subscriptions_in_a_transaction_get_the_same_checks_and_redaction(
    client: TestClient, receiver: Any, db: Database
) -> None:
    bad = client.post(
        "/fhir", json=transaction(post_entry(subscription(receiver.url, "Flag?colour=red")))
    )
    good = client.post(
        "/fhir", json=transaction(post_entry(subscription(receiver.url, bearer="in-bundle")))
    )

    assert bad.status_code == 422, bad.text
    assert expressions(bad.json()) == ["Bundle.entry[0].resource.criteria"]
    assert good.status_code == 200, good.text
    sub_id = good.json()["entry"][0]["response"]["location"].split("/")[1]
    stored = client.get(f"/fhir/Subscription/{sub_id}").json()
    assert stored["channel"]["header"] == [f"Authorization: {REDACTED}"]
    with db.read() as conn:
        row = subscription_store.get(conn, sub_id)
    assert row is not None and row.headers == [("Authorization", "Bearer in-bundle")]


def test_delete_forgets_the_settings(client: TestClient, receiver: Any, db: Database) -> None:
    sub_id = subscribe(client, receiver.url)
    assert client.delete(f"/fhir/Subscription/{sub_id}").status_code == 200
    with db.read() as conn:
        assert subscription_store.get(conn, sub_id) is None
        assert subscription_store.delivery_state(conn, sub_id) is None
    assert client.get(f"/fhir/Subscription/{sub_id}").status_code == 410


def test_capability_statement_lists_subscription(client: TestClient) -> None:
    statement = client.get("/fhir/metadata").json()
    entry = next(r for r in statement["rest"][0]["resource"] if r["type"] == "Subscription")
    interactions = {i["code"] for i in entry["interaction"]}
    assert {"create", "read", "update", "delete", "search-type"} <= interactions
    assert {p["name"] for p in entry["searchParam"]} >= {"status", "type", "url", "criteria"}
    assert "`rest-hook` only" in entry["documentation"]
    flag = next(r for r in statement["rest"][0]["resource"] if r["type"] == "Flag")
    assert "programme" in {p["name"] for p in flag["searchParam"]}
