"""Parameter → criteria parsing below HTTP: token, date, quantity, string and reference values
with their modifiers and prefixes, chains, ``_has``, ``_revinclude``, ``_elements``,
``_summary``, ``_total`` and ``_count``, and the errors that name their parameter."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from service.core.criteria import (
    ChainCriterion,
    DateCriterion,
    DateValue,
    HasCriterion,
    IdCriterion,
    Include,
    Prefix,
    QuantityCriterion,
    QuantityValue,
    ReferenceCriterion,
    RevInclude,
    SearchQuery,
    StringCriterion,
    TokenCriterion,
    TokenValue,
)
from service.core.dates import to_micros
from service.core.indexing import WIDE_KEY, index_key
from service.core.outcome import FhirError, Issue
from service.core.registry import (
    OBSERVATION,
    Registry,
    ResourceType,
    SearchParam,
    default_registry,
)
from service.fhir.search import MAX_VALUES, linked_types, parse_search

REGISTRY = default_registry()
ZONE = ZoneInfo("Europe/Amsterdam")
BSN = "http://fhir.nl/fhir/NamingSystem/bsn"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
SECOND = 1_000_000
DAY = 86_400 * SECOND


def _parse(
    res_type: str, *params: tuple[str, str], strict: bool = False
) -> tuple[SearchQuery, list[Issue]]:
    rtype = REGISTRY.get(res_type)
    assert rtype is not None
    return parse_search(
        rtype, list(params), registry=REGISTRY, zone=ZONE,
        default_count=50, max_count=500, strict=strict,
    )


def _criteria(res_type: str, *params: tuple[str, str]) -> list[object]:
    return list(_parse(res_type, *params)[0].criteria)


@pytest.mark.parametrize(
    "name", ["patient.identifier", "subject.identifier", "subject:Patient.identifier"]
)
def test_chain_to_the_patient_is_on_the_patient_column(name: str) -> None:
    assert _criteria("Observation", (name, f"{BSN}|123456782")) == [
        ChainCriterion(
            name.split(".")[0].split(":")[0], "Patient",
            TokenCriterion("identifier", (TokenValue(BSN, "123456782"),)),
            on_patient_column=True,
        )
    ]


def test_chain_inner_parameter_keeps_its_modifier_and_type() -> None:
    assert _criteria("Flag", ("patient.name:exact", "Bakker")) == [
        ChainCriterion("patient", "Patient", StringCriterion("name", ("bakker",), "exact"), True)
    ]
    assert _criteria("Observation", ("patient._id", "a,b")) == [
        ChainCriterion("patient", "Patient", IdCriterion(("a", "b")), True)
    ]
    # not the compartment reference: resolved through the reference index
    (device,) = _criteria("Observation", ("device:Device.identifier", "s1"))
    assert device == ChainCriterion(
        "device", "Device", TokenCriterion("identifier", (TokenValue(None, "s1"),)), False
    )


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("patient.colour", "Unknown search parameter 'colour' for Patient"),
        ("status.code", "'status' is not a reference search parameter of Observation"),
        ("subject:Nope.identifier", "cannot point at 'Nope'"),
        ("patient:Device.identifier", "cannot point at 'Device'"),
        ("device.identifier", "ambiguous"),
        ("patient.a.b", "more than one level"),
        ("patient.identifier:below", "Modifier ':below' is not supported"),
    ],
)
def test_bad_chains_are_400_even_when_lenient(name: str, message: str) -> None:
    with pytest.raises(FhirError) as caught:
        _parse("Observation", (name, "x"))
    assert caught.value.status == 400
    (issue,) = caught.value.issues
    assert message in issue.diagnostics
    assert issue.expression == (name,)


def test_has_forms() -> None:
    assert _criteria("Patient", ("_has:Flag:patient:status", "active")) == [
        HasCriterion("Flag", "patient", TokenCriterion("status", (TokenValue(None, "active"),)),
                     on_patient_column=True)
    ]
    (negated,) = _criteria("Patient", ("_has:Observation:subject:code:not", "1-8"))
    assert negated == HasCriterion(
        "Observation", "subject", TokenCriterion("code", (TokenValue(None, "1-8"),), True), True
    )
    (device,) = _criteria("Device", ("_has:Observation:device:code", "29463-7"))
    assert isinstance(device, HasCriterion) and not device.on_patient_column


@pytest.mark.parametrize(
    "name",
    ["_has:Flag", "_has:Flag:patient", "_has:Nope:patient:status", "_has:Flag:status:status",
     "_has:Flag:programme:status", "_has:Flag:patient:_has:Observation:patient:code",
     "_has:Flag:patient:colour"],
)
def test_bad_has_is_400(name: str) -> None:
    with pytest.raises(FhirError) as caught:
        _parse("Patient", (name, "x"))
    assert caught.value.status == 400
    assert caught.value.issues[0].expression == (name,)


def test_revinclude_and_what_the_search_reads() -> None:
    query, warnings = _parse(
        "Patient", ("_revinclude", "Flag:patient"), ("_revinclude", "Observation:subject:Patient"),
        ("_revinclude", "Flag:programme"), ("_revinclude", "Nope:patient"),
        ("_revinclude", "Flag:patient:Device"), ("_has:CarePlan:patient:status", "active"),
    )
    assert query.revincludes == [
        RevInclude("Flag", "patient", True, ("Patient",)),
        RevInclude("Observation", "subject", True, ("Patient",)),
    ]
    assert [w.expression for w in warnings] == [("_revinclude",)] * 3
    assert linked_types(query, REGISTRY) == {"Flag", "Observation", "CarePlan"}
    obs, _ = _parse("Observation", ("_include", "Observation:patient"), ("device:Device.type", "x"))
    assert linked_types(obs, REGISTRY) == {"Patient", "Device"}
    with pytest.raises(FhirError):
        _parse("Patient", ("_revinclude", "Flag:patient:Device"), strict=True)


def test_iterate_forms() -> None:
    query, warnings = _parse(
        "Patient", ("_revinclude", "Flag:patient"), ("_include:iterate", "Flag:detail"),
        ("_revinclude:iterate", "Observation:device"),
        ("_include:iterate", "Flag:nothing"), ("_include", "Flag:detail"),
    )
    assert query.includes == [Include("detail", None, "Flag", iterate=True)]
    assert query.revincludes[1] == RevInclude("Observation", "device", iterate=True)
    # _include without :iterate names the searched type; unknown ones are reported
    assert [w.expression for w in warnings] == [("_include:iterate",), ("_include",)]
    assert linked_types(query, REGISTRY) == {"Flag", "Observation"}


def test_elements_summary_and_total() -> None:
    query, _ = _parse("Observation", ("_elements", "Observation.code,value[x],subject"))
    assert query.elements == ("code", "value[x]", "subject")
    with pytest.raises(FhirError) as caught:
        _parse("Observation", ("_elements", "code.coding"))
    assert caught.value.issues[0].expression == ("_elements",)
    for mode in ("true", "text", "data"):
        assert _parse("Patient", ("_summary", mode))[0].summary == mode
    assert _parse("Patient", ("_summary", "false"))[0].summary is None
    assert _parse("Patient", ("_summary", "count"))[0].summary_count
    assert _parse("Patient", ("_total", "accurate"))[0].total
    assert _parse("Patient", ("_total", "estimate"))[0].total
    assert not _parse("Patient", ("_total", "none"))[0].total
    query, warnings = _parse("Patient", ("_total", "exact"))
    assert not query.total and warnings[0].expression == ("_total",)


def _micros(
    year: int, month: int, day: int, hour: int = 0, *, zone: ZoneInfo | None = ZONE
) -> int:
    """The instant in ``zone`` (None: UTC) as microseconds."""
    return to_micros(datetime(year, month, day, hour, tzinfo=zone or UTC))


def _refused(res_type: str, *params: tuple[str, str], strict: bool = False) -> Issue:
    """The single issue of the 400 that parsing ``params`` raises."""
    with pytest.raises(FhirError) as caught:
        _parse(res_type, *params, strict=strict)
    assert caught.value.status == 400
    (issue,) = caught.value.issues
    return issue


# -- tokens ---------------------------------------------------------------------------------


def test_token_system_and_code_forms() -> None:
    assert _criteria(
        "Observation",
        ("code", f"{LOINC}|29463-7"),
        ("category", "vital-signs"),
        ("identifier", "|no-system"),
        ("status", f"{LOINC}|"),
    ) == [
        TokenCriterion("code", (TokenValue(LOINC, "29463-7"),)),
        TokenCriterion("category", (TokenValue(None, "vital-signs"),)),  # any system
        TokenCriterion("identifier", (TokenValue("", "no-system"),)),  # no system at all
        TokenCriterion("status", (TokenValue(LOINC, None),)),  # any code of the system
    ]


def test_token_values_are_ored_and_escaped_commas_stay() -> None:
    (either,) = _criteria("Observation", ("code", f"{LOINC}|29463-7,8867-4"))
    assert either == TokenCriterion(
        "code", (TokenValue(LOINC, "29463-7"), TokenValue(None, "8867-4"))
    )
    (one,) = _criteria("Observation", ("identifier", r"urn:x|a\,b"))
    assert one == TokenCriterion("identifier", (TokenValue("urn:x", "a,b"),))


def test_an_escaped_bar_is_part_of_the_value_not_the_system_separator() -> None:
    """FHIR search escaping: ``\\|`` is a literal bar in a token's system or code."""
    (one,) = _criteria("Observation", ("identifier", r"urn:x|a\|b"))
    assert one == TokenCriterion("identifier", (TokenValue("urn:x", "a|b"),))
    (bare,) = _criteria("Observation", ("identifier", r"a\|b"))
    assert bare == TokenCriterion("identifier", (TokenValue(None, "a|b"),))
    (both,) = _criteria("Observation", ("identifier", r"urn:x\|y|c,d\|e"))
    assert both == TokenCriterion(
        "identifier", (TokenValue("urn:x|y", "c"), TokenValue(None, "d|e"))
    )


