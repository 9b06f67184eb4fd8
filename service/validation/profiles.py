"""telemon's profile validator (HTTP 422 territory).

The StructureDefinitions and ValueSets in ``fhir_profiles/`` are the rules. At startup
:meth:`ProfileValidator.load` compiles the few constructs telemon uses from their differentials
(code patterns and code bindings, cardinalities, reference targets, allowed ``effective[x]``
types, UCUM unit bindings, ``min/maxValueQuantity``, component slices and ``tm-*`` invariant keys)
into small rule objects; a request then only does dictionary lookups and comparisons. Which codes
mean which measurement, in which units, comes from the concept table (:mod:`service.core.concepts`):
the code and unit ValueSets are written from it (:mod:`service.validation.value_sets`) and the
unit conversions are its own.

Invariants are recognised by key, not by evaluating their FHIRPath: every ``tm-*`` key must be one
the compiler implements (see ``_INVARIANTS``), otherwise loading fails, so the files cannot promise
a rule the server does not enforce.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from service.core.concepts import CONVERSIONS
from service.core.dates import UNSET_CLOCK_DAYS, possible_instants, unset_clock
from service.core.outcome import Issue
from service.validation.bsn import BSN_SYSTEM, is_valid_bsn

CANONICAL_BASE = "http://telemon.example.org/fhir"
UCUM_SYSTEM = "http://unitsofmeasure.org"

_HL7_SD = "http://hl7.org/fhir/StructureDefinition/"
_REFERENCE = re.compile(r"([A-Z][A-Za-z]+)/[A-Za-z0-9\-.]{1,64}")
_EFFECTIVE_TYPES = {
    "effectiveDateTime": "dateTime",
    "effectiveInstant": "instant",
    "effectivePeriod": "Period",
    "effectiveTiming": "Timing",
}
_VALUE_KEYS = (
    "valueQuantity",
    "valueCodeableConcept",
    "valueString",
    "valueBoolean",
    "valueInteger",
    "valueRange",
    "valueRatio",
    "valueSampledData",
    "valueTime",
    "valueDateTime",
    "valuePeriod",
)

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
class _QuantityRule:
    """Constraints on one Quantity: the Observation's own value or a component slice's."""

    label: str
    system: str | None
    units: tuple[str, ...]
    canonical: str
    low: float
    high: float
    value_required: bool

    def to_canonical(self, value: float, unit: str) -> float:
        factor, offset = CONVERSIONS.get((unit, self.canonical), (1.0, 0.0))
        return value * factor + offset


@dataclass(frozen=True, slots=True)
class _SliceRule:
    name: str
    label: str
    code: tuple[str, str]  # the pattern's code (named in messages)
    codes: frozenset[tuple[str, str]]  # the pattern's and those of the code's ValueSet
    minimum: int
    maximum: int | None
    value_or_absent: bool
    quantity: _QuantityRule | None


@dataclass(frozen=True, slots=True)
class _Profile:
    url: str
    resource_type: str
    pattern: tuple[tuple[str, str], ...]
    triggers: frozenset[tuple[str, str]]
    subject_required: bool = False
    subject_targets: frozenset[str] | None = None
    effective_required: bool = False
    effective_types: frozenset[str] | None = None
    value_types: frozenset[str] | None = None
    quantity: _QuantityRule | None = None
    slices: tuple[_SliceRule, ...] = ()
    invariants: frozenset[str] = field(default_factory=frozenset)


class ProfileValidator:
    """Validates resources against telemon's compiled profiles; build it with :meth:`load`."""

    def __init__(self, profiles: list[_Profile], resources: list[dict[str, Any]]) -> None:
        self._profiles = profiles
        self._resources = resources
        self._by_url = {p.url: p for p in profiles}
        # Profiles without a code pattern apply to every resource of their type.
        self._always: dict[str, tuple[_Profile, ...]] = {}
        self._by_code: dict[tuple[str, str], tuple[_Profile, ...]] = {}
        for profile in profiles:
            if not profile.triggers:
                self._always[profile.resource_type] = (
                    *self._always.get(profile.resource_type, ()),
                    profile,
                )
            for coding in profile.triggers:
                self._by_code[coding] = (*self._by_code.get(coding, ()), profile)

    @classmethod
    def load(cls, profiles_dir: Path) -> ProfileValidator:
        """Read every ``*.json`` conformance resource in ``profiles_dir`` and compile the profiles.

        Raises :class:`ProfileLoadError` for unreadable or invalid files and unsupported rules.
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
                _compile(r, value_sets)
                for r in resources
                if r["resourceType"] == "StructureDefinition"
                and r.get("derivation") == "constraint"
                and r["url"].startswith(CANONICAL_BASE)
            ]
        except (KeyError, TypeError, ValueError) as exc:  # an element the compiler relies on
            raise ProfileLoadError(f"incomplete conformance resource: {exc!r}") from exc
        return cls(profiles, resources)

    def profile_urls(self) -> dict[str, list[str]]:
        """Resource type → canonical URLs of the profiles served (for the CapabilityStatement)."""
        urls: dict[str, list[str]] = {}
        for profile in self._profiles:
            urls.setdefault(profile.resource_type, []).append(profile.url)
        return {rtype: sorted(found) for rtype, found in urls.items()}

    def conformance_resources(self) -> list[dict[str, Any]]:
        """Every JSON resource of the profiles directory, to serve read-only (do not mutate)."""
        return list(self._resources)

    def validate(
        self,
        resource: dict[str, Any],
        *,
        now: datetime | None = None,
        clock_skew_seconds: int = 300,
    ) -> list[Issue]:
        """Error issues of ``resource`` against the profiles that apply (empty list = conformant).

        Expects a structurally valid resource (see ``validate_structure``). ``now`` must be
        timezone-aware; it defaults to the current time. For a Bundle, call this per entry and
        re-root the issues with :meth:`Issue.prefixed`.
        """
        rtype = resource["resourceType"]
        issues = _bsn_issues(resource, rtype)
        if rtype == "Observation":
            latest = (now or datetime.now(UTC)) + timedelta(seconds=clock_skew_seconds)
            _ObservationCheck(resource, self._applicable(resource), latest, issues).run()
        return issues

    def _applicable(self, resource: dict[str, Any]) -> list[_Profile]:
        """The always-on profiles, those the code selects and those claimed in meta.profile."""
        found = list(self._always.get("Observation", ()))
        for coding in _codings(resource.get("code")):
            for profile in self._by_code.get(coding, ()):
                if profile not in found:
                    found.append(profile)
        meta = resource.get("meta")
        claimed = meta.get("profile", ()) if isinstance(meta, dict) else ()
        for url in claimed if isinstance(claimed, list) else ():
            claim = self._by_url.get(url.partition("|")[0]) if isinstance(url, str) else None
            if claim is not None and claim.resource_type == "Observation" and claim not in found:
                found.append(claim)
        return found


class _ObservationCheck:
    """The checks for one Observation; appends to ``issues``."""

    def __init__(
        self,
        obs: dict[str, Any],
        profiles: list[_Profile],
        latest: datetime,
        issues: list[Issue],
    ) -> None:
        self.obs = obs
        self.profiles = profiles
        self.latest = latest
        self.issues = issues

    def fail(self, code: str, diagnostics: str, *expressions: str) -> None:
        issue = Issue(code, diagnostics, expressions)
        if issue not in self.issues:  # two profiles may state the same rule
            self.issues.append(issue)

    def run(self) -> None:
        obs = self.obs
        if "dataAbsentReason" in obs and any(key in obs for key in _VALUE_KEYS):
            self.fail(
                "invariant",
                "dataAbsentReason must only be present when there is no value (obs-6)",
                "Observation.dataAbsentReason",
            )
        self.subject()
        self.effective()
        codes = set(_codings(obs.get("code")))
        for profile in self.profiles:
            if profile.pattern and not codes.intersection(profile.triggers):
                wanted = ", ".join(code for _, code in profile.pattern)
                self.fail(
                    "value",
                    f"Observation.code lacks {wanted}, required by the claimed profile "
                    f"{profile.url}",
                    "Observation.code",
                )
                continue
            if profile.value_types is not None or profile.quantity is not None:
                self.value(profile)
            if profile.slices:
                self.components(profile)

    def subject(self) -> None:
        targets: frozenset[str] | None = None
        required = False
        for profile in self.profiles:
            required = required or profile.subject_required
            if profile.subject_targets is not None:
                narrowed = profile.subject_targets
                targets = narrowed if targets is None else targets & narrowed
        subject = self.obs.get("subject")
        if subject is None:
            if required:
                self.fail(
                    "required",
                    "subject is required (a Reference to Patient/<id>)",
                    "Observation.subject",
                )
            return
        if targets is None:
            return
        expected = " or ".join(f"{t}/<id>" for t in sorted(targets))
        ref = subject.get("reference") if isinstance(subject, dict) else None
        if not isinstance(ref, str):
            self.fail(
                "value", f"subject must be a literal reference {expected}", "Observation.subject"
            )
        elif ref.startswith("#"):
            self.fail(
                "value",
                f"subject must not be a contained resource; use {expected}",
                "Observation.subject",
            )
        else:
            match = _REFERENCE.fullmatch(ref)
            if match is None or match.group(1) not in targets:
                self.fail("value", f"subject must be a reference {expected}", "Observation.subject")

    def effective(self) -> None:
        required = False
        types: frozenset[str] | None = None
        invariants: set[str] = set()
        for profile in self.profiles:
            required = required or profile.effective_required
            if profile.effective_types is not None:
                narrowed = profile.effective_types
                types = narrowed if types is None else types & narrowed
            invariants |= profile.invariants
        present = [key for key in _EFFECTIVE_TYPES if key in self.obs]
        if not present:
            if required:
                self.fail(
                    "required",
                    "effective[x] is required (when the measurement was taken)",
                    "Observation.effective[x]",
                )
            return
        for key in present:
            path = f"Observation.{key}"
            if types is not None and _EFFECTIVE_TYPES[key] not in types:
                allowed = ", ".join(sorted(f"effective{t[0].upper()}{t[1:]}" for t in types))
                self.fail("value", f"{key} is not allowed here; use {allowed}", path)
                continue
            value = self.obs[key]
            if key == "effectivePeriod" and isinstance(value, dict):
                self.period(value, path, invariants)
            elif isinstance(value, str):
                self.moment(value, path, invariants)

    def period(self, period: dict[str, Any], path: str, invariants: set[str]) -> None:
        bounds = [
            self.moment(period[part], f"{path}.{part}", invariants)
            for part in ("start", "end")
            if isinstance(period.get(part), str)
        ]
        if not bounds:
            self.fail("required", "effectivePeriod needs a start or an end", path)
        elif len(bounds) == 2 and None not in bounds:
            start, end = bounds
            assert start is not None and end is not None  # narrowing for mypy
            if end[1] < start[0]:
                self.fail(
                    "invariant", "effectivePeriod.start must not be after its end (per-1)", path
                )

    def moment(
        self, value: str, path: str, invariants: set[str]
    ) -> tuple[datetime, datetime] | None:
        try:
            low, high = possible_instants(value)
        except ValueError as exc:
            self.fail("value", str(exc), path)
            return None
        if "tm-eff-future" in invariants and low > self.latest:
            self.fail("value", f"'{value}' lies in the future", path)
        if "tm-eff-clock" in invariants and unset_clock(value):
            self.fail(
                "value",
                f"'{value}' is the time of a device clock that was never set "
                f"({' or '.join(sorted(map(str, UNSET_CLOCK_DAYS)))}); set the device's clock",
                path,
            )
        return low, high

    def value(self, profile: _Profile) -> None:
        obs = self.obs
        present = [key for key in _VALUE_KEYS if key in obs]
        rule = profile.quantity
        label = rule.label if rule else "this observation"
        if profile.value_types == frozenset({"Quantity"}):
            for key in present:
                if key != "valueQuantity":
                    self.fail(
                        "value", f"{label} must be sent as valueQuantity", f"Observation.{key}"
                    )
        quantity = obs.get("valueQuantity")
        if isinstance(quantity, dict) and rule is not None:
            self.quantity(quantity, rule, "Observation.valueQuantity")
        elif not present and "tm-value" in profile.invariants and "dataAbsentReason" not in obs:
            self.fail(
                "required",
                f"{label} needs a valueQuantity or a dataAbsentReason",
                "Observation.valueQuantity",
            )

    def components(self, profile: _Profile) -> None:
        components = self.obs.get("component")
        items = components if isinstance(components, list) else []
        values: dict[str, tuple[float, str]] = {}
        for rule in profile.slices:
            matches = [
                index
                for index, comp in enumerate(items)
                if isinstance(comp, dict) and rule.codes.intersection(_codings(comp.get("code")))
            ]
            if len(matches) < rule.minimum:
                self.fail(
                    "required",
                    f"A {rule.label} component (LOINC {rule.code[1]}) is required",
                    "Observation.component",
                )
            if rule.maximum is not None and len(matches) > rule.maximum:
                self.fail(
                    "value",
                    f"At most {rule.maximum} {rule.label} component(s) allowed",
                    *(f"Observation.component[{i}]" for i in matches),
                )
            for index in matches:
                found = self.component(items[index], rule, f"Observation.component[{index}]")
                if found is not None:
                    values[rule.name] = found
        if "tm-bp-order" in profile.invariants and {"systolic", "diastolic"} <= values.keys():
            (sbp, sbp_path), (dbp, dbp_path) = values["systolic"], values["diastolic"]
            if sbp <= dbp:
                self.fail(
                    "value",
                    f"Systolic ({sbp:g} mm[Hg]) must be higher than diastolic ({dbp:g} mm[Hg])",
                    sbp_path,
                    dbp_path,
                )

    def component(
        self, comp: dict[str, Any], rule: _SliceRule, path: str
    ) -> tuple[float, str] | None:
        """Check one sliced component; its canonical value and path, if it has a usable one."""
        present = [key for key in _VALUE_KEYS if key in comp]
        for key in present:
            if key != "valueQuantity":
                self.fail("value", f"{rule.label} must be sent as valueQuantity", f"{path}.{key}")
        quantity = comp.get("valueQuantity")
        if isinstance(quantity, dict) and rule.quantity is not None:
            canonical = self.quantity(quantity, rule.quantity, f"{path}.valueQuantity")
            return None if canonical is None else (canonical, f"{path}.valueQuantity.value")
        if not present and rule.value_or_absent and "dataAbsentReason" not in comp:
            self.fail(
                "required",
                f"{rule.label} needs a valueQuantity or a dataAbsentReason",
                f"{path}.valueQuantity",
            )
        return None

    def quantity(self, quantity: dict[str, Any], rule: _QuantityRule, path: str) -> float | None:
        """Check a Quantity against ``rule``; the value in the canonical unit when it is usable."""
        value = quantity.get("value")
        unit = quantity.get("code")
        system = quantity.get("system")
        ok = True
        if value is None:
            if rule.value_required:
                self.fail("required", f"{rule.label} needs a value", f"{path}.value")
            ok = False
        if rule.system is not None and system != rule.system:
            self.fail("value", f"Quantity.system must be {rule.system} (UCUM)", f"{path}.system")
            ok = False
        if unit not in rule.units:
            shown = "missing" if unit is None else f"'{unit}'"
            self.fail(
                "value",
                f"Unit {shown} is not allowed for {rule.label}; use one of "
                f"{', '.join(rule.units)} (UCUM)",
                f"{path}.code",
            )
            ok = False
        if not ok or isinstance(value, bool) or not isinstance(value, int | float):
            return None
        assert isinstance(unit, str)  # narrowing: unit is in rule.units
        canonical = rule.to_canonical(value, unit)
        if rule.low <= canonical <= rule.high:
            return canonical
        shown = f"{value:g} {unit}"
        if unit != rule.canonical:
            shown += f" (= {canonical:.4g} {rule.canonical})"
        message = (
            f"{rule.label} {shown} is outside the plausible range "
            f"{rule.low:g}-{rule.high:g} {rule.canonical}"
        )
        hints = [
            u
            for u in rule.units
            if u != unit and rule.low <= rule.to_canonical(value, u) <= rule.high
        ]
        if hints:
            message += "; was the unit meant to be " + " or ".join(f"'{h}'" for h in hints) + "?"
        self.fail("value", message, f"{path}.value")
        return None


def _bsn_issues(resource: dict[str, Any], rtype: str) -> list[Issue]:
    issues: list[Issue] = []
    identifiers = resource.get("identifier")
    for index, ident in enumerate(identifiers if isinstance(identifiers, list) else ()):
        if isinstance(ident, dict) and ident.get("system") == BSN_SYSTEM:
            value = ident.get("value")
            # The value itself stays out of the message: a BSN is sensitive personal data.
            if not isinstance(value, str) or not is_valid_bsn(value):
                issues.append(
                    Issue(
                        "value",
                        "Not a valid BSN: 9 digits required and the 11-proef must pass",
                        (f"{rtype}.identifier[{index}].value",),
                    )
                )
    return issues


def _codings(concept: Any) -> list[tuple[str, str]]:
    if not isinstance(concept, dict):
        return []
    codings = concept.get("coding")
    return [
        (c.get("system", ""), c.get("code", ""))
        for c in (codings if isinstance(codings, list) else ())
        if isinstance(c, dict)
    ]


def _value_set_codes(value_set: dict[str, Any]) -> frozenset[tuple[str, str]]:
    """The (system, code) pairs a ValueSet enumerates; only explicit concept lists are supported."""
    codes: set[tuple[str, str]] = set()
    for include in value_set.get("compose", {}).get("include", []):
        if "concept" not in include or "filter" in include or "valueSet" in include:
            raise ProfileLoadError(f"ValueSet {value_set['url']}: only concept lists supported")
        codes.update((include["system"], c["code"]) for c in include["concept"])
    return frozenset(codes)


def _compile(sd: dict[str, Any], value_sets: dict[str, frozenset[tuple[str, str]]]) -> _Profile:
    """Compile one StructureDefinition's differential into a :class:`_Profile`."""
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

    def quantity(prefix: str, label: str) -> _QuantityRule | None:
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
        return _QuantityRule(
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
            _SliceRule(
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
    return _Profile(
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
