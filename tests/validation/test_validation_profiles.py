"""telemon profile rules (422): subject, effective[x], units, plausibility, BP, BSN, loading."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from service.core.outcome import Issue
from service.validation import BSN_SYSTEM, ProfileValidator
from service.validation.profile_compiler import CANONICAL_BASE, ProfileLoadError

SD = f"{CANONICAL_BASE}/StructureDefinition/"
PROFILES_DIR = Path(__file__).resolve().parents[2] / "fhir_profiles"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
ObsFactory = Callable[..., dict[str, Any]]  # the ``obs`` and ``bp`` fixtures of conftest.py


def quantity(value: float, unit: str) -> dict[str, Any]:
    return {"value": value, "unit": unit, "system": UCUM, "code": unit}


def only(issues: list[Issue]) -> tuple[str, str]:
    """The single issue's expression and message."""
    assert len(issues) == 1, issues
    assert len(issues[0].expression) == 1
    return issues[0].expression[0], issues[0].diagnostics


def check(profiles: ProfileValidator, resource: dict[str, Any], now: datetime) -> list[Issue]:
    return profiles.validate(resource, now=now, clock_skew_seconds=300)


# --- loading and serving


def test_profile_urls(profiles: ProfileValidator) -> None:
    urls = profiles.profile_urls()
    assert urls["Patient"] == [f"{SD}telemon-patient"]
    for name in ("bodyweight", "bloodpressure", "heartrate", "oxygensat", "resprate", "bodytemp"):
        assert f"{SD}telemon-{name}" in urls["Observation"]


def test_conformance_resources_are_every_json_file(profiles: ProfileValidator) -> None:
    resources = profiles.conformance_resources()
    assert len(resources) == len(list(PROFILES_DIR.glob("*.json")))
    kinds = {r["resourceType"] for r in resources}
    assert {"StructureDefinition", "ValueSet"} <= kinds


def test_structure_definitions_are_proper(profiles: ProfileValidator) -> None:
    for sd in profiles.conformance_resources():
        if sd["resourceType"] == "StructureDefinition":
            assert sd["url"] == f"{SD}{sd['id']}"
            assert sd["derivation"] == "constraint"
            assert sd["kind"] == "resource"
            assert sd["baseDefinition"].startswith("http://hl7.org/fhir/StructureDefinition/")


def edited_copy(tmp_path: Path, name: str, edit: Any) -> Path:
    target = tmp_path / "profiles"
    shutil.copytree(PROFILES_DIR, target)
    path = target / name
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    return target


def test_files_are_the_source_of_truth(tmp_path: Path, obs: ObsFactory, now: datetime) -> None:
    def raise_limit(sd: dict[str, Any]) -> None:
        for element in sd["differential"]["element"]:
            if element["id"] == "Observation.valueQuantity":
                element["maxValueQuantity"]["value"] = 400

    edited = ProfileValidator.load(
        edited_copy(tmp_path, "StructureDefinition-telemon-bodyweight.json", raise_limit)
    )
    assert edited.validate(obs("29463-7", 380, "kg"), now=now) == []


def test_unknown_invariant_key_fails_loading(tmp_path: Path) -> None:
    def add_key(sd: dict[str, Any]) -> None:
        sd["differential"]["element"][0]["constraint"].append(
            {"key": "tm-nope", "severity": "error", "human": "x", "expression": "true"}
        )

    with pytest.raises(ProfileLoadError, match="tm-nope"):
        ProfileValidator.load(
            edited_copy(tmp_path, "StructureDefinition-telemon-bodyweight.json", add_key)
        )


def test_unit_without_conversion_fails_loading(tmp_path: Path) -> None:
    def add_unit(vs: dict[str, Any]) -> None:
        vs["compose"]["include"][0]["concept"].append({"code": "[stone_av]"})

    with pytest.raises(ProfileLoadError, match="stone"):
        ProfileValidator.load(
            edited_copy(tmp_path, "ValueSet-telemon-bodyweight-units.json", add_unit)
        )


