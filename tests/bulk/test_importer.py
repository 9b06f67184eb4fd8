"""``service.bulk.importer``: NDJSON and Bundle files, idempotent re-import, rejections with
reasons."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from service.bootstrap import build_service
from service.bulk import import_summary, importer
from service.fhir.service import FhirService
from service.settings import Settings
from service.storage import pg_bulk
from service.storage.db import StorageError
from service.storage.tables import RESOURCE_TABLES, resources
from tests.clock import NOW, PinnedClock
from tests.conftest import _truncate
from tests.factories import (
    BSN,
    BSNS,
    PROGRAMME,
    care_plan,
    patient,
    post_entry,
    transaction,
    weight,
    when,
)


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

    first = importer.import_paths(service, [path], progress=done.append)

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

    again = importer.import_paths(service, [path])

    assert (again.created, again.skipped, again.rejected) == (0, 5, 2)
    assert len(_search(service, "Observation", patient=stored_patient["id"])) == 3


def test_bad_line_in_a_chunk_does_not_roll_back_the_others(
    service: FhirService, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(importer, "CHUNK_SIZE", 3)
    monkeypatch.setattr(importer, "PG_CHUNK_SIZE", 3)
    lines: list[Any] = [patient(bsn=BSNS[1]) | {"id": "p"}]
    for d in range(6):
        lines.append(weight("p", 70 + d, when(d), ident=f"c{d}"))
    lines[3] = weight("unknown", 70, when(9), ident="orphan")  # a reference to nothing
    path = _ndjson(tmp_path / "chunks.jsonl", lines)
    calls: list[int] = []

    summary = importer.import_paths(service, [path], progress=calls.append)

    assert (summary.created, summary.rejected) == (6, 1)
    assert summary.rejections[0].line == 4
    assert summary.rejections[0].issues[0].expression == ("Observation.subject",)
    # The orphan waits for the end of the run (its Patient might still come), then is refused.
    assert calls == [3, 2, 1, 1]
    assert _search(service, "Observation", identifier="urn:telemon:test|orphan") == []


def test_lines_not_in_a_file_go_in_as_one_run(service: FhirService) -> None:
    lines = [
        json.dumps(weight("p", 70, when(1), ident="first")).encode(),  # before its Patient
        b"{not json",
        json.dumps(patient(bsn=BSNS[1]) | {"id": "p"}).encode(),
    ]

    summary = importer.import_lines(service, Path("generated.ndjson"), iter(lines))

    assert (summary.created, summary.rejected) == (2, 1)
    [rejection] = summary.rejections
    assert (rejection.file, rejection.line, rejection.status) == (Path("generated.ndjson"), 2, 400)
    [found] = _search(service, "Observation", identifier="urn:telemon:test|first")
    [pid] = [p["id"] for p in _search(service, "Patient")]
    assert found["subject"]["reference"] == f"Patient/{pid}"  # the run's id map


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

    summary = importer.import_paths(service, [path])

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

    again = importer.import_paths(service, [path])
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

    first = importer.import_paths(service, [good])
    again = importer.import_paths(service, [good])

    assert (first.created, first.skipped, first.rejected) == (3, 0, 0)
    assert (again.created, again.skipped, again.rejected) == (0, 3, 0)

    entries.append(post_entry(_about(weight("x", 9000.0, when(2), ident="t3"), ref)))
    bad = tmp_path / "tx-bad.json"
    bad.write_text(json.dumps(transaction(*entries)))

    failed = importer.import_paths(service, [bad])

    assert (failed.created, failed.skipped, failed.rejected) == (0, 0, 4)
    [rejection] = failed.rejections
    assert rejection.status == 422
    assert rejection.issues[0].expression == ("Bundle.entry[3].resource.valueQuantity.value",)
    assert len(_search(service, "Observation", identifier="urn:telemon:test|t3")) == 0


def test_unreadable_document_is_one_rejection(service: FhirService, tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{\n  "resourceType": "Bundle",\n  "type": "collection",\n')

    summary = importer.import_paths(service, [path])

    assert (summary.created, summary.rejected) == (0, 1)
    assert summary.rejections[0].where == "broken.json"


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


def _files(tmp_path: Path, **files: list[Any]) -> dict[str, Path]:
    """NDJSON files named ``<key>.000.ndjson`` in ``tmp_path/export``, as a bulk export writes."""
    folder = tmp_path / "export"
    folder.mkdir(exist_ok=True)
    return {name: _ndjson(folder / f"{name}.000.ndjson", lines) for name, lines in files.items()}


def _export(tmp_path: Path) -> dict[str, Path]:
    """A small bulk export: 2 Patients, their Devices, weights that name both."""
    patients = [patient(bsn=BSNS[i]) | {"id": f"p{i}"} for i in range(2)]
    devices = [_device(f"Patient/p{i}", f"SN-{i}") | {"id": f"d{i}"} for i in range(2)]
    observations = [
        weight(f"p{i}", 70 + d, when(d), ident=f"e{i}-{d}")
        | {"device": {"reference": f"Device/d{i}"}}
        for i in range(2)
        for d in range(3)
    ]
    return _files(tmp_path, Patient=patients, Device=devices, Observation=observations)


def test_files_given_in_any_order_go_in_by_dependency_with_one_id_map(
    service: FhirService, tmp_path: Path
) -> None:
    export = _export(tmp_path)
    given = [export["Observation"], export["Device"], export["Patient"]]

    summary = importer.import_paths(service, given)

    assert summary.files == [export["Patient"], export["Device"], export["Observation"]]
    assert {t: dict(c) for t, c in summary.counts.items()} == {
        "Patient": {"created": 2},
        "Device": {"created": 2},
        "Observation": {"created": 6},
    }
    for i in range(2):
        [stored_patient] = _search(service, "Patient", identifier=f"{BSN}|{BSNS[i]}")
        [stored_device] = _search(service, "Device", patient=stored_patient["id"])
        stored = _search(service, "Observation", patient=stored_patient["id"])
        assert len(stored) == 3
        assert {o["device"]["reference"] for o in stored} == {f"Device/{stored_device['id']}"}

    again = importer.import_paths(service, [export["Patient"].parent])  # the directory

    assert (again.created, again.skipped, again.rejected) == (0, 10, 0)
    assert again.reasons[("Observation", "skipped", import_summary.ALREADY_PRESENT)].count == 6


def test_a_directory_lists_the_files_it_ignores(service: FhirService, tmp_path: Path) -> None:
    export = _export(tmp_path)
    folder = export["Patient"].parent
    (folder / "manifest.txt").write_text("not FHIR")
    (folder / ".hidden.ndjson").write_text("{}")

    summary = importer.import_paths(service, [folder])

    assert summary.ignored == [folder / "manifest.txt"]
    assert len(summary.files) == 3
    assert summary.created == 10


def test_a_reference_to_a_later_line_waits_for_it(service: FhirService, tmp_path: Path) -> None:
    pat = patient(bsn=BSNS[4]) | {"id": "late"}
    path = _ndjson(tmp_path / "mixed.ndjson", [weight("late", 71, when(1), ident="early"), pat])

    summary = importer.import_paths(service, [path])

    assert (summary.created, summary.rejected) == (2, 0)
    [stored_patient] = _search(service, "Patient", identifier=f"{BSN}|{BSNS[4]}")
    [obs] = _search(service, "Observation", patient=stored_patient["id"])
    assert obs["identifier"][0]["value"] == "early"


def test_what_refers_to_a_rejected_resource_is_rejected_saying_so(
    service: FhirService, tmp_path: Path
) -> None:
    bad_bsn = patient() | {"id": "p", "identifier": [{"system": BSN, "value": "123456789"}]}
    path = _ndjson(tmp_path / "bad.ndjson", [bad_bsn, weight("p", 80, when(1), ident="x")])

    summary = importer.import_paths(service, [path])

    assert (summary.created, summary.rejected) == (0, 2)
    _, orphan = summary.rejections
    assert orphan.issues[0].expression == ("Observation.subject",)
    assert orphan.issues[0].diagnostics == (
        "Patient/p was not imported (rejected at bad.ndjson line 1)"
    )


def test_the_reference_rule_applies_to_imports(service: FhirService, tmp_path: Path) -> None:
    pat = patient(bsn=BSNS[5]) | {"id": "p"}
    kept = weight("p", 80, when(1), ident="ext") | {"encounter": {"reference": "Encounter/e1"}}
    nobody = weight("p", 80, when(2), ident="perf")
    nobody["performer"] = [{"reference": "Practitioner/nobody"}]
    dangling = weight("p", 80, when(3), ident="urn") | {"encounter": {"reference": "urn:uuid:x"}}
    path = _ndjson(tmp_path / "refs.ndjson", [pat, kept, nobody, dangling])

    summary = importer.import_paths(service, [path])

    assert (summary.created, summary.rejected) == (2, 2)
    performer, urn = summary.rejections
    assert (performer.line, performer.issues[0].expression) == (3, ("Observation.performer[0]",))
    assert (urn.line, urn.issues[0].expression) == (4, ("Observation.encounter",))
    assert "urn:uuid:x" in urn.issues[0].diagnostics
    [stored] = _search(service, "Observation", identifier="urn:telemon:test|ext")
    assert stored["encounter"] == {"reference": "Encounter/e1"}


def _with_encounter(tmp_path: Path, kind: str) -> Path:
    """A Bundle of ``kind`` with a Patient, an Encounter and a weight that names both by urn."""
    patient_urn, encounter_urn = "urn:uuid:0001", "urn:uuid:0002"
    encounter = {
        "resourceType": "Encounter",
        "id": "enc-1",
        "status": "finished",
        "class": {"code": "HH"},
        "subject": {"reference": patient_urn},
    }
    obs = _about(weight("x", 77, when(1), ident="enc-w"), patient_urn)
    obs["encounter"] = {"reference": encounter_urn}
    entries = [
        {"fullUrl": patient_urn, "resource": patient(bsn=BSNS[1])},
        {"fullUrl": encounter_urn, "resource": encounter},
        {"fullUrl": "urn:uuid:0003", "resource": obs},
    ]
    if kind == "transaction":
        for entry in entries:
            entry["request"] = {"method": "POST", "url": entry["resource"]["resourceType"]}
    path = tmp_path / f"{kind}.json"
    path.write_text(json.dumps({"resourceType": "Bundle", "type": kind, "entry": entries}))
    return path


@pytest.mark.parametrize("kind", ["collection", "transaction"])
def test_skip_unsupported_imports_the_rest_and_keeps_references_to_them(
    service: FhirService, tmp_path: Path, kind: str
) -> None:
    path = _with_encounter(tmp_path, kind)

    refused = importer.import_paths(service, [path])

    if kind == "transaction":  # all or nothing, as its author asked
        assert (refused.created, refused.rejected) == (0, 3)
        assert {t: c["rejected"] for t, c in refused.counts.items()} == {
            "Patient": 1, "Encounter": 1, "Observation": 1
        }
        [rejection] = refused.rejections
        assert "1 Encounter" in rejection.issues[0].diagnostics
        assert "--skip-unsupported" in rejection.issues[0].diagnostics
    else:  # each resource on its own: the Encounter is refused, the rest goes in
        assert (refused.created, refused.rejected) == (2, 1)
        assert refused.rejections[0].issues[0].expression == (
            "Bundle.entry[1].resource.resourceType",
        )

    summary = importer.import_paths(service, [path], skip_unsupported=True)

    assert summary.rejected == 0
    assert summary.counts["Encounter"]["skipped"] == 1
    assert summary.reasons[("Encounter", "skipped", import_summary.NOT_STORED)].count == 1
    outcome = "created" if kind == "transaction" else "skipped"  # a collection went in before
    assert summary.counts["Observation"][outcome] == 1
    [obs] = _search(service, "Observation", identifier="urn:telemon:test|enc-w")
    assert obs["encounter"] == {"reference": "Encounter/enc-1"}  # now an external reference
    [stored_patient] = _search(service, "Patient", identifier=f"{BSN}|{BSNS[1]}")
    assert obs["subject"] == {"reference": f"Patient/{stored_patient['id']}"}


def test_a_transaction_above_the_entry_limit_goes_in_parts(
    settings: Settings, tmp_path: Path
) -> None:
    service = build_service(settings.model_copy(update={"bundle_max_entries": 4}))
    patient_urn = "urn:uuid:7f3c1f0e-0000-4000-8000-00000000000a"
    first_urn = "urn:uuid:7f3c1f0e-0000-4000-8000-00000000000b"
    weights = [
        _about(weight("x", 80 + d, when(d), ident=f"part{d}"), patient_urn) for d in range(6)
    ]
    weights[5]["derivedFrom"] = [{"reference": first_urn}]  # to an entry of another part
    entries = [post_entry(w, full_url=first_urn if d == 0 else None) for d, w in enumerate(weights)]
    entries.append(post_entry(patient(bsn=BSNS[2]), full_url=patient_urn))  # last, yet first in
    path = tmp_path / "big.json"
    path.write_text(json.dumps(transaction(*entries)))
    try:
        summary = importer.import_paths(service, [path])
        again = importer.import_paths(service, [path])
        [stored_patient] = _search(service, "Patient", identifier=f"{BSN}|{BSNS[2]}")
        stored = {
            o["identifier"][0]["value"]: o
            for o in _search(service, "Observation", patient=stored_patient["id"])
        }
    finally:
        service.db.dispose()

    assert (summary.created, summary.rejected) == (7, 0)
    assert summary.notes == [
        "big.json: a transaction Bundle of 7 entries, above the limit of 4 "
        "(TELEMON_BUNDLE_MAX_ENTRIES), imported in 2 parts, each all-or-nothing"
    ]
    assert len(stored) == 6
    first = f"Observation/{stored['part0']['id']}"
    assert stored["part5"]["derivedFrom"] == [{"reference": first}]
    assert (again.created, again.skipped) == (0, 7)


def test_the_summary_counts_per_type_and_reason(service: FhirService, tmp_path: Path) -> None:
    pat = patient(bsn=BSNS[3]) | {"id": "p"}
    stones = []
    for d in range(3):
        w = weight("p", 12, when(d), ident=f"st{d}")
        w["valueQuantity"]["code"] = "[stone_av]"
        stones.append(w)
    orphans = [weight("gone", 80, when(d), ident=f"o{d}") for d in range(2)]
    path = _ndjson(tmp_path / "mixed.ndjson", [pat, *stones, *orphans, "{broken"])

    summary = importer.import_paths(service, [path])

    assert summary.counts["Patient"]["created"] == 1
    assert summary.counts["Observation"]["rejected"] == 5
    reasons = {key: tally.count for key, tally in summary.reasons.items()}
    assert reasons == {
        ("Observation", "rejected", "422 value at Observation.valueQuantity.code"): 3,
        ("Observation", "rejected", "422 not-found at Observation.subject"): 2,
        (import_summary.UNKNOWN_TYPE, "rejected", "400 structure"): 1,
    }
    unit = summary.reasons[
        ("Observation", "rejected", "422 value at Observation.valueQuantity.code")
    ]
    assert unit.first == "mixed.ndjson line 2"
    assert unit.example is not None and "[stone_av]" in unit.example


def test_ndjson_lines_of_types_telemon_does_not_import(
    service: FhirService, tmp_path: Path
) -> None:
    audit = {"resourceType": "AuditEvent", "type": {"code": "rest"}, "recorded": when(1)}
    encounter = {"resourceType": "Encounter", "status": "finished", "class": {"code": "HH"}}
    path = _ndjson(tmp_path / "other.ndjson", [audit, encounter, patient(bsn=BSNS[0])])

    refused = importer.import_paths(service, [path])
    skipped = importer.import_paths(service, [path], skip_unsupported=True)

    assert (refused.created, refused.rejected) == (1, 2)
    assert [r.res_type for r in refused.rejections] == ["AuditEvent", "Encounter"]
    assert "does not import AuditEvent" in refused.rejections[0].issues[0].diagnostics
    assert (skipped.skipped, skipped.rejected) == (3, 0)
    assert skipped.reasons[("AuditEvent", "skipped", import_summary.NOT_STORED)].first == (
        "other.ndjson line 1"
    )
    assert service.search("AuditEvent", []).matches == []


def test_a_transaction_that_deletes_is_not_imported(
    settings: Settings, tmp_path: Path
) -> None:
    service = build_service(settings.model_copy(update={"bundle_max_entries": 2}))
    entries = [post_entry(weight("x", 80, when(d), ident=f"del{d}")) for d in range(3)]
    entries.append({"request": {"method": "DELETE", "url": "Patient/p"}})
    path = tmp_path / "delete.json"
    path.write_text(json.dumps(transaction(*entries)))
    try:
        summary = importer.import_paths(service, [path])
    finally:
        service.db.dispose()

    assert (summary.created, summary.rejected) == (0, 4)
    [rejection] = summary.rejections
    assert rejection.issues[0].expression == ("Bundle.entry[3].request.method",)
    assert "this entry is a DELETE" in rejection.issues[0].diagnostics


def _planner_rows(service: FhirService, table: str) -> tuple[float, int]:
    """The planner's row count for ``table`` (PostgreSQL reltuples; SQLite sqlite_stat1, -1
    without statistics) and the table's real count."""
    with service.db.read() as conn:
        real = conn.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar_one()
        if service.db.is_sqlite:
            if not conn.exec_driver_sql(
                "SELECT 1 FROM sqlite_master WHERE name = 'sqlite_stat1'"
            ).first():
                return -1, real
            stat = conn.exec_driver_sql(
                "SELECT stat FROM sqlite_stat1 WHERE tbl = ? ORDER BY idx LIMIT 1", (table,)
            ).scalar()
            return (float(stat.split()[0]) if stat else -1), real
        estimate = conn.exec_driver_sql(
            "SELECT reltuples FROM pg_class WHERE relname = %(t)s", {"t": table}
        ).scalar_one()
        return float(estimate), real


