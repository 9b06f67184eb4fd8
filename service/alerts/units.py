"""Unit conversion to each concept's canonical unit (§7.1) and plausibility ranges (§7.4)."""

from __future__ import annotations

from collections.abc import Callable

LB_TO_KG = 0.45359237
KPA_TO_MMHG = 7.50062


class UnsupportedUnit(ValueError):
    """A quantity whose unit is not accepted for its concept."""


def _identity(value: float) -> float:
    return value


# concept -> UCUM code -> converter to the canonical unit.  Matching is on the UCUM code, never
# on the display text ("bpm", "kg ").
_CONVERSIONS: dict[str, dict[str, Callable[[float], float]]] = {
    "weight": {"kg": _identity, "g": lambda v: v / 1000, "[lb_av]": lambda v: v * LB_TO_KG},
    "sbp": {"mm[Hg]": _identity, "kPa": lambda v: v * KPA_TO_MMHG},
    "dbp": {"mm[Hg]": _identity, "kPa": lambda v: v * KPA_TO_MMHG},
    "hr": {"/min": _identity, "{beats}/min": _identity, "1/min": _identity},
    "rr": {"/min": _identity, "{breaths}/min": _identity, "1/min": _identity},
    "temp": {"Cel": _identity, "[degF]": lambda v: (v - 32) * 5 / 9},
    "spo2": {"%": _identity},
    "pef": {"L/min": _identity},
    "cat": {"{score}": _identity, "1": _identity, "": _identity},
    "ccq": {"{score}": _identity, "1": _identity, "": _identity},
    "dyspnoea": {"{score}": _identity, "1": _identity, "": _identity},
}

# Non-UCUM spellings accepted with a warning (§7.1 whitelist).
_WHITELIST: dict[str, dict[str, str]] = {"weight": {"lb": "[lb_av]", "lbs": "[lb_av]"}}

# [P] plausibility ranges in the canonical unit, inclusive.
PLAUSIBLE: dict[str, tuple[float, float]] = {
    "weight": (20.0, 350.0),
    "spo2": (50.0, 100.0),
    "hr": (20.0, 250.0),
    "sbp": (50.0, 300.0),
    "dbp": (20.0, 200.0),
    "rr": (4.0, 60.0),
    "temp": (30.0, 43.0),
    "pef": (30.0, 1000.0),
    "cat": (0.0, 40.0),
    "ccq": (0.0, 6.0),
    "dyspnoea": (0.0, 10.0),
    "nyha": (1.0, 4.0),
}


def to_canonical(concept: str, value: float, code: str) -> tuple[float, str | None]:
    """Convert ``value`` in UCUM ``code`` to the concept's canonical unit.

    Returns the converted value and a warning (for whitelisted non-UCUM units), or raises
    :class:`UnsupportedUnit`.  SpO2 as a fraction (unit ``1``, 0 < v <= 1) becomes a percentage;
    0.95 with unit ``%`` is *not* rescaled, it fails plausibility instead.
    """
    warning = None
    if code in _WHITELIST.get(concept, {}):
        warning = f"non-UCUM unit {code!r} read as {_WHITELIST[concept][code]}"
        code = _WHITELIST[concept][code]
    if concept == "spo2" and code == "1":
        if 0 < value <= 1:
            return value * 100, warning
        raise UnsupportedUnit(f"SpO2 fraction {value} is outside 0..1")
    converters = _CONVERSIONS.get(concept)
    if converters is None or code not in converters:
        raise UnsupportedUnit(f"unit {code!r} is not accepted for {concept}")
    return converters[code](value), warning


def implausibility(concept: str, value: float, unit_code: str) -> str | None:
    """Why a canonical value is implausible (§7.4), or None when it is plausible."""
    bounds = PLAUSIBLE.get(concept)
    if bounds is None or bounds[0] <= value <= bounds[1]:
        return None
    low, high = bounds
    reason = f"{concept} {value:g} outside plausible range {low:g}-{high:g}"
    if concept == "temp" and unit_code == "Cel" and 86 <= value <= 110:
        reason += " (probably Fahrenheit labelled as Cel)"
    if concept == "spo2" and unit_code == "%" and 0 < value <= 1:
        reason += " (probably a fraction labelled as %)"
    return reason
