"""Parameter → criteria parsing of chains, ``_has``, ``_revinclude``, ``_elements``, ``_summary``
and ``_total``, below HTTP."""

from __future__ import annotations

from zoneinfo import ZoneInfo

import pytest

from service.core.criteria import (
    ChainCriterion,
    HasCriterion,
    IdCriterion,
    Include,
    RevInclude,
    SearchQuery,
    StringCriterion,
    TokenCriterion,
    TokenValue,
)
from service.core.outcome import FhirError, Issue
from service.core.registry import default_registry
from service.fhir.search import linked_types, parse_search

REGISTRY = default_registry()
BSN = "http://fhir.nl/fhir/NamingSystem/bsn"


def _parse(
    res_type: str, *params: tuple[str, str], strict: bool = False
) -> tuple[SearchQuery, list[Issue]]:
    rtype = REGISTRY.get(res_type)
    assert rtype is not None
    return parse_search(
        rtype, list(params), registry=REGISTRY, zone=ZoneInfo("Europe/Amsterdam"),
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
