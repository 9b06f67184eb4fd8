"""Notifications end to end with the app's own delivery worker and a real receiver on loopback."""

from __future__ import annotations

import socket
import time
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.core import ssrf
from service.fhir import bundles
from service.settings import Settings
from service.storage import subscription_store
from service.storage.db import Database
from service.storage.tables import subscription_delivery
from service.subscriptions.delivery import Sender
from service.subscriptions.worker import DeliveryWorker, retry_delay
from tests.factories import PROGRAMME, alert_bundle, post_entry, subscription, transaction
from tests.subscriptions.conftest import (
    Receiver,
    backlog,
    check_in_order,
    fhir_of,
    raise_alerts,
    subscribe,
    verify_signature,
    wait_until,
)


def _flags(client: TestClient, **params: str) -> list[dict[str, Any]]:
    bundle = client.get("/fhir/Flag", params={"_count": "500", **params}).json()
    return [e["resource"] for e in bundle.get("entry", [])]


def test_an_alert_is_delivered_signed_with_the_flag(
    client: TestClient, receiver: Receiver
) -> None:
    sub_id = subscribe(client, receiver.url, "Flag?status=active", bearer="tok-1")
    raise_alerts(fhir_of(client), 1)
    wait_until(lambda: receiver.notifications(sub_id), what="the notification")

    [note] = receiver.notifications(sub_id)
    [flag] = _flags(client)
    assert note.bundle["type"] == "history"
    status = note.bundle["entry"][0]["resource"]
    assert status["resourceType"] == "Parameters"
    assert note.parameter("status") == "active"
    assert note.parameter("type") == "event-notification"
    assert note.parameter("events-since-subscription-start") == "1"
    assert note.events == [(1, f"Flag/{flag['id']}/_history/1")]
    assert note.resources == [flag]  # full-resource: the Flag version itself
    assert note.headers["Authorization"] == "Bearer tok-1"
    assert note.headers["Content-Type"] == "application/fhir+json"
    assert verify_signature(note)
    tampered = type(note)(note.headers, note.body.replace(b"active", b"inactiv"), {}, note.at)
    assert not verify_signature(tampered)


def test_criteria_select_the_flags_with_search_semantics(
    client: TestClient, receiver: Receiver
) -> None:
    fhir = fhir_of(client)
    copd = subscribe(client, receiver.url, f"Flag?programme={PROGRAMME['COPD']}")
    bundles.process(fhir, alert_bundle(1, "HF"))
    first = _flags(client)[0]
    patient = first["subject"]["reference"]
    mine = subscribe(client, receiver.url, f"Flag?patient={patient}&status=active")
    everything = subscribe(client, receiver.url, "Flag", content="id-only")
    bundles.process(fhir, alert_bundle(2, "COPD"))
    copd_flags = {f["id"] for f in _flags(client, programme=PROGRAMME["COPD"])}
    # The first patient's alert is acknowledged by the EHR: a new version, still active.
    first["extension"].append({"url": "http://telemon.example.org/fhir/StructureDefinition/"
                               "alert-acknowledged", "valueDateTime": "2026-01-01T10:00:00Z"})
    assert client.put(f"/fhir/Flag/{first['id']}", json=first).status_code == 200

    wait_until(lambda: len(receiver.events(everything)) == 3 and receiver.events(mine)
               and len(receiver.events(copd)) == 2, what="all notifications")
    time.sleep(0.3)  # nothing more arrives

    assert {f.split("/")[1] for _, f in receiver.events(copd) if f} == copd_flags
    assert receiver.events(mine) == [(1, f"Flag/{first['id']}/_history/2")]
    assert [n for n, _ in receiver.events(everything)] == [1, 2, 3]
    assert all(note.resources == [] for note in receiver.notifications(everything))  # id-only


def test_a_rolled_back_transaction_notifies_nothing(
    client: TestClient, receiver: Receiver, db: Database
) -> None:
    sub_id = subscribe(client, receiver.url)
    doomed = alert_bundle(3)
    doomed["entry"].append(post_entry({
        "resourceType": "Observation", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": "Patient/does-not-exist"},
        "effectiveDateTime": "2026-01-01T10:00:00Z",
        "valueQuantity": {"value": 70, "unit": "/min", "system": "http://unitsofmeasure.org",
                          "code": "/min"},
    }))
    response = client.post("/fhir", json=doomed)
    raise_alerts(fhir_of(client), 1)  # a later alert that does commit

    assert response.status_code == 422, response.text
    wait_until(lambda: receiver.notifications(sub_id), what="the committed alert")
    time.sleep(0.3)
    assert receiver.events(sub_id) == [(1, receiver.events(sub_id)[0][1])]  # number 1: no gap
    assert len(_flags(client)) == 1
    assert backlog(db) == 0


