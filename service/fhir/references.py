"""References between resources: one rule for every write.

Every version telemon stores passes :func:`local_references` (through
:meth:`service.fhir.service.FhirService.stamp`), whether it came from a POST, a PUT, a
transaction or batch entry, or ``telemon import``. Each ``Reference.reference`` in the resource,
wherever it sits (extensions and contained resources included), is one of:

* ``#id``: a contained resource (structure validation checks that it is there);
* ``urn:uuid:…`` / ``urn:oid:…``: a name that only means something inside a Bundle. A
  transaction, and the importer, replace every one that names an entry's ``fullUrl``; one left
  over names nothing and is refused (422), never stored;
* ``Type/id`` (also ``Type/id/_history/n``, or an absolute URL ending so) of a type telemon
  stores (:class:`service.core.registry.Registry`): a *local* reference. It must resolve to a
  resource on this server, or one written in the same transaction; the caller checks that in
  the database (:meth:`FhirService.check_references`);
* anything else, such as ``Encounter/123``, ``Procedure/ob`` or ``Organization/…`` (types
  telemon does not store): an *external* reference, kept as it is and not checked.

:func:`rewritten` applies a map of Bundle or file names (``fullUrl``, ``Type/id`` in a file) to
the ids the server assigned.
"""

from __future__ import annotations

import re
from collections.abc import Container, Iterator, Mapping
from typing import Any

import orjson

from service.core.indexing import split_reference
from service.core.outcome import FhirError, Issue

#: Prefixes of references that only name something inside a Bundle.
BUNDLE_NAMES = ("urn:uuid:", "urn:oid:")

# A "reference" member in compact JSON (as orjson writes it): searching the text is several
# times faster than walking the resource, and every write does it.
_REFERENCE_JSON = re.compile(rb'"reference":"((?:[^"\\]|\\.)*)"')


def local_references(
    resource: dict[str, Any], content: bytes, stored_types: Container[str]
) -> list[tuple[str, str]]:
    """``(type, id)`` of every reference of ``resource`` that must resolve on this server.

    ``content`` is the resource as compact JSON; ``resource`` is only walked to name elements
    in an error. Raises :class:`FhirError` (422, ``not-found``) naming every ``urn:uuid:`` or
    ``urn:oid:`` reference that was left unresolved. See the module docs for the rule.
    """
    found: list[tuple[str, str]] = []
    for raw in _REFERENCE_JSON.findall(content):
        ref = raw.decode() if b"\\" not in raw else orjson.loads(b'"' + raw + b'"')
        if ref.startswith(BUNDLE_NAMES):
            raise _unresolved(resource)
        target = None if ref.startswith("#") else split_reference(ref)
        if target is not None and target[0] in stored_types:
            found.append(target)
    return found


def _unresolved(resource: dict[str, Any]) -> FhirError:
    rtype = resource.get("resourceType", "Resource")
    return FhirError.rejected(
        [
            Issue(
                "not-found",
                f"Reference '{ref}' names no resource: a urn:uuid: or urn:oid: reference must "
                "name the fullUrl of an entry in the same transaction Bundle (or imported file)",
                (f"{rtype}.{path}",),
            )
            for path, ref in reference_paths(resource)
            if ref.startswith(BUNDLE_NAMES)
        ],
    )


def missing_issues(resource: dict[str, Any], missing: Container[tuple[str, str]]) -> list[Issue]:
    """One issue per element of ``resource`` whose local reference is in ``missing``."""
    rtype = resource.get("resourceType", "Resource")
    issues = []
    for path, ref in reference_paths(resource):
        target = None if ref.startswith("#") else split_reference(ref)
        if target is not None and target in missing:
            diagnostics = f"{target[0]}/{target[1]} does not exist on this server"
            issues.append(Issue("not-found", diagnostics, (f"{rtype}.{path}",)))
    return issues


def is_reference_failure(error: FhirError) -> bool:
    """True when every issue of ``error`` is a reference that did not resolve."""
    return error.status == 422 and all(i.code == "not-found" for i in error.issues)


def rewritten(node: Any, mapping: Mapping[str, str]) -> Any:
    """A copy of ``node`` in which every reference that ``mapping`` names is replaced."""
    if isinstance(node, dict):
        out = {k: rewritten(v, mapping) for k, v in node.items()}
        ref = out.get("reference")
        if isinstance(ref, str) and ref in mapping:
            out["reference"] = mapping[ref]
        return out
    if isinstance(node, list):
        return [rewritten(v, mapping) for v in node]
    return node


def remapped(node: Any, mapping: Mapping[str, str]) -> Any:
    """``node`` with every reference that ``mapping`` names replaced: ``node`` itself when
    none is, else a copy of the parts that change sharing the rest (cheaper than
    :func:`rewritten` for a caller that does not change the result)."""
    if isinstance(node, dict):
        out: dict[str, Any] | None = None
        for key, value in node.items():
            new = remapped(value, mapping)
            if new is not value:
                out = out if out is not None else dict(node)
                out[key] = new
        ref = node.get("reference")
        if isinstance(ref, str) and ref in mapping:
            out = out if out is not None else dict(node)
            out["reference"] = mapping[ref]
        return node if out is None else out
    if isinstance(node, list):
        items = [remapped(v, mapping) for v in node]
        return node if all(a is b for a, b in zip(items, node, strict=True)) else items
    return node


def reference_paths(node: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """``(path, reference)`` for every ``reference`` string below ``node``, in document order.

    ``path`` is FHIRPath below the resource (``performer[0]``, ``extension[1].valueReference``).
    """
    if isinstance(node, dict):
        ref = node.get("reference")
        if isinstance(ref, str) and path:
            yield path, ref
        for key, child in node.items():
            yield from reference_paths(child, f"{path}.{key}" if path else key)
    elif isinstance(node, list):
        for index, child in enumerate(node):
            yield from reference_paths(child, f"{path}[{index}]")
