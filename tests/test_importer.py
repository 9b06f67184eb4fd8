"""``service.importer``: NDJSON and Bundle files, idempotent re-import, rejections with reasons."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from service import importer
from service.bootstrap import build_service
from service.fhir.service import FhirService
from service.settings import Settings
from tests.factories import BSN, BSNS, patient, post_entry, transaction, weight, when


@pytest.fixture
def service(settings: Settings) -> Iterator[FhirService]:
    """A FHIR service on the test database."""
    svc = build_service(settings)
    yield svc
    svc.db.dispose()


def _device(patient_ref: str, serial: str) -> dict[str, Any]:
    return {
        "resourceType": "Device",
        "identifier": [{"system": "urn:test:serial", "value": serial}],
        "status": "active",
        "patient": {"reference": patient_ref},
    }


def _about(obs: dict[str, Any], subject: str) -> dict[str, Any]:
    """``obs`` with a subject reference that is not ``Patient/<id>`` (e.g. a ``urn:uuid:``)."""
    return obs | {"subject": {"reference": subject}}


def _ndjson(path: Path, lines: list[Any]) -> Path:
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return path


def _search(service: FhirService, res_type: str, **params: str) -> list[dict[str, Any]]:
    result = service.search(res_type, [*params.items(), ("_count", "500")])
    return [json.loads(m.content or "{}") for m in result.matches]


def test_ndjson_import_rejects_bad_lines_and_reimport_creates_nothing(
    service: FhirService, tmp_path: Path
) -> None:
    pat = patient(bsn=BSNS[0]) | {"id": "p1"}
    weights = [
        weight("p1", 80 + d / 10, when(d), ident=f"w{d}") | {"device": {"reference": "Device/d1"}}
        for d in range(3)
    ]
    implausible = weight("p1", 700, when(5), ident="w-700")
    lines = [pat, _device("Patient/p1", "SN-1") | {"id": "d1"}, *weights, "{not json", implausible]
    path = _ndjson(tmp_path / "data.ndjson", lines)
    done: list[int] = []

    first = importer.import_file(service, path, progress=done.append)

    assert (first.created, first.skipped, first.rejected) == (5, 0, 2)
    assert sum(done) == 7
    bad_json, bad_value = first.rejections
    assert (bad_json.line, bad_json.status) == (6, 400)
    assert "Malformed JSON" in bad_json.describe()
    assert (bad_value.line, bad_value.status) == (7, 422)
    assert bad_value.issues[0].expression == ("Observation.valueQuantity.value",)
    assert "700" in bad_value.issues[0].diagnostics
    # The file's references were rewritten to the ids the server assigned.
    [stored_patient] = _search(service, "Patient", identifier=f"{BSN}|{BSNS[0]}")
    [stored_device] = _search(service, "Device", patient=stored_patient["id"])
    stored = _search(service, "Observation", patient=stored_patient["id"])
    assert len(stored) == 3
    assert {o["device"]["reference"] for o in stored} == {f"Device/{stored_device['id']}"}

    again = importer.import_file(service, path, progress=None)

    assert (again.created, again.skipped, again.rejected) == (0, 5, 2)
    assert len(_search(service, "Observation", patient=stored_patient["id"])) == 3


def test_bad_line_in_a_chunk_does_not_roll_back_the_others(
    service: FhirService, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(importer, "CHUNK_SIZE", 3)
    lines: list[Any] = [patient(bsn=BSNS[1]) | {"id": "p"}]
    for d in range(6):
        lines.append(weight("p", 70 + d, when(d), ident=f"c{d}"))
    lines[3] = weight("unknown", 70, when(9), ident="orphan")  # a reference to nothing
    path = _ndjson(tmp_path / "chunks.jsonl", lines)
    calls: list[int] = []

    summary = importer.import_file(service, path, progress=calls.append)

    assert (summary.created, summary.rejected) == (6, 1)
    assert summary.rejections[0].line == 4
    assert summary.rejections[0].issues[0].expression == ("Observation.subject",)
    assert calls == [3, 3, 1]


def test_collection_bundle_resolves_urn_uuid_and_names_the_entry(
    service: FhirService, tmp_path: Path
) -> None:
    ref = "urn:uuid:7f3c1f0e-0000-4000-8000-000000000001"
    good = _about(weight("x", 81.0, when(1), ident="b1"), ref)
    bad = _about(weight("x", 81.0, when(2), ident="b2"), ref)
    bad["valueQuantity"]["code"] = "stone"
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {"fullUrl": ref, "resource": patient(bsn=BSNS[2])},
            {"resource": good},
            {"resource": bad},
            {"fullUrl": "urn:uuid:nothing"},
        ],
    }
    path = tmp_path / "bundle.json"
    path.write_text(json.dumps(bundle, indent=2))

    summary = importer.import_file(service, path)

    assert (summary.created, summary.skipped, summary.rejected) == (2, 0, 2)
    unit, empty = summary.rejections  # in file order
    assert empty.entry == 3
    assert unit.entry == 2
    assert any(
        e.startswith("Bundle.entry[2].resource.valueQuantity")
        for i in unit.issues
        for e in i.expression
    )
    [stored_patient] = _search(service, "Patient", identifier=f"{BSN}|{BSNS[2]}")
    assert len(_search(service, "Observation", patient=stored_patient["id"])) == 1

    again = importer.import_file(service, path)
    assert (again.created, again.skipped, again.rejected) == (0, 2, 2)


def test_transaction_bundle_is_all_or_nothing_and_idempotent(
    service: FhirService, tmp_path: Path
) -> None:
    ref = "urn:uuid:7f3c1f0e-0000-4000-8000-000000000002"
    entries = [
        post_entry(patient(bsn=BSNS[3]), full_url=ref),
        post_entry(_about(weight("x", 90.0, when(1), ident="t1"), ref)),
        post_entry(_about(weight("x", 90.5, when(0), ident="t2"), ref)),
    ]
    good = tmp_path / "tx.json"
    good.write_text(json.dumps(transaction(*entries)))

    first = importer.import_file(service, good)
    again = importer.import_file(service, good)

    assert (first.created, first.skipped, first.rejected) == (3, 0, 0)
    assert (again.created, again.skipped, again.rejected) == (0, 3, 0)

    entries.append(post_entry(_about(weight("x", 9000.0, when(2), ident="t3"), ref)))
    bad = tmp_path / "tx-bad.json"
    bad.write_text(json.dumps(transaction(*entries)))

    failed = importer.import_file(service, bad)

    assert (failed.created, failed.skipped, failed.rejected) == (0, 0, 4)
    [rejection] = failed.rejections
    assert rejection.status == 422
    assert rejection.issues[0].expression == ("Bundle.entry[3].resource.valueQuantity.value",)
    assert len(_search(service, "Observation", identifier="urn:telemon:test|t3")) == 0


def test_unreadable_document_is_one_rejection(service: FhirService, tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{\n  "resourceType": "Bundle",\n  "type": "collection",\n')

    summary = importer.import_file(service, path)

    assert (summary.created, summary.rejected) == (0, 1)
    assert summary.rejections[0].where == "file"


def test_identifier_criteria_prefers_bsn_and_escapes_commas() -> None:
    pat = patient(bsn=BSNS[0])
    pat["identifier"].insert(0, {"system": "urn:mrn", "value": "A,1"})
    assert importer.identifier_criteria(pat) == (
        "identifier=http%3A%2F%2Ffhir.nl%2Ffhir%2FNamingSystem%2Fbsn%7C111222333"
    )
    obs = weight("p", ident="A,1")
    obs["identifier"] = [{"system": "urn:mrn", "value": "A,1"}]
    assert importer.identifier_criteria(obs) == "identifier=urn%3Amrn%7CA%5C%2C1"
    assert importer.identifier_criteria(patient()) is None
