"""/metrics: the Prometheus text format, request and write counters, alert notifications."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi.testclient import TestClient

from service.api.middleware import UNMATCHED
from service.app import create_app
from service.settings import Settings
from tests.alerts_api.conftest import Api, at, bp
from tests.clock import PinnedClock
from tests.factories import patient, post_entry, put_entry, transaction
from tests.ops.helpers import sample

REQUESTS = "telemon_http_requests_total"
WRITTEN = "telemon_resources_written_total"


def _scrape(client: TestClient) -> str:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    return response.text


def test_every_metric_is_exposed_with_help(client: TestClient) -> None:
    text = _scrape(client)
    for name in (
        "telemon_http_requests_total",
        "telemon_http_request_duration_seconds",
        "telemon_resources_written_total",
        "telemon_alert_notifications_total",
        "telemon_subscription_delivery_backlog",
        "telemon_subscription_events_delivered_total",
        "telemon_subscription_heartbeats_delivered_total",
        "telemon_subscription_delivery_failures_total",
        "telemon_subscription_delivery_latency_seconds",
    ):
        assert f"# HELP {name} " in text, name
    assert sample(text, "telemon_subscription_delivery_backlog") == 0  # nothing queued
    assert "_created" not in text


def test_requests_are_labelled_by_route_template_not_path(
    client: TestClient, make_patient: Any
) -> None:
    route = "/fhir/{res_type}/{res_id}"
    before = _scrape(client)
    pid = make_patient()
    assert client.get(f"/fhir/Patient/{pid}").status_code == 200
    assert client.get(f"/fhir/Patient/{uuid.uuid4()}").status_code == 404
    assert client.get(f"/no/such/{pid}").status_code == 404
    after = _scrape(client)

    def delta(**labels: str) -> float:
        return sample(after, REQUESTS, **labels) - sample(before, REQUESTS, **labels)

    assert delta(method="GET", route=route, status="200") == 1
    assert delta(method="GET", route=route, status="404") == 1
    assert delta(method="POST", route="/fhir/{res_type}", status="201") == 1
    assert delta(method="GET", route=UNMATCHED, status="404") == 1
    assert pid not in after  # no ids in labels
    count = "telemon_http_request_duration_seconds_count"
    assert sample(after, count, method="GET", route=route) - sample(
        before, count, method="GET", route=route
    ) == 2


def test_made_up_methods_share_one_label(client: TestClient) -> None:
    before = _scrape(client)
    for method in ("BREW", "WHEN", "PROPFIND"):
        assert client.request(method, "/health").status_code == 405
    after = _scrape(client)
    labels = {"method": "other", "route": "/health", "status": "405"}
    assert sample(after, REQUESTS, **labels) - sample(before, REQUESTS, **labels) == 3
    assert "BREW" not in after


def test_committed_writes_are_counted_by_type_and_interaction(client: TestClient) -> None:
    before = _scrape(client)
    created = client.post("/fhir/Patient", json=patient()).json()
    created["active"] = True
    assert client.put(f"/fhir/Patient/{created['id']}", json=created).status_code == 200
    assert client.delete(f"/fhir/Patient/{created['id']}").status_code == 200
    bundle = transaction(post_entry(patient()), post_entry(patient()))
    assert client.post("/fhir", json=bundle).status_code == 200
    # The creates are written (and their events told) before the PUT fails: all rolled back.
    stale = {**patient(), "id": created["id"]}
    failing = transaction(post_entry(patient()), put_entry(stale, if_match='W/"1"'))
    assert client.post("/fhir", json=failing).status_code == 412
    after = _scrape(client)

    def delta(interaction: str) -> float:
        labels = {"type": "Patient", "interaction": interaction}
        return sample(after, WRITTEN, **labels) - sample(before, WRITTEN, **labels)

    assert (delta("create"), delta("update"), delta("delete")) == (3, 1, 1)


def test_alert_notifications_are_counted(settings: Settings, clock: PinnedClock) -> None:
    # the alert helpers' times are around tests.clock.NOW: the service's clock is pinned there
    with TestClient(create_app(settings, clock=clock), base_url="http://testserver") as client:
        client.headers["Content-Type"] = "application/fhir+json"
        _count_an_alert(Api(client, clock))


def _count_an_alert(api: Api) -> None:
    client = api.client
    pid = api.enrol(programmes="HF")
    labels = {"rule": "HF-SBP-LOW", "severity": "orange", "status": "active"}
    name = "telemon_alert_notifications_total"
    before = sample(_scrape(client), name, **labels)
    api.post(bp(pid, 89, 60, at(minutes=100)))  # raises the alert
    api.post(bp(pid, 88, 60, at(minutes=80)))  # attaches to it: no new notification
    assert sample(_scrape(client), name, **labels) - before == 1
