"""Patient login: a pluggable identity provider.

In production the patient logs in with DigiD through a TVS/OIDC broker
(``TELEMON_IDENTITY_PROVIDER=oidc``, :mod:`service.auth.oidc`). The shipped default for
development, demos and tests is the **simulated DigiD**: a form with one field, ``bsn``; a BSN
that passes the 11-check and belongs to a stored Patient logs in as that Patient. It must never
be enabled for real patients (see docs/security.md).

Clinicians log in to the dashboard (:mod:`service.dashboard`) through the same seam: the
simulated provider trusts a typed UZI number, the OIDC provider a broker claim; either must
belong to an active stored ``Practitioner`` (identifier ``UZI_SYSTEM|number``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from service.auth.grants import PatientUser
from service.fhir.service import FhirService
from service.settings import Settings
from service.validation import BSN_SYSTEM, is_valid_bsn

if TYPE_CHECKING:
    from service.auth.oidc import OidcDigiD

#: The Dutch UZI register's number for a care provider (person), as a FHIR identifier system.
UZI_SYSTEM = "http://fhir.nl/fhir/NamingSystem/uzi-nr-pers"
_UZI = re.compile(r"^[0-9]{6,12}$")


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


@dataclass(frozen=True, slots=True)
class ClinicianUser:
    """A logged-in clinician: the stored Practitioner behind a verified UZI number."""

    practitioner_id: str
    subject: str  # "Practitioner/<id>"
    name: str


def _display_name(practitioner: dict[str, Any]) -> str:
    names = practitioner.get("name")
    first = names[0] if isinstance(names, list) and names and isinstance(names[0], dict) else {}
    if first.get("text"):
        return str(first["text"])
    parts = [*first.get("prefix", []), *first.get("given", []), first.get("family", "")]
    return " ".join(str(p) for p in parts if p) or "(no name)"


def practitioner_by_uzi(fhir: FhirService, uzi: str) -> ClinicianUser:
    """The one active stored Practitioner with identifier ``UZI_SYSTEM|uzi``; LoginError else."""
    uzi = uzi.strip()
    if not _UZI.match(uzi):
        raise LoginError("Dit is geen geldig UZI-nummer / This is not a valid UZI number")
    result = fhir.search("Practitioner", [("identifier", f"{UZI_SYSTEM}|{uzi}")])
    if len(result.matches) != 1:
        raise LoginError("Onbekend UZI-nummer / Unknown UZI number")
    stored = result.matches[0]
    practitioner = orjson.loads(stored.content or "{}")
    if practitioner.get("active") is False:
        raise LoginError("Deze zorgverlener is niet actief / This practitioner is not active")
    subject = f"Practitioner/{stored.res_id}"
    return ClinicianUser(stored.res_id, subject, _display_name(practitioner))


class SimulatedDigiD:
    """Simulated DigiD: trusts the BSN typed into the form. Development and tests only."""

    name = "simulated-digid"
    label = "Gesimuleerde DigiD (alleen voor test en demo) / Simulated DigiD (test and demo only)"

    def __init__(self, fhir: FhirService) -> None:
        self.fhir = fhir

    def patient_for_bsn(self, bsn: str) -> PatientUser:
        """The stored Patient with identifier ``BSN_SYSTEM|bsn``."""
        return patient_by_bsn(self.fhir, bsn)

    clinician_label = (
        "Gesimuleerde UZI-login (alleen voor test en demo) / "
        "Simulated UZI login (test and demo only)"
    )

    def clinician_for_uzi(self, uzi: str) -> ClinicianUser:
        """The stored Practitioner with identifier ``UZI_SYSTEM|uzi`` (no proof of possession)."""
        return practitioner_by_uzi(self.fhir, uzi)


def build_identity_provider(settings: Settings, fhir: FhirService) -> SimulatedDigiD | OidcDigiD:
    """The identity provider that ``TELEMON_IDENTITY_PROVIDER`` selects."""
    if settings.identity_provider == "oidc":
        from service.auth.oidc import OidcDigiD  # here, not at the top: oidc imports this module

        return OidcDigiD(settings, fhir)
    return SimulatedDigiD(fhir)