def test_token_values_are_cut_to_the_index_key() -> None:
    long = "x" * 300
    (criterion,) = _criteria("Observation", ("identifier", f"{long}|{long}"))
    assert criterion == TokenCriterion(
        "identifier", (TokenValue(index_key(long, WIDE_KEY), index_key(long, WIDE_KEY)),)
    )
    assert isinstance(criterion, TokenCriterion)
    assert len(criterion.values[0].code or "") == WIDE_KEY


def test_token_not_modifier_negates() -> None:
    assert _criteria("Flag", ("status:not", "inactive")) == [
        TokenCriterion("status", (TokenValue(None, "inactive"),), negate=True)
    ]


def test_unsupported_token_modifier_is_a_warning_or_a_400_naming_it() -> None:
    query, warnings = _parse("Observation", ("code:text", "weight"), ("status", "final"))
    assert query.criteria == [TokenCriterion("status", (TokenValue(None, "final"),))]
    (warning,) = warnings
    assert (warning.severity, warning.expression) == ("warning", ("code:text",))
    assert "Modifier ':text' is not supported on code" in warning.diagnostics
    issue = _refused("Observation", ("code:text", "weight"), strict=True)
    assert (issue.code, issue.expression) == ("not-supported", ("code:text",))


def test_id_values() -> None:
    assert _criteria("Patient", ("_id", "a,b")) == [IdCriterion(("a", "b"))]


