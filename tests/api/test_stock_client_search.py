"""A stock FHIR client (fhirpy, unmodified) against a real telemon server on loopback: counts,
chains, ``_has``, ``_revinclude`` and ``_elements`` as fhirpy spells them."""

from __future__ import annotations

from typing import Any

import httpx
from fhirpy import SyncFHIRClient

from tests import factories as f

HEADERS = {"Content-Type": "application/fhir+json"}


def _post(http: httpx.Client, base: str, resource: dict[str, Any]) -> str:
    response = http.post(f"{base}/{resource['resourceType']}", json=resource, headers=HEADERS)
    assert response.status_code == 201, response.text
    rid: str = response.json()["id"]
    return rid


def test_fhirpy_search(live_server: str, http: httpx.Client) -> None:
    a = _post(http, live_server, f.patient(f.BSNS[0], family="Aalders"))
    b = _post(http, live_server, f.patient(f.BSNS[1], family="Bakker"))
    weights = {_post(http, live_server, f.weight(a)), _post(http, live_server, f.weight(a))}
    _post(http, live_server, f.weight(b))
    flag_a = _post(http, live_server, f.flag(a))
    _post(http, live_server, f.flag(b, status="inactive"))
    client = SyncFHIRClient(live_server)
    observations = client.resources("Observation")

    assert observations.search().count() == 3
    assert observations.search(patient=a).count() == 2
    bsn = f"{f.BSN}|{f.BSNS[0]}"
    by_bsn = observations.search(patient__identifier=bsn)
    assert by_bsn.count() == 2
    assert {o.id for o in by_bsn.fetch_all()} == weights
    typed = observations.search(subject__Patient__identifier=bsn, code="29463-7")
    assert {o.id for o in typed.fetch()} == weights

    patients = client.resources("Patient")
    alerted = patients.has("Flag", "patient", status="active")
    assert [p.id for p in alerted.fetch()] == [a]
    assert alerted.count() == 1

    with_flags = patients.search(identifier=f.BSNS[0]).revinclude("Flag", "patient")
    raw = with_flags.fetch_raw()
    modes = {(e.resource.resourceType, e.resource.id): e.search.mode for e in raw.entry}
    assert modes == {("Patient", a): "match", ("Flag", flag_a): "include"}

    (names,) = patients.search(_id=b).elements("name").fetch()
    assert names.name[0]["family"] == "Bakker"
    assert names.get("gender") is None and names.get("birthDate") is None
    assert names.meta["tag"][0]["code"] == "SUBSETTED"
