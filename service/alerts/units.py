"""Unit conversion to each concept's canonical unit and plausibility (docs/alerts/engine.md#units).

The units, their conversions and the ranges are the concept table's (:mod:`service.core.concepts`).
"""

from __future__ import annotations

from service.core.concepts import BY_KEY


class UnsupportedUnit(ValueError):
    """A quantity whose unit is not accepted for its concept."""


def to_canonical(concept: str, value: float, code: str) -> tuple[float, str | None]:
    """Convert ``value`` in UCUM ``code`` to the concept's canonical unit.

    Returns the converted value and a warning (for whitelisted non-UCUM units), or raises
    :class:`UnsupportedUnit`.  SpO2 as a fraction (unit ``1``, 0 < v <= 1) becomes a percentage;
    0.95 with unit ``%`` is *not* rescaled, it fails plausibility instead.  Matching is on the
    UCUM code, never on the display text ("bpm", "kg ").
    """
    found = BY_KEY.get(concept)
    if found is None:
        raise UnsupportedUnit(f"no units are known for {concept}")
    warning = None
    aliases = dict(found.unit_aliases)
    if code in aliases:
        warning = f"non-UCUM unit {code!r} read as {aliases[code]}"
        code = aliases[code]
    if concept == "spo2" and code == "1" and not 0 < value <= 1:
        raise UnsupportedUnit(f"SpO2 fraction {value} is outside 0..1")
    unit = found.unit_of(code)
    if unit is None:
        raise UnsupportedUnit(f"unit {code!r} is not accepted for {concept}")
    return unit.to_canonical(value), warning


def implausibility(concept: str, value: float, unit_code: str) -> str | None:
    """Why a canonical value is implausible (docs/alerts/engine.md#implausible-values), or None."""
    found = BY_KEY.get(concept)
    bounds = found.plausible if found is not None else None
    if bounds is None or bounds[0] <= value <= bounds[1]:
        return None
    low, high = bounds
    reason = f"{concept} {value:g} outside plausible range {low:g}-{high:g}"
    if concept == "temp" and unit_code == "Cel" and 86 <= value <= 110:
        reason += " (probably Fahrenheit labelled as Cel)"
    if concept == "spo2" and unit_code == "%" and 0 < value <= 1:
        reason += " (probably a fraction labelled as %)"
    return reason
