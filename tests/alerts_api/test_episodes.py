"""Alert episodes through the API: attach, upgrade, acknowledge, resolve, cooldown, retries
(docs/alerts/engine.md#episodes).

The EHR acknowledges and resolves by ``PUT /fhir/Flag/{id}``. Cooldowns run on processing time
(when the resolve was received), so "a day later" is simulated by moving the alert service's
clock, not the Observations' effective times.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from tests.alerts_api.conftest import (
    ACKNOWLEDGED,
    Api,
    at,
    bp,
    details,
    has_ext,
    hr,
    priority,
    text,
)

SBP_LOW = "HF-SBP-LOW"


def _versions(api: Api, flag_id: str) -> int:
    return int(api.read("Flag", flag_id)["meta"]["versionId"])


def _ack(api: Api, flag: dict[str, Any], when: str) -> dict[str, Any]:
    body = {k: v for k, v in flag.items() if k != "meta"}
    body["extension"] = [*flag["extension"], {"url": ACKNOWLEDGED, "valueDateTime": when}]
    return api.put(body)


def _resolve(api: Api, flag: dict[str, Any]) -> dict[str, Any]:
    body = {k: v for k, v in flag.items() if k != "meta"}
    body["status"] = "inactive"
    return api.put(body)


def test_attach_acknowledge_upgrade(api: Api) -> None:
    """Same Flag throughout; attach adds evidence silently; upgrade re-notifies and clears ack."""
    pid = api.enrol(programmes="HF")
    first, = api.post(bp(pid, 89, 60, at(minutes=100)))
    flag = api.flag(pid, SBP_LOW)
    assert flag is not None and priority(flag) == "PM"
    assert len(api.notified) == 1

    # attach: a second qualifying reading (not within 10 min, so not averaged)
    second, = api.post(bp(pid, 88, 60, at(minutes=80)))
    again = api.flag(pid, SBP_LOW)
    assert again is not None and again["id"] == flag["id"]
    assert set(details(again)) == {first["id"], second["id"]}
    assert priority(again) == "PM" and "SBP 88 mmHg (limit < 90 mmHg)" in text(again)
    assert len(api.notified) == 1  # attach does not notify
    bundle = api.client.get(
        "/fhir/Flag", params={"patient": pid, "code": SBP_LOW, "_include": "Flag:detail"}
    ).json()
    included = {
        e["resource"]["id"] for e in bundle["entry"] if e["search"]["mode"] == "include"
    }
    assert included == {first["id"], second["id"]}

    # acknowledge: the Flag stays active, new evidence attaches without a notification
    _ack(api, again, at(minutes=70))
    acked = api.flag(pid, SBP_LOW)
    assert acked is not None and acked["status"] == "active" and has_ext(acked, ACKNOWLEDGED)
    third, = api.post(bp(pid, 87, 60, at(minutes=60)))
    still = api.flag(pid, SBP_LOW)
    assert still is not None and still["id"] == flag["id"] and still["status"] == "active"
    assert has_ext(still, ACKNOWLEDGED) and third["id"] in details(still)
    stated = next(e["valueDateTime"] for e in still["extension"] if e["url"] == ACKNOWLEDGED)
    assert datetime.fromisoformat(stated) == datetime.fromisoformat(at(minutes=70))
    assert len(api.notified) == 1

    # upgrade: orange -> red on the same Flag, notified again, acknowledgement cleared
    fourth, = api.post(bp(pid, 79, 50, at(minutes=40)))
    red = api.flag(pid, SBP_LOW)
    assert red is not None and red["id"] == flag["id"]
    assert priority(red) == "PH" and "SBP 79 mmHg (limit < 80 mmHg)" in text(red)
    assert not has_ext(red, ACKNOWLEDGED)
    assert len(api.notified) == 2 and api.notified[-1].severity.label == "red"
    assert set(details(red)) == {o["id"] for o in (first, second, third, fourth)}

    # the EHR's worklist query: open red alerts with their evidence
    worklist = api.client.get(
        "/fhir/Flag", params={"status": "active", "priority": "PH", "patient": pid}
    ).json()
    assert [e["resource"]["id"] for e in worklist["entry"]] == [flag["id"]]

    # a weaker reading later does not downgrade the episode
    api.post(bp(pid, 85, 60, at(minutes=20)))
    assert priority(api.flag(pid, SBP_LOW) or {}) == "PH"
    assert len(api.flags(pid)) == 1


def test_resolve_then_cooldown(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """Resolved by the EHR: same severity is suppressed for 24 h, a higher one reopens at once."""
    pid = api.enrol(programmes="HF")
    api.post(bp(pid, 89, 60, at(minutes=120)))
    flag = api.flag(pid, SBP_LOW)
    assert flag is not None
    resolved = _resolve(api, flag)
    assert resolved["status"] == "inactive"

    assert _versions(api, flag["id"]) == 2  # the EHR's update

    # within the cooldown: orange again -> no new Flag, the old one stays inactive and as the
    # EHR left it (a suppressed reading writes nothing, also when re-evaluated later)
    api.post(bp(pid, 88, 60, at(minutes=100)))
    api.post(bp(pid, 120, 80, at(minutes=95)))
    found = api.flags(pid, SBP_LOW)
    assert [(f["id"], f["status"]) for f in found] == [(flag["id"], "inactive")]
    assert _versions(api, flag["id"]) == 2
    assert len(api.notified) == 1

    # within the cooldown: red reopens as a new episode (a new Flag)
    red_obs, = api.post(bp(pid, 79, 50, at(minutes=80)))
    found = api.flags(pid, SBP_LOW, status="active")
    assert len(found) == 1 and found[0]["id"] != flag["id"]
    assert priority(found[0]) == "PH" and details(found[0]) == [red_obs["id"]]
    assert len(api.notified) == 2


def test_after_cooldown_a_new_episode_opens(api: Api) -> None:
    """25 h after the resolve (processing time), the same severity opens a new Flag."""
    pid = api.enrol(programmes="HF")
    api.post(bp(pid, 89, 60, at(minutes=120)))
    flag = api.flag(pid, SBP_LOW)
    assert flag is not None
    _resolve(api, flag)

    api.clock.advance(timedelta(hours=25))
    api.post(bp(pid, 88, 60, at(minutes=100)))
    active = api.flags(pid, SBP_LOW, status="active")
    assert len(active) == 1 and active[0]["id"] != flag["id"]
    assert priority(active[0]) == "PM" and "SBP 88 mmHg" in text(active[0])
    assert api.read("Flag", flag["id"])["status"] == "inactive"


def test_auto_close_after_two_normal_readings(api: Api) -> None:
    """The condition false on 2 later evaluations closes the episode (period.end set)."""
    pid = api.enrol(programmes="HF")
    api.post(bp(pid, 89, 60, at(minutes=120)))
    api.post(bp(pid, 120, 80, at(minutes=90)))
    flag = api.flag(pid, SBP_LOW)
    assert flag is not None and flag["status"] == "active"
    api.post(bp(pid, 118, 78, at(minutes=60)))
    flag = api.flag(pid, SBP_LOW)
    assert flag is not None and flag["status"] == "inactive" and "end" in flag["period"]


def test_retry_with_if_none_exist_changes_nothing(api: Api) -> None:
    """A retried conditional create returns the existing Observation: no new Flag version."""
    pid = api.enrol(programmes="HF")
    reading = bp(pid, 79, 50, at(minutes=30))
    condition = "identifier=urn:telemon:test|" + reading["identifier"][0]["value"]
    first = api.client.post("/fhir/Observation", json=reading, headers={"If-None-Exist": condition})
    assert first.status_code == 201
    flag = api.flag(pid, SBP_LOW)
    assert flag is not None and flag["meta"]["versionId"] == "1"
    for _ in range(2):
        retry = api.client.post(
            "/fhir/Observation", json=reading, headers={"If-None-Exist": condition}
        )
        assert retry.status_code == 200 and retry.json()["id"] == first.json()["id"]
    # the same retry inside a transaction Bundle
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": reading,
                "request": {"method": "POST", "url": "Observation", "ifNoneExist": condition},
            }
        ],
    }
    assert api.client.post("/fhir", json=bundle).status_code == 200
    assert _versions(api, flag["id"]) == 1
    assert len(api.notified) == 1
    assert len(api.client.get("/fhir/Observation", params={"patient": pid}).json()["entry"]) == 1


def test_transaction_rollback_leaves_no_flag(api: Api) -> None:
    """A transaction whose last entry is invalid rolls back, alerts included."""
    pid = api.enrol(programmes="HF")
    invalid = bp(pid, 120, 80, at(minutes=10))
    invalid["component"][0]["valueQuantity"]["value"] = 700  # implausible SBP: 422
    response = api.transaction(bp(pid, 79, 50, at(minutes=30)), invalid)
    assert response.status_code in (400, 422), response.text
    assert api.flags(pid) == []
    assert not api.client.get("/fhir/Observation", params={"patient": pid}).json().get("entry")
    assert api.notified == []
    # the same first entry alone does alert (it was the rollback that prevented it)
    assert api.transaction(bp(pid, 79, 50, at(minutes=30))).status_code == 200
    flag = api.flag(pid, SBP_LOW)
    assert flag is not None and priority(flag) == "PH"


def test_flag_entered_in_error_by_the_ehr(api: Api) -> None:
    """The EHR marks an alert entered-in-error: it stays so; a new reading opens a new one."""
    pid = api.enrol(programmes="HF")
    api.post(hr(pid, 45, at(minutes=60)))
    flag = api.flag(pid, "HF-HR-LOW")
    assert flag is not None
    api.put({**{k: v for k, v in flag.items() if k != "meta"}, "status": "entered-in-error"})
    api.post(hr(pid, 46, at(minutes=30)))
    found = {f["id"]: f for f in api.flags(pid, "HF-HR-LOW")}
    assert found[flag["id"]]["status"] == "entered-in-error"
    fresh = [f for f in found.values() if f["status"] == "active"]
    assert len(fresh) == 1 and "HR 46/min (limit < 50/min)" in text(fresh[0])
