"""Search through HTTP: every supported parameter and prefix, with data that must NOT match too.

Each test stores resources that should match and resources that should not, so that a filter
that is silently ignored makes the test fail.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings
from tests import factories as f

CATEGORY_SYSTEM = "http://terminology.hl7.org/CodeSystem/observation-category"


def _post(client: TestClient, resource: dict[str, Any]) -> str:
    response = client.post(f"/fhir/{resource['resourceType']}", json=resource)
    assert response.status_code == 201, response.text
    rid: str = response.json()["id"]
    return rid


def _search(
    client: TestClient, res_type: str, params: dict[str, str] | list[tuple[str, str]]
) -> dict[str, Any]:
    response = client.get(f"/fhir/{res_type}", params=params)
    assert response.status_code == 200, response.text
    bundle: dict[str, Any] = response.json()
    assert bundle["type"] == "searchset"
    return bundle


def _ids(client: TestClient, res_type: str, **params: str) -> set[str]:
    return set(f.match_ids(_search(client, res_type, params)))


# -- references ----------------------------------------------------------------------------------


def test_patient_and_subject(client: TestClient, make_patient: Any) -> None:
    p1, p2 = make_patient(), make_patient()
    o1 = _post(client, f.weight(p1))
    o2 = _post(client, f.weight(p2))
    assert _ids(client, "Observation", patient=p1) == {o1}
    assert _ids(client, "Observation", patient=f"Patient/{p2}") == {o2}
    assert _ids(client, "Observation", subject=f"Patient/{p1}") == {o1}
    assert _ids(client, "Observation", subject=p2) == {o2}
    assert _ids(client, "Observation", patient=f"{p1},{p2}") == {o1, o2}
    assert _ids(client, "Observation", patient="unknown") == set()


def test_device(client: TestClient, make_patient: Any) -> None:
    pid = make_patient()
    scale = _post(client, f.device(pid))
    other = _post(client, f.device(pid))
    with_scale = f.weight(pid)
    with_scale["device"] = {"reference": f"Device/{scale}"}
    o1 = _post(client, with_scale)
    _post(client, f.weight(pid))  # no device
    with_other = f.weight(pid)
    with_other["device"] = {"reference": f"Device/{other}"}
    o3 = _post(client, with_other)
    assert _ids(client, "Observation", device=f"Device/{scale}") == {o1}
    assert _ids(client, "Observation", device=other) == {o3}


# -- tokens --------------------------------------------------------------------------------------


def test_code_token_forms(client: TestClient, make_patient: Any) -> None:
    pid = make_patient()
    w = _post(client, f.weight(pid))
    hr = _post(client, f.heart_rate(pid))
    no_system = f.weight(pid)
    no_system["code"] = {"coding": [{"code": "29463-7"}]}
    ns = _post(client, no_system)
    assert _ids(client, "Observation", code=f"{f.LOINC}|29463-7") == {w}
    assert _ids(client, "Observation", code="29463-7") == {w, ns}
    assert _ids(client, "Observation", code="|29463-7") == {ns}
    assert _ids(client, "Observation", code="http://snomed.info/sct|29463-7") == set()
    assert _ids(client, "Observation", code="8867-4") == {hr}
    assert _ids(client, "Observation", code=f"29463-7,{f.LOINC}|8867-4") == {w, ns, hr}
    assert _ids(client, "Observation", code=f"{f.LOINC}|") == {w, hr}
    assert _ids(client, "Observation", **{"code:not": "29463-7"}) == {hr}


def test_category(client: TestClient, make_patient: Any) -> None:
    pid = make_patient()
    vital = _post(client, f.weight(pid))
    survey = f.weight(pid)
    survey["category"] = [{"coding": [{"system": CATEGORY_SYSTEM, "code": "survey"}]}]
    other = _post(client, survey)
    assert _ids(client, "Observation", category="vital-signs") == {vital}
    assert _ids(client, "Observation", category=f"{CATEGORY_SYSTEM}|survey") == {other}
    assert _ids(client, "Observation", category="laboratory") == set()


def test_identifier_and_status(client: TestClient, make_patient: Any) -> None:
    pid = make_patient()
    a = _post(client, f.weight(pid, ident="obs-A"))
    prelim = f.weight(pid, ident="obs-B")
    prelim["status"] = "preliminary"
    b = _post(client, prelim)
    assert _ids(client, "Observation", identifier="urn:telemon:test|obs-A") == {a}
    assert _ids(client, "Observation", identifier="obs-B") == {b}
    assert _ids(client, "Observation", identifier="urn:other|obs-A") == set()
    assert _ids(client, "Observation", status="final") == {a}
    assert _ids(client, "Observation", status="preliminary") == {b}
    assert _ids(client, "Observation", status="|final") == {a}  # a code has no system
    assert _ids(client, "Observation", status="final,preliminary") == {a, b}


def test_id(client: TestClient, make_patient: Any) -> None:
    pid = make_patient()
    a, b, _ = (_post(client, f.weight(pid)) for _ in range(3))
    assert _ids(client, "Observation", _id=a) == {a}
    assert _ids(client, "Observation", _id=f"{a},{b}") == {a, b}
    assert _ids(client, "Observation", _id="nope") == set()


# -- quantities ----------------------------------------------------------------------------------


QUANTITY_CASES: list[tuple[str, set[float]]] = [
        ("80.5", {80.5}),
        ("eq80.5", {80.5}),
        ("80", set()),  # 80 means [79.5, 80.5): 80.5 is outside
        ("81", {80.5}),
        ("ne80.5", {70.0, 90.0}),
        ("gt80.5", {90.0}),
        ("lt80.5", {70.0}),
        ("ge80.5", {80.5, 90.0}),
        ("le80.5", {70.0, 80.5}),
        ("80.5|http://unitsofmeasure.org|kg", {80.5}),
        ("gt60||kg", {70.0, 80.5, 90.0}),
        ("gt60|http://unitsofmeasure.org|[lb_av]", set()),
        ("70,90", {70.0, 90.0}),
]


def test_value_quantity(client: TestClient, make_patient: Any) -> None:
    pid = make_patient()
    by_id = {_post(client, f.weight(pid, kg=kg)): kg for kg in (70.0, 80.5, 90.0)}
    for value, expected in QUANTITY_CASES:
        found = _ids(client, "Observation", **{"value-quantity": value})
        assert {by_id[i] for i in found} == expected, value


# -- dates ---------------------------------------------------------------------------------------


@pytest.fixture
def dated(client: TestClient, make_patient: Any) -> dict[str, str]:
    """Observations on fixed past dates (name → id)."""
    pid = make_patient()
    moments = {
        "mar10": "2026-03-10T08:00:00Z",
        "mar20": "2026-03-20T08:00:00Z",
        "apr05": "2026-04-05T08:00:00+02:00",
        "y2025": "2025-12-31T22:30:00Z",  # 23:30 in Amsterdam: still 2025 locally
    }
    return {name: _post(client, f.weight(pid, effective=m)) for name, m in moments.items()}


DATE_CASES: list[tuple[str, set[str]]] = [
        ("2026", {"mar10", "mar20", "apr05"}),
        ("2025", {"y2025"}),
        ("2026-03", {"mar10", "mar20"}),
        ("eq2026-03-20", {"mar20"}),
        ("ne2026-03", {"apr05", "y2025"}),
        ("gt2026-03-10", {"mar20", "apr05"}),
        ("lt2026-03-20", {"mar10", "y2025"}),
        ("ge2026-03-20", {"mar20", "apr05"}),
        ("le2026-03-20", {"mar10", "mar20", "y2025"}),
        ("gt2026-04", set()),
        ("lt2025", set()),
        ("2026-03-10T08:00:00Z", {"mar10"}),
        ("2026-03-10T09:00:00+01:00", {"mar10"}),  # the same instant, another offset
        ("2026-03-10T08:00:00+01:00", set()),  # an hour earlier
        ("2026-03-10T08:00Z", {"mar10"}),  # minute precision
        ("ge2026-04-05T06:00:00Z", {"apr05"}),
        ("gt2026-04-05T06:00:00Z", set()),
        ("2026-03-10,2026-03-20", {"mar10", "mar20"}),
]


def test_date_prefixes_and_partial_dates(client: TestClient, dated: dict[str, str]) -> None:
    names = {v: k for k, v in dated.items()}
    for value, expected in DATE_CASES:
        found = _ids(client, "Observation", date=value)
        assert {names[i] for i in found} == expected, value


def test_date_and_for_a_range(client: TestClient, dated: dict[str, str]) -> None:
    bundle = _search(client, "Observation", [("date", "ge2026-03-15"), ("date", "lt2026-04")])
    assert set(f.match_ids(bundle)) == {dated["mar20"]}


def test_date_offsets_vs_utc(client: TestClient, make_patient: Any) -> None:
    pid = make_patient()
    # 2026-03-28T23:30Z: in Amsterdam (still CET, +01:00) that is 00:30 on 29 March.
    obs = _post(client, f.weight(pid, effective="2026-03-29T01:30:00+02:00"))
    assert _ids(client, "Observation", date="2026-03-28T23:30:00Z") == {obs}
    assert _ids(client, "Observation", date="2026-03-29T00:30:00+01:00") == {obs}
    assert _ids(client, "Observation", date="2026-03-29T01:30:00Z") == set()
    assert _ids(client, "Observation", date="2026-03-29") == {obs}  # a local calendar day
    assert _ids(client, "Observation", date="2026-03-28") == set()
    assert _ids(client, "Observation", date="ge2026-03-28T23:30:00Z") == {obs}
    assert _ids(client, "Observation", date="gt2026-03-28T23:30:00Z") == set()
    assert _ids(client, "Observation", date="lt2026-03-28T23:30:01Z") == {obs}


def test_date_local_day_across_dst(client: TestClient, make_patient: Any) -> None:
    pid = make_patient()
    # 29 March 2026 in Amsterdam has 23 hours: [2026-03-28T23:00Z, 2026-03-29T22:00Z).
    spring = {
        "before": "2026-03-28T22:30:00Z",  # 23:30 CET on the 28th
        "first": "2026-03-28T23:00:00Z",  # 00:00 CET on the 29th
        "last": "2026-03-29T21:30:00Z",  # 23:30 CEST on the 29th
        "after": "2026-03-29T22:00:00Z",  # 00:00 CEST on the 30th
    }
    # 25 October 2026 has 25 hours: [2026-10-24T22:00Z, 2026-10-25T23:00Z).
    autumn = {
        "a_before": "2026-10-24T21:59:59Z",
        "a_first": "2026-10-24T22:00:00Z",
        "a_last": "2026-10-25T22:59:59Z",
        "a_after": "2026-10-25T23:00:00Z",
    }
    ids = {k: _post(client, f.weight(pid, effective=v)) for k, v in {**spring, **autumn}.items()}
    names = {v: k for k, v in ids.items()}
    assert {names[i] for i in _ids(client, "Observation", date="2026-03-29")} == {"first", "last"}
    assert {names[i] for i in _ids(client, "Observation", date="2026-10-25")} == {
        "a_first",
        "a_last",
    }


def test_last_updated(client: TestClient, make_patient: Any) -> None:
    pid = make_patient()
    first = client.post("/fhir/Observation", json=f.weight(pid)).json()
    time.sleep(0.01)
    second = _post(client, f.weight(pid))
    stamp = first["meta"]["lastUpdated"]
    assert _ids(client, "Observation", _lastUpdated=f"gt{stamp}") == {second}
    assert _ids(client, "Observation", _lastUpdated=f"le{stamp}") == {first["id"]}
    assert _ids(client, "Observation", _lastUpdated="ge2000") == {first["id"], second}
    assert _ids(client, "Observation", _lastUpdated="lt2000") == set()


# -- Patient parameters --------------------------------------------------------------------------


def test_patient_identifier_name_birthdate(client: TestClient) -> None:
    jansen = f.patient(f.BSNS[0], family="Jansen", given="Piet")
    jansen["birthDate"] = "1950-03-02"
    bakker = f.patient(f.BSNS[1], family="Bakker", given="Anna")
    bakker["birthDate"] = "1962-11-30"
    mueller = f.patient(f.BSNS[2], family="Müller", given="Jan")
    mueller["birthDate"] = "1975"
    j, b, m = _post(client, jansen), _post(client, bakker), _post(client, mueller)

    assert _ids(client, "Patient", identifier=f"{f.BSN}|{f.BSNS[0]}") == {j}
    assert _ids(client, "Patient", identifier=f.BSNS[1]) == {b}
    assert _ids(client, "Patient", identifier=f"urn:other|{f.BSNS[1]}") == set()
    assert _ids(client, "Patient", name="jan") == {j, m}  # starts-with, case-insensitive
    assert _ids(client, "Patient", name="Anna") == {b}
    assert _ids(client, "Patient", name="muller") == {m}  # accent-insensitive
    assert _ids(client, "Patient", **{"name:exact": "jan"}) == {m}
    assert _ids(client, "Patient", **{"name:contains": "akk"}) == {b}
    assert _ids(client, "Patient", name="Zwart") == set()
    assert _ids(client, "Patient", birthdate="1950-03-02") == {j}
    assert _ids(client, "Patient", birthdate="1962") == {b}
    assert _ids(client, "Patient", birthdate="lt1960") == {j}
    assert _ids(client, "Patient", birthdate="ge1962-11-30") == {b, m}
    assert _ids(client, "Patient", birthdate="1975-06") == set()  # year precision is wider


# -- result shaping -------------------------------------------------------------------------------


def test_summary_count(client: TestClient, make_patient: Any) -> None:
    p1, p2 = make_patient(), make_patient()
    for _ in range(3):
        _post(client, f.weight(p1))
    _post(client, f.weight(p2))
    bundle = _search(client, "Observation", {"patient": p1, "_summary": "count"})
    assert bundle["total"] == 3
    assert bundle.get("entry", []) == []
    assert _search(client, "Observation", {"_summary": "count"})["total"] == 4


def test_sort_by_date(client: TestClient, make_patient: Any) -> None:
    pid = make_patient()
    days = [3, 1, 5, 2, 4]
    by_day = {_post(client, f.weight(pid, effective=f.when(d))): d for d in days}
    desc = f.match_ids(_search(client, "Observation", {"_sort": "-date"}))
    assert [by_day[i] for i in desc] == [1, 2, 3, 4, 5]
    asc = f.match_ids(_search(client, "Observation", {"_sort": "date"}))
    assert [by_day[i] for i in asc] == [5, 4, 3, 2, 1]


def test_sort_by_last_updated(client: TestClient, make_patient: Any) -> None:
    pid = make_patient()
    created = [_post(client, f.weight(pid, effective=f.when(d))) for d in (1, 5, 3)]
    assert f.match_ids(_search(client, "Observation", {"_sort": "_lastUpdated"})) == created
    newest_first = f.match_ids(_search(client, "Observation", {"_sort": "-_lastUpdated"}))
    assert newest_first == created[::-1]


def test_sort_by_unsupported_key_is_400(client: TestClient) -> None:
    response = client.get("/fhir/Observation", params={"_sort": "status"})
    assert response.status_code == 400
    assert f.expressions(response.json()) == ["_sort"]


def test_include_patient(client: TestClient, make_patient: Any) -> None:
    p1, p2 = make_patient(), make_patient()
    o1 = _post(client, f.weight(p1))
    o2 = _post(client, f.heart_rate(p1))
    _post(client, f.weight(p2))
    bundle = _search(
        client, "Observation", {"patient": p1, "_include": "Observation:patient"}
    )
    assert set(f.match_ids(bundle)) == {o1, o2}
    included = [e for e in bundle["entry"] if e["search"]["mode"] == "include"]
    assert [(e["resource"]["resourceType"], e["resource"]["id"]) for e in included] == [
        ("Patient", p1)
    ]
    assert included[0]["fullUrl"].endswith(f"/Patient/{p1}")
    plain = _search(client, "Observation", {"patient": p1})
    assert all(e["search"]["mode"] == "match" for e in plain["entry"])


def _collect_pages(
    client: TestClient, params: dict[str, str], between: Any = None
) -> tuple[list[str], int]:
    bundle = _search(client, "Observation", params)
    seen = f.match_ids(bundle)
    pages = 1
    while True:
        nxt = [link["url"] for link in bundle["link"] if link["relation"] == "next"]
        if not nxt:
            return seen, pages
        assert len(f.match_ids(bundle)) == int(params["_count"])
        if between is not None:
            between()
        response = client.get(nxt[0].replace("http://testserver", ""))
        assert response.status_code == 200, response.text
        bundle = response.json()
        seen.extend(f.match_ids(bundle))
        pages += 1
        assert pages < 50


@pytest.mark.parametrize("sort", [None, "-date", "date", "_lastUpdated", "-_lastUpdated"])
def test_paging_collects_every_match_once_despite_new_writes(
    client: TestClient, make_patient: Any, sort: str | None
) -> None:
    pid, other = make_patient(), make_patient()
    original = {_post(client, f.weight(pid, effective=f.when(d))) for d in range(1, 8)}
    _post(client, f.weight(other))
    counter = iter(range(100))

    def write_more() -> None:
        # Newer, older and same-day matches appear while the client pages.
        n = next(counter)
        _post(client, f.weight(pid, effective=f.when(n % 9 + 0.5)))

    params = {"patient": pid, "_count": "2"}
    if sort:
        params["_sort"] = sort
    seen, pages = _collect_pages(client, params, write_more)
    assert len(seen) == len(set(seen)), "a resource appeared on two pages"
    assert original <= set(seen)
    assert pages >= 4


def test_count_is_capped(capped_client: TestClient) -> None:
    pid = _post(capped_client, f.patient())
    for d in range(5):
        _post(capped_client, f.weight(pid, effective=f.when(d)))
    bundle = _search(capped_client, "Observation", {"_count": "1000"})
    assert len(f.match_ids(bundle)) == 3
    assert any(link["relation"] == "next" for link in bundle["link"])
    seen, pages = _collect_pages(capped_client, {"_count": "3"})
    assert len(set(seen)) == 5
    assert pages == 2


@pytest.fixture
def capped_client(settings: Settings) -> Iterator[TestClient]:
    """A client for a server whose page-size cap is 3."""
    settings.max_page_size = 3
    with TestClient(create_app(settings), base_url="http://testserver") as c:
        c.headers["Content-Type"] = "application/fhir+json"
        yield c


def test_count_zero_and_invalid(client: TestClient, make_patient: Any) -> None:
    pid = make_patient()
    _post(client, f.weight(pid))
    assert f.match_ids(_search(client, "Observation", {"_count": "0"})) == []
    for bad in ("-1", "abc", "1.5"):
        response = client.get("/fhir/Observation", params={"_count": bad})
        assert response.status_code == 400, bad
        assert f.expressions(response.json()) == ["_count"]


def _cursor(value: Any, rid: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps([value, rid]).encode()).decode().rstrip("=")


def test_tampered_cursor_is_400(client: TestClient, make_patient: Any) -> None:
    pid = make_patient()
    for d in range(3):
        _post(client, f.weight(pid, effective=f.when(d)))
    response = client.get("/fhir/Observation", params={"_cursor": "not-a-cursor!!"})
    assert response.status_code == 400
    assert f.expressions(response.json()) == ["_cursor"]
    # Well-formed cursors whose values do not fit the sort column (or the column type).
    numeric_bad = [("abc", 1), (None, 1), (2**70, 1), (True, 1), (1, 2**70)]
    text_bad = [(5, 1), (None, 1), (True, 1), ("abc", 2**70)]
    for sort in ("-date", "_id", "-_lastUpdated", None):
        for value, rid in text_bad if sort == "_id" else numeric_bad:
            params = {"_cursor": _cursor(value, rid), "_count": "1"}
            if sort:
                params["_sort"] = sort
            response = client.get("/fhir/Observation", params=params)
            assert response.status_code == 400, (sort, value, response.text[:200])
            assert f.expressions(response.json()) == ["_cursor"]


def test_next_link_with_changed_sort_is_not_a_server_error(
    client: TestClient, make_patient: Any
) -> None:
    pid = make_patient()
    for d in range(3):
        _post(client, f.weight(pid, effective=f.when(d)))
    bundle = _search(client, "Observation", {"_sort": "-date", "_count": "1"})
    nxt = next(link["url"] for link in bundle["link"] if link["relation"] == "next")
    response = client.get(nxt.replace("_sort=-date", "_sort=_id"))
    assert response.status_code == 400
    assert f.expressions(response.json()) == ["_cursor"]


# -- unknown and invalid parameters --------------------------------------------------------------


def test_unknown_parameter_is_ignored_with_warning(client: TestClient, make_patient: Any) -> None:
    p1, p2 = make_patient(), make_patient()
    o1 = _post(client, f.weight(p1))
    _post(client, f.weight(p2))
    bundle = _search(client, "Observation", {"patient": p1, "colour": "blue"})
    assert f.match_ids(bundle) == [o1]
    outcomes = [e for e in bundle["entry"] if e["search"]["mode"] == "outcome"]
    assert len(outcomes) == 1
    issue = outcomes[0]["resource"]["issue"][0]
    assert issue["severity"] == "warning"
    assert issue["expression"] == ["colour"]


def _link(bundle: dict[str, Any], relation: str) -> str | None:
    return next((k["url"] for k in bundle["link"] if k["relation"] == relation), None)


def test_self_link_shows_only_the_parameters_applied(
    client: TestClient, make_patient: Any
) -> None:
    pid = make_patient()
    for _ in range(3):
        _post(client, f.weight(pid))
    given = [
        ("patient", pid), ("colour", "blue"), ("code:text", "weight"), ("status", ""),
        ("_sort", "-date,_id"), ("_include", "Observation:nothing"), ("_summary", "short"),
        ("_count", "2"), ("_pretty", "true"), ("_format", "json"),
    ]
    bundle = _search(client, "Observation", given)
    assert len(f.match_ids(bundle)) == 2
    warned = {
        e for entry in bundle["entry"] if entry["search"]["mode"] == "outcome"
        for i in entry["resource"]["issue"] for e in i["expression"]
    }
    assert warned == {"colour", "code:text", "_sort", "_include", "_summary"}
    assert _link(bundle, "self") == (
        f"http://testserver/fhir/Observation?patient={pid}&_sort=-date&_count=2"
    )
    nxt = _link(bundle, "next")
    assert nxt is not None
    assert nxt.startswith(
        f"http://testserver/fhir/Observation?patient={pid}&_sort=-date&_count=2&_cursor="
    )
    page2 = client.get(nxt).json()
    assert len(f.match_ids(page2)) == 1
    assert _link(page2, "self") == nxt
    capped = _search(client, "Observation", {"patient": pid, "_count": "100000"})
    assert _link(capped, "self") == f"http://testserver/fhir/Observation?patient={pid}&_count=500"
    posted = client.post(
        "/fhir/Observation/_search", data={"patient": pid, "colour": "blue"},
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert _link(posted.json(), "self") == f"http://testserver/fhir/Observation?patient={pid}"


def test_unknown_parameter_rejected_when_strict(client: TestClient, make_patient: Any) -> None:
    pid = make_patient()
    response = client.get(
        "/fhir/Observation",
        params={"patient": pid, "colour": "blue"},
        headers={"Prefer": "handling=strict"},
    )
    assert response.status_code == 400
    assert f.expressions(response.json()) == ["colour"]
    lenient = client.get(
        "/fhir/Observation",
        params={"patient": pid, "colour": "blue"},
        headers={"Prefer": "handling=lenient"},
    )
    assert lenient.status_code == 200


@pytest.mark.parametrize(
    ("param", "value"),
    [
        ("date", "yesterday"),
        ("date", "2026-13-01"),
        ("date", "2026-02-30"),
        ("_lastUpdated", "gtnow"),
        ("value-quantity", "heavy"),
        ("value-quantity", "gt"),
    ],
)
def test_invalid_values_are_400_naming_the_parameter(
    client: TestClient, param: str, value: str
) -> None:
    response = client.get("/fhir/Observation", params={param: value})
    assert response.status_code == 400, response.text
    assert f.expressions(response.json()) == [param]


def test_search_via_post(client: TestClient, make_patient: Any) -> None:
    p1, p2 = make_patient(), make_patient()
    o1 = _post(client, f.weight(p1))
    _post(client, f.weight(p2))
    response = client.post(
        "/fhir/Observation/_search",
        content=f"patient={p1}".encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200, response.text
    assert f.match_ids(response.json()) == [o1]


def test_search_via_post_pages_keep_the_criteria(client: TestClient, make_patient: Any) -> None:
    p1, p2 = make_patient(), make_patient()
    mine = {_post(client, f.weight(p1, effective=f.when(d))) for d in range(3)}
    for d in range(3):
        _post(client, f.weight(p2, effective=f.when(d)))
    response = client.post(
        "/fhir/Observation/_search",
        content=f"patient={p1}&_count=2".encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    bundle = response.json()
    seen = f.match_ids(bundle)
    nxt = [link["url"] for link in bundle["link"] if link["relation"] == "next"]
    assert len(nxt) == 1
    seen += f.match_ids(client.get(nxt[0].replace("http://testserver", "")).json())
    assert sorted(seen) == sorted(mine)


def test_search_via_post_with_json_body_is_415(client: TestClient) -> None:
    response = client.post("/fhir/Observation/_search", json={"patient": "x"})
    assert response.status_code == 415
    assert f.expressions(response.json()) == ["Content-Type"]


def test_search_unknown_type_is_404(client: TestClient) -> None:
    response = client.get("/fhir/Medication")
    assert response.status_code == 404
    assert response.json()["resourceType"] == "OperationOutcome"


@pytest.mark.parametrize("sort", ["-date", "date"])
def test_paging_with_equal_dates_breaks_ties(
    client: TestClient, make_patient: Any, sort: str
) -> None:
    pid = make_patient()
    same = "2026-02-01T08:00:00Z"
    created = {_post(client, f.weight(pid, effective=same)) for _ in range(5)}
    seen, pages = _collect_pages(client, {"patient": pid, "_sort": sort, "_count": "2"})
    assert sorted(seen) == sorted(created)
    assert pages == 3
