"""Strict FHIR JSON parsing: every rejected input class gives a clean 400 naming the problem."""

from __future__ import annotations

import time

import orjson
import pytest

from service.core.outcome import FhirError
from service.validation import WrittenDecimal, dumps_resource, parse_json

OBS = (
    b'{"resourceType":"Observation","status":"final","code":{"coding":[{"system":'
    b'"http://loinc.org","code":"29463-7"}]},"subject":{"reference":"Patient/p1"},'
    b'"effectiveDateTime":"2024-06-01T10:00:00+02:00","valueQuantity":{"value":80.5,'
    b'"unit":"kg","system":"http://unitsofmeasure.org","code":"kg"},'
    b'"note":[{"text":"after breakfast"}]}'
)


def reject(raw: bytes, **kwargs: int) -> FhirError:
    with pytest.raises(FhirError) as caught:
        parse_json(raw, **kwargs)
    assert caught.value.status == 400
    assert caught.value.issues
    return caught.value


def expressions(error: FhirError) -> list[str]:
    return [e for issue in error.issues for e in issue.expression]


def test_parses_a_valid_observation() -> None:
    assert parse_json(OBS) == orjson.loads(OBS)


def test_pretty_printed_json_is_fine() -> None:
    pretty = orjson.dumps(orjson.loads(OBS), option=orjson.OPT_INDENT_2)
    assert parse_json(pretty)["valueQuantity"]["value"] == 80.5
    assert parse_json(b'{"a" : {"b" :1}}') == {"a": {"b": 1}}


def test_bom() -> None:
    error = reject(b"\xef\xbb\xbf" + OBS)
    assert "byte order mark" in error.issues[0].diagnostics


def test_invalid_utf8() -> None:
    error = reject(OBS.replace(b"breakfast", b"breakf\xffast"))
    assert error.issues[0].code == "invalid"
    assert "not valid UTF-8" in error.issues[0].diagnostics


def test_encoded_surrogate_bytes() -> None:
    error = reject(OBS.replace(b"breakfast", b"\xed\xa0\x80"))
    assert error.issues[0].code == "invalid"


@pytest.mark.parametrize("escape", [rb"\ud800", rb"\udc00x", rb"\ud800\u0041"])
def test_lone_surrogate_escape(escape: bytes) -> None:
    error = reject(OBS.replace(b"breakfast", escape))
    assert "surrogate" in error.issues[0].diagnostics


def test_paired_surrogates_are_fine() -> None:
    assert parse_json(OBS.replace(b"breakfast", rb"\ud83d\ude00"))["note"][0]["text"] == "after 😀"


def test_raw_nul_byte() -> None:
    error = reject(OBS.replace(b"breakfast", b"break\x00fast"))
    assert "NUL" in error.issues[0].diagnostics


def test_escaped_nul_names_the_element() -> None:
    error = reject(OBS.replace(b"breakfast", rb"break\u0000fast"))
    assert expressions(error) == ["Observation.note[0].text"]


def test_escaped_backslash_before_u0000_text_is_fine() -> None:
    assert (
        parse_json(OBS.replace(b"breakfast", rb"c:\\u0000"))["note"][0]["text"] == r"after c:\u0000"
    )


@pytest.mark.parametrize(
    "raw", [b"", b"{", b'{"a":1,}', b'{"a":NaN}', b'{"a":1} x', b"{'a':1}", b'{"a":1e400}']
)
def test_malformed(raw: bytes) -> None:
    error = reject(raw)
    assert error.issues[0].code == "structure"
    assert "Malformed JSON" in error.issues[0].diagnostics


def test_duplicate_key_top_level() -> None:
    error = reject(OBS.replace(b'"status":"final"', b'"status":"final","status":"cancelled"'))
    assert "status" in error.issues[0].diagnostics


def test_duplicate_key_nested_with_whitespace() -> None:
    raw = OBS.replace(b'"value":80.5', b'"value" : 80.5, "value":180.5')
    error = reject(raw)
    assert "Duplicate" in error.issues[0].diagnostics
    assert "value" in error.issues[0].diagnostics


def test_key_like_text_inside_strings_is_not_a_duplicate() -> None:
    raw = OBS.replace(b"after breakfast", rb"said \"status\": twice, \"status\":")
    assert parse_json(raw)["status"] == "final"


