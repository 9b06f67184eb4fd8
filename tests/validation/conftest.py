"""Fixtures for the validation tests: the compiled profiles, a fixed clock, Observation builders."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from service.validation import ProfileValidator

_LOINC = "http://loinc.org"
_UCUM = "http://unitsofmeasure.org"


@pytest.fixture(scope="session")
def profiles() -> ProfileValidator:
    return ProfileValidator.load(Path(__file__).resolve().parents[2] / "fhir_profiles")


@pytest.fixture
def now() -> datetime:
    return datetime(2024, 6, 1, 12, 0, tzinfo=UTC)


def _quantity(value: Any, unit: str) -> dict[str, Any]:
    return {"value": value, "unit": unit, "system": _UCUM, "code": unit}


@pytest.fixture
def obs() -> Callable[..., dict[str, Any]]:
    """Build a vital-sign Observation: ``obs("29463-7", 80, "kg", **overrides)``.

    An override of ``None`` removes the element.
    """

    def build(loinc: str, value: Any = None, unit: str = "", **overrides: Any) -> dict[str, Any]:
        resource: dict[str, Any] = {
            "resourceType": "Observation",
            "status": "final",
            "code": {"coding": [{"system": _LOINC, "code": loinc}]},
            "subject": {"reference": "Patient/p1"},
            "effectiveDateTime": "2024-06-01T10:00:00+02:00",
        }
        if value is not None:
            resource["valueQuantity"] = _quantity(value, unit)
        resource.update(overrides)
        return {k: v for k, v in resource.items() if v is not None}

    return build


@pytest.fixture
def bp() -> Callable[..., dict[str, Any]]:
    """A blood-pressure panel: ``bp(120, 80, unit="mm[Hg]")``."""

    def build(sbp: Any, dbp: Any, unit: str = "mm[Hg]", **overrides: Any) -> dict[str, Any]:
        resource: dict[str, Any] = {
            "resourceType": "Observation",
            "status": "final",
            "code": {"coding": [{"system": _LOINC, "code": "85354-9"}]},
            "subject": {"reference": "Patient/p1"},
            "effectiveDateTime": "2024-06-01T10:00:00+02:00",
            "component": [
                {
                    "code": {"coding": [{"system": _LOINC, "code": "8480-6"}]},
                    "valueQuantity": _quantity(sbp, unit),
                },
                {
                    "code": {"coding": [{"system": _LOINC, "code": "8462-4"}]},
                    "valueQuantity": _quantity(dbp, unit),
                },
            ],
        }
        resource.update(overrides)
        return resource

    return build
