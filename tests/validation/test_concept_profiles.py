"""The profiles in fhir_profiles/ agree with the concept table (service/core/concepts.py).

The code and unit ValueSets are the table's (written by ``python -m
service.validation.value_sets``), the StructureDefinitions' plausibility ranges and canonical
units are the table's, and every code of the table selects its concept's profile in the
validator: an implausible value under any of them is refused.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from service.core import concepts
from service.core.concepts import Code, Concept
from service.validation import ProfileValidator
from service.validation.value_sets import render, value_sets

PROFILES_DIR = Path(__file__).resolve().parents[2] / "fhir_profiles"
WHEN = "2024-06-01T10:00:00+02:00"


def _sd(profile: str) -> dict[str, Any]:
    path = PROFILES_DIR / f"StructureDefinition-{profile}.json"
    loaded: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return loaded


def _elements(sd: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["id"]: e for e in sd["differential"]["element"]}


def test_the_value_sets_are_written_from_the_table() -> None:
    for name, value_set in value_sets().items():
        path = PROFILES_DIR / name
        assert path.exists(), f"{name} is missing: run python -m service.validation.value_sets"
        assert path.read_text(encoding="utf-8") == render(value_set), (
            f"{name} differs from the concept table: run python -m service.validation.value_sets"
        )


def test_every_code_value_set_of_the_profiles_is_the_tables() -> None:
    written = {vs["url"] for vs in value_sets().values()}
    for path in PROFILES_DIR.glob("StructureDefinition-*.json"):
        for element in json.loads(path.read_text())["differential"]["element"]:
            if "binding" in element:
                assert element["binding"]["valueSet"] in written, (path.name, element["id"])


@pytest.mark.parametrize("concept", list(concepts.vital_signs()), ids=lambda c: c.key)
def test_the_profiles_ranges_and_units_are_the_tables(concept: Concept) -> None:
    assert concept.profile is not None and concept.plausible is not None
    prefixes = ["Observation"]
    if concept.key in ("sbp", "dbp"):  # also the panel's slice
        slice_name = {"sbp": "systolic", "dbp": "diastolic"}[concept.key]
        prefixes.append(f"Observation.component:{slice_name}")
    for sd, prefix in [(_sd(concept.profile), "Observation")] + [
        (_sd(concepts.BLOOD_PRESSURE.profile), p) for p in prefixes[1:]
    ]:
        quantity = _elements(sd)[f"{prefix}.valueQuantity"]
        low, high = quantity["minValueQuantity"], quantity["maxValueQuantity"]
        assert (low["value"], high["value"]) == concept.plausible, sd["id"]
        assert low["code"] == high["code"] == concept.unit, sd["id"]


def test_the_table_is_one_concept_per_code() -> None:
    owners = Counter(
        code.key for owner in (*concepts.CONCEPTS, *concepts.PANELS) for code in owner.codes
    )
    assert [key for key, count in owners.items() if count > 1] == []
    for concept in concepts.CONCEPTS:
        assert concept.codes and all(c.display and c.source for c in concept.codes), concept.key
        if concept.value == "Quantity":
            assert concept.unit_of(concept.unit) is not None, concept.key  # canonical accepted


def _vital_codes() -> list[tuple[Concept, Code]]:
    return [(c, code) for c in concepts.vital_signs() for code in c.codes]


def _implausible(concept: Concept) -> float:
    assert concept.plausible is not None
    return concept.plausible[1] + 1


@pytest.mark.parametrize(
    ("concept", "code"), _vital_codes(), ids=[f"{c.key}-{code.code}" for c, code in _vital_codes()]
)
def test_every_vital_sign_code_selects_its_profile(
    profiles: ProfileValidator, now: datetime, concept: Concept, code: Code
) -> None:
    """Stand-alone, and (blood pressure) as a component of the panel: the range is enforced."""
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [code.coding()]},
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": WHEN,
        "valueQuantity": {
            "value": _implausible(concept),
            "system": concepts.UCUM,
            "code": concept.unit,
        },
    }
    issues = profiles.validate(resource, now=now)
    assert [i.expression for i in issues] == [("Observation.valueQuantity.value",)]
    assert "outside the plausible range" in issues[0].diagnostics
    resource["valueQuantity"]["value"] = sum(concept.plausible or (0, 0)) / 2
    assert profiles.validate(resource, now=now) == []
    if concept.key in ("sbp", "dbp"):
        other = {"sbp": ("8462-4", 60.0), "dbp": ("8480-6", 250.0)}[concept.key]
        panel = {
            **resource,
            "code": {"coding": [concepts.BLOOD_PRESSURE.codes[0].coding()]},
            "component": [
                {"code": {"coding": [code.coding()]}, "valueQuantity": resource["valueQuantity"]},
                {
                    "code": {"coding": [{"system": concepts.LOINC, "code": other[0]}]},
                    "valueQuantity": {**resource["valueQuantity"], "value": other[1]},
                },
            ],
        }
        del panel["valueQuantity"]
        assert profiles.validate(panel, now=now) == []  # the component fills its slice


@pytest.mark.parametrize("code", concepts.BLOOD_PRESSURE.codes, ids=lambda c: c.code)
def test_every_panel_code_needs_its_components(
    profiles: ProfileValidator, now: datetime, code: Code
) -> None:
    resource = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [code.coding()]},
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": WHEN,
    }
    messages = [i.diagnostics for i in profiles.validate(resource, now=now)]
    assert any("systolic" in m.lower() for m in messages), messages
    assert any("diastolic" in m.lower() for m in messages), messages


def test_a_weight_in_pounds_is_checked_in_kilograms(
    profiles: ProfileValidator, now: datetime
) -> None:
    """The HL7 example's 185 [lb_av] is 83.9 kg; 800 [lb_av] (362.9 kg) is implausible."""
    resource = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": concepts.LOINC, "code": "29463-7"}]},
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": WHEN,
        "valueQuantity": {"value": 185, "system": concepts.UCUM, "code": "[lb_av]"},
    }
    assert profiles.validate(resource, now=now) == []
    resource["valueQuantity"]["value"] = 800
    (issue,) = profiles.validate(resource, now=now)
    assert "(= 362.9 kg)" in issue.diagnostics