def test_invalid_conformance_file_fails_loading(tmp_path: Path) -> None:
    def break_it(vs: dict[str, Any]) -> None:
        vs["stauts"] = "active"

    with pytest.raises(
        ProfileLoadError, match=r"(?s)ValueSet-telemon-bodytemp-units\.json.*stauts"
    ):
        ProfileValidator.load(
            edited_copy(tmp_path, "ValueSet-telemon-bodytemp-units.json", break_it)
        )


# --- every Observation: subject and effective[x]


def test_valid_weight(profiles: ProfileValidator, obs: ObsFactory, now: datetime) -> None:
    assert check(profiles, obs("29463-7", 80, "kg"), now) == []


def test_observation_without_vital_sign_code_gets_the_base_rules(
    profiles: ProfileValidator, obs: ObsFactory, now: datetime
) -> None:
    nyha = obs("88020-3", valueCodeableConcept={"text": "II"})
    assert check(profiles, nyha, now) == []
    del nyha["subject"]
    assert only(check(profiles, nyha, now))[0] == "Observation.subject"


@pytest.mark.parametrize(
    ("subject", "message"),
    [
        (None, "subject is required"),
        ({"reference": "#p"}, "must not be a contained resource"),
        ({"reference": "Group/g1"}, "Patient/<id>"),
        ({"reference": "http://other/fhir/Patient/1"}, "Patient/<id>"),
        ({"reference": "Patient/1/_history/2"}, "Patient/<id>"),
        ({"identifier": {"system": BSN_SYSTEM, "value": "123456782"}}, "literal reference"),
    ],
)
def test_subject(
    profiles: ProfileValidator, obs: ObsFactory, now: datetime, subject: Any, message: str
) -> None:
    expression, diagnostics = only(check(profiles, obs("29463-7", 80, "kg", subject=subject), now))
    assert expression == "Observation.subject"
    assert message in diagnostics


def test_effective_required(profiles: ProfileValidator, obs: ObsFactory, now: datetime) -> None:
    issues = check(profiles, obs("29463-7", 80, "kg", effectiveDateTime=None), now)
    assert only(issues)[0] == "Observation.effective[x]"
    assert issues[0].code == "required"


@pytest.mark.parametrize(
    ("effective", "ok"),
    [
        ("2024-06-01T12:05:00Z", True),  # exactly now + skew
        ("2024-06-01T12:05:01Z", False),
        ("2024-06-01T14:04:59+02:00", True),
        ("2024-06-01T14:05:01+02:00", False),
        ("2024-06-01", True),  # a local date that has begun somewhere
        ("2024-06-02", True),  # already 2 June at UTC+14
        ("2024-06-03", False),
        ("2025", False),
        # Real histories go in, at any FHIR precision (without an offset when there is no time).
        ("1999-12-31T23:59:59Z", True),
        ("1965-03-01T10:00:00+01:00", True),
        ("1999-07-02", True),
        ("2016-03", True),
        ("1999", True),
        ("2000-01-01", True),  # a date alone is no device clock
        ("2000-01-02T08:00:00+01:00", True),
        # A device clock that was never set: a time on its epoch day, as written or in UTC.
        ("2000-01-01T00:00:00Z", False),
        ("2000-01-01T00:30:00+01:00", False),
        ("1970-01-01T00:00:00Z", False),
        ("1969-12-31T23:30:00-01:00", False),
        ("1970-01-01T00:03:12.345+00:00", False),
    ],
)
def test_effective_datetime_window(
    profiles: ProfileValidator, obs: ObsFactory, now: datetime, effective: str, ok: bool
) -> None:
    issues = check(profiles, obs("29463-7", 80, "kg", effectiveDateTime=effective), now)
    if ok:
        assert issues == []
    else:
        assert only(issues)[0] == "Observation.effectiveDateTime"


def test_effective_instant_is_checked_too(
    profiles: ProfileValidator, obs: ObsFactory, now: datetime
) -> None:
    nyha = obs("88020-3", valueCodeableConcept={"text": "II"}, effectiveDateTime=None)
    nyha["effectiveInstant"] = "2030-01-01T00:00:00Z"
    assert only(check(profiles, nyha, now)) == (
        "Observation.effectiveInstant",
        "'2030-01-01T00:00:00Z' lies in the future",
    )


