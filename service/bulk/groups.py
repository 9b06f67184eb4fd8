"""Programme cohorts as FHIR ``Group`` resources: ``Group/heart-failure`` and ``Group/copd``.

A cohort is the set of patients enrolled in a telemonitoring programme, exactly as the alert
engine counts enrolment: an active ``CarePlan`` that instantiates the programme's
``PlanDefinition``. The Group is not stored: every read (and every Group export) computes it from
the CarePlans in the same query, so it is never out of date.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from service.alerts.ingest import PLAN_BASE
from service.core.criteria import SearchQuery
from service.core.dates import format_instant
from service.fhir.service import FhirService
from service.storage import bulk_store
from service.storage.db import Connection

#: The identifier system of the cohort Groups (``identifier=…|heart-failure`` finds one).
GROUP_IDENTIFIER_SYSTEM = "http://telemon.example.org/fhir/NamingSystem/programme"


@dataclass(frozen=True, slots=True)
class Programme:
    """A programme whose enrolled patients form a Group."""

    group_id: str
    name: str

    @property
    def plan_url(self) -> str:
        """The canonical URL of the programme's PlanDefinition."""
        return f"{PLAN_BASE}/{self.group_id}"


PROGRAMMES = {
    p.group_id: p
    for p in (
        Programme("heart-failure", "Heart-failure telemonitoring"),
        Programme("copd", "COPD telemonitoring"),
    )
}


def members_query(fhir: FhirService, programme: Programme) -> SearchQuery:
    """The search for the active CarePlans of ``programme``: their patients are its members
    (a :class:`~service.storage.bulk_store.Selection`'s ``patients`` for export reads)."""
    rtype = fhir.resource_type("CarePlan")
    query, _ = fhir.parse_query(
        rtype,
        [("status", "active"), ("instantiates-canonical", programme.plan_url)],
        strict=True,
    )
    return query


def members(fhir: FhirService, conn: Connection, programme: Programme) -> list[str]:
    """The enrolled patients' ids, sorted."""
    return bulk_store.patients_of(conn, members_query(fhir, programme))


def group_resource(
    fhir: FhirService, conn: Connection, programme: Programme, base: str
) -> dict[str, Any]:
    """The cohort as a FHIR R4 ``Group`` (``actual``, ``person``), members as of now."""
    patients = members(fhir, conn, programme)
    changed = bulk_store.last_change(conn, "CarePlan") or 0
    return {
        "resourceType": "Group",
        "id": programme.group_id,
        "meta": {"lastUpdated": format_instant(changed)},
        "identifier": [{"system": GROUP_IDENTIFIER_SYSTEM, "value": programme.group_id}],
        "active": True,
        "type": "person",
        "actual": True,
        "code": {"text": programme.name},
        "name": programme.name,
        "quantity": len(patients),
        "characteristic": [
            {
                "code": {"text": "enrolled in programme (active CarePlan instantiating)"},
                "valueReference": {"reference": programme.plan_url},
                "exclude": False,
            }
        ],
        "member": [{"entity": {"reference": f"Patient/{pid}"}} for pid in patients],
    }


def matching(params: list[tuple[str, str]]) -> list[Programme] | None:
    """The programmes a ``Group`` search selects (``_id``, ``identifier``, ``name``); None when
    it uses a parameter this search does not know."""
    found = list(PROGRAMMES.values())
    for name, value in params:
        if name in ("_count", "_format", "_summary", "_total") or value == "":
            continue
        values = value.split(",")
        if name == "_id":
            found = [p for p in found if p.group_id in values]
        elif name == "identifier":
            found = [p for p in found if any(_identifier_matches(v, p) for v in values)]
        elif name == "name":  # FHIR string search: starts with, case-insensitive
            found = [p for p in found if any(p.name.lower().startswith(v.lower()) for v in values)]
        elif name == "name:contains":
            found = [p for p in found if any(v.lower() in p.name.lower() for v in values)]
        elif name == "name:exact":
            found = [p for p in found if p.name in values]
        else:
            return None
    return found


def _identifier_matches(value: str, programme: Programme) -> bool:
    system, bar, code = value.rpartition("|")
    if bar and system and system != GROUP_IDENTIFIER_SYSTEM:
        return False
    return code == programme.group_id
