"""SMART v2 granular scopes: ``patient/Observation.rs?code=…`` and ``?category=…`` restrict what
the token reads everywhere the compartment is enforced: read, history, search (and paging,
``_include``), ``$lastn``, ``$everything`` and Bundle entries; a refresh may narrow to one."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.auth.conftest import BSN_A, World, pgo_token
from tests.factories import LOINC, batch, heart_rate, request_entry, weight

WEIGHT = f"{LOINC}|29463-7"
HEART_RATE = "8867-4"


@pytest.fixture
def more(oauth_client: TestClient, world: World) -> dict[str, list[str]]:
    """Patient A: three weights (the world's and two more) and two heart rates."""
    fhir = oauth_client.app.state.telemon.fhir  # type: ignore[attr-defined]
    weights = [world.obs_a] + [fhir.create(weight(world.a, 80 + i)).res_id for i in range(2)]
    rates = [fhir.create(heart_rate(world.a, 60 + i)).res_id for i in range(2)]
    return {"weight": weights, "heart_rate": rates}


def _token(http: TestClient, pgo: tuple[str, str], observation_scopes: str) -> dict[str, str]:
    scope = f"launch/patient patient/Patient.rs {observation_scopes}"
    body = pgo_token(http, pgo, BSN_A, scope=scope)
    return {"Authorization": f"Bearer {body['access_token']}"}


def _ids(bundle: dict[str, Any], mode: str = "match") -> set[str]:
    return {
        e["resource"]["id"]
        for e in bundle.get("entry", [])
        if e.get("search", {}).get("mode") == mode
        and e["resource"]["resourceType"] == "Observation"
    }


def _all_pages(http: TestClient, url: str, headers: dict[str, str]) -> set[str]:
    seen: set[str] = set()
    while url:
        page = http.get(url, headers=headers)
        assert page.status_code == 200, page.text
        bundle = page.json()
        seen |= _ids(bundle)
        url = next((lk["url"] for lk in bundle["link"] if lk["relation"] == "next"), "")
    return seen


@pytest.mark.parametrize(
    "scopes",
    [
        f"patient/Observation.rs?code={WEIGHT}",
        "patient/Observation.rs?code=29463-7",
        # two alternatives the search cannot say in one query: rows are filtered afterwards
        f"patient/Observation.rs?code={WEIGHT} patient/Observation.rs?category=laboratory",
    ],
)
def test_a_code_scope_reads_only_that_code(
    oauth_client: TestClient,
    pgo: tuple[str, str],
    world: World,
    more: dict[str, list[str]],
    scopes: str,
) -> None:
    bearer = _token(oauth_client, pgo, scopes)
    weights, rates = set(more["weight"]), set(more["heart_rate"])
    for obs in weights:
        assert oauth_client.get(f"/fhir/Observation/{obs}", headers=bearer).status_code == 200
    for obs in rates:  # as if they did not exist
        assert oauth_client.get(f"/fhir/Observation/{obs}", headers=bearer).status_code == 404
        history = oauth_client.get(f"/fhir/Observation/{obs}/_history", headers=bearer)
        assert history.status_code == 404
    # search, paged one by one, with an _include
    url = "/fhir/Observation?_count=1&_include=Observation:device"
    assert _all_pages(oauth_client, url, bearer) == weights
    explicit = f"/fhir/Observation?code={HEART_RATE}"
    assert _all_pages(oauth_client, explicit, bearer) == set()
    lastn = oauth_client.get("/fhir/Observation/$lastn?max=5", headers=bearer)
    assert lastn.status_code == 200 and _ids(lastn.json()) == weights
    everything = oauth_client.get(f"/fhir/Patient/{world.a}/$everything", headers=bearer)
    assert everything.status_code == 200, everything.text
    found = {
        e["resource"]["id"]
        for e in everything.json().get("entry", [])
        if e["resource"]["resourceType"] == "Observation"
    }
    assert found == weights
    bundle = batch(
        request_entry("GET", f"Observation/{more['heart_rate'][0]}"),
        request_entry("GET", f"Observation/{more['weight'][0]}"),
    )
    answered = oauth_client.post("/fhir", json=bundle, headers=bearer)
    assert answered.status_code == 200, answered.text
    statuses = [e["response"]["status"] for e in answered.json()["entry"]]
    assert statuses[0].startswith("404") and statuses[1].startswith("200")


def test_category_scopes(
    oauth_client: TestClient, pgo: tuple[str, str], world: World, more: dict[str, list[str]]
) -> None:
    every = set(more["weight"]) | set(more["heart_rate"])
    vital = _token(oauth_client, pgo, "patient/Observation.rs?category=vital-signs")
    assert _all_pages(oauth_client, "/fhir/Observation?_count=2", vital) == every
    lab = _token(oauth_client, pgo, "patient/Observation.rs?category=laboratory")
    assert _all_pages(oauth_client, "/fhir/Observation", lab) == set()
    read = oauth_client.get(f"/fhir/Observation/{world.obs_a}", headers=lab)
    assert read.status_code == 404
    # the patient's own record is still readable: only Observations are filtered
    assert oauth_client.get(f"/fhir/Patient/{world.a}", headers=lab).status_code == 200
    # and a granular scope never writes
    created = oauth_client.post("/fhir/Observation", json=weight(world.a), headers=vital)
    assert created.status_code == 403


def test_a_refresh_can_narrow_to_a_granular_scope(
    oauth_client: TestClient, pgo: tuple[str, str], world: World, more: dict[str, list[str]]
) -> None:
    scope = "launch/patient patient/Patient.rs patient/Observation.rs"
    rt = pgo_token(oauth_client, pgo, BSN_A, scope=scope, term={"term": "indefinite"})[
        "refresh_token"
    ]
    narrowed = oauth_client.post(
        "/oauth/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": rt,
            "scope": f"patient/Observation.rs?code={WEIGHT}",
        },
        auth=pgo,
    )
    assert narrowed.status_code == 200, narrowed.text
    body = narrowed.json()
    assert body["scope"] == f"patient/Observation.rs?code={WEIGHT}"
    bearer = {"Authorization": f"Bearer {body['access_token']}"}
    assert _all_pages(oauth_client, "/fhir/Observation", bearer) == set(more["weight"])
    # and back to the whole granted scope with the next refresh token: allowed (RFC 6749 section 6)
    wider = oauth_client.post(
        "/oauth/token",
        data={"grant_type": "refresh_token", "refresh_token": body["refresh_token"]},
        auth=pgo,
    )
    assert "patient/Observation.rs" in wider.json()["scope"].split()
