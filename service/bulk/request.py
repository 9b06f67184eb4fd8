"""The parameters of a Bulk Data ``$export`` kick-off, checked before a job is queued.

Kick-off parameters (Bulk Data Access IG v2): ``_outputFormat`` (NDJSON only, in its three
spellings), ``_type``, ``_since`` and ``_typeFilter`` (FHIR search queries on an exported type,
OR-ed per type; any search parameter telemon supports for that type). Parameters telemon does not
support (``_elements``, ``patient``, ``includeAssociatedData``, unknown ones) are a 400, or with
``Prefer: handling=lenient`` are ignored and reported in the export's error file.

Who may export: backend services (system tokens) only, and only the types their scopes allow
reading and searching (``system/*.rs``, or per type ``system/Observation.rs``); patient tokens get
403. Without ``_type`` an export holds every type the token may read, except ``AuditEvent`` and
``Subscription`` (the audit trail and notification settings are not clinical data; name them in
``_type`` to export them).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qsl, unquote
from zoneinfo import ZoneInfo

import orjson

from service.auth.policy import Principal, forbidden
from service.core.dates import DateFormatError, parse_range
from service.core.outcome import FhirError
from service.core.registry import Registry
from service.fhir.search import split_values

Level = Literal["system", "patient", "group"]

#: The order types are written in (and listed in the manifest): referenced resources first, so
#: that ``telemon import`` of the files in this order resolves every reference.
EXPORT_ORDER = (
    "Patient",
    "Practitioner",
    "Device",
    "Goal",
    "CarePlan",
    "Observation",
    "Flag",
    "Subscription",
    "AuditEvent",
)
#: Exported only when ``_type`` names them.
ON_REQUEST_ONLY = frozenset({"AuditEvent", "Subscription"})
OUTPUT_FORMATS = frozenset({"application/fhir+ndjson", "application/ndjson", "ndjson"})
#: Search parameters that shape a result rather than select resources: not in a _typeFilter.
_RESULT_PARAMS = frozenset(
    {"_include", "_revinclude", "_sort", "_count", "_summary", "_total", "_cursor", "_elements"}
)
_UNSUPPORTED = ("_elements", "patient", "includeAssociatedData")


@dataclass(frozen=True, slots=True)
class ExportParams:
    """What one export job writes."""

    level: Level
    group: str | None
    types: tuple[str, ...]
    since: int | None = None
    #: (type, query string) per ``_typeFilter`` query
    type_filters: tuple[tuple[str, str], ...] = ()
    #: parameters ignored under ``Prefer: handling=lenient``, for the error file
    warnings: tuple[str, ...] = ()

    def to_json(self) -> str:
        """The stored form."""
        return orjson.dumps(
            {
                "level": self.level,
                "group": self.group,
                "types": self.types,
                "since": self.since,
                "type_filters": self.type_filters,
                "warnings": self.warnings,
            }
        ).decode()

    @classmethod
    def from_json(cls, text: str) -> ExportParams:
        """Read the stored form."""
        data = orjson.loads(text)
        return cls(
            level=data["level"],
            group=data["group"],
            types=tuple(data["types"]),
            since=data["since"],
            type_filters=tuple((t, q) for t, q in data["type_filters"]),
            warnings=tuple(data["warnings"]),
        )


def may_export(principal: Principal, res_type: str) -> bool:
    """True when the principal may export ``res_type`` (read and search it as a system)."""
    if principal.kind == "open":
        return True
    grants = principal.grants
    return (
        principal.kind == "system"
        and grants.allows("system", res_type, "r")
        and grants.allows("system", res_type, "s")
    )


def exportable_types(registry: Registry, level: Level) -> list[str]:
    """The types an export at ``level`` can hold, in export order."""
    known = [t for t in EXPORT_ORDER if t in registry]
    if level == "system":
        return known
    return [t for t in known if (rt := registry.get(t)) is not None and rt.compartment]


def _raw_values(raw_query: str, name: str) -> list[str]:
    """The values of ``name`` in a raw query string, split on literal commas *before*
    percent-decoding (a comma inside a ``_typeFilter`` query arrives encoded as ``%2C``)."""
    out: list[str] = []
    for part in raw_query.split("&"):
        key, eq, value = part.partition("=")
        if eq and unquote(key.replace("+", " ")) == name:
            out.extend(unquote(v.replace("+", " ")) for v in value.split(",") if v)
    return out


def parse_kickoff(
    raw_query: str,
    *,
    level: Level,
    group: str | None,
    principal: Principal,
    registry: Registry,
    zone: ZoneInfo,
    lenient: bool,
) -> ExportParams:
    """Check a kick-off's parameters and the caller's right to them (400/403)."""
    if principal.kind == "patient":
        raise forbidden("Bulk Data export is for backend services (system tokens) only")
    warnings: list[str] = []

    def refuse(param: str, message: str) -> None:
        if not lenient:
            raise FhirError.unsupported(message, param)
        warnings.append(f"{message} (ignored: Prefer: handling=lenient)")

    params = parse_qsl(raw_query, keep_blank_values=True)
    known = {"_outputFormat", "_type", "_since", "_typeFilter", "_format"}
    for name, value in params:
        if name in _UNSUPPORTED:
            refuse(name, f"The $export parameter '{name}' is not supported")
        elif name not in known:
            refuse(name, f"Unknown $export parameter '{name}'")
        elif name == "_outputFormat" and value not in OUTPUT_FORMATS:
            raise FhirError.unsupported(
                f"_outputFormat '{value}' is not supported; use application/fhir+ndjson",
                "_outputFormat",
            )
    possible = exportable_types(registry, level)
    requested = [t for v in _raw_values(raw_query, "_type") for t in split_values(v) if t]
    if requested:
        types: list[str] = []
        for t in dict.fromkeys(requested):
            if t not in registry:
                refuse("_type", f"Resource type '{t}' is not supported")
            elif t not in possible:
                refuse("_type", f"{t} is not in a patient compartment: not in a {level} export")
            elif not may_export(principal, t):
                raise forbidden(f"The token's scopes do not allow exporting {t} (system/{t}.rs)")
            else:
                types.append(t)
        types = [t for t in possible if t in types]  # export order
    else:
        types = [t for t in possible if t not in ON_REQUEST_ONLY and may_export(principal, t)]
        if not types:
            raise forbidden("The token's scopes allow exporting no resource type (system/*.rs)")
    since = None
    since_values = [v for k, v in params if k == "_since" and v]
    if since_values:
        try:
            since = parse_range(since_values[-1], zone)[0]
        except DateFormatError as exc:
            raise FhirError.invalid(f"_since: {exc}", "_since") from exc
    filters = _type_filters(raw_query, types, registry, refuse)
    return ExportParams(level, group, tuple(types), since, tuple(filters), tuple(warnings))


def _type_filters(
    raw_query: str, types: list[str], registry: Registry, refuse: Callable[[str, str], None]
) -> list[tuple[str, str]]:
    """``(type, query)`` per ``_typeFilter`` value, checked for shape only (the search
    parameters themselves are checked by the search parser when the job is queued)."""
    out: list[tuple[str, str]] = []
    for value in _raw_values(raw_query, "_typeFilter"):
        res_type, mark, query = value.partition("?")
        if not mark or not query:
            raise FhirError.invalid(f"_typeFilter '{value}' is not 'Type?search'", "_typeFilter")
        if res_type not in types:
            refuse("_typeFilter", f"_typeFilter on {res_type}, which this export does not hold")
            continue
        shaping = [k for k, _ in parse_qsl(query) if k.split(":")[0] in _RESULT_PARAMS]
        if shaping:
            raise FhirError.invalid(
                f"_typeFilter '{value}' uses {shaping[0]}, which a filter cannot",
                "_typeFilter",
            )
        if registry.get(res_type) is not None:
            out.append((res_type, query))
    return out