def test_vital_signs_do_not_allow_instant(
    profiles: ProfileValidator, obs: ObsFactory, now: datetime
) -> None:
    weight = obs("29463-7", 80, "kg", effectiveDateTime=None)
    weight["effectiveInstant"] = "2024-06-01T10:00:00Z"
    expression, message = only(check(profiles, weight, now))
    assert expression == "Observation.effectiveInstant"
    assert "effectiveDateTime" in message


def test_effective_timing_is_not_allowed(
    profiles: ProfileValidator, obs: ObsFactory, now: datetime
) -> None:
    nyha = obs("88020-3", valueCodeableConcept={"text": "II"}, effectiveDateTime=None)
    nyha["effectiveTiming"] = {"event": ["2024-06-01T10:00:00Z"]}
    assert only(check(profiles, nyha, now))[0] == "Observation.effectiveTiming"


@pytest.mark.parametrize(
    ("period", "expression", "message"),
    [
        ({"start": "2024-06-01T10:00:00"}, "Observation.effectivePeriod.start", "no timezone"),
        ({"end": "2024-06-01T10:00:00"}, "Observation.effectivePeriod.end", "no timezone"),
        ({"start": "2030-06-01T10:00:00Z"}, "Observation.effectivePeriod.start", "future"),
        ({"end": "2030-06-01T10:00:00Z"}, "Observation.effectivePeriod.end", "future"),
        ({"start": "1970-01-01T00:10:00Z"}, "Observation.effectivePeriod.start", "never set"),
        (
            {"start": "2024-06-01T10:00:00Z", "end": "2024-06-01T09:00:00Z"},
            "Observation.effectivePeriod",
            "per-1",
        ),
        ({"id": "x"}, "Observation.effectivePeriod", "start or an end"),
    ],
)
def test_effective_period(
    profiles: ProfileValidator,
    obs: ObsFactory,
    now: datetime,
    period: dict[str, str],
    expression: str,
    message: str,
) -> None:
    resource = obs("29463-7", 80, "kg", effectiveDateTime=None, effectivePeriod=period)
    found_expression, diagnostics = only(check(profiles, resource, now))
    assert found_expression == expression
    assert message in diagnostics


def test_valid_period(profiles: ProfileValidator, obs: ObsFactory, now: datetime) -> None:
    period = {"start": "2024-06-01T09:00:00+02:00", "end": "2024-06-01T09:10:00+02:00"}
    resource = obs("29463-7", 80, "kg", effectiveDateTime=None, effectivePeriod=period)
    assert check(profiles, resource, now) == []


def test_default_now_is_the_clock(profiles: ProfileValidator, obs: ObsFactory) -> None:
    assert profiles.validate(obs("29463-7", 80, "kg")) == []
    future = obs("29463-7", 80, "kg", effectiveDateTime="2999-01-01T00:00:00Z")
    assert only(profiles.validate(future))[0] == "Observation.effectiveDateTime"


def test_clock_skew_is_configurable(
    profiles: ProfileValidator, obs: ObsFactory, now: datetime
) -> None:
    resource = obs("29463-7", 80, "kg", effectiveDateTime="2024-06-01T12:20:00Z")
    assert profiles.validate(resource, now=now, clock_skew_seconds=1800) == []
    assert profiles.validate(resource, now=now, clock_skew_seconds=300) != []


# --- vital signs: units and plausibility

