"""Chains and ``_has`` in SQL on both backends: resolved to ids first, or (too many ids) as a
nested subquery; both give the same answer, inside the compartments asked for."""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

from fastapi.testclient import TestClient

from service.core.criteria import IdCriterion, ReferenceCriterion, SearchQuery
from service.core.registry import default_registry
from service.fhir.search import parse_search
from service.storage import search_sql
from service.storage.db import Database
from tests import factories as f

REGISTRY = default_registry()


def _query(res_type: str, params: list[tuple[str, str]]) -> SearchQuery:
    rtype = REGISTRY.get(res_type)
    assert rtype is not None
    query, _ = parse_search(
        rtype, params, registry=REGISTRY, zone=ZoneInfo("Europe/Amsterdam"),
        default_count=50, max_count=500, strict=True,
    )
    return query


def _post(client: TestClient, resource: dict[str, Any]) -> str:
    response = client.post(f"/fhir/{resource['resourceType']}", json=resource)
    assert response.status_code == 201, response.text
    rid: str = response.json()["id"]
    return rid


def _ids(db: Database, query: SearchQuery, limit: int) -> set[str]:
    with db.read() as conn:
        resolved = search_sql.resolve_links(conn, query, limit)
        return {r.res_id for r in search_sql.search(conn, resolved).rows}


def test_resolved_and_nested_agree(client: TestClient, db: Database) -> None:
    a = _post(client, f.patient(f.BSNS[0], family="Aalders"))
    b = _post(client, f.patient(f.BSNS[1], family="Bakker"))
    dev = _post(client, f.device(a, serial="scale-a"))
    body = f.weight(a)
    body["device"] = {"reference": f"Device/{dev}"}
    weight_a = _post(client, body)
    weight_b = _post(client, f.weight(b))
    _post(client, f.flag(a))
    _post(client, f.flag(b, status="inactive"))
    cases = [
        ("Observation", [("patient.identifier", f.BSNS[0])], {weight_a}),
        ("Observation", [("patient.family", "b")], {weight_b}),
        ("Observation", [("device:Device.identifier", "scale-a")], {weight_a}),
        ("Patient", [("_has:Flag:patient:status", "active")], {a}),
        ("Patient", [("_has:Observation:patient:code", "29463-7")], {a, b}),
        ("Device", [("_has:Observation:device:code", "29463-7")], {dev}),
        ("Patient", [("_has:Flag:patient:status", "entered-in-error")], set()),
    ]
    for res_type, params, expected in cases:
        query = _query(res_type, params)
        assert _ids(db, query, search_sql.MAX_RESOLVED_IDS) == expected, params
        assert _ids(db, query, 0) == expected, params  # nested: no id list
        # confined to B's compartment, A's data is never reached (nor is it through the link)
        query.patient_ids = (b,)
        assert _ids(db, query, search_sql.MAX_RESOLVED_IDS) == expected & {weight_b, b}
        assert _ids(db, query, 0) == expected & {weight_b, b}


def test_resolution_replaces_links_by_plain_criteria(client: TestClient, db: Database) -> None:
    a = _post(client, f.patient(f.BSNS[0]))
    _post(client, f.flag(a))
    with db.read() as conn:
        chain = search_sql.resolve_links(conn, _query("Flag", [("patient.identifier", f.BSNS[0])]))
        has_query = _query("Patient", [("_has:Flag:patient:status", "active")])
        has = search_sql.resolve_links(conn, has_query)
        none = search_sql.resolve_links(conn, _query("Flag", [("patient.identifier", "0")]))
    assert chain.criteria == [ReferenceCriterion("patient", (("Patient", a),), True)]
    assert has.criteria == [IdCriterion((a,))]
    assert none.criteria == [IdCriterion(())]
