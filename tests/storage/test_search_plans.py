"""Token rows carry their resource's type, patient and dates (migration 0010), so a patient's
search by code is one index range: kept true on create, update and delete, filled by the
migration for existing rows, and the search answers as before (deduplicated, paged)."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select, text

from service.storage import migrate
from service.storage.db import Database
from service.storage.tables import NULL_DATE, resources, sp_token
from tests.factories import match_ids, weight, when


def _token_rows(db: Database, res_id: str) -> list[Any]:
    with db.read() as conn:
        rid = conn.execute(select(resources.c.rid).where(resources.c.res_id == res_id)).scalar()
        return list(
            conn.execute(
                select(sp_token).where(sp_token.c.rid == rid).order_by(sp_token.c.param)
            )
        )


def _row_dates(db: Database, res_id: str) -> tuple[int, int]:
    with db.read() as conn:
        row = conn.execute(
            select(resources.c.date_low, resources.c.date_high).where(
                resources.c.res_id == res_id
            )
        ).one()
    return row.date_low, row.date_high


def test_token_rows_follow_create_update_delete(
    client: TestClient, db: Database, make_patient: Any
) -> None:
    first, second = make_patient(), make_patient(family="Bakker")
    created = client.post("/fhir/Observation", json=weight(first, effective=when(3)))
    assert created.status_code == 201, created.text
    obs = created.json()
    rows = _token_rows(db, obs["id"])
    low, high = _row_dates(db, obs["id"])
    assert {r.param for r in rows} >= {"code", "category", "status"}
    assert {(r.res_type, r.patient_id, r.sort_date, r.date_high) for r in rows} == {
        ("Observation", first, low, high)
    }

    obs["subject"] = {"reference": f"Patient/{second}"}
    obs["effectiveDateTime"] = when(1)
    updated = client.put(f"/fhir/Observation/{obs['id']}", json=obs)
    assert updated.status_code == 200, updated.text
    new_low, new_high = _row_dates(db, obs["id"])
    assert new_low > low
    rows = _token_rows(db, obs["id"])
    assert rows and {(r.patient_id, r.sort_date, r.date_high) for r in rows} == {
        (second, new_low, new_high)
    }

    assert client.delete(f"/fhir/Observation/{obs['id']}").status_code in (200, 204)
    assert _token_rows(db, obs["id"]) == []


def test_a_code_in_two_systems_matches_once_and_pages_in_order(
    client: TestClient, make_patient: Any
) -> None:
    pid = make_patient()
    ids = []
    for days in (5, 4, 3, 2, 1):
        obs = weight(pid, effective=when(days))
        obs["code"]["coding"].append({"system": "urn:telemon:local", "code": "29463-7"})
        response = client.post("/fhir/Observation", json=obs)
        assert response.status_code == 201, response.text
        ids.append(response.json()["id"])
    other = make_patient(family="Visser")
    assert client.post("/fhir/Observation", json=weight(other)).status_code == 201

    seen: list[str] = []
    url: str | None = f"/fhir/Observation?patient={pid}&code=29463-7&_sort=-date&_count=2"
    while url:
        page = client.get(url).json()
        seen += match_ids(page)
        nxt = [link["url"] for link in page["link"] if link["relation"] == "next"]
        url = nxt[0].replace("http://testserver", "") if nxt else None
    assert seen == ids[::-1]  # newest first, each once, only this patient's

    total = client.get(
        f"/fhir/Observation?patient={pid}&code=http://loinc.org|29463-7&_total=accurate"
        f"&date=ge{when(3.5)[:19]}Z"
    ).json()
    assert total["total"] == 3
    assert sorted(match_ids(total)) == sorted(ids[2:])


def test_migration_fills_the_token_rows_of_existing_resources(empty_database: Database) -> None:
    db = empty_database
    migrate.upgrade(db, "0008_oauth_revocations")
    with db.write() as conn:
        conn.execute(
            text(
                "INSERT INTO resources (res_type, res_id, version_id, last_updated, deleted, "
                "patient_id, date_low, date_high, content) VALUES ('Observation', 'o1', 1, 1, "
                "false, 'p1', 100, 200, '{}')"
            )
        )
        rid = conn.execute(text("SELECT rid FROM resources WHERE res_id = 'o1'")).scalar()
        conn.execute(
            text(
                "INSERT INTO resources (res_type, res_id, version_id, last_updated, deleted, "
                "content) VALUES ('Practitioner', 'd1', 1, 1, false, '{}')"
            )
        )
        undated = conn.execute(text("SELECT rid FROM resources WHERE res_id = 'd1'")).scalar()
        for row_id, code in ((rid, "29463-7"), (undated, "x")):
            conn.execute(
                text(
                    "INSERT INTO sp_token (rid, param, system, code) VALUES (:r, 'code', 's', :c)"
                ),
                {"r": row_id, "c": code},
            )
    migrate.upgrade(db)
    with db.read() as conn:
        rows = {r.rid: r for r in conn.execute(select(sp_token))}
    found = rows[rid]
    assert (found.res_type, found.patient_id, found.sort_date, found.date_high) == (
        "Observation", "p1", 100, 200
    )
    assert (rows[undated].res_type, rows[undated].patient_id, rows[undated].sort_date) == (
        "Practitioner", None, NULL_DATE
    )


def test_dates_on_token_rows_match_as_on_the_resource_row(
    client: TestClient, make_patient: Any
) -> None:
    """A Period without a start sorts first (with the undated) and still matches date
    conditions; a resource without the date matches none (the token-row search and the
    general one agree)."""
    pid = make_patient()

    def plan(period: dict[str, str] | None) -> str:
        body: dict[str, Any] = {
            "resourceType": "CarePlan", "status": "active", "intent": "plan",
            "subject": {"reference": f"Patient/{pid}"},
        }  # fmt: skip
        if period is not None:
            body["period"] = period
        response = client.post("/fhir/CarePlan", json=body)
        assert response.status_code == 201, response.text
        created: str = response.json()["id"]
        return created

    open_start = plan({"end": "2025-06-01"})
    dated = plan({"start": "2025-09-01", "end": "2025-12-01"})
    undated = plan(None)
    for extra, expected in (
        ("date=le2025-07-01", [open_start]),
        ("date=ge2025-01-01", [dated, open_start]),
        ("date=ne2025-10-01", [dated, open_start]),
        ("_sort=date", [open_start, undated, dated]),  # equal sort dates: by row id
    ):
        # status=active: the token-row search; status:not=x: the general one.
        for token in ("status=active", "status:not=revoked"):
            url = f"/fhir/CarePlan?patient={pid}&{token}&{extra}"
            if not extra.startswith("_sort"):
                url += "&_sort=-date"
            assert match_ids(client.get(url).json()) == expected, url