VALUE = "Observation.valueQuantity.value"
CASES = [
    # body weight 20-350 kg
    ("29463-7", 20, "kg", True),
    ("29463-7", 19.9, "kg", False),
    ("29463-7", 350, "kg", True),
    ("29463-7", 350.1, "kg", False),
    ("29463-7", 700, "kg", False),
    ("3141-9", 19.9, "kg", False),
    ("3141-9", 80, "kg", True),
    ("29463-7", 80000, "g", True),
    ("29463-7", 19999, "g", False),
    ("29463-7", 176.4, "[lb_av]", True),
    ("29463-7", 772, "[lb_av]", False),  # 350.2 kg
    # heart rate 20-250 /min
    ("8867-4", 20, "/min", True),
    ("8867-4", 19, "/min", False),
    ("8867-4", 250, "{beats}/min", True),
    ("8867-4", 251, "{beats}/min", False),
    ("8867-4", 0, "/min", False),
    # SpO2 50-100 %, or a fraction with unit 1
    ("2708-6", 50, "%", True),
    ("2708-6", 49, "%", False),
    ("2708-6", 100, "%", True),
    ("2708-6", 100.1, "%", False),
    ("2708-6", 150, "%", False),
    ("2708-6", 0.95, "%", False),
    ("2708-6", 0.95, "1", True),
    ("2708-6", 1, "1", True),
    ("2708-6", 0, "1", False),
    ("59408-5", 97, "%", True),
    ("59417-6", 0.4, "1", False),
    # respiratory rate 4-60 /min
    ("9279-1", 4, "/min", True),
    ("9279-1", 3, "/min", False),
    ("76528-9", 60, "{breaths}/min", True),
    ("76528-9", 61, "{breaths}/min", False),
    # body temperature 30-43 Cel
    ("8310-5", 30.0, "Cel", True),
    ("8310-5", 29.9, "Cel", False),
    ("8310-5", 43.0, "Cel", True),
    ("8310-5", 43.1, "Cel", False),
    ("8310-5", 98.6, "Cel", False),
    ("8310-5", 98.6, "[degF]", True),
    ("8310-5", 110, "[degF]", False),
    # stand-alone systolic 50-300 and diastolic 20-200 mm[Hg]
    ("8480-6", 50, "mm[Hg]", True),
    ("8480-6", 49, "mm[Hg]", False),
    ("8480-6", 301, "mm[Hg]", False),
    ("8480-6", 16, "kPa", True),
    ("8462-4", 20, "mm[Hg]", True),
    ("8462-4", 19, "mm[Hg]", False),
    ("8462-4", 200, "mm[Hg]", True),
    ("8462-4", 201, "mm[Hg]", False),
]


@pytest.mark.parametrize(("code", "value", "unit", "ok"), CASES)
def test_plausibility(
    profiles: ProfileValidator,
    obs: ObsFactory,
    now: datetime,
    code: str,
    value: float,
    unit: str,
    ok: bool,
) -> None:
    issues = check(profiles, obs(code, value, unit), now)
    if ok:
        assert issues == []
    else:
        expression, message = only(issues)
        assert expression == VALUE
        assert "outside the plausible range" in message
        assert issues[0].code == "value"


def test_fahrenheit_in_celsius_hint(
    profiles: ProfileValidator, obs: ObsFactory, now: datetime
) -> None:
    _, message = only(check(profiles, obs("8310-5", 98.6, "Cel"), now))
    assert message == (
        "Body temperature 98.6 Cel is outside the plausible range 30-43 Cel; "
        "was the unit meant to be '[degF]'?"
    )


def test_fraction_as_percent_hint(
    profiles: ProfileValidator, obs: ObsFactory, now: datetime
) -> None:
    _, message = only(check(profiles, obs("2708-6", 0.95, "%"), now))
    assert "was the unit meant to be '1'?" in message


def test_converted_value_is_shown(
    profiles: ProfileValidator, obs: ObsFactory, now: datetime
) -> None:
    _, message = only(check(profiles, obs("29463-7", 772, "[lb_av]"), now))
    assert "772 [lb_av] (= 350.2 kg)" in message


@pytest.mark.parametrize(
    ("code", "unit"),
    [("29463-7", "lbs"), ("29463-7", "kg "), ("8867-4", "bpm"), ("2708-6", "%O2"), ("8310-5", "C")],
)
def test_unit_not_in_value_set(
    profiles: ProfileValidator, obs: ObsFactory, now: datetime, code: str, unit: str
) -> None:
    expression, message = only(check(profiles, obs(code, 80, unit), now))
    assert expression == "Observation.valueQuantity.code"
    assert f"'{unit}' is not allowed" in message


def test_unit_missing(profiles: ProfileValidator, obs: ObsFactory, now: datetime) -> None:
    resource = obs("29463-7", valueQuantity={"value": 80, "unit": "kg"})
    found = {i.expression[0]: i.diagnostics for i in check(profiles, resource, now)}
    assert set(found) == {"Observation.valueQuantity.code", "Observation.valueQuantity.system"}
    assert "Unit missing" in found["Observation.valueQuantity.code"]


