"""Index extraction below HTTP: the values storage indexes for resources from the factories."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from service.core.dates import to_micros
from service.core.indexing import WIDE_KEY, IndexValues, extract, index_key, split_reference
from service.core.registry import default_registry
from tests.factories import (
    BSN,
    LOINC,
    UCUM,
    blood_pressure,
    device,
    flag,
    heart_rate,
    patient,
    quantity,
    weight,
)

REGISTRY = default_registry()
ZONE = ZoneInfo("Europe/Amsterdam")
CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
SECOND = 1_000_000
#: An open end of a Period, as indexed.
OPEN = 2**62


def _index(resource: dict[str, Any]) -> IndexValues:
    rtype = REGISTRY.get(resource["resourceType"])
    assert rtype is not None
    return extract(resource, rtype, ZONE)


def _at(year: int, month: int, day: int, hour: int = 0, zone: ZoneInfo | None = None) -> int:
    """The instant in ``zone`` (None: UTC) as microseconds."""
    return to_micros(datetime(year, month, day, hour, tzinfo=zone or UTC))


def test_an_observation_indexes_tokens_references_its_date_and_quantity() -> None:
    obs = weight("p1", kg=80.5, effective="2026-03-01T08:00:00+01:00", ident="w-1")
    index = _index(obs)
    assert index.tokens == [
        ("code", LOINC, "29463-7"),
        ("category", CATEGORY, "vital-signs"),
        ("identifier", "urn:telemon:test", "w-1"),
        ("status", None, "final"),
    ]
    assert index.references == [("patient", "Patient", "p1"), ("subject", "Patient", "p1")]
    assert index.patient_id == "p1"
    # the primary date lives on the row: one second, in the value's own offset
    start = _at(2026, 3, 1, 7)
    assert (index.date_low, index.date_high) == (start, start + SECOND - 1)
    assert index.dates == []
    assert index.quantities == [("value-quantity", 80.5, UCUM, "kg")]
    assert index.strings == []


def test_quantities_keep_their_unit_and_integers_become_floats() -> None:
    pulse = heart_rate("p1", bpm=72)
    assert _index(pulse).quantities == [("value-quantity", 72.0, UCUM, "/min")]
    pulse["valueQuantity"] = {"value": 60, "unit": "beats", "code": "/min"}  # no system
    assert _index(pulse).quantities == [("value-quantity", 60.0, None, "/min")]
    pulse["valueQuantity"] = {"unit": "beats", "code": "/min"}  # no value: nothing to compare
    assert _index(pulse).quantities == []


def test_components_index_their_codes_not_a_value() -> None:
    index = _index(blood_pressure("p1", systolic=128, diastolic=82))
    assert [t for t in index.tokens if t[0] in ("code", "component-code")] == [
        ("code", LOINC, "85354-9"),
        ("component-code", LOINC, "8480-6"),
        ("component-code", LOINC, "8462-4"),
    ]
    assert index.quantities == []


def test_dates_are_ranges_by_precision_in_the_server_zone() -> None:
    obs = weight("p1", effective="2026-03-01")  # a date has no offset: the server's zone
    index = _index(obs)
    assert (index.date_low, index.date_high) == (
        _at(2026, 3, 1, zone=ZONE), _at(2026, 3, 2, zone=ZONE) - 1
    )
    del obs["effectiveDateTime"]
    obs["effectivePeriod"] = {"start": "2026-03"}  # an open period ends at the end of time
    index = _index(obs)
    assert (index.date_low, index.date_high) == (_at(2026, 3, 1, zone=ZONE), OPEN)
    obs["effectivePeriod"] = {"end": "2026-03-01T10:00:00.5Z"}
    index = _index(obs)
    assert (index.date_low, index.date_high) == (-OPEN, _at(2026, 3, 1, 10) + 600_000 - 1)
    obs["effectivePeriod"] = {"start": "soon"}  # not a date: not indexed
    index = _index(obs)
    assert (index.date_low, index.date_high, index.dates) == (None, None, [])


def test_a_patient_indexes_normalised_strings_and_is_its_own_compartment() -> None:
    person = {**patient(bsn="123456782", family="Çelik", given="Zoë"), "id": "p7"}
    person["active"] = True
    person["name"][0]["prefix"] = ["Dr."]
    index = _index(person)
    assert index.patient_id == "p7"
    assert index.tokens == [
        ("identifier", BSN, "123456782"),
        ("gender", None, "male"),
        ("active", None, "true"),
    ]
    assert index.strings == [
        ("name", "celik"),
        ("name", "zoe"),
        ("name", "dr."),
        ("family", "celik"),
    ]
    assert (index.date_low, index.date_high) == (
        _at(1950, 3, 2, zone=ZONE), _at(1950, 3, 3, zone=ZONE) - 1
    )


def test_references_keep_type_and_id_and_respect_the_targets() -> None:
    obs = weight("p1")
    obs["subject"] = {"reference": "https://ehr.example.org/fhir/Group/g1"}
    obs["device"] = {"reference": "Device/d1"}
    index = _index(obs)
    # `patient` can only point at a Patient; `subject` at anything
    assert index.references == [("subject", "Group", "g1"), ("device", "Device", "d1")]
    assert index.patient_id is None
    obs["subject"] = {"reference": "#contained"}
    obs["device"] = {"display": "a scale, no reference"}
    assert _index(obs).references == []


def test_a_versioned_reference_names_its_resource_and_its_compartment() -> None:
    """``Patient/p1/_history/2`` (a reference to one version) is still Patient p1: indexed,
    searchable and in p1's compartment. (The telemonitoring profiles refuse a versioned
    ``subject`` with a 422; other references and profile-free types may carry one.)"""
    obs = weight("p1")
    obs["subject"] = {"reference": "Patient/p1/_history/2"}
    index = _index(obs)
    assert index.references == [("patient", "Patient", "p1"), ("subject", "Patient", "p1")]
    assert index.patient_id == "p1"
    obs["subject"] = {"reference": "https://ehr.example.org/fhir/Patient/p9/_history/1"}
    assert _index(obs).patient_id == "p9"
    assert split_reference("Patient/p1/_history/") is None
    assert split_reference("_history/2") is None
    assert split_reference("Patient/p1/_history/2#x") is None


def test_a_device_is_in_its_patients_compartment() -> None:
    index = _index(device("p3", serial="s-1"))
    assert index.references == [("patient", "Patient", "p3")]
    assert index.patient_id == "p3"
    assert index.tokens == [("identifier", "urn:telemon:serial", "s-1"), ("status", None, "active")]


def test_flag_extensions_are_indexed_by_url() -> None:
    alert = flag("p1", code="HF-WEIGHT-3D")
    alert["period"] = {"start": "2026-03-01T08:00:00Z"}
    alert["extension"] = [
        {
            "url": "http://hl7.org/fhir/StructureDefinition/flag-detail",
            "valueReference": {"reference": "Observation/o1"},
        },
        {
            "url": "http://telemon.example.org/fhir/StructureDefinition/alert-programme",
            "valueCanonical": "http://telemon.example.org/fhir/PlanDefinition/HF",
        },
        {"url": "http://example.org/other", "valueReference": {"reference": "Observation/o2"}},
    ]
    index = _index(alert)
    assert sorted(index.references) == [
        ("detail", "Observation", "o1"),
        ("patient", "Patient", "p1"),
        ("programme", "PlanDefinition", "HF"),
        ("subject", "Patient", "p1"),
    ]
    assert (index.date_low, index.date_high) == (_at(2026, 3, 1, 8), OPEN)


def test_long_values_are_cut_to_the_index_key_that_searches_use() -> None:
    obs = weight("p1")
    long = "x" * 300
    obs["identifier"] = [{"system": long, "value": long}]
    obs["valueQuantity"] = quantity(1.0, "kg") | {"code": "u" * 100}
    index = _index(obs)
    (ident,) = [t for t in index.tokens if t[0] == "identifier"]
    assert ident == ("identifier", index_key(long, WIDE_KEY), index_key(long, WIDE_KEY))
    assert len(ident[2]) == WIDE_KEY and ident[2] != long[:WIDE_KEY]
    ((_, _, _, unit),) = index.quantities
    assert unit is not None and len(unit) == 64
