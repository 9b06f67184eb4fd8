"""telemon's profile validator (HTTP 422 territory): checking a resource against the profiles.

The profiles are compiled at startup from ``fhir_profiles/`` by
:mod:`service.validation.profile_compiler`; checking a resource here only does dictionary lookups
and comparisons on the compiled rules.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from service.core.dates import UNSET_CLOCK_DAYS, possible_instants, unset_clock
from service.core.outcome import Issue
from service.validation.bsn import BSN_SYSTEM, is_valid_bsn
from service.validation.profile_compiler import Profile, QuantityRule, SliceRule, load_profiles

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


class ProfileValidator:
    """Validates resources against telemon's compiled profiles; build it with :meth:`load`."""

    def __init__(self, profiles: list[Profile], resources: list[dict[str, Any]]) -> None:
        self._profiles = profiles
        self._resources = resources
        self._by_url = {p.url: p for p in profiles}
        # Profiles without a code pattern apply to every resource of their type.
        self._always: dict[str, tuple[Profile, ...]] = {}
        self._by_code: dict[tuple[str, str], tuple[Profile, ...]] = {}
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
        """The validator for the profiles compiled from ``profiles_dir`` (see
        :func:`~service.validation.profile_compiler.load_profiles`, which raises
        :class:`~service.validation.profile_compiler.ProfileLoadError`)."""
        return cls(*load_profiles(profiles_dir))

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

    def _applicable(self, resource: dict[str, Any]) -> list[Profile]:
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
        profiles: list[Profile],
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

    def value(self, profile: Profile) -> None:
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

    def components(self, profile: Profile) -> None:
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
        self, comp: dict[str, Any], rule: SliceRule, path: str
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

    def quantity(self, quantity: dict[str, Any], rule: QuantityRule, path: str) -> float | None:
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