def test_non_ucum_system(profiles: ProfileValidator, obs: ObsFactory, now: datetime) -> None:
    resource = obs(
        "29463-7", valueQuantity={"value": 80, "system": "http://example.org", "code": "kg"}
    )
    assert only(check(profiles, resource, now)) == (
        "Observation.valueQuantity.system",
        "Quantity.system must be http://unitsofmeasure.org (UCUM)",
    )


def test_quantity_without_value(profiles: ProfileValidator, obs: ObsFactory, now: datetime) -> None:
    resource = obs("29463-7", valueQuantity={"system": UCUM, "code": "kg"})
    assert only(check(profiles, resource, now))[0] == VALUE


def test_value_or_data_absent_reason(
    profiles: ProfileValidator, obs: ObsFactory, now: datetime
) -> None:
    missing = obs("8867-4")
    expression, message = only(check(profiles, missing, now))
    assert expression == "Observation.valueQuantity"
    assert "dataAbsentReason" in message
    absent = obs("8867-4", dataAbsentReason={"text": "cuff error"})
    assert check(profiles, absent, now) == []


def test_value_and_data_absent_reason_obs6(
    profiles: ProfileValidator, obs: ObsFactory, now: datetime
) -> None:
    both = obs("8867-4", 70, "/min", dataAbsentReason={"text": "cuff error"})
    assert only(check(profiles, both, now))[0] == "Observation.dataAbsentReason"


def test_vital_sign_must_be_quantity(
    profiles: ProfileValidator, obs: ObsFactory, now: datetime
) -> None:
    resource = obs("29463-7", valueString="80 kg")
    expression, message = only(check(profiles, resource, now))
    assert expression == "Observation.valueString"
    assert "valueQuantity" in message


def test_code_selects_the_profile_by_system(
    profiles: ProfileValidator, obs: ObsFactory, now: datetime
) -> None:
    other_system = obs(
        "29463-7", 700, "kg", code={"coding": [{"system": "urn:x", "code": "29463-7"}]}
    )
    assert check(profiles, other_system, now) == []


def test_claimed_profile_must_match_the_code(
    profiles: ProfileValidator, obs: ObsFactory, now: datetime
) -> None:
    claimed = obs("8867-4", 70, "/min", meta={"profile": [f"{SD}telemon-bodyweight|0.1.0"]})
    found = {i.expression[0]: i.diagnostics for i in check(profiles, claimed, now)}
    assert "29463-7" in found["Observation.code"]


# --- blood pressure panel


def test_valid_bp(profiles: ProfileValidator, bp: ObsFactory, now: datetime) -> None:
    assert check(profiles, bp(120, 80), now) == []
    assert check(profiles, bp(16, 10.7, unit="kPa"), now) == []


@pytest.mark.parametrize(
    ("sbp", "dbp", "expressions"),
    [
        (
            80,
            80,
            [
                "Observation.component[0].valueQuantity.value",
                "Observation.component[1].valueQuantity.value",
            ],
        ),
        (
            80,
            90,
            [
                "Observation.component[0].valueQuantity.value",
                "Observation.component[1].valueQuantity.value",
            ],
        ),
        (49, 30, ["Observation.component[0].valueQuantity.value"]),
        (301, 80, ["Observation.component[0].valueQuantity.value"]),
        (120, 19, ["Observation.component[1].valueQuantity.value"]),
        (250, 201, ["Observation.component[1].valueQuantity.value"]),
    ],
)
def test_bp_rejections(
    profiles: ProfileValidator,
    bp: ObsFactory,
    now: datetime,
    sbp: float,
    dbp: float,
    expressions: list[str],
) -> None:
    issues = check(profiles, bp(sbp, dbp), now)
    assert len(issues) == 1
    assert list(issues[0].expression) == expressions


def test_bp_boundaries(profiles: ProfileValidator, bp: ObsFactory, now: datetime) -> None:
    assert check(profiles, bp(50, 20), now) == []
    assert check(profiles, bp(300, 200), now) == []
    assert check(profiles, bp(81, 80), now) == []


