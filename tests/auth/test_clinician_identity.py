"""Clinicians through the identity seam: a UZI number maps to one active stored Practitioner."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from service.auth.identity import UZI_SYSTEM, LoginError, SimulatedDigiD, practitioner_by_uzi
from service.bootstrap import build_service
from service.fhir.service import FhirService
from service.settings import Settings


@pytest.fixture
def fhir(settings: Settings) -> Iterator[FhirService]:
    """A FHIR service on the test database."""
    service = build_service(settings)
    yield service
    service.db.dispose()


def _practitioner(uzi: str, **extra: object) -> dict[str, object]:
    return {
        "resourceType": "Practitioner",
        "identifier": [{"system": UZI_SYSTEM, "value": uzi}],
        "name": [{"use": "official", "prefix": ["dr."], "given": ["Eva"], "family": "Visser"}],
        **extra,
    }


def test_a_stored_practitioner_logs_in_by_uzi(fhir: FhirService) -> None:
    pid = fhir.create(_practitioner("900012345", active=True)).res_id
    user = SimulatedDigiD(fhir).clinician_for_uzi(" 900012345 ")
    assert (user.practitioner_id, user.subject, user.name) == (
        pid,
        f"Practitioner/{pid}",
        "dr. Eva Visser",
    )
    assert "test and demo only" in SimulatedDigiD.clinician_label


def test_a_name_text_wins_and_a_nameless_practitioner_still_has_a_label(fhir: FhirService) -> None:
    fhir.create(_practitioner("900000001", name=[{"text": "Verpleegkundige Jansen"}]))
    fhir.create(
        {
            "resourceType": "Practitioner",
            "identifier": [{"system": UZI_SYSTEM, "value": "900000002"}],
        }
    )
    assert practitioner_by_uzi(fhir, "900000001").name == "Verpleegkundige Jansen"
    assert practitioner_by_uzi(fhir, "900000002").name == "(no name)"


@pytest.mark.parametrize(
    ("uzi", "message"),
    [
        ("", "not a valid UZI number"),
        ("12 34", "not a valid UZI number"),
        ("1" * 13, "not a valid UZI number"),
        ("900099999", "Unknown UZI number"),
        ("900055555", "not active"),
        ("900077777", "Unknown UZI number"),  # registered twice: ambiguous
    ],
)
def test_refused_logins(fhir: FhirService, uzi: str, message: str) -> None:
    fhir.create(_practitioner("900055555", active=False))
    fhir.create(_practitioner("900077777"))
    fhir.create(_practitioner("900077777"))
    fhir.create(
        {
            "resourceType": "Practitioner",
            "identifier": [
                {"system": "http://fhir.nl/fhir/NamingSystem/agb-z", "value": "900099999"}
            ],
        }
    )  # the number under another system is no UZI number
    with pytest.raises(LoginError, match=message):
        practitioner_by_uzi(fhir, uzi)
