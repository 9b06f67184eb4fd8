"""Compiling telemon's profiles: ``fhir_profiles/`` into the rule objects the validator checks.

The StructureDefinitions and ValueSets in ``fhir_profiles/`` are the rules. :func:`load_profiles`
compiles the few constructs telemon uses from their differentials (code patterns and code
bindings, cardinalities, reference targets, allowed ``effective[x]`` types, UCUM unit bindings,
``min/maxValueQuantity``, component slices and ``tm-*`` invariant keys) into small frozen rule
objects, so that checking a resource (:mod:`service.validation.profiles`) only does dictionary
lookups and comparisons. Which codes mean which measurement, in which units, comes from the
concept table (:mod:`service.core.concepts`): the code and unit ValueSets are written from it
(:mod:`service.validation.value_sets`) and the unit conversions are its own.

Invariants are recognised by key, not by evaluating their FHIRPath: every ``tm-*`` key must be one
the compiler implements (see ``_INVARIANTS``), otherwise loading fails, so the files cannot promise
a rule the server does not enforce.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from service.core.concepts import CONVERSIONS

CANONICAL_BASE = "http://telemon.example.org/fhir"
UCUM_SYSTEM = "http://unitsofmeasure.org"

_HL7_SD = "http://hl7.org/fhir/StructureDefinition/"

_INVARIANTS = {
    "tm-value": "value[x] or dataAbsentReason required",
    "tm-comp-value": "component value[x] or dataAbsentReason required",
    "tm-bp-order": "systolic slice value above diastolic slice value",
    "tm-eff-future": "effective[x] not after now + clock skew",
    "tm-eff-clock": "effective[x] not a device clock that was never set",
    "tm-bsn": "BSN passes the 11-proef (checked for every resource type's identifier)",
}


class ProfileLoadError(Exception):
    """A conformance resource in the profiles directory is invalid or uses an unsupported rule."""


@dataclass(frozen=True, slots=True)
class QuantityRule:
    """Constraints on one Quantity: the Observation's own value or a component slice's."""

    label: str
    system: str | None
    units: tuple[str, ...]
    canonical: str
    low: float
    high: float
    value_required: bool

    def to_canonical(self, value: float, unit: str) -> float:
        """``value`` in ``unit`` converted to the rule's canonical unit."""
        factor, offset = CONVERSIONS.get((unit, self.canonical), (1.0, 0.0))
        return value * factor + offset


@dataclass(frozen=True, slots=True)
class SliceRule:
    """One component slice of a profile: which codes select it, how many, and its value."""

    name: str
    label: str
    code: tuple[str, str]  # the pattern's code (named in messages)
    codes: frozenset[tuple[str, str]]  # the pattern's and those of the code's ValueSet
    minimum: int
    maximum: int | None
    value_or_absent: bool
    quantity: QuantityRule | None


@dataclass(frozen=True, slots=True)
class Profile:
    """One compiled StructureDefinition: the rules it states for its resource type."""

    url: str
    resource_type: str
    pattern: tuple[tuple[str, str], ...]
    triggers: frozenset[tuple[str, str]]
    subject_required: bool = False
    subject_targets: frozenset[str] | None = None
    effective_required: bool = False
    effective_types: frozenset[str] | None = None
    value_types: frozenset[str] | None = None
    quantity: QuantityRule | None = None
    slices: tuple[SliceRule, ...] = ()
    invariants: frozenset[str] = field(default_factory=frozenset)


def load_profiles(profiles_dir: Path) -> tuple[list[Profile], list[dict[str, Any]]]:
    """Read every ``*.json`` conformance resource in ``profiles_dir`` and compile the profiles.

    Returns the compiled profiles and every resource read. Raises :class:`ProfileLoadError` for
    unreadable or invalid files and unsupported rules.
    """
    resources: list[dict[str, Any]] = []
    for path in sorted(profiles_dir.glob("*.json")):
        try:
            resource = json.loads(path.read_bytes())
            get_fhir_model_class(resource["resourceType"]).model_validate(resource)
        except (OSError, ValueError, KeyError, TypeError, ValidationError) as exc:
            raise ProfileLoadError(f"{path.name}: {exc}") from exc
        resources.append(resource)
    try:
        value_sets = {
            r["url"]: _value_set_codes(r) for r in resources if r["resourceType"] == "ValueSet"
        }
        profiles = [
            compile_profile(r, value_sets)
            for r in resources
            if r["resourceType"] == "StructureDefinition"
            and r.get("derivation") == "constraint"
            and r["url"].startswith(CANONICAL_BASE)
        ]
    except (KeyError, TypeError, ValueError) as exc:  # an element the compiler relies on
        raise ProfileLoadError(f"incomplete conformance resource: {exc!r}") from exc
    return profiles, resources


def _value_set_codes(value_set: dict[str, Any]) -> frozenset[tuple[str, str]]:
    """The (system, code) pairs a ValueSet enumerates; only explicit concept lists are supported."""
    codes: set[tuple[str, str]] = set()
    for include in value_set.get("compose", {}).get("include", []):
        if "concept" not in include or "filter" in include or "valueSet" in include:
            raise ProfileLoadError(f"ValueSet {value_set['url']}: only concept lists supported")
        codes.update((include["system"], c["code"]) for c in include["concept"])
    return frozenset(codes)