def test_import_analyzes_the_tables_it_loaded(service: FhirService, tmp_path: Path) -> None:
    if service.db.is_sqlite:
        with service.db.write() as conn:  # forget earlier tests' statistics
            if conn.exec_driver_sql(
                "SELECT 1 FROM sqlite_master WHERE name = 'sqlite_stat1'"
            ).first():
                conn.exec_driver_sql("DELETE FROM sqlite_stat1")
    before = {t: _planner_rows(service, t) for t in ("resources", "sp_token")}
    pat = patient(bsn=BSNS[1]) | {"id": "p1"}
    weights = [weight("p1", 80 + d / 10, when(d), ident=f"a{d}") for d in range(7)]
    path = _ndjson(tmp_path / "data.ndjson", [pat, *weights])

    assert importer.import_paths(service, [path]).created == 8

    for table in ("resources", "sp_token"):
        estimate, real = _planner_rows(service, table)
        assert real > 0
        assert estimate == real, (table, before[table], estimate, real)
        assert before[table][0] != estimate  # changed by the import's ANALYZE


# -- the batch path against the one-by-one path ------------------------------------------------

_WRITTEN = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z")  # meta.lastUpdated
_DIGEST = re.compile(r"-[0-9a-f]{32}\b")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _at(days_ago: float) -> str:
    return (NOW - timedelta(days=days_ago)).isoformat(timespec="seconds")