# -- dates ----------------------------------------------------------------------------------


def test_date_precision_sets_the_range_in_the_server_zone() -> None:
    (day,) = _criteria("Observation", ("date", "2026-03-01"))
    assert day == DateCriterion(
        "date",
        (DateValue("eq", _micros(2026, 3, 1), _micros(2026, 3, 2) - 1),),
        column="primary",
    )
    (year,) = _criteria("Patient", ("birthdate", "1950"))
    assert year == DateCriterion(
        "birthdate",
        (DateValue("eq", _micros(1950, 1, 1), _micros(1951, 1, 1) - 1),),
        column="primary",
    )
    # An offset given is the value's own: one second, whatever the server's zone
    (moment,) = _criteria("Observation", ("date", "2026-03-01T08:00:00Z"))
    start = _micros(2026, 3, 1, 8, zone=None)
    assert moment == DateCriterion(
        "date", (DateValue("eq", start, start + SECOND - 1),), column="primary"
    )


@pytest.mark.parametrize("prefix", ["eq", "ne", "gt", "lt", "ge", "le", "sa", "eb"])
def test_date_prefixes(prefix: Prefix) -> None:
    (criterion,) = _criteria("Flag", ("date", f"{prefix}2026-03-01"))
    assert criterion == DateCriterion(
        "date",
        (DateValue(prefix, _micros(2026, 3, 1), _micros(2026, 3, 2) - 1),),
        column="primary",
    )


