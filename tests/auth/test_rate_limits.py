"""Rate limits on failed logins and token requests (issue 12, finding 5): 429 with
``Retry-After`` once an allowance is used up, per source address, per identifier from that
address and per client; counted in the database, so shared by every app instance (worker);
audited; and with the clock pinned, the window ends when it should."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.auth.rate_limits import RateLimiter
from service.settings import Settings
from service.storage.db import Database
from service.storage.tables import rate_limits
from service.validation import is_valid_bsn
from tests.auth.conftest import (
    BSN_A,
    FHIR,
    REDIRECT,
    World,
    backend_token,
    form_fields,
    make_backend,
    pkce,
)
from tests.auth.limits import ATTACKER, PATIENT, T0, from_address, pin


def unknown_bsns(n: int) -> list[str]:
    """``n`` BSNs that pass the 11-check (so they are looked up) but belong to no patient."""
    out: list[str] = []
    number = 100_000_000
    while len(out) < n:
        number += 1
        candidate = str(number)
        if is_valid_bsn(candidate) and candidate != BSN_A:
            out.append(candidate)
    return out


@pytest.fixture
def attacker(oauth_client: TestClient) -> Iterator[TestClient]:
    """The oauth-mode app as seen from the attacker's address."""
    yield from_address(oauth_client, ATTACKER)


def _login_form(http: TestClient, client_id: str) -> dict[str, str]:
    page = http.get(
        "/oauth/authorize",
        params={
            "response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT,
            "scope": "launch/patient patient/Patient.rs", "state": "s", "aud": FHIR,
            "code_challenge": pkce()[1], "code_challenge_method": "S256",
        },
    )
    assert page.status_code == 200, page.text
    return form_fields(page.text)


def _events(http: TestClient) -> list[dict[str, Any]]:
    fhir = http.app.state.telemon.fhir  # type: ignore[attr-defined]
    matches = fhir.search("AuditEvent", [("_count", "500")]).matches
    return [orjson.loads(m.content) for m in matches]


def _refusals(http: TestClient) -> list[dict[str, Any]]:
    return [e for e in _events(http) if "429 too many" in e.get("outcomeDesc", "")]


def test_100_wrong_bsns_get_429_after_the_limit(
    attacker: TestClient, world: World, pgo: tuple[str, str]
) -> None:
    clock = pin(attacker)
    fields = _login_form(attacker, pgo[0])
    statuses = []
    for n, bsn in enumerate(unknown_bsns(100)):
        clock.now = T0 + n  # one a second
        response = attacker.post("/oauth/login", data={**fields, "bsn": bsn})
        statuses.append(response.status_code)
        if response.status_code == 429:
            assert response.headers["retry-after"] == str(900 - n)  # the window began at T0
            assert "Too many failed login attempts" in response.text
            assert bsn not in response.text
    assert statuses == [400] * 20 + [429] * 80
    refusals = _refusals(attacker)
    assert len(refusals) == 80
    assert all(e["outcome"] == "4" for e in refusals)
    assert "failed logins from this address" in refusals[0]["outcomeDesc"]
    # nothing in clear in the table: keyed hashes only
    db = attacker.app.state.telemon.fhir.db  # type: ignore[attr-defined]
    with db.read() as conn:
        keys = [row.key for row in conn.execute(rate_limits.select())]
    assert keys and all(len(k) == 64 and ATTACKER[0] not in k for k in keys)


def test_one_bsn_is_limited_per_address_and_others_are_not_locked_out(
    oauth_client: TestClient, attacker: TestClient, world: World, pgo: tuple[str, str]
) -> None:
    pin(attacker)
    patient = from_address(oauth_client, PATIENT)
    victim_like = unknown_bsns(1)[0]
    fields = _login_form(attacker, pgo[0])
    tries = [attacker.post("/oauth/login", data={**fields, "bsn": victim_like}).status_code
             for _ in range(7)]
    assert tries == [400] * 5 + [429] * 2  # per BSN from this address: 5
    other = attacker.post("/oauth/login", data={**fields, "bsn": unknown_bsns(2)[1]})
    assert other.status_code == 400  # another BSN from the same address is still looked up
    elsewhere = _login_form(patient, pgo[0])
    same_bsn = patient.post("/oauth/login", data={**elsewhere, "bsn": victim_like})
    assert same_bsn.status_code == 400  # the same BSN from another address: looked up
    for bsn in unknown_bsns(40)[2:]:  # the attacker uses up the address's allowance
        attacker.post("/oauth/login", data={**fields, "bsn": bsn})
    assert attacker.post("/oauth/login", data={**fields, "bsn": BSN_A}).status_code == 429
    # The patient, at home, logs in with their own BSN all the same.
    login = patient.post("/oauth/login", data={**elsewhere, "bsn": BSN_A})
    assert login.status_code == 200 and "Toestemming" in login.text


