"""FHIR Observation -> canonical measurements: codes, units, plausibility, context."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from service.alerts.measurements import ObservationError, from_observation
from tests.alerts.helpers import observation, qty


def test_weight_in_pounds_is_converted_and_original_kept() -> None:
    [w] = from_observation(observation("29463-7", qty(176.4, "[lb_av]")))
    assert w.concept == "weight"
    assert w.value == pytest.approx(80.014, abs=0.001)
    assert (w.original_value, w.original_unit) == (176.4, "[lb_av]")
    assert w.effective == datetime(2026, 11, 2, 7, 0, tzinfo=UTC)
    assert w.original_offset == timedelta(hours=1)


def test_weight_in_grams_and_vendor_code_3141_9() -> None:
    [w] = from_observation(observation("3141-9", qty(80500, "g")))
    assert (w.concept, w.value) == ("weight", 80.5)


def test_whitelisted_lbs_is_accepted_with_warning() -> None:
    [w] = from_observation(observation("29463-7", {"value": 200, "unit": "lbs", "code": "lbs"}))
    assert w.value == pytest.approx(90.718, abs=0.001)
    assert w.warning is not None and "lbs" in w.warning


def test_fahrenheit_is_converted() -> None:
    [t] = from_observation(observation("8310-5", qty(100.4, "[degF]")))
    assert t.value == pytest.approx(38.0)
    assert t.implausible is None


def test_fahrenheit_labelled_celsius_is_implausible_not_fever() -> None:
    [t] = from_observation(observation("8310-5", qty(98.6, "Cel")))
    assert t.value == 98.6
    assert t.implausible is not None and "Fahrenheit" in t.implausible
    assert not t.evaluable


def test_spo2_fraction_with_unit_1_becomes_percent() -> None:
    [s] = from_observation(observation("59408-5", qty(0.95, "1")))
    assert (s.concept, s.value, s.implausible) == ("spo2", 95.0, None)


def test_spo2_fraction_with_percent_is_implausible_not_rescaled() -> None:
    [s] = from_observation(observation("2708-6", qty(0.95, "%")))
    assert s.value == 0.95
    assert s.implausible is not None and "fraction" in s.implausible


def test_bp_panel_in_kpa_yields_sbp_and_dbp_in_mmhg() -> None:
    panel = observation(
        "85354-9",
        component=[
            {
                "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
                "valueQuantity": qty(16, "kPa"),
            },
            {
                "code": {"coding": [{"system": "http://loinc.org", "code": "8462-4"}]},
                "valueQuantity": qty(10.7, "kPa"),
            },
        ],
    )
    sbp, dbp = from_observation(panel)
    assert (sbp.concept, round(sbp.value)) == ("sbp", 120)
    assert (dbp.concept, round(dbp.value)) == ("dbp", 80)


def test_bp_panel_component_with_data_absent_reason_is_skipped() -> None:
    panel = observation(
        "85354-9",
        component=[
            {
                "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
                "dataAbsentReason": {"coding": [{"code": "error"}]},
            },
            {
                "code": {"coding": [{"system": "http://loinc.org", "code": "8462-4"}]},
                "valueQuantity": qty(80, "mm[Hg]"),
            },
        ],
    )
    [dbp] = from_observation(panel)
    assert (dbp.concept, dbp.value) == ("dbp", 80)


def test_reversed_bp_pair_is_implausible() -> None:
    panel = observation(
        "85354-9",
        component=[
            {
                "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
                "valueQuantity": qty(70, "mm[Hg]"),
            },
            {
                "code": {"coding": [{"system": "http://loinc.org", "code": "8462-4"}]},
                "valueQuantity": qty(90, "mm[Hg]"),
            },
        ],
    )
    assert all(m.implausible and "not above" in m.implausible for m in from_observation(panel))


def test_standalone_systolic_and_respiratory_variant() -> None:
    [sbp] = from_observation(observation("8480-6", qty(135, "mm[Hg]")))
    [rr] = from_observation(observation("76528-9", qty(22, "{breaths}/min")))
    assert (sbp.concept, sbp.value, rr.concept, rr.value) == ("sbp", 135, "rr", 22)


def test_supplemental_oxygen_component_is_read() -> None:
    o2 = {
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "266702001"}]},
        "valueBoolean": True,
    }
    [s] = from_observation(observation("2708-6", qty(91, "%"), component=[o2]))
    assert s.on_supplemental_oxygen is True


def test_unknown_unit_is_rejected() -> None:
    with pytest.raises(ObservationError, match="stone"):
        from_observation(observation("29463-7", qty(12, "stone")))


def test_time_without_offset_is_rejected() -> None:
    with pytest.raises(ObservationError, match="offset"):
        from_observation(
            observation("8867-4", qty(70, "/min"), effectiveDateTime="2026-11-02T08:00:00")
        )


def test_period_uses_end_and_identifier_device_are_kept() -> None:
    resource = observation(
        "8867-4",
        qty(70, "{beats}/min"),
        identifier=[{"system": "urn:dev", "value": "m-1"}],
        device={"reference": "Device/cuff-9"},
    )
    del resource["effectiveDateTime"]
    resource["effectivePeriod"] = {
        "start": "2026-11-02T08:00:00+01:00",
        "end": "2026-11-02T08:02:00+01:00",
    }
    [hr] = from_observation(resource)
    assert hr.effective == datetime(2026, 11, 2, 7, 2, tzinfo=UTC)
    assert (hr.identifier, hr.device) == ("urn:dev|m-1", "cuff-9")


def test_weight_700_kg_and_epoch_clock_are_implausible() -> None:
    [heavy] = from_observation(observation("29463-7", qty(700, "kg")))
    [epoch] = from_observation(
        observation("29463-7", qty(80, "kg"), effectiveDateTime="1970-01-01T00:00:00Z")
    )
    assert heavy.implausible is not None and "20-350" in heavy.implausible
    assert epoch.implausible is not None and "device clock never set" in epoch.implausible


def test_history_before_2000_is_plausible_and_only_an_unset_clock_is_not() -> None:
    times = {
        "1999-07-02": None,  # a date alone is an EHR's record, not a device clock
        "1999-07-02T08:00:00+02:00": None,
        "2000-01-01": None,
        "2000-01-01T00:42:10+01:00": "device clock never set",  # as written
        "1969-12-31T19:05:00-05:00": "device clock never set",  # 1970-01-01 in UTC
        "2000-01-02T09:00:00+01:00": None,
    }
    for effective, expected in times.items():
        [m] = from_observation(
            observation("29463-7", qty(80, "kg"), effectiveDateTime=effective)
        )
        assert (m.implausible and "device clock never set") == expected, effective


def test_nyha_and_symptom_answers_become_ordinals() -> None:
    nyha = observation(
        "88020-3",
        valueCodeableConcept={
            "coding": [{"system": "http://snomed.info/sct", "code": "420913000"}]
        },
    )
    [n] = from_observation(nyha)
    sym = observation(
        "x",
        valueCodeableConcept={"coding": [{"system": "http://snomed.info/sct", "code": "24484000"}]},
    )
    sym["code"] = {"coding": [{"system": "http://snomed.info/sct", "code": "404640003"}]}
    [s] = from_observation(sym)
    assert (n.concept, n.value) == ("nyha", 3)
    assert (s.concept, s.detail, s.value) == ("symptom", "404640003", 3)
