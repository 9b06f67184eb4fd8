"""Patient login: a pluggable identity provider.

In production the patient logs in with DigiD through a TVS/OIDC broker
(``TELEMON_IDENTITY_PROVIDER=oidc``, :mod:`service.auth.oidc`). The shipped default for
development, demos and tests is the **simulated DigiD**: a form with one field, ``bsn``; a BSN
that passes the 11-check and belongs to a stored Patient logs in as that Patient. It must never
be enabled for real patients (see docs/security.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from service.auth.grants import PatientUser
from service.fhir.service import FhirService
from service.settings import Settings
from service.validation import BSN_SYSTEM, is_valid_bsn

if TYPE_CHECKING:
    from service.auth.oidc import OidcDigiD


class LoginError(Exception):
    """The login failed; the message is safe to show to the user."""


class IdentityProvider(Protocol):
    """Turns a verified identity into the Patient it belongs to."""

    name: str
    label: str


def patient_by_bsn(fhir: FhirService, bsn: str) -> PatientUser:
    """The one stored Patient with identifier ``BSN_SYSTEM|bsn``; LoginError otherwise."""
    bsn = bsn.strip()
    if not is_valid_bsn(bsn):
        raise LoginError("Dit is geen geldig BSN / This is not a valid BSN")
    result = fhir.search("Patient", [("identifier", f"{BSN_SYSTEM}|{bsn}")])
    if len(result.matches) != 1:
        raise LoginError("Onbekend BSN / Unknown BSN")
    patient_id = result.matches[0].res_id
    return PatientUser(patient_id, f"Patient/{patient_id}")


class SimulatedDigiD:
    """Simulated DigiD: trusts the BSN typed into the form. Development and tests only."""

    name = "simulated-digid"
    label = "Gesimuleerde DigiD (alleen voor test en demo) / Simulated DigiD (test and demo only)"

    def __init__(self, fhir: FhirService) -> None:
        self.fhir = fhir

    def patient_for_bsn(self, bsn: str) -> PatientUser:
        """The stored Patient with identifier ``BSN_SYSTEM|bsn``."""
        return patient_by_bsn(self.fhir, bsn)


def build_identity_provider(settings: Settings, fhir: FhirService) -> SimulatedDigiD | OidcDigiD:
    """The identity provider that ``TELEMON_IDENTITY_PROVIDER`` selects."""
    if settings.identity_provider == "oidc":
        from service.auth.oidc import OidcDigiD  # here, not at the top: oidc imports this module

        return OidcDigiD(settings, fhir)
    return SimulatedDigiD(fhir)