def test_error_after_failures_then_recovery(
    client: TestClient, receiver: Receiver, settings: Settings
) -> None:
    sub_id = subscribe(client, receiver.url)
    receiver.status = 503
    raise_alerts(fhir_of(client), 2, per_bundle=1)

    def status() -> dict[str, Any]:
        return client.get(f"/fhir/Subscription/{sub_id}").json()

    wait_until(lambda: status()["status"] == "error", what="the error status")
    failed = status()
    receiver.status = 200
    wait_until(lambda: status()["status"] == "active", what="recovery")

    assert failed["error"] == "The endpoint answered HTTP 503"
    assert "error" not in status()
    check_in_order(receiver.events(sub_id), 2)  # nothing was dropped while failing
    versions = client.get(f"/fhir/Subscription/{sub_id}/_history").json()["entry"]
    assert [v["resource"]["status"] for v in versions] == ["active", "error", "active"]


def test_a_client_update_retries_at_once(settings: Settings, receiver: Receiver) -> None:
    # Slow polls and long backoffs: only the wake-up of the update can explain a quick retry.
    patient = settings.model_copy(update={
        "subscription_poll_seconds": 30.0,
        "subscription_max_failures": 1,
        "subscription_retry_base_seconds": 30.0,
        "subscription_retry_max_seconds": 30.0,
    })
    receiver.down()
    with TestClient(create_app(patient), base_url="http://testserver") as client:
        client.headers["Content-Type"] = "application/fhir+json"
        sub_id = subscribe(client, receiver.url)
        raise_alerts(fhir_of(client), 1)
        wait_until(
            lambda: client.get(f"/fhir/Subscription/{sub_id}").json()["status"] == "error",
            what="the error status",
        )
        receiver.up()
        fixed = client.get(f"/fhir/Subscription/{sub_id}").json()
        fixed["reason"] = "endpoint fixed"
        updated = client.put(f"/fhir/Subscription/{sub_id}", json=fixed).json()
        started = time.monotonic()
        wait_until(lambda: receiver.notifications(sub_id), timeout=10, what="the retry")
        waited = time.monotonic() - started
    assert updated["status"] == "active"
    assert waited < 5  # woken by the update: no poll, no backoff


def test_heartbeats_when_there_is_nothing_to_say(client: TestClient, receiver: Receiver) -> None:
    sub_id = subscribe(client, receiver.url, heartbeat=1)
    wait_until(lambda: len(receiver.notifications(sub_id)) >= 2, timeout=6, what="heartbeats")
    beats = receiver.notifications(sub_id)[:2]
    assert [b.parameter("type") for b in beats] == ["heartbeat", "heartbeat"]
    assert all(b.events == [] and b.parameter("events-since-subscription-start") == "0"
               for b in beats)
    assert beats[1].at - beats[0].at >= 0.9
    assert verify_signature(beats[0])


def test_events_wait_for_a_worker_and_survive_a_restart(
    settings: Settings, receiver: Receiver, db: Database
) -> None:
    quiet = settings.model_copy(update={"delivery_worker": "off"})
    with TestClient(create_app(quiet), base_url="http://testserver") as c:
        c.headers["Content-Type"] = "application/fhir+json"
        sub_id = subscribe(c, receiver.url)
        raise_alerts(fhir_of(c), 5, per_bundle=2)
    time.sleep(0.3)
    assert receiver.notifications() == [] and backlog(db) == 5

    with TestClient(create_app(settings), base_url="http://testserver"):
        wait_until(lambda: len(receiver.events(sub_id)) == 5, what="delivery after restart")
    assert check_in_order(receiver.events(sub_id), 5) == 0
    assert backlog(db) == 0


def test_two_workers_never_deliver_the_same_event(
    settings: Settings, receiver: Receiver, db: Database
) -> None:
    quiet = settings.model_copy(update={"delivery_worker": "off", "subscription_batch_size": 3})
    receiver.delay = 0.005
    with TestClient(create_app(quiet), base_url="http://testserver") as c:
        c.headers["Content-Type"] = "application/fhir+json"
        subs = [subscribe(c, receiver.url) for _ in range(3)]
        fhir = fhir_of(c)
        raise_alerts(fhir, 30, per_bundle=10)
        workers = [DeliveryWorker(fhir, threads=2) for _ in range(2)]
        for w in workers:
            w.start()
        try:
            wait_until(lambda: backlog(db) == 0, what="the backlog to drain")
        finally:
            for w in workers:
                w.stop()
    for sub_id in subs:
        assert check_in_order(receiver.events(sub_id), 30) == 0  # no failures: no repeats