def _mixed_export(folder: Path) -> list[Path]:
    """Two files referring across to each other; an enrolled patient whose weights raise an
    alert; a bad resource, an orphan, a repeated identifier, one in the middle of a chunk."""
    folder.mkdir()
    people = [
        patient(bsn=BSNS[0]) | {"id": "enrolled"},
        patient(bsn=BSNS[1], family="de Vries") | {"id": "other"},
        care_plan("enrolled")
        | {
            "identifier": [{"system": "urn:test:plan", "value": "cp"}],
            "instantiatesCanonical": [PROGRAMME["HF"]],
        },
    ]
    obs: list[Any] = []
    for day in range(8):  # 80 kg rising to 83.5 kg: the 3-day weight rule fires
        obs.append(weight("enrolled", 80 + day / 2, _at(8 - day), ident=f"e{day}"))
        obs.append(weight("other", 70, _at(8 - day), ident=f"o{day}"))
    obs.insert(3, weight("other", 700, _at(3), ident="implausible"))
    obs.insert(5, weight("nobody", 70, _at(3), ident="orphan"))
    obs.insert(7, weight("other", 70, _at(8), ident="o0"))  # the same identifier again
    observations = _ndjson(folder / "Observation.000.ndjson", obs)
    return [observations, _ndjson(folder / "Patient.ndjson", people)]