def test_depth_limit_boundary() -> None:
    ok = b'{"a":' * 63 + b"1" + b"}" * 63  # 63 objects deep
    assert parse_json(ok, max_depth=63)
    error = reject(ok, max_depth=62)
    assert "deeper than 62" in error.issues[0].diagnostics


@pytest.mark.parametrize("depth", [100, 1000, 100_000])
def test_depth_bomb(depth: int) -> None:
    started = time.perf_counter()
    error = reject(b"[" * depth + b"]" * depth)
    assert "deeper than 64" in error.issues[0].diagnostics
    assert time.perf_counter() - started < 0.5


def test_unclosed_depth_bomb() -> None:
    error = reject(b"[" * 100_000)
    assert error.issues[0].code == "structure"


@pytest.mark.parametrize(
    ("replacement", "expression", "what"),
    [
        (b'"note":[{"text":""}]', "Observation.note[0].text", "Empty strings"),
        (b'"note":[{}]', "Observation.note[0]", "Empty objects"),
        (b'"note":[]', "Observation.note", "Empty arrays"),
        (b'"note":null', "Observation.note", "null"),
        (b'"note":[null]', "Observation.note[0]", "null"),
        (b'"note":[{"text":null}]', "Observation.note[0].text", "null"),
    ],
)
def test_empty_values(replacement: bytes, expression: str, what: str) -> None:
    error = reject(OBS.replace(b'"note":[{"text":"after breakfast"}]', replacement))
    assert expressions(error) == [expression]
    assert what in error.issues[0].diagnostics


def test_all_empty_values_are_reported() -> None:
    raw = OBS.replace(b'"note":[{"text":"after breakfast"}]', b'"note":[{"text":""}],"id":null')
    assert sorted(expressions(reject(raw))) == ["Observation.id", "Observation.note[0].text"]


def test_empty_root_object() -> None:
    assert expressions(reject(b"{}")) == ["$"]


def test_null_padding_in_primitive_arrays_is_allowed() -> None:
    raw = (
        b'{"resourceType":"Patient","name":[{"given":["Jan",null],'
        b'"_given":[null,{"extension":[{"url":"http://x","valueString":"y"}]}]}]}'
    )
    assert parse_json(raw)["name"][0]["given"] == ["Jan", None]


def test_null_in_array_without_extension_twin_is_rejected() -> None:
    error = reject(b'{"resourceType":"Patient","name":[{"given":["Jan",null]}]}')
    assert expressions(error) == ["Patient.name[0].given[1]"]


def test_parse_is_fast() -> None:
    for _ in range(100):
        parse_json(OBS)
    started = time.perf_counter()
    for _ in range(2000):
        parse_json(OBS)
    per_call = (time.perf_counter() - started) / 2000
    assert per_call < 200e-6  # measured ~5 us; generous for slow CI machines


@pytest.mark.parametrize(
    ("raw", "expression"),
    [
        (b"[null]", "$[0]"),
        (b'{"resourceType":"Patient","a":[[null]],"_a":[null]}', "Patient.a[0][0]"),
    ],
)
def test_null_in_other_arrays(raw: bytes, expression: str) -> None:
    assert expressions(reject(raw)) == [expression]


# -- decimal precision (FHIR: a decimal keeps the precision it was written with) -------------


@pytest.mark.parametrize(
    ("written", "exact"),
    [("80.50", True), ("1e2", True), ("0.10000000000000000001", True), ("80.5", False),
     ("37.0", False), ("-0.25", False)],
)  # fmt: skip
def test_decimals_keep_their_digits(written: str, exact: bool) -> None:
    raw = f'{{"resourceType":"Observation","valueQuantity":{{"value":{written}}}}}'.encode()
    data = parse_json(raw)
    value = data["valueQuantity"]["value"]
    assert isinstance(value, WrittenDecimal) is exact
    assert value == float(written)
    content, written_back = dumps_resource(data)
    assert written_back is exact
    assert content == raw


def test_digits_inside_strings_do_not_change_the_result() -> None:
    raw = b'{"effectiveDateTime":"2026-11-23T08:00:00.120+01:00","valueInteger":3}'
    assert parse_json(raw) == {
        "effectiveDateTime": "2026-11-23T08:00:00.120+01:00",
        "valueInteger": 3,
    }
