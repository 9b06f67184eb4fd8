"""The one place that decides what a caller may do with FHIR data.

A :class:`Principal` is who is calling: ``open`` (TELEMON_AUTH=open: everything), a ``patient``
token (a PGO acting for one patient; confined to that patient's compartment) or a ``system``
token (a backend service; no compartment, only its scopes). Every FHIR interaction maps to one
SMART v2 permission letter; the API asks :func:`require` before it acts and passes
:func:`compartment` into the FHIR service, which confines reads (404 like a missing id) and
writes (403) to it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from service.auth.scopes import Grants
from service.core.outcome import FhirError
from service.fhir.confinement import Confinement

Interaction = Literal[
    "read",
    "vread",
    "history-instance",
    "history-type",
    "search",
    "create",
    "update",
    "patch",
    "delete",
]
#: The SMART v2 permission each interaction needs.
PERMISSION: dict[str, str] = {
    "read": "r",
    "vread": "r",
    "history-instance": "r",
    "history-type": "s",
    "search": "s",
    "create": "c",
    "update": "u",
    "patch": "u",  # SMART v2: a patch is an update
    "delete": "d",
}


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller of one request."""

    kind: Literal["open", "patient", "system"]
    client_id: str | None = None
    grants: Grants = field(default_factory=lambda: Grants(()))
    patient_id: str | None = None
    subject: str | None = None
    token_id: str | None = None
    scope: str = ""

    @property
    def context(self) -> str:
        """The scope context that counts for this principal."""
        return "patient" if self.kind == "patient" else "system"


OPEN = Principal("open")

#: Types only backend services (system tokens) may use at all: a Subscription makes telemon
#: send alerts to an EHR's endpoint, which is no business of a patient's app.
SYSTEM_ONLY = frozenset({"Subscription"})
#: Creating or updating one of these makes telemon send out resources of the named type (a
#: Subscription's notifications carry Flags): the caller must be allowed to read and search
#: that type itself.
DISCLOSES = {"Subscription": "Flag"}


def forbidden(message: str) -> FhirError:
    """The 403 for a denied interaction."""
    return FhirError.forbidden(message)


def require(principal: Principal, res_type: str, interaction: Interaction | str) -> None:
    """403 unless the principal's scopes allow ``interaction`` on ``res_type``."""
    if principal.kind == "open":
        return
    if res_type in SYSTEM_ONLY and principal.kind != "system":
        raise forbidden(f"{res_type} is for backend services (system tokens) only")
    permission = PERMISSION.get(interaction)
    if permission is None or not principal.grants.allows(principal.context, res_type, permission):
        raise forbidden(
            f"The token's scopes do not allow '{interaction}' on {res_type} "
            f"(needs {principal.context}/{res_type}.{permission})"
        )
    disclosed = DISCLOSES.get(res_type)
    if disclosed is not None and interaction in ("create", "update", "patch"):
        require(principal, disclosed, "read")
        require(principal, disclosed, "search")


def allows(principal: Principal, res_type: str, interaction: Interaction | str) -> bool:
    """Whether :func:`require` would let ``interaction`` on ``res_type`` pass."""
    try:
        require(principal, res_type, interaction)
    except FhirError:
        return False
    return True


def compartment(principal: Principal) -> tuple[str, ...] | None:
    """The patient compartments the principal is confined to (None: not confined), with the
    filters of its granular scopes (a :class:`Confinement`)."""
    if principal.kind != "patient":
        return None
    ids = (principal.patient_id,) if principal.patient_id else ()
    return Confinement(ids, principal.grants.read_filters("patient"))