def test_date_ap_is_widened_by_at_least_a_day() -> None:
    (criterion,) = _criteria("Observation", ("date", "ap2026-03-01"))
    assert isinstance(criterion, DateCriterion)
    (value,) = criterion.values
    assert (value.prefix, value.low, value.high) == (
        "ap", _micros(2026, 3, 1), _micros(2026, 3, 2) - 1
    )
    assert value.slack >= DAY
    far = _criteria("Observation", ("date", "ap1926-03-01"))[0]
    assert isinstance(far, DateCriterion)
    assert far.values[0].slack > 10 * 365 * DAY  # a tenth of the distance from now


def test_date_values_are_ored_and_the_column_follows_the_parameter() -> None:
    (criterion,) = _criteria("Observation", ("_lastUpdated", "lt2026-03-01T10:00:00+01:00,gt2027"))
    start = _micros(2026, 3, 1, 9, zone=None)
    assert criterion == DateCriterion(
        "_lastUpdated",
        (
            DateValue("lt", start, start + SECOND - 1),
            DateValue("gt", _micros(2027, 1, 1), _micros(2028, 1, 1) - 1),
        ),
        column="last_updated",
    )
    # a date parameter other than the type's primary date lives in the date index
    issued = SearchParam("issued", "date", ("issued",), "When the result was issued")
    rtype = ResourceType("Observation", {**OBSERVATION.params, "issued": issued},
                         compartment="patient", primary_date="date")
    query, _ = parse_search(
        rtype, [("issued", "le2026")], registry=Registry([rtype]), zone=ZONE,
        default_count=50, max_count=500, strict=True,
    )
    assert query.criteria == [
        DateCriterion(
            "issued", (DateValue("le", _micros(2026, 1, 1), _micros(2027, 1, 1) - 1),),
            column="index",
        )
    ]


@pytest.mark.parametrize("value", ["2026-13-01", "yesterday", "ge", "2026-03-01T08:00+01"])
def test_bad_dates_are_400_naming_the_parameter(value: str) -> None:
    issue = _refused("Observation", ("date", value))
    assert issue.expression == ("date",)
    assert "Invalid date for 'date'" in issue.diagnostics


# -- quantities -----------------------------------------------------------------------------


def _fields(value: QuantityValue) -> tuple[object, ...]:
    return (value.prefix, value.number, value.low, value.high, value.system, value.code)


def test_quantity_number_system_and_unit() -> None:
    (criterion,) = _criteria("Observation", ("value-quantity", f"gt80.5|{UCUM}|kg"))
    assert isinstance(criterion, QuantityCriterion) and criterion.param == "value-quantity"
    assert [_fields(v) for v in criterion.values] == [
        ("gt", 80.5, pytest.approx(80.45), pytest.approx(80.55), UCUM, "kg")
    ]


def test_quantity_precision_sets_the_eq_range_and_unit_parts_are_optional() -> None:
    (criterion,) = _criteria(
        "Observation", ("value-quantity", "80,le5.40||mmol/L,ap1e2,-3")
    )
    assert isinstance(criterion, QuantityCriterion)
    assert [_fields(v) for v in criterion.values] == [
        ("eq", 80.0, 79.5, 80.5, None, None),
        ("le", 5.4, pytest.approx(5.395), pytest.approx(5.405), None, "mmol/L"),
        ("ap", 100.0, 99.5, 100.5, None, None),
        ("eq", -3.0, -3.5, -2.5, None, None),
    ]


@pytest.mark.parametrize("value", ["heavy", "gt", "80kg", "1.2.3|x|kg", "eq|kg"])
def test_bad_quantities_are_400_naming_the_parameter(value: str) -> None:
    issue = _refused("Observation", ("value-quantity", value))
    assert issue.expression == ("value-quantity",)
    assert "Invalid number" in issue.diagnostics


