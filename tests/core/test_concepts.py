"""The concept table (service/core/concepts.py): lookups, conversions, and docs/measurements.md."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.core import concepts

DOC = Path(__file__).resolve().parents[2] / "docs" / "measurements.md"
SYSTEM_NAMES = {
    concepts.LOINC: "LOINC",
    concepts.SNOMED: "SNOMED CT",
    concepts.TELEMON_OBS: "telemon",
}


def test_a_code_means_its_concept_whichever_coding_carries_it() -> None:
    oral = {
        "coding": [
            {"system": "http://acme.lab", "code": "BT"},
            {"system": concepts.LOINC, "code": "8331-1"},
        ]
    }
    found = concepts.concept_of(oral)
    assert found is not None and found[0].key == "temp" and found[1] == "8331-1"
    assert concepts.concept_of({"coding": [{"system": concepts.SNOMED, "code": "8331-1"}]}) is None
    assert concepts.concept_of("not a CodeableConcept") is None
    panel = concepts.panel_of({"coding": [{"system": concepts.LOINC, "code": "55284-4"}]})
    assert panel is concepts.BLOOD_PRESSURE and panel.components == ("sbp", "dbp", "hr")


@pytest.mark.parametrize(
    ("concept", "value", "unit", "canonical"),
    [
        ("weight", 185, "[lb_av]", 83.91458845),
        ("weight", 80500, "g", 80.5),
        ("temp", 98.6, "[degF]", 37.0),
        ("sbp", 16, "kPa", 120.00992),
        ("spo2", 0.95, "1", 95.0),
        ("hr", 72, "{beats}/min", 72.0),
    ],
)
def test_units_convert_to_the_canonical_unit(
    concept: str, value: float, unit: str, canonical: float
) -> None:
    found = concepts.BY_KEY[concept].unit_of(unit)
    assert found is not None
    assert found.to_canonical(value) == pytest.approx(canonical)
    factor, offset = concepts.CONVERSIONS[(unit, concepts.BY_KEY[concept].unit)]
    assert value * factor + offset == pytest.approx(canonical)


def test_the_vital_signs_are_the_six_of_the_home_and_their_bp_parts() -> None:
    keys = [c.key for c in concepts.vital_signs()]
    assert keys == ["weight", "sbp", "dbp", "hr", "spo2", "rr", "temp"]
    assert all(c.profile for c in concepts.vital_signs())


def test_the_charts_draw_concepts_of_the_table() -> None:
    for chart in concepts.CHARTS:
        assert all(c in concepts.BY_KEY for c in chart.concepts), chart.key


def test_docs_measurements_lists_every_code_with_its_concept() -> None:
    text = DOC.read_text(encoding="utf-8")
    owners = (*concepts.CONCEPTS, *concepts.PANELS)
    for owner in owners:
        for code in owner.codes:
            row = f"| `{owner.key}` | {SYSTEM_NAMES[code.system]} `{code.code}` | {code.display} |"
            assert row in text, f"docs/measurements.md lacks {row}"
