"""Bulk Data ``$export`` through HTTP: kick-off, status, manifest, files, cancel, expiry, who may
export, the filters, and the audit trail."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import orjson
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from service.app import create_app
from service.storage.tables import export_jobs, resources
from tests.bulk.conftest import Bulk, Cohort, bulk_settings, wait_for
from tests.factories import spo2, when


def _ids(lines: list[dict[str, object]]) -> set[str]:
    return {f"{r['resourceType']}/{r['id']}" for r in lines}


def _all_owned(cohort: Cohort) -> set[str]:
    return set().union(*cohort.owned.values())


def test_system_export_kickoff_status_manifest_and_files(bulk: Bulk, cohort: Cohort) -> None:
    token = bulk.token()
    started = bulk.kickoff("/fhir/$export", token)
    assert started.status_code == 202, started.text
    location = started.headers["Content-Location"]
    assert location.startswith("http://testserver/fhir/$export-status/")
    waiting = bulk.get(location, token)
    assert waiting.status_code == 202
    assert waiting.headers["X-Progress"] == "queued"
    assert int(waiting.headers["Retry-After"]) > 0

    bulk.work()
    status = bulk.get(location, token, Accept="application/json")

    assert status.status_code == 200, status.text
    assert status.headers["content-type"].startswith("application/json")
    assert "Expires" in status.headers
    manifest = status.json()
    assert manifest["request"] == "http://testserver/fhir/$export"
    assert manifest["requiresAccessToken"] is True
    assert manifest["error"] == []
    assert manifest["transactionTime"].endswith("Z") or "+" in manifest["transactionTime"]
    types = [item["type"] for item in manifest["output"]]
    assert types == ["Patient", "Device", "CarePlan", "Observation"]  # referenced types first
    counts = {item["type"]: item["count"] for item in manifest["output"]}
    assert counts == {"Patient": 3, "Device": 3, "CarePlan": 2, "Observation": 12}
    file = bulk.get(manifest["output"][0]["url"], token, Accept="application/fhir+ndjson")
    assert file.status_code == 200
    assert file.headers["content-type"] == "application/fhir+ndjson"
    assert _ids(bulk.lines(manifest, token)) == _all_owned(cohort)
    # AuditEvents are not exported unless asked for, even though the token may read them
    assert "AuditEvent" not in types


def test_file_holds_the_stored_json_byte_for_byte(bulk: Bulk, cohort: Cohort) -> None:
    token = bulk.token()
    manifest = bulk.export("/fhir/$export?_type=Patient", token)
    body = bulk.get(manifest["output"][0]["url"], token).content
    with bulk.db.read() as conn:
        stored = conn.execute(
            select(resources.c.content).where(resources.c.res_type == "Patient")
        ).scalars()
        expected = {row.encode() for row in stored}
    assert set(body.splitlines()) == expected
    assert body.endswith(b"\n")


def test_patient_and_group_exports_hold_only_their_compartments(bulk: Bulk, cohort: Cohort) -> None:
    token = bulk.token()
    bulk.fhir.create({"resourceType": "Practitioner", "name": [{"family": "Arts"}]})

    everyone = bulk.lines(bulk.export("/fhir/Patient/$export", token), token)
    heart = bulk.lines(bulk.export("/fhir/Group/heart-failure/$export", token), token)
    copd = bulk.lines(bulk.export("/fhir/Group/copd/$export?_type=Observation", token), token)

    assert _ids(everyone) == _all_owned(cohort)  # no Practitioner: not in a compartment
    assert _ids(heart) == cohort.owned[cohort.a]
    assert _ids(copd) == {i for i in cohort.owned[cohort.b] if i.startswith("Observation/")}


def test_group_follows_the_care_plans(bulk: Bulk, cohort: Cohort) -> None:
    token = bulk.token()
    plan = bulk.fhir.create(
        {
            "resourceType": "CarePlan",
            "status": "active",
            "intent": "plan",
            "subject": {"reference": f"Patient/{cohort.c}"},
            "instantiatesCanonical": [
                "http://telemon.example.org/fhir/PlanDefinition/heart-failure"
            ],
        }
    )
    group = bulk.get("/fhir/Group/heart-failure", token).json()
    members = {m["entity"]["reference"] for m in group["member"]}
    assert members == {f"Patient/{cohort.a}", f"Patient/{cohort.c}"}
    assert group["quantity"] == 2 and group["actual"] is True and group["type"] == "person"

    ended = bulk.fhir.read("CarePlan", plan.res_id)
    body = {"id": plan.res_id, **orjson.loads(ended.content)}
    body["status"] = "completed"
    bulk.fhir.update("CarePlan", plan.res_id, body)
    group = bulk.get("/fhir/Group/heart-failure", token).json()
    assert [m["entity"]["reference"] for m in group["member"]] == [f"Patient/{cohort.a}"]
    heart = bulk.lines(bulk.export("/fhir/Group/heart-failure/$export?_type=Patient", token), token)
    assert _ids(heart) == {f"Patient/{cohort.a}"}


def test_groups_can_be_found(bulk: Bulk, cohort: Cohort) -> None:
    token = bulk.token()
    system = "http://telemon.example.org/fhir/NamingSystem/programme"
    by_identifier = bulk.get(f"/fhir/Group?identifier={quote(system + '|copd')}", token).json()
    by_name = bulk.get("/fhir/Group?name=heart", token).json()
    every = bulk.get("/fhir/Group", token).json()

    assert [e["resource"]["id"] for e in by_identifier["entry"]] == ["copd"]
    assert [e["resource"]["id"] for e in by_name["entry"]] == ["heart-failure"]
    assert {e["resource"]["id"] for e in every["entry"]} == {"heart-failure", "copd"}
    assert bulk.get("/fhir/Group/nope", token).status_code == 404
    assert bulk.get("/fhir/Group?member=x", token).status_code == 400
    assert bulk.kickoff("/fhir/Group/nope/$export", token).status_code == 404
    auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"}
    group = {"resourceType": "Group", "type": "person", "actual": True}
    assert bulk.http.post("/fhir/Group", json=group, headers=auth).status_code == 405
    assert bulk.http.delete("/fhir/Group/copd", headers=auth).status_code == 405


def test_type_since_and_type_filter(bulk: Bulk, cohort: Cohort) -> None:
    token = bulk.token()
    manifest = bulk.export("/fhir/$export", token)
    since = manifest["transactionTime"]
    later = bulk.fhir.create(spo2(cohort.a, 95, when(0))).res_id
    weights = "Observation?code=" + quote("http://loinc.org|29463-7", safe="")
    vital = "Observation?category=vital-signs"

    newer = bulk.lines(bulk.export(f"/fhir/$export?_since={quote(since)}", token), token)
    only_weights = bulk.lines(
        bulk.export(f"/fhir/$export?_type=Observation&_typeFilter={quote(weights)}", token), token
    )
    either = bulk.lines(
        bulk.export(
            f"/fhir/$export?_type=Observation,Patient&_typeFilter={quote(weights)},{quote(vital)}",
            token,
        ),
        token,
    )

    assert _ids(newer) == {f"Observation/{later}"}
    assert len(only_weights) == 9
    assert {o["code"]["coding"][0]["code"] for o in only_weights} == {"29463-7"}
    # filters on one type are OR-ed; types without a filter are exported whole
    assert sum(r["resourceType"] == "Observation" for r in either) == 13
    assert sum(r["resourceType"] == "Patient" for r in either) == 3


def test_since_lists_deletions_in_a_system_export(bulk: Bulk, cohort: Cohort) -> None:
    token = bulk.token()
    since = bulk.export("/fhir/$export?_type=Device", token)["transactionTime"]
    device = next(i for i in cohort.owned[cohort.c] if i.startswith("Device/"))
    bulk.fhir.delete("Device", device.split("/")[1])

    manifest = bulk.export(f"/fhir/$export?_type=Device&_since={quote(since)}", token)

    assert manifest["output"] == []
    (deleted,) = bulk.lines(manifest, token, "deleted")
    assert deleted["resourceType"] == "Bundle" and deleted["type"] == "transaction"
    assert deleted["entry"] == [{"request": {"method": "DELETE", "url": device}}]


def test_kickoff_errors(bulk: Bulk, cohort: Cohort) -> None:
    token = bulk.token()
    cases = {
        "/fhir/$export?_outputFormat=text/csv": 400,
        "/fhir/$export?_type=Nonsense": 400,
        "/fhir/$export?_since=yesterday": 400,
        "/fhir/$export?_elements=id": 400,
        "/fhir/$export?_typeFilter=Observation%3Fnope%3D1&_type=Observation": 400,
        "/fhir/$export?_typeFilter=Observation%3F_sort%3Ddate": 400,
        "/fhir/Patient/$export?_type=Practitioner": 400,
    }
    for path, status in cases.items():
        response = bulk.kickoff(path, token)
        assert response.status_code == status, (path, response.text)
        assert response.json()["resourceType"] == "OperationOutcome"
    accepted = bulk.kickoff("/fhir/$export?_outputFormat=ndjson&_type=Patient", token)
    assert accepted.status_code == 202
    assert bulk.kickoff("/fhir/$export", token, Accept="text/csv").status_code == 406


def test_lenient_handling_reports_ignored_parameters_in_the_error_file(
    bulk: Bulk, cohort: Cohort
) -> None:
    token = bulk.token()
    started = bulk.kickoff(
        "/fhir/$export?_type=Patient&_elements=id&foo=bar",
        token,
        Prefer="respond-async, handling=lenient",
    )
    assert started.status_code == 202, started.text
    bulk.work()
    manifest = bulk.get(started.headers["Content-Location"], token).json()
    errors = bulk.lines(manifest, token, "error")
    assert [e["resourceType"] for e in errors] == ["OperationOutcome", "OperationOutcome"]
    text = " ".join(e["issue"][0]["diagnostics"] for e in errors)
    assert "_elements" in text and "foo" in text
    assert len(bulk.lines(manifest, token)) == 3


def test_only_backend_services_with_read_scopes_may_export(bulk: Bulk, cohort: Cohort) -> None:
    patient = bulk.patient_token(cohort.bsn[cohort.a])
    flags_only = bulk.token("system/Flag.rs")
    observations = bulk.token("system/Observation.rs")
    read_no_search = bulk.token("system/Observation.r")

    assert bulk.kickoff("/fhir/$export", patient).status_code == 403
    assert bulk.kickoff("/fhir/Patient/$export", patient).status_code == 403
    assert bulk.kickoff("/fhir/$export?_type=Observation", flags_only).status_code == 403
    assert bulk.kickoff("/fhir/$export", read_no_search).status_code == 403
    assert bulk.http.get("/fhir/$export").status_code == 401
    assert bulk.get("/fhir/Group/copd", patient).status_code == 403
    # per-type scope: only that type is exported
    manifest = bulk.export("/fhir/$export", observations)
    assert [i["type"] for i in manifest["output"]] == ["Observation"]


def test_status_files_and_cancel_belong_to_the_client_that_asked(
    bulk: Bulk, cohort: Cohort
) -> None:
    mine = bulk.token()
    theirs = bulk.token()
    manifest = bulk.export("/fhir/$export?_type=Patient", mine)
    url = manifest["output"][0]["url"]
    status_url = url.replace("$export-files", "$export-status").rsplit("/", 1)[0]

    assert bulk.get(url, theirs).status_code == 404
    assert bulk.get(status_url, theirs).status_code == 404
    assert (
        bulk.http.delete(status_url, headers={"Authorization": f"Bearer {theirs}"}).status_code
        == 404
    )
    assert bulk.http.get(url).status_code == 401  # requiresAccessToken
    assert bulk.get(url, mine).status_code == 200
    assert bulk.get(url + "x", mine).status_code == 404


def test_delete_cancels_a_queued_export_and_removes_a_finished_one(
    bulk: Bulk, cohort: Cohort
) -> None:
    token = bulk.token()
    auth = {"Authorization": f"Bearer {token}"}
    queued = bulk.kickoff("/fhir/$export", token).headers["Content-Location"]
    cancelled = bulk.http.delete(queued, headers=auth)
    assert cancelled.status_code == 202
    assert bulk.get(queued, token).status_code == 404
    bulk.work()  # nothing to write: the job is gone
    assert not any(bulk.export_dir.glob("*/*.ndjson"))

    manifest = bulk.export("/fhir/$export?_type=Patient", token)
    url = manifest["output"][0]["url"]
    status_url = url.replace("$export-files", "$export-status").rsplit("/", 1)[0]
    assert any(bulk.export_dir.glob("*/*.ndjson"))
    assert bulk.http.delete(status_url, headers=auth).status_code == 202
    assert bulk.get(status_url, token).status_code == 404
    assert bulk.get(url, token).status_code == 404
    assert not any(bulk.export_dir.glob("*/*.ndjson"))


def test_a_running_export_stops_when_cancelled(bulk: Bulk, cohort: Cohort) -> None:
    token = bulk.token()
    location = bulk.kickoff("/fhir/$export", token).headers["Content-Location"]
    job_id = location.rsplit("/", 1)[1]
    with bulk.db.write() as conn:  # a worker has claimed it ...
        conn.execute(
            update(export_jobs)
            .where(export_jobs.c.job_id == job_id)
            .values(status="running", lease_owner="w", lease_until=2**62)
        )
    running = bulk.get(location, token)
    assert running.status_code == 202 and running.headers["X-Progress"] == "running"
    bulk.http.delete(location, headers={"Authorization": f"Bearer {token}"})

    bulk.worker.run_job(job_id, "w")  # ... and finds it cancelled when it records the end

    assert bulk.get(location, token).status_code == 404
    assert not (bulk.export_dir / job_id).exists()


def test_files_expire(bulk: Bulk, cohort: Cohort) -> None:
    token = bulk.token()
    manifest = bulk.export("/fhir/$export?_type=Patient", token)
    url = manifest["output"][0]["url"]
    job_id = url.split("/")[-2]
    assert (bulk.export_dir / job_id).is_dir()
    with bulk.db.write() as conn:
        conn.execute(update(export_jobs).values(expires_at=1))

    assert bulk.get(url, token).status_code == 404
    assert bulk.exports.sweep() == 1
    assert not (bulk.export_dir / job_id).exists()
    with bulk.db.read() as conn:
        assert conn.execute(select(export_jobs.c.job_id)).first() is None


def test_too_many_running_exports_answer_429(bulk: Bulk, cohort: Cohort) -> None:
    token = bulk.token()
    for _ in range(3):
        assert bulk.kickoff("/fhir/$export?_type=Patient", token).status_code == 202
    refused = bulk.kickoff("/fhir/$export?_type=Patient", token)
    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) > 0


def test_kickoff_and_downloads_are_audited(bulk: Bulk, cohort: Cohort) -> None:
    token = bulk.token()
    manifest = bulk.export("/fhir/Group/copd/$export?_type=Patient", token)
    bulk.get(manifest["output"][0]["url"], token)

    audit = bulk.fhir.search("AuditEvent", [("subtype", "operation"), ("_count", "100")])
    descriptions = [orjson.loads(r.content).get("outcomeDesc", "") for r in audit.matches]
    assert any(d.startswith("Bulk Data export") and "queued: Patient" in d for d in descriptions)
    assert any("Patient-1.ndjson downloaded (1 Patient)" in d for d in descriptions)


def test_serve_writes_exports_itself_on_sqlite(database_url: str, tmp_path: Path) -> None:
    """With TELEMON_EXPORT_WORKER=on (auto: SQLite) the app's own worker writes the job."""
    settings = bulk_settings(database_url, tmp_path / "x").model_copy(
        update={"export_worker": "on", "auth": "open"}
    )
    with TestClient(create_app(settings)) as http:
        http.post(
            "/fhir/Patient",
            json={"resourceType": "Patient", "name": [{"family": "Serve"}]},
            headers={"Content-Type": "application/fhir+json"},
        )
        started = http.get("/fhir/$export", headers={"Prefer": "respond-async"})
        assert started.status_code == 202
        location = started.headers["Content-Location"]
        wait_for(lambda: http.get(location).status_code == 200)
        manifest = http.get(location).json()
        assert manifest["requiresAccessToken"] is False  # TELEMON_AUTH=open: no tokens
        assert [i["type"] for i in manifest["output"]] == ["Patient"]
        assert "Serve" in http.get(manifest["output"][0]["url"]).text