# -- strings and references -----------------------------------------------------------------


def test_strings_are_normalised_and_modifiers_pick_the_match() -> None:
    assert _criteria(
        "Patient", ("family", "Çelik"), ("name:exact", "ZOË"), ("name:contains", "akk")
    ) == [
        StringCriterion("family", ("celik",)),
        StringCriterion("name", ("zoe",), "exact"),
        StringCriterion("name", ("akk",), "contains"),
    ]
    query, warnings = _parse("Patient", ("name:missing", "true"))
    assert query.criteria == []
    assert [w.expression for w in warnings] == [("name:missing",)]


def test_reference_forms() -> None:
    assert _criteria(
        "Observation",
        ("patient", "p1"),
        ("subject", "Patient/p2"),
        ("subject:Device", "d1"),
        ("device", "https://example.org/fhir/Device/d2"),
    ) == [
        # the compartment parameter: on the row's patient column; it can only point at a
        # Patient, so a bare id is one
        ReferenceCriterion("patient", (("Patient", "p1"),), on_patient_column=True),
        ReferenceCriterion("subject", (("Patient", "p2"),)),
        ReferenceCriterion("subject", (("Device", "d1"),)),
        ReferenceCriterion("device", (("Device", "d2"),)),
    ]
    (any_type,) = _criteria("Observation", ("subject", "p1,Patient/p2"))
    assert any_type == ReferenceCriterion("subject", ((None, "p1"), ("Patient", "p2")))
    (of_type,) = _criteria("Observation", ("patient:Patient", "p3"))
    assert of_type == ReferenceCriterion("patient", (("Patient", "p3"),), on_patient_column=True)


# -- what is ignored, and errors ------------------------------------------------------------


def test_empty_values_and_format_parameters_are_ignored() -> None:
    query, warnings = _parse("Observation", ("code", ""), ("_format", "json"), ("_pretty", "true"))
    assert (query.criteria, query.applied, warnings) == ([], [], [])


def test_unknown_parameter_is_a_warning_or_a_400_naming_it() -> None:
    query, warnings = _parse("Observation", ("colour", "red"), ("status", "final"))
    assert query.criteria == [TokenCriterion("status", (TokenValue(None, "final"),))]
    assert query.applied == [("status", "final")]
    assert [(w.severity, w.expression) for w in warnings] == [("warning", ("colour",))]
    issue = _refused("Observation", ("colour", "red"), strict=True)
    assert issue.expression == ("colour",)
    assert "Unknown search parameter 'colour' for Observation" in issue.diagnostics


def test_count_is_capped_and_recorded_as_applied() -> None:
    query, _ = _parse("Observation", ("_count", "5000"), ("code", "29463-7"))
    assert query.count == 500
    assert query.applied == [("_count", "500"), ("code", "29463-7")]
    assert _parse("Observation")[0].count == 50
    none, _ = _parse("Observation", ("_count", "0"))
    assert none.count == 0 and none.total  # no entries asked for: the count is the answer


@pytest.mark.parametrize(
    ("params", "expression"),
    [
        ((("_count", "-1"),), "_count"),
        ((("_count", "ten"),), "_count"),
        ((("_sort", "colour"),), "_sort"),
        ((("_cursor", "not-a-cursor"),), "_cursor"),
        ((("code", ",".join(["x"] * (MAX_VALUES + 1))),), "code"),
        ((("code", "a\x00b"),), "code"),
    ],
)
def test_bad_control_values_are_400_naming_the_parameter(
    params: tuple[tuple[str, str], ...], expression: str
) -> None:
    assert _refused("Observation", *params).expression == (expression,)


def test_sort_keys() -> None:
    assert _parse("Observation", ("_sort", "-date"))[0].sort == ("date", True)
    assert _parse("Observation", ("_sort", "_lastUpdated"))[0].sort == ("_lastUpdated", False)
    query, warnings = _parse("Observation", ("_sort", "-_id,date"))
    assert query.sort == ("_id", True)
    assert [w.expression for w in warnings] == [("_sort",)]  # only the first key is used
