"""The code and unit ValueSets of ``fhir_profiles/``, written from the concept table.

The profile validator reads which codes select a profile, and which units it accepts, from these
ValueSets (as it reads everything else from the StructureDefinitions). They are written from
:mod:`service.core.concepts`, so that the validator, the alert engine and the dashboard agree on
what each code means; a test fails when the files and the table differ. After a change to
the table::

    .venv/bin/python -m service.validation.value_sets      # rewrites fhir_profiles/ValueSet-*
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from service.core.concepts import BLOOD_PRESSURE, UCUM, Code, Concept, Panel, Unit, vital_signs

CANONICAL_BASE = "http://telemon.example.org/fhir"
VERSION = "0.2.0"
DATE = "2026-12-07"
PROFILES_DIR = Path(__file__).resolve().parents[2] / "fhir_profiles"


def codes_id(owner: Concept | Panel) -> str:
    """The id of the ValueSet listing the codes of a vital sign or a panel."""
    return f"{owner.profile}-codes"


def units_id(concept: Concept) -> str:
    """The id of the ValueSet listing a vital sign's units (blood pressure: one for both)."""
    if concept.key in BLOOD_PRESSURE.components and concept.unit == "mm[Hg]":
        return f"{BLOOD_PRESSURE.profile}-units"
    return f"{concept.profile}-units"


def url(value_set_id: str) -> str:
    """The canonical URL of one of telemon's ValueSets."""
    return f"{CANONICAL_BASE}/ValueSet/{value_set_id}"


def _value_set(
    vs_id: str, title: str, description: str, system: str, concepts: list[dict[str, str]]
) -> dict[str, Any]:
    name = "".join(part.capitalize() for part in vs_id.split("-"))
    return {
        "resourceType": "ValueSet",
        "id": vs_id,
        "url": url(vs_id),
        "version": VERSION,
        "name": name,
        "title": title,
        "status": "active",
        "experimental": False,
        "date": DATE,
        "publisher": "telemon",
        "description": description,
        "compose": {"include": [{"system": system, "concept": concepts}]},
    }


def _codes(owner: Concept | Panel, what: str) -> dict[str, Any]:
    systems = {c.system for c in owner.codes}
    if len(systems) != 1:
        raise ValueError(f"{owner.key}: codes from more than one system")
    return _value_set(
        codes_id(owner),
        f"{owner.title} codes",
        f"Codes telemon reads as {what} (written from the concept table, service/core/concepts.py; "
        "sources in docs/measurements.md).",
        systems.pop(),
        [_concept(c) for c in owner.codes],
    )


def _concept(code: Code) -> dict[str, str]:
    return {"code": code.code, "display": code.display}


def _unit(unit: Unit) -> dict[str, str]:
    return {"code": unit.code, "display": unit.display}


def value_sets() -> dict[str, dict[str, Any]]:
    """File name → ValueSet, for every code and unit ValueSet the profiles bind to."""
    found: dict[str, dict[str, Any]] = {}
    for concept in vital_signs():
        vs = _codes(concept, concept.title.lower())
        found[f"ValueSet-{vs['id']}.json"] = vs
        units_vs = units_id(concept)
        shared = units_vs != f"{concept.profile}-units"
        title = "Blood pressure" if shared else concept.title
        units = _value_set(
            units_vs,
            f"{title} units",
            f"UCUM units accepted for {title.lower()}, converted to {concept.unit}"
            + ("; '1' means a fraction 0-1." if concept.unit_of("1") else "."),
            UCUM,
            [_unit(u) for u in concept.units],
        )
        found[f"ValueSet-{units_vs}.json"] = units
    panel = _codes(BLOOD_PRESSURE, "a blood-pressure panel (systolic and diastolic components)")
    found[f"ValueSet-{panel['id']}.json"] = panel
    return found


def render(value_set: dict[str, Any]) -> str:
    """A ValueSet as the JSON text of its file."""
    return json.dumps(value_set, indent=2, ensure_ascii=False) + "\n"


def write(directory: Path = PROFILES_DIR) -> list[str]:
    """Write the ValueSets into ``directory``; the names of the files that changed."""
    changed = []
    for name, value_set in sorted(value_sets().items()):
        path = directory / name
        text = render(value_set)
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            changed.append(name)
    return changed


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else PROFILES_DIR
    for changed_name in write(target):
        print(f"wrote {target / changed_name}")