def _tables(service: FhirService) -> dict[str, list[str]]:
    """Every row the import wrote, server ids replaced by what the resources are (their
    identifier), row ids by their resource's, so that two imports can be compared."""
    label: dict[str, str] = {}
    by_rid: dict[Any, str] = {}
    with service.db.read() as conn:
        for rid, res_type, res_id, content in conn.execute(
            select(resources.c.rid, resources.c.res_type, resources.c.res_id, resources.c.content)
        ):
            idents = json.loads(content).get("identifier") or [{}]
            label[res_id] = f"{res_type}:{idents[0].get('value', '?')}"
            by_rid[rid] = label[res_id]

        def text_of(row: dict[str, Any]) -> str:
            if "rid" in row:
                row["rid"] = by_rid.get(row["rid"], row["rid"])
            for column in ("last_updated", "updated"):  # when it was written, not what
                row.pop(column, None)
            raw = _WRITTEN.sub("<written>", json.dumps(row, sort_keys=True, default=str))
            raw = _DIGEST.sub("-<digest>", raw)  # alert ids: a digest of the patient's id
            return _UUID.sub(lambda m: label.get(m.group(0), "<id>"), raw)

        return {
            table.name: sorted(text_of(dict(r._mapping)) for r in conn.execute(select(table)))
            for table in RESOURCE_TABLES
        }