def test_the_window_ends_with_the_pinned_clock(
    attacker: TestClient, world: World, pgo: tuple[str, str]
) -> None:
    clock = pin(attacker)
    fields = _login_form(attacker, pgo[0])
    bsn = unknown_bsns(1)[0]
    for _ in range(5):
        assert attacker.post("/oauth/login", data={**fields, "bsn": bsn}).status_code == 400
    clock.now = T0 + 899
    blocked = attacker.post("/oauth/login", data={**fields, "bsn": bsn})
    assert blocked.status_code == 429 and blocked.headers["retry-after"] == "1"
    clock.now = T0 + 900  # the window has ended
    fresh = _login_form(attacker, pgo[0])  # (the 10-minute login form had expired too)
    assert attacker.post("/oauth/login", data={**fresh, "bsn": bsn}).status_code == 400
    assert attacker.post("/oauth/login", data={**fresh, "bsn": BSN_A}).status_code == 200


def test_the_limit_holds_across_two_app_instances(
    oauth_settings: Settings, oauth_db: Database, world: World, pgo: tuple[str, str]
) -> None:
    """Two workers (app instances) on one database: failures counted by either block both."""
    with (
        TestClient(create_app(oauth_settings), base_url="http://testserver",
                   client=ATTACKER) as one,
        TestClient(create_app(oauth_settings), base_url="http://testserver",
                   client=ATTACKER) as two,
    ):
        pin(one), pin(two)
        forms = {id(one): _login_form(one, pgo[0]), id(two): _login_form(two, pgo[0])}
        statuses = []
        for n, bsn in enumerate(unknown_bsns(24)):
            http = one if n % 2 == 0 else two
            response = http.post("/oauth/login", data={**forms[id(http)], "bsn": bsn})
            statuses.append(response.status_code)
        assert statuses == [400] * 20 + [429] * 4


def test_concurrent_failures_are_all_counted(oauth_client: TestClient) -> None:
    """The count is one atomic statement: 40 failures at once are 40 failures."""
    limiter: RateLimiter = oauth_client.app.state.telemon.limiter  # type: ignore[attr-defined]
    pin(oauth_client)
    limits = limiter.token("192.0.2.1", "some-client")
    barrier = threading.Barrier(8)

    def fail_five() -> None:
        barrier.wait()
        for _ in range(5):
            limiter.failed(limits)

    threads = [threading.Thread(target=fail_five) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    db = oauth_client.app.state.telemon.fhir.db  # type: ignore[attr-defined]
    with db.read() as conn:
        counts = sorted(row.failures for row in conn.execute(rate_limits.select()))
    assert counts == [40, 40]  # the address key and the client-at-address key


def test_bad_client_assertions_get_429_and_the_client_elsewhere_still_works(
    oauth_client: TestClient, attacker: TestClient, oauth_db: Database, world: World
) -> None:
    clock = pin(attacker)
    ehr = make_backend(oauth_db, "system/Observation.rs")
    statuses = []
    for n in range(12):
        clock.now = T0 + n
        response = backend_token(attacker, ehr, "system/Observation.rs", aud="https://x/token")
        statuses.append(response.status_code)
    assert statuses[:10] == [401] * 10 or statuses[:10] == [400] * 10
    assert statuses[10:] == [429, 429]
    last = backend_token(attacker, ehr, "system/Observation.rs")  # even a good one: unchecked
    assert last.status_code == 429
    assert last.json()["error"] == "slow_down"
    assert last.headers["retry-after"] == str(900 - 11)
    assert last.headers["cache-control"] == "no-store"
    home = backend_token(oauth_client, ehr, "system/Observation.rs")  # the EHR's own address
    assert home.status_code == 200, home.text
    refusals = _refusals(attacker)
    assert len(refusals) == 3
    assert "failed token requests for this client from this address" in refusals[0]["outcomeDesc"]


def test_token_requests_are_limited_per_address_over_all_clients(
    attacker: TestClient, oauth_db: Database
) -> None:
    pin(attacker)
    statuses = []
    for n in range(32):  # each a different (unknown) client: the address allowance is 30
        response = attacker.post(
            "/oauth/token",
            data={"grant_type": "client_credentials", "client_id": f"nobody-{n}",
                  "client_secret": "x", "scope": "system/Observation.rs"},
        )
        statuses.append(response.status_code)
    assert all(s in (400, 401) for s in statuses[:30]), statuses
    assert statuses[30:] == [429, 429]


def test_a_limit_of_0_is_off(oauth_settings: Settings, world: World, pgo: tuple[str, str]) -> None:
    off = oauth_settings.model_copy(
        update={"login_failures_per_address": 0, "login_failures_per_identifier": 0}
    )
    with TestClient(create_app(off), base_url="http://testserver", client=ATTACKER) as http:
        fields = _login_form(http, pgo[0])
        bsn = unknown_bsns(1)[0]
        assert {http.post("/oauth/login", data={**fields, "bsn": bsn}).status_code
                for _ in range(30)} == {400}