def compile_profile(
    sd: dict[str, Any], value_sets: dict[str, frozenset[tuple[str, str]]]
) -> Profile:
    """Compile one StructureDefinition's differential into a :class:`Profile`."""
    url: str = sd["url"]
    rtype: str = sd["type"]
    elements = {e["id"]: e for e in sd["differential"]["element"]}

    def fail(message: str) -> ProfileLoadError:
        return ProfileLoadError(f"{url}: {message}")

    invariants = set()
    for element in elements.values():
        for constraint in element.get("constraint", ()):
            key = constraint["key"]
            if key.startswith("tm-"):
                if key not in _INVARIANTS:
                    raise fail(f"invariant {key} is not implemented by the validator")
                invariants.add(key)

    def value_set(element: dict[str, Any], system: str) -> tuple[str, ...]:
        vs_url = element["binding"]["valueSet"]
        if vs_url not in value_sets:
            raise fail(f"ValueSet {vs_url} is not in the profiles directory")
        return tuple(sorted(code for sys, code in value_sets[vs_url] if sys == system))

    def quantity(prefix: str, label: str) -> QuantityRule | None:
        element = elements.get(f"{prefix}.valueQuantity")
        if element is None:
            return None
        low, high = element["minValueQuantity"], element["maxValueQuantity"]
        canonical = low["code"]
        if high["code"] != canonical:
            raise fail(f"{prefix}: min/maxValueQuantity use different units")
        system_el = elements.get(f"{prefix}.valueQuantity.system", {})
        units = value_set(elements[f"{prefix}.valueQuantity.code"], UCUM_SYSTEM)
        for unit in units:
            if unit != canonical and (unit, canonical) not in CONVERSIONS:
                raise fail(f"no conversion from UCUM '{unit}' to '{canonical}'")
        value_el = elements.get(f"{prefix}.valueQuantity.value", {})
        return QuantityRule(
            label=label,
            system=system_el.get("fixedUri"),
            units=units,
            canonical=canonical,
            low=float(low["value"]),
            high=float(high["value"]),
            value_required=value_el.get("min", 0) >= 1,
        )

    def pattern(element_id: str) -> tuple[tuple[str, str], ...]:
        concept = elements.get(element_id, {}).get("patternCodeableConcept", {})
        return tuple((c["system"], c["code"]) for c in concept.get("coding", ()))

    def codes_of(code_element: dict[str, Any]) -> frozenset[tuple[str, str]]:
        """The codes of the ValueSet a code element binds to (none without a binding)."""
        if "binding" not in code_element:
            return frozenset()
        vs_url = code_element["binding"]["valueSet"]
        if vs_url not in value_sets:
            raise fail(f"ValueSet {vs_url} is not in the profiles directory")
        return value_sets[vs_url]

    triggers = set(pattern(f"{rtype}.code"))
    if triggers:
        triggers |= codes_of(elements.get(f"{rtype}.code", {}))

    slices = []
    for element_id, element in elements.items():
        name = element.get("sliceName")
        if name is None or element["path"] != f"{rtype}.component":
            continue
        slice_pattern = pattern(f"{element_id}.code")
        if not slice_pattern:
            raise fail(f"slice {name} has no code pattern")
        slice_codes = set(slice_pattern) | codes_of(elements.get(f"{element_id}.code", {}))
        label = element.get("short", name)
        maximum = element.get("max", "*")
        slices.append(
            SliceRule(
                name=name,
                label=label,
                code=slice_pattern[0],
                codes=frozenset(slice_codes),
                minimum=element.get("min", 0),
                maximum=None if maximum == "*" else int(maximum),
                value_or_absent=any(
                    c["key"] == "tm-comp-value" for c in element.get("constraint", ())
                ),
                quantity=quantity(element_id, label),
            )
        )
    if "tm-bp-order" in invariants and {s.name for s in slices} != {"systolic", "diastolic"}:
        raise fail("tm-bp-order needs slices named 'systolic' and 'diastolic'")

    subject_el = elements.get(f"{rtype}.subject")
    effective_el = elements.get(f"{rtype}.effective[x]")
    value_el = elements.get(f"{rtype}.value[x]")
    return Profile(
        url=url,
        resource_type=rtype,
        pattern=pattern(f"{rtype}.code"),
        triggers=frozenset(triggers),
        subject_required=bool(subject_el and subject_el.get("min", 0) >= 1),
        subject_targets=_targets(subject_el) if subject_el else None,
        effective_required=bool(effective_el and effective_el.get("min", 0) >= 1),
        effective_types=_types(effective_el) if effective_el else None,
        value_types=_types(value_el) if value_el else None,
        quantity=quantity(rtype, sd.get("title", sd["name"])),
        slices=tuple(slices),
        invariants=frozenset(invariants),
    )


def _types(element: dict[str, Any]) -> frozenset[str] | None:
    types = element.get("type")
    return frozenset(t["code"] for t in types) if types else None


def _targets(element: dict[str, Any]) -> frozenset[str] | None:
    targets = [p for t in element.get("type", ()) for p in t.get("targetProfile", ())]
    if not targets:
        return None
    if any(not p.startswith(_HL7_SD) for p in targets):
        raise ProfileLoadError(f"{element['id']}: only base resource target profiles supported")
    return frozenset(p.removeprefix(_HL7_SD) for p in targets)