def test_batch_path_writes_what_the_one_by_one_path_writes(
    settings: Settings, clock: PinnedClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(importer, "CHUNK_SIZE", 4)  # the bad lines land inside chunks
    monkeypatch.setattr(importer, "PG_CHUNK_SIZE", 4)
    results = []
    real, real_each, real_write = importer.prepare_batch, importer.store_each, importer.write_batch
    # One by one; in batches written by the one insert statement; in batches written by COPY
    # (PostgreSQL's bulk path, from pg_bulk.COPY_FROM versions on); the same with the
    # second batch's write failing (on PostgreSQL in the writer thread: the chunk is done
    # again and the one checked meanwhile after it too).
    variants = ((True, 10**9, False), (False, 10**9, False), (False, 1, False), (False, 1, True))
    for one_by_one, copy_from, fail_write in variants:
        monkeypatch.setattr(pg_bulk, "COPY_FROM", copy_from)
        _truncate(settings.database_url)
        svc = build_service(settings, clock=clock)
        batches: list[bool] = []
        each: list[int] = []
        writes: list[int] = []

        def counted(*args: Any, skip: bool = one_by_one, seen: list[bool] = batches) -> Any:
            outcome = None if skip else real(*args)
            seen.append(outcome is not None)
            return outcome

        def counted_each(*args: Any, calls: list[int] = each) -> Any:
            calls.append(len(args[2]))
            return real_each(*args)

        def failing(*args: Any, fail: bool = fail_write, calls: list[int] = writes) -> Any:
            calls.append(1)
            if fail and len(calls) == 2:
                raise StorageError(OperationalError("INSERT", {}, Exception("connection lost")))
            return real_write(*args)

        monkeypatch.setattr(importer, "prepare_batch", counted)
        monkeypatch.setattr(importer, "store_each", counted_each)
        monkeypatch.setattr(importer, "write_batch", failing)
        summary = importer.import_paths(svc, _mixed_export(tmp_path / f"run{len(results)}"))
        reasons = {key: tally.count for key, tally in summary.reasons.items()}
        results.append((summary.counts, reasons, _tables(svc)))
        # The path under test was taken; the orphan's chunk went one by one (it may wait).
        assert any(batches) != one_by_one and each
        assert one_by_one or sum(each) < sum(c["created"] for c in summary.counts.values())
        again = importer.import_paths(svc, _mixed_export(tmp_path / f"again{len(results)}"))
        assert again.created == 0, "a second import creates nothing"
        assert _tables(svc) == results[-1][2]
        svc.db.dispose()
    (counts_each, reasons_each, tables_each), *batched = results
    for counts, reasons, tables in batched:
        assert counts == counts_each
        assert counts["Observation"][import_summary.CREATED] == 16
        assert counts["Observation"][import_summary.SKIPPED] == 1  # the repeated identifier
        assert counts["Observation"][import_summary.REJECTED] == 2  # implausible, orphan
        assert reasons == reasons_each
        assert tables["alert_episodes"], "the weight rule raised an alert"
        assert any('"Flag:' in row or "Flag" in row for row in tables["resources"])
        for name, rows in tables.items():
            assert rows == tables_each[name], name


@pytest.mark.parametrize("one_by_one", [False, True])
def test_an_identifier_matching_two_resources_rejects_only_that_line(
    service: FhirService, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, one_by_one: bool
) -> None:
    if one_by_one:
        monkeypatch.setattr(importer, "prepare_batch", lambda *_args: None)
    pid = service.create(patient(bsn=BSNS[2])).res_id
    for _ in range(2):  # plain creates: nothing stops two resources sharing an identifier
        service.create(weight(pid, 80, when(2), ident="twice"))
    lines = [weight(pid, 81, when(1), ident="twice"), weight(pid, 82, when(1), ident="new")]
    summary = importer.import_paths(service, [_ndjson(tmp_path / "twice.ndjson", lines)])
    assert (summary.created, summary.rejected) == (1, 1)
    [rejection] = summary.rejections
    assert (rejection.status, rejection.line) == (412, 1)
    assert rejection.issues[0].expression == ("If-None-Exist",)
    assert "match more than one Observation" in rejection.issues[0].diagnostics
    assert len(_search(service, "Observation", identifier="urn:telemon:test|twice")) == 2


@pytest.mark.parametrize("one_by_one", [False, True])
def test_a_long_identifier_is_matched_as_a_search_matches_it(
    service: FhirService, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, one_by_one: bool
) -> None:
    if one_by_one:
        monkeypatch.setattr(importer, "prepare_batch", lambda *_args: None)
    long = "x" * 300  # longer than the index column: stored shortened and hashed
    lines = [patient(bsn=BSNS[3]) | {"id": "p"}]
    lines += [weight("p", 80, when(1), ident=long), weight("p", 80, when(1), ident=long)]
    path = _ndjson(tmp_path / "long.ndjson", lines)
    first = importer.import_paths(service, [path])
    again = importer.import_paths(service, [path])
    assert (first.created, first.skipped) == (2, 1)  # the second line matches the first
    assert (again.created, again.skipped) == (0, 3)
    assert len(_search(service, "Observation", identifier=f"urn:telemon:test|{long}")) == 1
