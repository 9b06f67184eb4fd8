"""The effective-time rule as documented (docs/api/telemonitoring-apps.md, docs/import.md):
a time of day needs an offset, a date, year-month or year goes in without one (FHIR dateTime),
real histories before 2000 go in, and only an unset device clock is refused."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests import factories as f


@pytest.mark.parametrize(
    ("effective", "status"),
    [
        ("2016-03-28T08:15:00+02:00", 201),
        ("2016-03-28T06:15:00Z", 201),
        ("2016-03-28", 201),  # the precisions FHIR allows without an offset
        ("2016-03", 201),
        ("2016", 201),
        ("1999-07-02", 201),  # a real history before 2000
        ("1987-05-11T10:30:00+02:00", 201),
        ("2016-03-28T08:15:00", 400),  # a time without an offset is no FHIR dateTime
        ("2016-03-28T08:15+02:00", 400),  # nor one without seconds
        ("1970-01-01T00:02:13Z", 422),  # a device clock that was never set
        ("2000-01-01T01:07:00+01:00", 422),
    ],
)
def test_effective_time_precision_and_offset(
    client: TestClient, make_patient: Any, effective: str, status: int
) -> None:
    response = client.post("/fhir/Observation", json=f.weight(make_patient(), effective=effective))

    assert response.status_code == status, response.text
    if status == 201:
        assert response.json()["effectiveDateTime"] == effective
    else:
        expressions = f.expressions(response.json())
        assert any(e.startswith("Observation.effectiveDateTime") for e in expressions)


def test_a_date_alone_is_found_by_the_day_and_month_it_names(
    client: TestClient, make_patient: Any
) -> None:
    pid = make_patient()
    for effective in ("2016-03-28", "2016-03", "2016-04-02T09:00:00+02:00"):
        assert client.post("/fhir/Observation", json=f.weight(pid, effective=effective)).is_success

    def found(date: str) -> list[str]:
        bundle = client.get("/fhir/Observation", params={"patient": pid, "date": date}).json()
        return sorted(e["resource"]["effectiveDateTime"] for e in bundle.get("entry", []))

    assert found("2016-03-28") == ["2016-03-28"]
    assert found("2016-03") == ["2016-03", "2016-03-28"]
    assert found("ge2016-04-01") == ["2016-04-02T09:00:00+02:00"]
