"""Failed clinician logins are rate limited (issue 12, finding 5): per source address and per
UZI number from that address, in both modes; refusals are audited in oauth mode."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi.testclient import TestClient

from service.demo.data import CLINICIAN_UZI
from tests.auth.limits import ATTACKER, PATIENT, from_address, pin
from tests.dashboard.conftest import add_clinician, fhir_of, login


def _unknown_uzis(n: int) -> list[str]:
    return [f"9{i:08d}" for i in range(1, n + 1) if f"9{i:08d}" != CLINICIAN_UZI]


def test_wrong_uzi_numbers_get_429_and_the_clinician_elsewhere_logs_in(
    dash: TestClient, clinician: str
) -> None:
    attacker = from_address(dash, ATTACKER)
    clock = pin(attacker)
    statuses = []
    for n, uzi in enumerate(_unknown_uzis(25)):
        clock.now += 1
        response = login(attacker, uzi)
        statuses.append(response.status_code)
        if response.status_code == 429:
            assert int(response.headers["retry-after"]) == 900 - n
            assert "Too many failed login attempts" in response.text
    assert statuses == [400] * 20 + [429] * 5
    assert login(attacker, CLINICIAN_UZI).status_code == 429  # the whole address, unchecked
    at_work = login(from_address(dash, PATIENT), CLINICIAN_UZI)  # the clinician's own address
    assert at_work.status_code == 303 and at_work.headers["location"] == "/dashboard"


def test_one_uzi_number_is_limited_per_address(dash: TestClient, clinician: str) -> None:
    attacker = from_address(dash, ATTACKER)
    pin(attacker)
    uzi = _unknown_uzis(1)[0]
    assert [login(attacker, uzi).status_code for _ in range(6)] == [400] * 5 + [429]
    assert login(attacker, _unknown_uzis(2)[1]).status_code == 400  # another number: checked
    assert login(from_address(dash, PATIENT), uzi).status_code == 400  # elsewhere: checked


def test_refused_logins_are_audited_in_oauth_mode(oauth_dash: TestClient) -> None:
    add_clinician(oauth_dash)
    attacker = from_address(oauth_dash, ATTACKER)
    pin(attacker)
    for uzi in _unknown_uzis(22):
        login(attacker, uzi)
    events: list[dict[str, Any]] = [
        orjson.loads(m.content or "{}")
        for m in fhir_of(oauth_dash).search("AuditEvent", [("_count", "500")]).matches
    ]
    refused = [e for e in events if "clinician login refused: 429" in e.get("outcomeDesc", "")]
    failed = [e for e in events if "clinician login failed" in e.get("outcomeDesc", "")]
    assert len(refused) == 2 and len(failed) == 20
    assert all(e["outcome"] == "4" for e in refused)
