"""Real FHIR data nobody here wrote goes in: a Synthea transaction Bundle and a Synthea bulk
export through ``telemon import``, the HL7 R4 vital-sign examples through the API.

The data is ``../shared/realdata`` beside the repository; where it comes from is in
docs/import.md#real-data-this-is-tested-with.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.bootstrap import build_service
from service.bulk import import_summary, importer
from service.fhir.service import FhirService
from service.settings import Settings

REALDATA = Path(__file__).resolve().parents[1].parent / "shared" / "realdata"
SYNTHEA = REALDATA / "synthea-r4" / "Clemente_Kreiger_1484a42d-0eaf-4654-9cbf-6b050a5cd73b.json"
BULK = REALDATA / "bulk-export"
HL7 = REALDATA / "hl7-r4-vitals"
SYNTHEA_ID = "https://github.com/synthetichealth/synthea"

# From ../shared/realdata/README.md: vital-sign Observations and Devices per exported patient.
VITAL_SIGNS = {"6a4160eb": 15, "7bc002fa": 20, "8e1a0a7c": 15, "a4a401d1": 16, "a5cb8ce9": 15}
DEVICES = {"6a4160eb": 2, "7bc002fa": 1, "8e1a0a7c": 1, "a4a401d1": 4, "a5cb8ce9": 2}


@pytest.fixture
def service(settings: Settings) -> Iterator[FhirService]:
    """A FHIR service on the test database."""
    svc = build_service(settings)
    yield svc
    svc.db.dispose()


def _search(service: FhirService, res_type: str, **params: str) -> list[dict[str, Any]]:
    result = service.search(res_type, [*params.items(), ("_count", "500")])
    return [json.loads(m.content or "{}") for m in result.matches]


def _per_type(summary: import_summary.ImportSummary) -> dict[str, dict[str, int]]:
    return {t: {o: n for o, n in c.items() if n} for t, c in summary.counts.items()}


def test_the_synthea_bundle_goes_in_except_the_types_telemon_does_not_store(
    service: FhirService,
) -> None:
    summary = importer.import_paths(service, [SYNTHEA], skip_unsupported=True)

    assert _per_type(summary) == {
        "Patient": {"created": 1},
        "Practitioner": {"created": 1},
        "Observation": {"created": 48},
        "Organization": {"skipped": 1},
        "Encounter": {"skipped": 3},
        "Immunization": {"skipped": 4},
        "DiagnosticReport": {"skipped": 4},
        "Claim": {"skipped": 3},
        "ExplanationOfBenefit": {"skipped": 3},
        "Condition": {"skipped": 1},
        "Procedure": {"skipped": 1},
    }
    assert summary.rejections == []
    source = json.loads(SYNTHEA.read_text())
    [stored_patient] = _search(
        service, "Patient", identifier=f"{SYNTHEA_ID}|1484a42d-0eaf-4654-9cbf-6b050a5cd73b"
    )
    observations = _search(service, "Observation", patient=stored_patient["id"])
    assert len(observations) == 48
    encounters = {
        e["fullUrl"]: e["resource"]["id"]
        for e in source["entry"]
        if e["resource"]["resourceType"] == "Encounter"
    }
    # The Encounters are not stored: the Observations keep them as external references.
    assert {o["encounter"]["reference"] for o in observations} == {
        f"Encounter/{i}" for i in encounters.values()
    }
    assert min(o["effectiveDateTime"] for o in observations).startswith("2012")


def test_without_skip_unsupported_the_synthea_transaction_is_refused_whole(
    service: FhirService,
) -> None:
    summary = importer.import_paths(service, [SYNTHEA])

    assert (summary.created, summary.rejected) == (0, 70)
    [rejection] = summary.rejections
    assert "--skip-unsupported" in rejection.issues[0].diagnostics
    assert _search(service, "Patient") == []


@pytest.mark.parametrize(
    "order",
    [
        ["Observation", "Device", "Patient"],
        ["Device", "Observation", "Patient"],
        ["Patient", "Device", "Observation"],
    ],
)
def test_the_bulk_export_goes_in_in_one_run_given_in_any_order(
    service: FhirService, order: list[str]
) -> None:
    summary = importer.import_paths(service, [BULK / f"{name}.000.ndjson" for name in order])

    assert _per_type(summary) == {
        "Patient": {"created": 5},
        "Device": {"created": 10},
        "Observation": {"created": 180},
    }
    assert summary.rejections == []
    for prefix, vital_signs in VITAL_SIGNS.items():
        [exported] = [
            json.loads(line)
            for line in (BULK / "Patient.000.ndjson").read_text().splitlines()
            if json.loads(line)["id"].startswith(prefix)
        ]
        [stored] = _search(service, "Patient", identifier=f"{SYNTHEA_ID}|{exported['id']}")
        found = _search(service, "Observation", patient=stored["id"], category="vital-signs")
        assert len(found) == vital_signs, prefix
        assert len(_search(service, "Device", patient=stored["id"])) == DEVICES[prefix], prefix


def test_the_bulk_export_directory_is_one_run(service: FhirService) -> None:
    summary = importer.import_paths(service, [BULK])

    assert [p.name for p in summary.files] == [
        "Patient.000.ndjson",
        "Device.000.ndjson",
        "Observation.000.ndjson",
    ]
    assert (summary.created, summary.rejected) == (195, 0)
    kinds = Counter(
        o["encounter"]["reference"].split("/")[0] for o in _search(service, "Observation")
    )
    assert kinds == {"Encounter": 180}  # kept as external references


def _pointed(node: Any, targets: dict[str, str]) -> Any:
    """``node`` with references to the examples' Patient and Practitioner pointed at ours."""
    if isinstance(node, dict):
        out = {k: _pointed(v, targets) for k, v in node.items()}
        if out.get("reference") in targets:
            out["reference"] = targets[out["reference"]]
        return out
    if isinstance(node, list):
        return [_pointed(v, targets) for v in node]
    return node


@pytest.mark.parametrize(
    ("example", "effective"),
    [
        ("observation-example-heart-rate.json", "1999-07-02"),
        ("observation-example-satO2.json", "2014-12-05T09:30:10+01:00"),
        ("observation-example.json", "2016-03-28"),  # body weight 185 [lb_av]
        ("observation-example-bloodpressure.json", "2012-09-17"),
        ("observation-example-body-temperature.json", "1999-07-02"),
        ("observation-example-respiratory-rate.json", "1999-07-02"),
    ],
)
def test_the_hl7_vital_sign_examples_are_accepted(
    client: TestClient, make_patient: Any, example: str, effective: str
) -> None:
    practitioner = client.post(
        "/fhir/Practitioner", json={"resourceType": "Practitioner", "name": [{"family": "Ex"}]}
    ).json()["id"]
    targets = {"Patient/example": f"Patient/{make_patient()}"}
    targets["Practitioner/example"] = f"Practitioner/{practitioner}"
    resource = _pointed(json.loads((HL7 / example).read_text()), targets)

    response = client.post("/fhir/Observation", json=resource)

    assert response.status_code == 201, response.text
    stored = response.json()
    assert stored["effectiveDateTime"] == effective
    assert stored["subject"] == {"reference": targets["Patient/example"]}
    for element in ("encounter", "device", "partOf"):  # types telemon does not store
        assert stored.get(element) == resource.get(element)
