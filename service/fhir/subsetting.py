"""Subsetted resources for ``_elements`` and ``_summary`` (FHIR R4 search 3.1.1.5.8-9).

The element lists come from the fhir.resources R4B models: ``summary_element_property`` marks
the summary elements (``isSummary`` in the specification), required fields the mandatory ones.
A subsetted resource carries the ``SUBSETTED`` meta tag, so no client mistakes it for the
whole resource (and writes it back).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import orjson
from fhir.resources.R4B import get_fhir_model_class

from service.core.criteria import SummaryMode

SUBSETTED = {
    "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
    "code": "SUBSETTED",
    "display": "subsetted",
}
#: Kept in every subset: what identifies the resource and says it is a subset.
_ALWAYS = frozenset({"resourceType", "id", "meta"})


@lru_cache(maxsize=64)
def _elements(res_type: str) -> tuple[frozenset[str], frozenset[str]]:
    """(mandatory, summary) top-level element names of ``res_type``."""
    mandatory: set[str] = set()
    summary: set[str] = set()
    for name, info in get_fhir_model_class(res_type).model_fields.items():
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        key = info.alias or name
        if info.is_required() or extra.get("element_required"):
            mandatory.add(key)
        if extra.get("summary_element_property"):
            summary.add(key)
    return frozenset(mandatory), frozenset(summary | mandatory)


def _kept(
    res_type: str, elements: tuple[str, ...] | None, summary: SummaryMode | None
) -> frozenset[str] | None:
    """The top-level elements to keep (None: all but ``text``, for ``_summary=data``)."""
    mandatory, summary_elements = _elements(res_type)
    if elements is not None:
        # A choice element may be asked for as value[x] or by its name: valueQuantity.
        return _ALWAYS | mandatory | {e.removesuffix("[x]") for e in elements}
    if summary == "true":
        return _ALWAYS | summary_elements
    if summary == "text":
        return _ALWAYS | mandatory | {"text"}
    return None


def _wanted(key: str, kept: frozenset[str]) -> bool:
    if key in kept:
        return True
    bare = key.lstrip("_")  # a primitive's extension (_birthDate) goes with it
    # A choice element (valueQuantity) is kept when asked for by its stem (value).
    return bare in kept or any(bare.startswith(k) and bare[len(k) : len(k) + 1].isupper()
                               for k in kept)


def subset(
    content: str, res_type: str, elements: tuple[str, ...] | None, summary: SummaryMode | None
) -> str:
    """``content`` (a resource's JSON) cut to ``_elements`` or ``_summary``, tagged SUBSETTED."""
    resource: dict[str, Any] = orjson.loads(content)
    kept = _kept(res_type, elements, summary)
    if kept is None:
        out = {k: v for k, v in resource.items() if k != "text"}
    else:
        out = {k: v for k, v in resource.items() if _wanted(k, kept)}
    meta = dict(out.get("meta") or {})
    tags = [t for t in meta.get("tag", []) if t.get("code") != "SUBSETTED"]
    meta["tag"] = [*tags, SUBSETTED]
    out["meta"] = meta
    return orjson.dumps(out).decode()
