"""The direct path for ``POST /fhir/<type>`` (service.api.create_path) behaves as the route."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY
from starlette.routing import Match

from service.api.create_path import CreatePath, create_route
from service.api.routes import router as fhir_router
from service.app import create_app
from service.core.registry import default_registry
from service.settings import Settings
from tests import factories

CREATE_TEMPLATE = "/fhir/{res_type}"


def _created(route: str, status: str) -> float:
    value = REGISTRY.get_sample_value(
        "telemon_http_requests_total", {"method": "POST", "route": route, "status": status}
    )
    return value or 0.0


def test_it_takes_only_paths_the_router_sends_to_the_create_route(settings: Settings) -> None:
    """For every stored type, FastAPI's own routing of ``POST /fhir/<type>`` ends in the create
    route, so the direct path never shadows another route."""
    app = create_app(settings)
    target = create_route(fhir_router.routes)
    for name in default_registry().names():
        scope: dict[str, Any] = {
            "type": "http",
            "method": "POST",
            "path": f"/fhir/{name}",
            "root_path": "",
            "headers": [],
        }
        chosen = None
        for route in fhir_router.routes:
            match, _ = route.matches(scope)
            if match is Match.FULL:
                chosen = route
                break
        assert chosen is target, name
    direct = [m for m in app.user_middleware if m.cls is CreatePath]
    assert len(direct) == 1
    assert direct[0].kwargs["types"] == frozenset(default_registry().names())


def test_a_direct_create_is_counted_and_answered_like_the_route(
    client: TestClient, make_patient: Any
) -> None:
    pid = make_patient()
    before = _created(CREATE_TEMPLATE, "201")
    response = client.post("/fhir/Observation", json=factories.weight(pid, 81.5))
    assert response.status_code == 201
    assert response.headers["etag"] == 'W/"1"'
    assert response.headers["location"].endswith("/_history/1")
    assert response.json()["valueQuantity"]["value"] == 81.5
    assert response.headers["x-request-id"]
    assert _created(CREATE_TEMPLATE, "201") == before + 1


@pytest.mark.parametrize(
    ("headers", "status", "expression"),
    [
        ({"Content-Type": "text/plain"}, 415, "Content-Type"),
        ({"Accept": "application/fhir+xml"}, 406, "Accept"),
    ],
)
def test_direct_path_errors_are_operation_outcomes(
    client: TestClient,
    make_patient: Any,
    headers: dict[str, str],
    status: int,
    expression: str,
) -> None:
    pid = make_patient()
    before = _created(CREATE_TEMPLATE, str(status))
    response = client.post(
        "/fhir/Observation", content=b'{"resourceType": "Observation"}', headers=headers
    )
    assert response.status_code == status
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert factories.expressions(outcome) == [expression]
    assert _created(CREATE_TEMPLATE, str(status)) == before + 1
    assert client.get(f"/fhir/Observation?patient={pid}").json().get("total", 0) == 0


def test_an_unexpected_failure_is_a_500_outcome_with_the_request_id(settings: Settings) -> None:
    app = create_app(settings)

    def broken_store(items: Any) -> list[Exception]:
        raise RuntimeError("disk on fire")

    with TestClient(app, raise_server_exceptions=False) as client:
        client.headers["Content-Type"] = "application/fhir+json"
        pid = client.post("/fhir/Patient", json=factories.patient()).headers["location"]
        app.state.telemon.creates.store = broken_store
        response = client.post(
            "/fhir/Observation",
            json=factories.weight(pid.split("/")[-3], 80),
            headers={"X-Request-ID": "fire-1"},
        )
    assert response.status_code == 500
    assert response.json()["issue"][0]["code"] == "exception"
    assert "disk on fire" not in response.text
    assert response.headers["x-request-id"] == "fire-1"


def test_other_requests_still_reach_fastapi(client: TestClient) -> None:
    unknown = client.post("/fhir/Nonsense", json={"resourceType": "Nonsense"})
    assert unknown.status_code == 404
    assert unknown.json()["resourceType"] == "OperationOutcome"
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    searched = client.post("/fhir/Patient/_search", content=b"_count=1", headers=form)
    assert searched.status_code == 200
    assert searched.json()["type"] == "searchset"


@pytest.mark.parametrize(
    ("path", "root_path", "res_type"),
    [
        ("/fhir/Observation", "", "Observation"),
        ("/telemon/fhir/Observation", "/telemon", "Observation"),
        ("/telemonfhir/Observation", "/telemon", None),
        ("/telemon", "/telemon", None),
        ("/other/fhir/Observation", "/telemon", None),
    ],
)
def test_the_direct_path_reads_the_path_below_the_mount_point(
    path: str, root_path: str, res_type: str | None
) -> None:
    """Behind a proxy that mounts the app under a prefix (ASGI ``root_path``), the direct path
    sees the same route path as the router does, and takes nothing else."""
    direct = CreatePath(_no_app, types=frozenset({"Observation"}), route=None)
    scope = {"type": "http", "method": "POST", "path": path, "root_path": root_path}
    assert direct._res_type(scope) == res_type


async def _no_app(scope: Any, receive: Any, send: Any) -> None:
    raise AssertionError("not called")
