"""An EHR acknowledges and resolves alerts with one-line PATCHes of the Flag: the alert
episode behind it follows exactly as for a PUT (see test_episodes.py)."""

from __future__ import annotations

from typing import Any

from service.alerts.episodes import AlertStatus
from service.alerts.state import load_alert
from service.storage import alert_store
from tests import factories as f
from tests.alerts_api.conftest import ACKNOWLEDGED, Api, at, bp, has_ext

SBP_LOW = "HF-SBP-LOW"


def _episode(api: Api, flag_id: str) -> Any:
    fhir = api.client.app.state.telemon.fhir  # type: ignore[attr-defined]
    with fhir.db.read() as conn:
        state = alert_store.get(conn, flag_id)
    assert state is not None
    return load_alert(state)


def test_json_patch_acknowledges(api: Api) -> None:
    pid = api.enrol(programmes="HF")
    api.post(bp(pid, 89, 60, at(minutes=100)))
    flag = api.flag(pid, SBP_LOW)
    assert flag is not None and _episode(api, flag["id"]).acknowledged_at is None
    ack = [{"op": "add", "path": "/extension/-",
            "value": {"url": ACKNOWLEDGED, "valueDateTime": at(minutes=70)}}]
    response = api.client.patch(
        f"/fhir/Flag/{flag['id']}", json=ack,
        headers={"Content-Type": "application/json-patch+json", "If-Match": 'W/"1"'},
    )
    assert response.status_code == 200, response.text
    assert has_ext(response.json(), ACKNOWLEDGED)
    assert _episode(api, flag["id"]).acknowledged_at is not None
    # acknowledged: new evidence attaches without a new notification
    api.post(bp(pid, 88, 60, at(minutes=60)))
    assert len(api.notified) == 1


def test_fhirpath_patch_acknowledges_with_an_extension(api: Api) -> None:
    pid = api.enrol(programmes="HF")
    api.post(bp(pid, 89, 60, at(minutes=100)))
    flag = api.flag(pid, SBP_LOW)
    assert flag is not None
    patch = f.fhirpath_patch(f.operation("add", "Flag", name="extension", value=[
        {"name": "url", "valueUri": ACKNOWLEDGED},
        {"name": "valueDateTime", "valueDateTime": at(minutes=70)},
    ]))
    response = api.client.patch(f"/fhir/Flag/{flag['id']}", json=patch)
    assert response.status_code == 200, response.text
    assert _episode(api, flag["id"]).acknowledged_at is not None
    # and the mark can be found (and removed) by its url
    path = f"Flag.extension.where(url='{ACKNOWLEDGED}').valueDateTime"
    found = f.fhirpath_patch(
        f.operation("replace", path, value={"valueDateTime": at(minutes=65)})
    )
    again = api.client.patch(f"/fhir/Flag/{flag['id']}", json=found)
    assert again.status_code == 200, again.text
    stated = [e for e in again.json()["extension"] if e["url"] == ACKNOWLEDGED]
    assert [e["valueDateTime"] for e in stated] == [at(minutes=65)]


def test_fhirpath_patch_of_status_resolves(api: Api) -> None:
    pid = api.enrol(programmes="HF")
    api.post(bp(pid, 89, 60, at(minutes=120)))
    flag = api.flag(pid, SBP_LOW)
    assert flag is not None
    patch = f.fhirpath_patch(f.operation("replace", "Flag.status", value={"valueCode": "inactive"}))
    response = api.client.patch(f"/fhir/Flag/{flag['id']}", json=patch)
    assert response.status_code == 200, response.text
    assert _episode(api, flag["id"]).status == AlertStatus.INACTIVE
    # within the cooldown the same severity opens nothing new (the episode is resolved)
    api.post(bp(pid, 88, 60, at(minutes=100)))
    assert [(x["id"], x["status"]) for x in api.flags(pid, SBP_LOW)] == [
        (flag["id"], "inactive")
    ]
    assert len(api.notified) == 1
