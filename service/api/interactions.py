"""What every FHIR route does around its interaction: authorise it (and open its audit record),
and build the Bundles it answers with."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import orjson

from service.api.deps import AppState, AuditScope
from service.api.wire import instant
from service.auth import policy
from service.auth.policy import Interaction, Principal
from service.storage.repository import StoredVersion


def allow(
    state: AppState,
    who: Principal,
    audit: AuditScope,
    res_type: str,
    interaction: Interaction,
    *,
    query: str | None = None,
    write: bool = False,
) -> tuple[str, ...] | None:
    """Authorise one interaction (404/405 type, 403 scope); returns the compartments to apply."""
    audit_code = "search-type" if interaction == "search" else interaction
    audit.begin(audit_code, res_type, query)
    state.fhir.resource_type(res_type, for_write=write)
    policy.require(who, res_type, interaction)
    return policy.compartment(who)


def new_bundle(kind: str, entries: list[Any], **extra: Any) -> dict[str, Any]:
    """A Bundle of ``kind`` with ``entries`` (none: no ``entry`` element) and ``extra`` elements."""
    result: dict[str, Any] = {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "meta": {"lastUpdated": instant(int(datetime.now(UTC).timestamp() * 1_000_000))},
        "type": kind,
    }
    result.update(extra)
    if entries:  # FHIR: no empty arrays; a Bundle without entries has no ``entry``
        result["entry"] = entries
    return result


def search_entry(base: str, row: StoredVersion, mode: str) -> dict[str, Any]:
    """A search Bundle entry for ``row``: its stored JSON spliced in as it is (no re-parse)."""
    return {
        "fullUrl": f"{base}/{row.res_type}/{row.res_id}",
        "resource": orjson.Fragment(row.content or "{}"),
        "search": {"mode": mode},
    }
