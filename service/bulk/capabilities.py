"""What bulk access adds to the CapabilityStatement: the Bulk Data IG's operations, the
programme ``Group``s and ``Patient/$everything``."""

from __future__ import annotations

from typing import Any

BULK_DATA_IG = "http://hl7.org/fhir/uv/bulkdata"
BULK_DATA_SERVER = f"{BULK_DATA_IG}/CapabilityStatement/bulk-data"
EVERYTHING = "http://hl7.org/fhir/OperationDefinition/Patient-everything"


def _operation(name: str, definition: str, documentation: str) -> dict[str, Any]:
    return {"name": name, "definition": definition, "documentation": documentation}


def add_bulk_capabilities(statement: dict[str, Any]) -> dict[str, Any]:
    """Declare ``$export`` (system, Patient, Group), the Group type and ``$everything``."""
    statement["instantiates"] = [BULK_DATA_SERVER]
    rest = statement["rest"][0]
    rest.setdefault("operation", []).append(
        _operation(
            "export",
            f"{BULK_DATA_IG}/OperationDefinition/export",
            "Bulk Data export (IG v2) of every resource the backend service may read: "
            "`Prefer: respond-async`, `_type`, `_since`, `_typeFilter`, `_outputFormat` "
            "(application/fhir+ndjson). System tokens with system/*.rs (or per type) only.",
        )
    )
    by_type = {r["type"]: r for r in rest["resource"]}
    patient = by_type.get("Patient")
    if patient is not None:
        patient.setdefault("operation", []).extend(
            [
                _operation(
                    "export",
                    f"{BULK_DATA_IG}/OperationDefinition/patient-export",
                    "Bulk Data export of every patient's compartment.",
                ),
                _operation(
                    "everything",
                    EVERYTHING,
                    "The patient's record, paged: `_since`, `_type`, `start`, `end`, `_count`.",
                ),
            ]
        )
    rest["resource"].append(
        {
            "type": "Group",
            "documentation": "The programme cohorts `Group/heart-failure` and `Group/copd`: the "
            "patients with an active CarePlan instantiating the programme's PlanDefinition, "
            "computed on every read. Backend services only.",
            "interaction": [{"code": "read"}, {"code": "search-type"}],
            "searchParam": [
                {"name": "_id", "type": "token", "documentation": "heart-failure | copd"},
                {"name": "identifier", "type": "token", "documentation": "The programme code"},
                {"name": "name", "type": "string", "documentation": "The cohort's name"},
            ],
            "operation": [
                _operation(
                    "export",
                    f"{BULK_DATA_IG}/OperationDefinition/group-export",
                    "Bulk Data export of the cohort's compartments.",
                )
            ],
        }
    )
    return statement