def test_bp_component_missing(profiles: ProfileValidator, bp: ObsFactory, now: datetime) -> None:
    panel = bp(120, 80)
    panel["component"] = panel["component"][:1]
    expression, message = only(check(profiles, panel, now))
    assert expression == "Observation.component"
    assert "8462-4" in message


def test_bp_component_twice(profiles: ProfileValidator, bp: ObsFactory, now: datetime) -> None:
    panel = bp(120, 80)
    panel["component"].append(panel["component"][0])
    issues = check(profiles, panel, now)
    assert len(issues) == 1
    assert issues[0].expression == ("Observation.component[0]", "Observation.component[2]")


def test_bp_component_data_absent(
    profiles: ProfileValidator, bp: ObsFactory, now: datetime
) -> None:
    panel = bp(120, 80)
    del panel["component"][0]["valueQuantity"]
    expression, _ = only(check(profiles, panel, now))
    assert expression == "Observation.component[0].valueQuantity"
    panel["component"][0]["dataAbsentReason"] = {"text": "measurement failed"}
    assert check(profiles, panel, now) == []


def test_bp_component_unit(profiles: ProfileValidator, bp: ObsFactory, now: datetime) -> None:
    panel = bp(120, 80)
    panel["component"][1]["valueQuantity"] = quantity(80, "mmHg")
    expression, _ = only(check(profiles, panel, now))
    assert expression == "Observation.component[1].valueQuantity.code"


def test_bp_component_must_be_quantity(
    profiles: ProfileValidator, bp: ObsFactory, now: datetime
) -> None:
    panel = bp(120, 80)
    panel["component"][1] = {"code": panel["component"][1]["code"], "valueString": "80"}
    expression, _ = only(check(profiles, panel, now))
    assert expression == "Observation.component[1].valueString"


def test_bp_extra_components_are_open(
    profiles: ProfileValidator, bp: ObsFactory, now: datetime
) -> None:
    panel = bp(120, 80)
    panel["component"].append(
        {
            "code": {"coding": [{"system": LOINC, "code": "8478-0"}]},
            "valueQuantity": quantity(93, "mm[Hg]"),
        }
    )
    assert check(profiles, panel, now) == []


# --- BSN


def test_patient_bsn(profiles: ProfileValidator, now: datetime) -> None:
    patient = {
        "resourceType": "Patient",
        "identifier": [
            {"system": "urn:oid:1.2.3", "value": "123456789"},
            {"system": BSN_SYSTEM, "value": "123456782"},
            {"system": BSN_SYSTEM, "value": "123456789"},
        ],
    }
    expression, message = only(profiles.validate(patient, now=now))
    assert expression == "Patient.identifier[2].value"
    assert "123456789" not in message  # a BSN stays out of error messages and logs


def test_bsn_without_value(profiles: ProfileValidator, now: datetime) -> None:
    patient = {"resourceType": "Patient", "identifier": [{"system": BSN_SYSTEM}]}
    assert only(profiles.validate(patient, now=now))[0] == "Patient.identifier[0].value"


@pytest.mark.parametrize("rtype", ["Device", "Flag", "CarePlan"])
def test_bsn_on_any_resource_type(profiles: ProfileValidator, now: datetime, rtype: str) -> None:
    resource = {"resourceType": rtype, "identifier": [{"system": BSN_SYSTEM, "value": "11111111"}]}
    assert only(profiles.validate(resource, now=now))[0] == f"{rtype}.identifier[0].value"


def test_bsn_on_observation(profiles: ProfileValidator, obs: ObsFactory, now: datetime) -> None:
    resource = obs("29463-7", 80, "kg", identifier=[{"system": BSN_SYSTEM, "value": "1"}])
    assert only(check(profiles, resource, now))[0] == "Observation.identifier[0].value"


def test_incomplete_profile_fails_loading(tmp_path: Path) -> None:
    def drop_max(sd: dict[str, Any]) -> None:
        for element in sd["differential"]["element"]:
            element.pop("maxValueQuantity", None)

    with pytest.raises(ProfileLoadError, match="maxValueQuantity"):
        ProfileValidator.load(
            edited_copy(tmp_path, "StructureDefinition-telemon-heartrate.json", drop_max)
        )
