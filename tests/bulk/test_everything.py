"""``Patient/{id}/$everything`` through HTTP: contents, filters, paging, compartment, audit."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

import orjson

from tests.bulk.conftest import Bulk, Cohort
from tests.factories import heart_rate, when


def _ids(bundle: dict[str, Any]) -> set[str]:
    return {
        f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in bundle.get("entry", [])
    }


def _all_pages(bulk: Bulk, url: str, token: str) -> tuple[list[str], int]:
    seen: list[str] = []
    pages = 0
    next_url: str | None = url
    while next_url:
        response = bulk.get(next_url, token)
        assert response.status_code == 200, response.text
        bundle = response.json()
        assert bundle["type"] == "searchset"
        seen += [
            f"{e['resource']['resourceType']}/{e['resource']['id']}"
            for e in bundle.get("entry", [])
        ]
        next_url = next((k["url"] for k in bundle["link"] if k["relation"] == "next"), None)
        pages += 1
    return seen, pages


def test_everything_is_the_patient_and_its_compartment(bulk: Bulk, cohort: Cohort) -> None:
    token = bulk.token()
    bundle = bulk.get(f"/fhir/Patient/{cohort.a}/$everything", token).json()
    assert _ids(bundle) == cohort.owned[cohort.a]
    assert bundle["entry"][0]["resource"]["resourceType"] == "Patient"


def test_everything_pages_with_next_links(bulk: Bulk, cohort: Cohort) -> None:
    token = bulk.token()
    seen, pages = _all_pages(bulk, f"/fhir/Patient/{cohort.b}/$everything?_count=2", token)
    assert len(seen) == len(set(seen))
    assert set(seen) == cohort.owned[cohort.b]
    assert pages == 4  # 7 resources, 2 per page


def test_everything_filters(bulk: Bulk, cohort: Cohort) -> None:
    token = bulk.token()
    base = f"/fhir/Patient/{cohort.a}/$everything"
    observations = bulk.get(f"{base}?_type=Observation", token).json()
    times = sorted(e["resource"]["effectiveDateTime"] for e in observations["entry"])
    first = datetime.fromisoformat(times[0])
    after_first = quote((first + timedelta(seconds=1)).isoformat())
    recent = bulk.get(f"{base}?_type=Observation&start={after_first}", token).json()
    old = bulk.get(f"{base}?_type=Observation&end={quote(first.isoformat())}", token).json()
    whole = bulk.get(base, token).json()
    newest = max(e["resource"]["meta"]["lastUpdated"] for e in whole["entry"])
    stamp = datetime.fromisoformat(newest) + timedelta(milliseconds=1)  # meta is in ms
    added = bulk.fhir.create(heart_rate(cohort.a, 66, when(5))).res_id
    since = bulk.get(f"{base}?_since={quote(stamp.isoformat())}", token).json()

    assert len(observations["entry"]) == 4
    assert {e["resource"]["resourceType"] for e in observations["entry"]} == {"Observation"}
    # start/end keep what overlaps them: all but the oldest measurement, or only that one
    assert len(recent["entry"]) == 3
    assert len(old["entry"]) == 1
    assert _ids(recent) | _ids(old) == _ids(observations)
    assert _ids(since) == {f"Observation/{added}"}
    assert bulk.get(f"{base}?_type=Practitioner", token).status_code == 400
    assert bulk.get(f"{base}?start=soon", token).status_code == 400


def test_a_patient_token_gets_its_own_record_only(bulk: Bulk, cohort: Cohort) -> None:
    token = bulk.patient_token(cohort.bsn[cohort.a])

    own = bulk.get(f"/fhir/Patient/{cohort.a}/$everything", token)
    other = bulk.get(f"/fhir/Patient/{cohort.b}/$everything", token)

    assert own.status_code == 200
    # the PGO's token reads Patient and Observation only: the rest is left out, not refused
    assert _ids(own.json()) == {
        i for i in cohort.owned[cohort.a] if i.startswith(("Patient/", "Observation/"))
    }
    assert other.status_code == 404
    assert other.json()["resourceType"] == "OperationOutcome"
    assert bulk.get("/fhir/Patient/nobody/$everything", token).status_code == 404


def test_everything_is_audited_per_patient(bulk: Bulk, cohort: Cohort) -> None:
    token = bulk.patient_token(cohort.bsn[cohort.b])
    bulk.get(f"/fhir/Patient/{cohort.b}/$everything", token)
    bulk.get(f"/fhir/Patient/{cohort.a}/$everything", token)

    events = bulk.fhir.search("AuditEvent", [("subtype", "operation"), ("_count", "50")]).matches
    bodies = [orjson.loads(e.content) for e in events]
    ok = [b for b in bodies if b["outcome"] == "0"]
    refused = [b for b in bodies if b["outcome"] == "4"]
    assert len(ok) == 1
    refs = {
        e["what"]["reference"] for e in ok[0]["entity"] if "what" in e and "reference" in e["what"]
    }
    assert f"Patient/{cohort.b}" in refs
    assert any(r.startswith("Observation/") for r in refs)
    assert len(refused) == 1 and refused[0]["outcomeDesc"].startswith("404")
