"""The wire format: content negotiation, body limits, and bad input that must never be a 500."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings
from tests import factories as f


def _outcome(response: Any, status: int | tuple[int, ...]) -> dict[str, Any]:
    allowed = (status,) if isinstance(status, int) else status
    assert response.status_code in allowed, (response.status_code, response.text[:500])
    assert response.headers["Content-Type"].startswith("application/fhir+json")
    body: dict[str, Any] = response.json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["severity"] in ("error", "fatal")
    return body


# -- content negotiation ------------------------------------------------------------------------


@pytest.mark.parametrize("content_type", ["application/fhir+json", "application/json"])
def test_json_content_types_accepted(client: TestClient, content_type: str) -> None:
    response = client.post(
        "/fhir/Patient",
        content=orjson.dumps(f.patient()),
        headers={"Content-Type": f"{content_type}; charset=utf-8"},
    )
    assert response.status_code == 201, response.text


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/fhir+xml", "application/xml", "multipart/form-data"]
)
def test_other_content_types_are_415(client: TestClient, content_type: str) -> None:
    response = client.post(
        "/fhir/Patient", content=orjson.dumps(f.patient()), headers={"Content-Type": content_type}
    )
    body = _outcome(response, 415)
    assert f.expressions(body) == ["Content-Type"]
    assert client.get("/fhir/Patient", params={"_summary": "count"}).json()["total"] == 0


def test_missing_content_type_is_415(client: TestClient) -> None:
    del client.headers["Content-Type"]
    response = client.post("/fhir/Patient", content=orjson.dumps(f.patient()))
    _outcome(response, 415)


def test_wrong_content_type_on_update_and_bundle_is_415(
    client: TestClient, make_patient: Any
) -> None:
    pid = make_patient()
    body = orjson.dumps({**f.patient(), "id": pid})
    headers = {"Content-Type": "text/xml"}
    _outcome(client.put(f"/fhir/Patient/{pid}", content=body, headers=headers), 415)
    _outcome(client.post("/fhir", content=orjson.dumps(f.batch()), headers=headers), 415)


@pytest.mark.parametrize("accept", ["application/fhir+xml", "text/html", "application/xml"])
def test_unacceptable_accept_is_406(client: TestClient, make_patient: Any, accept: str) -> None:
    pid = make_patient()
    body = _outcome(client.get(f"/fhir/Patient/{pid}", headers={"Accept": accept}), 406)
    assert f.expressions(body) == ["Accept"]
    _outcome(client.post("/fhir/Patient", json=f.patient(), headers={"Accept": accept}), 406)
    assert client.get("/fhir/Patient", params={"_summary": "count"}).json()["total"] == 1


@pytest.mark.parametrize(
    "accept",
    [
        "application/fhir+json",
        "application/json",
        "*/*",
        "application/fhir+xml;q=0.9, application/fhir+json",
        "text/html, application/json;q=0.5",
    ],
)
def test_acceptable_accept(client: TestClient, make_patient: Any, accept: str) -> None:
    pid = make_patient()
    response = client.get(f"/fhir/Patient/{pid}", headers={"Accept": accept})
    assert response.status_code == 200
    assert response.json()["id"] == pid


def test_format_parameter(client: TestClient, make_patient: Any) -> None:
    pid = make_patient()
    assert client.get(f"/fhir/Patient/{pid}", params={"_format": "json"}).status_code == 200
    body = _outcome(client.get(f"/fhir/Patient/{pid}", params={"_format": "xml"}), 406)
    assert f.expressions(body) == ["_format"]


# -- body size -----------------------------------------------------------------------------------


@pytest.fixture
def small_client(settings: Settings) -> Iterator[TestClient]:
    """A client for a server that accepts bodies of at most 2000 bytes."""
    settings.max_body_bytes = 2000
    with TestClient(create_app(settings), base_url="http://testserver") as c:
        c.headers["Content-Type"] = "application/fhir+json"
        yield c


def _padded_patient(size: int) -> bytes:
    resource = f.patient()
    raw = orjson.dumps(resource)
    resource["name"][0]["text"] = "x" * (size - len(raw) - len(',"text":""'))
    body = orjson.dumps(resource)
    assert len(body) == size
    return body


def test_body_at_limit_is_accepted(small_client: TestClient) -> None:
    response = small_client.post("/fhir/Patient", content=_padded_patient(2000))
    assert response.status_code == 201, response.text


def test_body_over_limit_is_413(small_client: TestClient) -> None:
    body = _outcome(small_client.post("/fhir/Patient", content=_padded_patient(2001)), 413)
    assert body["issue"][0]["code"] == "too-costly"
    count = small_client.get("/fhir/Patient", params={"_summary": "count"}).json()
    assert count["total"] == 0


def test_chunked_body_over_limit_is_413(small_client: TestClient) -> None:
    payload = _padded_patient(5000)

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(payload), 500):
            yield payload[i : i + 500]

    _outcome(small_client.post("/fhir/Patient", content=chunks()), 413)


def test_huge_bundle_over_limit_is_413(small_client: TestClient) -> None:
    bundle = f.transaction(*(f.post_entry(f.patient()) for _ in range(50)))
    _outcome(small_client.post("/fhir", json=bundle), 413)


# -- bad JSON and bad FHIR -----------------------------------------------------------------------

PATIENT = orjson.dumps(f.patient()).decode()


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"{",
        b'{"resourceType": "Patient",}',
        b"[]",
        b'"Patient"',
        b"null",
        b"42",
        b"\xef\xbb\xbf" + PATIENT.encode(),  # BOM
        PATIENT.replace("Jansen", "Jan\\u0000sen").encode(),  # NUL
        PATIENT.replace("Jansen", "Jan\\ud800sen").encode(),  # lone surrogate
        PATIENT.replace("Jansen", "Jan").encode()[:-2] + b"\xff\xfe}",  # invalid UTF-8
        b'{"resourceType": "Patient", "gender": NaN}',
    ],
)
def test_malformed_json_is_400(client: TestClient, raw: bytes) -> None:
    _outcome(client.post("/fhir/Patient", content=raw), 400)


@pytest.mark.parametrize("depth", [65, 1_000, 100_000])
def test_deep_nesting_is_400(client: TestClient, depth: int) -> None:
    arrays = b'{"resourceType": "Patient", "extension": ' + b"[" * depth + b"]" * depth + b"}"
    _outcome(client.post("/fhir/Patient", content=arrays), 400)
    objects = b'{"a":' * depth + b"1" + b"}" * depth
    _outcome(client.post("/fhir/Patient", content=objects), 400)
    _outcome(client.post("/fhir", content=objects), 400)


def test_duplicate_keys_are_400(client: TestClient) -> None:
    raw = b'{"resourceType": "Patient", "gender": "male", "gender": "female"}'
    _outcome(client.post("/fhir/Patient", content=raw), 400)
    nested = PATIENT.replace('"family":"Jansen"', '"family":"Jansen","family":"Bakker"')
    assert nested != PATIENT
    _outcome(client.post("/fhir/Patient", content=nested.encode()), 400)
    assert client.get("/fhir/Patient", params={"_summary": "count"}).json()["total"] == 0


def test_resource_type_must_match_url(client: TestClient, make_patient: Any) -> None:
    pid = make_patient()
    body = _outcome(client.post("/fhir/Patient", json=f.weight(pid)), 400)
    assert f.expressions(body) == ["resourceType"]
    body = _outcome(client.post("/fhir/Observation", json=f.patient()), 400)
    assert f.expressions(body) == ["resourceType"]
    body = _outcome(client.put(f"/fhir/Patient/{pid}", json={**f.weight(pid), "id": pid}), 400)
    assert any("resourceType" in x for x in f.expressions(body))
    assert client.get(f"/fhir/Patient/{pid}").json()["resourceType"] == "Patient"


def test_missing_resource_type_is_400(client: TestClient) -> None:
    resource = f.patient()
    del resource["resourceType"]
    body = _outcome(client.post("/fhir/Patient", json=resource), 400)
    assert f.expressions(body) == ["resourceType"]


VALUE = "Observation.valueQuantity.value"


def _obs(pid: str, **changes: Any) -> dict[str, Any]:
    resource = f.weight(pid)
    resource.update(changes)
    return resource


@pytest.mark.parametrize(
    ("change", "expression"),
    [
        ({"colour": "blue"}, "Observation.colour"),
        ({"status": 1}, "Observation.status"),
        ({"valueQuantity": {**f.quantity(80.5, "kg"), "value": "80.5"}}, VALUE),
        ({"valueQuantity": {**f.quantity(80.5, "kg"), "value": True}}, VALUE),
        ({"code": "29463-7"}, "Observation.code"),
        ({"category": {"coding": [{"code": "vital-signs"}]}}, "Observation.category"),
        ({"status": ""}, "Observation.status"),
        ({"status": None}, "Observation.status"),
        ({"code": {}}, "Observation.code"),
        ({"identifier": []}, "Observation.identifier"),
        ({"effectiveDateTime": "2026-03-10T08:00:00"}, "Observation.effectiveDateTime"),
        ({"effectiveDateTime": "10-03-2026"}, "Observation.effectiveDateTime"),
    ],
)
def test_invalid_elements_are_400_naming_the_element(
    client: TestClient, make_patient: Any, change: dict[str, Any], expression: str
) -> None:
    pid = make_patient()
    body = _outcome(client.post("/fhir/Observation", json=_obs(pid, **change)), 400)
    exprs = f.expressions(body)
    assert any(x.startswith(expression) for x in exprs), exprs
    assert client.get("/fhir/Observation", params={"_summary": "count"}).json()["total"] == 0


def test_patient_birthdate_as_number_is_400(client: TestClient) -> None:
    body = _outcome(client.post("/fhir/Patient", json={**f.patient(), "birthDate": 1950}), 400)
    assert any(x.startswith("Patient.birthDate") for x in f.expressions(body))


def test_invalid_id_in_url_is_400(client: TestClient) -> None:
    bad_id = "a" * 65
    body = _outcome(client.put(f"/fhir/Patient/{bad_id}", json={**f.patient(), "id": bad_id}), 400)
    assert f.expressions(body)


def test_unsupported_method_and_path(client: TestClient, make_patient: Any) -> None:
    pid = make_patient()
    _outcome(client.request("TRACE", f"/fhir/Patient/{pid}"), 405)  # PATCH is supported
    _outcome(client.get("/fhir/Patient/a/b/c/d"), 404)


# -- never a 500 ---------------------------------------------------------------------------------

_NASTY_BODIES: list[bytes] = [
    b"",
    b"\x00",
    b"{}",
    b'{"resourceType": {}}',
    b'{"resourceType": ["Patient"]}',
    b'{"resourceType": "Patient", "id": 5}',
    b'{"resourceType": "Patient", "meta": "x"}',
    b'{"resourceType": "Patient", "name": "Jansen"}',
    b'{"resourceType": "Patient", "name": [["Jansen"]]}',
    b'{"resourceType": "Patient", "contained": [{"resourceType": 1}]}',
    b'{"resourceType": "Patient", "birthDate": "1950-02-30"}',
    b'{"resourceType": "Patient", "text": {"status": "generated", "div": "<script/>"}}',
    b'{"resourceType": "Observation", "status": "final", "code": {"text": "x"}, '
    b'"subject": {"reference": 123}}',
    b'{"resourceType": "Observation", "status": "final", "code": {"text": "x"}, '
    b'"valueQuantity": {"value": 1e400}}',
    b'{"resourceType": "Bundle", "type": "transaction", "entry": [1, "x", null]}',
    b'{"resourceType": "Bundle", "type": "transaction", "entry": [{"request": {"method": "PUT", '
    b'"url": "Patient/../../x"}, "resource": {"resourceType": "Patient"}}]}',
    b'{"resourceType": "Bundle", "type": "transaction", "entry": [{"request": {"method": '
    b'"POST", "url": "Patient", "ifNoneExist": 5}, "resource": {"resourceType": "Patient"}}]}',
    b'{"resourceType": "Bundle", "type": "transaction", "entry": [{"request": {"method": '
    b'"PUT", "url": "Patient/a", "ifMatch": ["1"]}, "resource": {"resourceType": "Patient", '
    b'"id": "a"}}]}',
    ("{" + '"a":' * 5000 + "1" + "}" * 5000).encode(),
    b"[" * 200_000,
]


def test_no_body_causes_a_server_error(client: TestClient, make_patient: Any) -> None:
    pid = make_patient()
    for n, raw in enumerate(_NASTY_BODIES):
        for method, url in (
            ("POST", "/fhir/Patient"),
            ("POST", "/fhir/Observation"),
            ("PUT", f"/fhir/Patient/{pid}"),
            ("POST", "/fhir"),
        ):
            response = client.request(method, url, content=raw)
            context = (n, method, url, response.text[:300])
            assert 400 <= response.status_code < 500, context
            assert response.json()["resourceType"] == "OperationOutcome", context
    assert client.get("/fhir/Patient", params={"_summary": "count"}).json()["total"] == 1
    assert client.get(f"/fhir/Patient/{pid}").headers["ETag"] == 'W/"1"'


def test_long_strings_are_stored_whole(client: TestClient) -> None:
    family = "\u00e9" * 50_000
    response = client.post("/fhir/Patient", json={**f.patient(), "name": [{"family": family}]})
    assert response.status_code == 201, response.text[:300]
    stored = client.get(f"/fhir/Patient/{response.json()['id']}").json()
    assert stored["name"][0]["family"] == family
    found = client.get("/fhir/Patient", params={"name": "\u00e9" * 10}).json()
    assert f.match_ids(found) == [response.json()["id"]]


def test_batch_entry_with_non_string_if_none_exist_is_400(client: TestClient) -> None:
    entry = f.post_entry(f.patient())
    entry["request"]["ifNoneExist"] = 5
    result = client.post("/fhir", json=f.batch(entry)).json()
    assert result["entry"][0]["response"]["status"].startswith("400")
    outcome = result["entry"][0]["response"]["outcome"]
    assert f.expressions(outcome) == ["Bundle.entry[0].request.ifNoneExist"]


def test_too_many_search_values_is_400(client: TestClient) -> None:
    response = client.get("/fhir/Observation", params={"status": ",".join(["final"] * 101)})
    body = _outcome(response, 400)
    assert f.expressions(body) == ["status"]
    assert body["issue"][0]["code"] == "too-costly"
    many = [("status", "final")] * 101
    _outcome(client.get("/fhir/Observation", params=many), 400)
    ok = client.get("/fhir/Observation", params={"status": ",".join(["final"] * 100)})
    assert ok.status_code == 200


_NASTY_QUERIES: list[Any] = [
    [("status", "final")] * 1500,
    [("date", f"ne2026-01-{d % 28 + 1:02d}") for d in range(99)],
    {"date": "2026-03-10T08:00:00+25:00"},
    {"date": "9999-12-31"},  # the day after is beyond Python's datetime
    {"date": "9999-12-31T23:59:59Z"},
    {"_lastUpdated": "ge9999-12-31"},
    {"date": "0001-01-01T00:00:00+14:00"},
    {"date": "\x00"},
    {"date": "ap2026"},
    {"date": "sa2026-03", "_sort": "-date"},
    {"value-quantity": "1e999"},
    {"value-quantity": "-1e999|x|y"},
    {"value-quantity": "ap80"},
    {"_count": "99999999999999999999999"},
    {"_count": "\u0661"},  # an Arabic-Indic digit: isdigit() but not ASCII
    {"_id": "a" * 5000},
    {"code": "|"},
    {"code": "a|b|c"},
    {"patient": "Patient/"},
    {"subject": "http://other.example/fhir/Patient/1"},
    {"_include": "Observation:patient:Nothing"},
    {"_include": "*"},
    {"_sort": "-"},
    {"_sort": ""},
    {"_summary": "true"},
    {"_total": "accurate"},
    {"_lastUpdated": "le"},
    {"name:missing": "true"},
    {"code:text": "x"},
    {"status": "a,b,c,d,e,f,g,h," * 100},
]


def test_no_query_causes_a_server_error(client: TestClient) -> None:
    for n, params in enumerate(_NASTY_QUERIES):
        for url in ("/fhir/Observation", "/fhir/Patient", "/fhir/Observation/$lastn"):
            response = client.get(url, params=params)
            assert response.status_code < 500, (n, url, response.text[:300])
            assert response.json()["resourceType"] in ("Bundle", "OperationOutcome")


def test_a_16_kib_query_is_414(client: TestClient) -> None:
    long_value = "x" * (16 * 1024)
    for url in (f"/fhir/Observation?code={long_value}", f"/fhir/Patient/{long_value}"):
        body = _outcome(client.get(url), 414)
        assert body["issue"][0]["code"] == "too-long"
    create = client.post(f"/fhir/Observation?x={long_value}", json=f.patient())
    _outcome(create, 414)
    assert client.get("/fhir/Observation", params={"code": "x" * 4000}).status_code == 200


def test_fhir_responses_forbid_content_sniffing(client: TestClient, make_patient: Any) -> None:
    pid = make_patient()
    responses = [
        client.get("/fhir/metadata"),
        client.get(f"/fhir/Patient/{pid}"),
        client.get("/fhir/Patient"),
        client.post("/fhir/Patient", json=f.patient()),  # the direct create path
        client.post("/fhir/Patient", content=b"{", headers={"Content-Type": "application/json"}),
        client.get("/fhir/Patient/nope"),
        client.get("/fhir/Nothing"),
        client.get("/nowhere"),
    ]
    for response in responses:
        assert response.headers.get("x-content-type-options") == "nosniff", response.request.url