def test_the_guard_also_runs_at_delivery(
    settings: Settings, receiver: Receiver, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The name resolved to a public address when the Subscription was made; now it points at
    # loopback (DNS rebinding): the worker refuses to connect.
    answers = {"ehr.example.com": "93.184.215.14"}
    real = socket.getaddrinfo

    def getaddrinfo(host: str, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host in answers:
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (answers[host], port))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(ssrf.socket, "getaddrinfo", getaddrinfo)
    guarded = settings.model_copy(
        update={"subscription_allow_private": False, "delivery_worker": "off"}
    )
    with TestClient(create_app(guarded), base_url="http://testserver") as c:
        c.headers["Content-Type"] = "application/fhir+json"
        endpoint = f"https://ehr.example.com:{receiver.port}/notify"
        created = c.post("/fhir/Subscription", json=subscription(endpoint))
        assert created.status_code == 201, created.text
        fhir = fhir_of(c)
        raise_alerts(fhir, 1)
        answers["ehr.example.com"] = "127.0.0.1"
        worker = DeliveryWorker(fhir)
        sender = Sender(allow_private=False)
        assert worker.deliver_once(sender, "test-owner")
        sender.close()
        with db.read() as conn:
            state = subscription_store.delivery_state(conn, created.json()["id"])
    assert receiver.notifications() == []
    assert state is not None and state.last_error is not None
    assert "resolves to a non-public address" in state.last_error
    assert backlog(db) == 1  # kept for when the endpoint is fixed


def test_backoff_is_exponential_with_full_jitter() -> None:
    import random

    rng = random.Random(1)
    delays = [[retry_delay(n, 1.0, 60.0, rng) for _ in range(200)] for n in (1, 2, 3, 8, 30)]
    assert [max(d) <= c for d, c in zip(delays, (1, 2, 4, 60, 60), strict=True)] == [True] * 5
    assert max(delays[3]) > 30 and min(delays[3]) < 10  # spread over [0, cap]


def test_what_does_not_match_queues_nothing(
    client: TestClient, receiver: Receiver, db: Database
) -> None:
    subscribe(client, receiver.url, f"Flag?programme={PROGRAMME['COPD']}")
    raise_alerts(fhir_of(client), 2, spo2=97)  # measurements without an alert
    raise_alerts(fhir_of(client), 2)  # heart-failure alerts
    time.sleep(0.3)
    assert len(_flags(client)) == 2
    assert backlog(db) == 0 and receiver.notifications() == []


def test_transaction_subscriptions_and_their_alerts(client: TestClient, receiver: Receiver) -> None:
    # A Subscription created in the same transaction as an alert sees that alert: both are
    # in the transaction, and the match runs after each write.
    bundle = transaction(post_entry(subscription(receiver.url)), *alert_bundle(1)["entry"])
    response = client.post("/fhir", json=bundle)
    assert response.status_code == 200, response.text
    sub_id = response.json()["entry"][0]["response"]["location"].split("/")[1]
    wait_until(lambda: receiver.events(sub_id), what="the notification")
    assert [n for n, _ in receiver.events(sub_id)] == [1]


def test_the_sender_follows_no_redirect_and_keeps_its_timeout(receiver: Receiver) -> None:
    sender = Sender(allow_private=True)
    receiver.redirect_to = receiver.url.replace("/notify", "/elsewhere")
    redirected = sender.send(receiver.url, b"{}", {}, timeout=2)
    receiver.redirect_to = None
    receiver.delay = 0.5
    started = time.monotonic()
    slow = sender.send(receiver.url, b"{}", {}, timeout=0.2)
    waited = time.monotonic() - started
    sender.close()

    assert (redirected.delivered, redirected.kind) == (False, "http-status")
    assert redirected.reason == "The endpoint answered HTTP 307"
    assert (slow.delivered, slow.kind) == (False, "timeout")
    assert waited < 0.45
    assert receiver.paths[0] == "/notify" and "/elsewhere" not in receiver.paths


def test_a_worker_killed_between_recording_and_the_resource_update(
    settings: Settings, receiver: Receiver, db: Database
) -> None:
    """The attempt was recorded (delivery state ``active``), the worker died before the
    Subscription resource was updated: the next attempt still brings the resource back."""
    quiet = settings.model_copy(update={"delivery_worker": "off", "subscription_max_failures": 1})
    receiver.down()
    with TestClient(create_app(quiet), base_url="http://testserver") as client:
        client.headers["Content-Type"] = "application/fhir+json"
        sub_id = subscribe(client, receiver.url)
        fhir = fhir_of(client)
        worker = DeliveryWorker(fhir)
        sender = Sender(allow_private=True)
        raise_alerts(fhir, 1)
        assert worker.deliver_once(sender, "w1")
        assert client.get(f"/fhir/Subscription/{sub_id}").json()["status"] == "error"

        receiver.up()
        worker.sync_status = lambda subscription_id: None  # type: ignore[method-assign]
        with db.write() as conn:  # make the first retry due now
            conn.execute(
                subscription_delivery.update().values(next_attempt_at=0)
            )
        assert worker.deliver_once(sender, "w1")  # delivered and recorded; then "killed"
        assert client.get(f"/fhir/Subscription/{sub_id}").json()["status"] == "error"

        survivor = DeliveryWorker(fhir)
        raise_alerts(fhir, 1)
        assert survivor.deliver_once(sender, "w2")
        sender.close()
        shown = client.get(f"/fhir/Subscription/{sub_id}").json()
    assert shown["status"] == "active" and "error" not in shown
    assert [n for n, _ in receiver.events(sub_id)] == [1, 2]
