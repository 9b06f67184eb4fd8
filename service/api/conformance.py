"""Read-only conformance resources (profiles, value sets, …) and the CapabilityStatement."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from service import __version__
from service.bulk.capabilities import add_bulk_capabilities
from service.core.registry import COMMON_PARAMS, Registry, ResourceType, SearchParam
from service.fhir.search import chain_target, revinclude_names

#: Conformance resource types served read-only from ``fhir_profiles/``.
CONFORMANCE_TYPES = (
    "StructureDefinition",
    "ValueSet",
    "CodeSystem",
    "SearchParameter",
    "PlanDefinition",
    "OperationDefinition",
)


class ConformanceStore:
    """The conformance resources shipped with the server, by type and id."""

    def __init__(self, resources: list[dict[str, Any]]) -> None:
        self._by_key = {(r["resourceType"], r["id"]): r for r in resources if "id" in r}

    def get(self, res_type: str, res_id: str) -> dict[str, Any] | None:
        """One resource, or None."""
        return self._by_key.get((res_type, res_id))

    def all_of(self, res_type: str) -> list[dict[str, Any]]:
        """Every resource of a type, ordered by id."""
        return [r for (t, _), r in sorted(self._by_key.items()) if t == res_type]


RESTFUL_SECURITY_SERVICE = "http://terminology.hl7.org/CodeSystem/restful-security-service"
OAUTH_URIS = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
#: smart-configuration key → the oauth-uris extension's sub-extension (SMART App Launch).
_OAUTH_URI_KEYS = {
    "authorization_endpoint": "authorize",
    "token_endpoint": "token",
    "registration_endpoint": "register",
    "management_endpoint": "manage",
    "introspection_endpoint": "introspect",
    "revocation_endpoint": "revoke",
}


def security_section(smart: Mapping[str, Any] | None) -> dict[str, Any]:
    """``rest.security``: derived from the smart-configuration document (None: open mode).

    Built from that document rather than from its own list of URLs, so the CapabilityStatement
    and ``/.well-known/smart-configuration`` cannot name different endpoints.
    """
    if smart is None:
        return {
            "cors": False,
            "description": "Authorization is off (TELEMON_AUTH=open): no access control and "
            "no audit trail. For local demos only.",
        }
    uris = [
        {"url": name, "valueUri": smart[key]}
        for key, name in _OAUTH_URI_KEYS.items()
        if smart.get(key)
    ]
    security: dict[str, Any] = {
        "cors": False,
        "service": [
            {
                "coding": [
                    {
                        "system": RESTFUL_SECURITY_SERVICE,
                        "code": "SMART-on-FHIR",
                        "display": "SMART-on-FHIR",
                    }
                ],
                "text": "OAuth2 using SMART-on-FHIR profile (see https://docs.smarthealthit.org)",
            }
        ],
        "description": "SMART App Launch 2 / MedMij: PGOs use the authorization-code grant with "
        "PKCE S256 (patient login and consent); backend services use client_credentials with "
        "private_key_jwt (SMART Backend Services). Discovery: "
        ".well-known/smart-configuration.",
    }
    if uris:  # FHIR: no empty arrays
        security["extension"] = [{"url": OAUTH_URIS, "extension": uris}]
    return security


def _chain_documentation(rtype: ResourceType, param: SearchParam, registry: Registry) -> str:
    """How a reference parameter chains (service/fhir/search.py: one level, to any
    parameter of a target type this server stores)."""
    stored = [t for t in param.targets if t in registry]
    if param.type != "reference" or (param.targets and not stored):
        return ""
    target = chain_target(rtype, param)
    if target is not None:
        return (
            f". Chained (one level) to any parameter of {target}, e.g. "
            f"{param.name}.identifier or {param.name}:{target}.identifier"
        )
    return (
        f". Chained (one level) with a target type this server stores: "
        f"{param.name}:Type.parameter"
    )


def _has_documentation(revincludes: list[str]) -> str | None:
    """The reverse chains ``_has`` accepts (the same Source:param pairs as _revinclude)."""
    if not revincludes:
        return None
    return (
        "Reverse chaining: _has:Source:reference:parameter (one level, e.g. "
        f"_has:{revincludes[0]}:identifier=…) through {', '.join(revincludes)}."
    )


def capability_statement(
    registry: Registry,
    profiles: dict[str, list[str]],
    base: str,
    software_date: str,
    smart: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A CapabilityStatement that describes exactly what this server does.

    ``smart`` is the smart-configuration document in oauth mode (None in open mode); it
    becomes ``rest.security``.
    """
    resources = []
    for rtype in registry:
        interactions = [{"code": code} for code in rtype.interactions]
        params = []
        for p in (*rtype.params.values(), *COMMON_PARAMS.values()):
            param: dict[str, Any] = {
                "name": p.name, "type": p.type,
                "documentation": p.description + _chain_documentation(rtype, p, registry),
            }
            if p.definition:
                param["definition"] = p.definition
            params.append(param)
        entry: dict[str, Any] = {
            "type": rtype.name,
            "interaction": interactions,
            "versioning": "versioned-update",
            "readHistory": True,
            "updateCreate": True,
            "conditionalCreate": True,
            # PUT/DELETE/PATCH [type]?criteria (service/fhir/service.py); R4 has no element for
            # conditional patch, which rest.documentation mentions instead.
            "conditionalUpdate": "update" in rtype.interactions,
            "conditionalDelete": "single" if "delete" in rtype.interactions else "not-supported",
            # service/fhir/references.py: references to stored types must resolve, others
            # (and identifier-only ones) are kept as they are.
            "referencePolicy": ["literal", "logical", "enforced"],
            "searchParam": params,
        }
        if rtype.includes:  # FHIR: no empty arrays
            entry["searchInclude"] = list(rtype.includes)
        revincludes = revinclude_names(rtype, registry)
        if revincludes:
            entry["searchRevInclude"] = revincludes
        if profiles.get(rtype.name):
            entry["supportedProfile"] = profiles[rtype.name]
        has = _has_documentation(revincludes)
        documentation = " ".join(d for d in (rtype.documentation, has) if d)
        if documentation:
            entry["documentation"] = documentation
        if rtype.name == "Observation":
            entry["operation"] = [
                {
                    "name": "lastn",
                    "definition": "http://hl7.org/fhir/OperationDefinition/Observation-lastn",
                }
            ]
        resources.append(entry)
    for name in CONFORMANCE_TYPES:
        resources.append(
            {"type": name, "interaction": [{"code": "read"}, {"code": "search-type"}]}
        )
    statement = {
        "resourceType": "CapabilityStatement",
        "id": "telemon",
        "url": f"{base}/metadata",
        "name": "telemon",
        "title": "telemon telemonitoring FHIR server",
        "status": "active",
        "date": software_date,
        "publisher": "telemon",
        "kind": "instance",
        "software": {"name": "telemon", "version": __version__},
        "implementation": {"description": "telemon FHIR R4 endpoint", "url": base},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "application/json"],
        "rest": [
            {
                "mode": "server",
                "documentation": "Home measurements for heart-failure and COPD telemonitoring. "
                "A reference to a resource type listed here must resolve on this server; a "
                "reference to another type (Encounter, Organization …) is kept as an external "
                "reference; a urn:uuid: reference must name an entry of its transaction. "
                "PATCH takes JSON Patch (application/json-patch+json), FHIRPath Patch (a "
                "Parameters resource, application/fhir+json) or JSON merge patch "
                "(application/merge-patch+json), also conditionally: PATCH [type]?criteria.",
                "security": security_section(smart),
                "interaction": [{"code": "transaction"}, {"code": "batch"}],
                "resource": resources,
            }
        ],
    }
    return add_bulk_capabilities(statement)
