"""The bodies of a FHIR ``PATCH``: JSON Patch (RFC 6902), JSON Merge Patch (RFC 7386) and
FHIRPath Patch (a ``Parameters`` resource, :mod:`service.fhir.fhirpath_patch`).

Each is applied to the current resource's JSON and returns the new JSON; the caller validates
the result like any update. A patch document that cannot be read is refused with 400; one that
reads but does not apply to this resource (a failed ``test``, a path that is not there) with
422, both naming the failing operation in ``expression``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Literal

from service.core.outcome import FhirError
from service.fhir import fhirpath_patch

PatchKind = Literal["json-patch", "merge-patch", "fhirpath-patch"]

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
#: The media types a PATCH body may have (``application/json``: decided by the body's shape).
PATCH_MEDIA_TYPES = (JSON_PATCH, MERGE_PATCH, "application/fhir+json", "application/json")
_OPS = ("add", "remove", "replace", "move", "copy", "test")
#: How many JSON values (objects, arrays, scalars) a JSON Patch's copies may add: each copy can
#: double a document (copy a list into itself), so a few dozen small ops could exhaust memory.
MAX_COPIED_VALUES = 100_000


@dataclass(frozen=True, slots=True)
class Patch:
    """A parsed PATCH body and which kind of patch it is."""

    kind: PatchKind
    body: Any


def patch_of(media: str, body: Any) -> Patch:
    """The patch a body of ``media`` type is (400 when its shape does not fit the type).

    ``application/json`` (what generic clients send) is read by shape: an array is a JSON
    Patch, a ``Parameters`` resource a FHIRPath Patch, any other object a merge patch.
    """
    if media == JSON_PATCH or (media == "application/json" and isinstance(body, list)):
        if not isinstance(body, list):
            raise _bad("A JSON Patch is an array of operations", "JsonPatch")
        return Patch("json-patch", body)
    is_parameters = isinstance(body, dict) and body.get("resourceType") == "Parameters"
    if media == "application/fhir+json" or (is_parameters and media != MERGE_PATCH):
        if not is_parameters:
            raise _bad(
                "A FHIR PATCH with application/fhir+json is a FHIRPath Patch: a Parameters "
                "resource",
                "resourceType",
            )
        return Patch("fhirpath-patch", body)
    if not isinstance(body, dict):
        raise _bad("A merge patch is a JSON object", "MergePatch")
    return Patch("merge-patch", body)


def apply(patch: Patch, resource: dict[str, Any]) -> dict[str, Any]:
    """The resource after ``patch`` (``resource`` itself is left as it was)."""
    doc = copy.deepcopy(resource)
    if patch.kind == "json-patch":
        budget = [MAX_COPIED_VALUES]
        for index, op in enumerate(patch.body):
            doc = _json_op(doc, op, f"JsonPatch[{index}]", budget)
        return doc
    if patch.kind == "merge-patch":
        merged = _merge(doc, patch.body)
        assert isinstance(merged, dict)
        return merged
    return fhirpath_patch.apply(doc, patch.body)


def _bad(message: str, expression: str) -> FhirError:
    return FhirError.invalid(message, expression)


def _unprocessable(message: str, expression: str) -> FhirError:
    return FhirError.unprocessable(message, expression)


def _merge(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge member by member, ``null`` removes, anything else replaces."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = _merge(out.get(key), value)
    return out


def _pointer(value: Any, where: str) -> list[str]:
    """The reference tokens of a JSON Pointer (RFC 6901)."""
    if not isinstance(value, str) or (value and not value.startswith("/")):
        raise _bad(f"'{value}' is not a JSON Pointer", where)
    return [t.replace("~1", "/").replace("~0", "~") for t in value.split("/")[1:]]


def _index(container: list[Any], token: str, where: str, *, append: bool = False) -> int:
    if append and token == "-":
        return len(container)
    if not token.isdigit() or (len(token) > 1 and token.startswith("0")):
        raise _unprocessable(f"'{token}' is not an array index", where)
    index = int(token)
    if index > len(container) or (index == len(container) and not append):
        raise _unprocessable(f"Array index {index} is out of range", where)
    return index


def _parent(doc: Any, tokens: list[str], where: str) -> Any:
    """The container the last token of ``tokens`` lives in."""
    node = doc
    for token in tokens[:-1]:
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list):
            node = node[_index(node, token, where)]
        else:
            raise _unprocessable(f"The path does not exist at '{token}'", where)
    return node


def _get(doc: Any, tokens: list[str], where: str) -> Any:
    if not tokens:
        return doc
    parent = _parent(doc, tokens, where)
    last = tokens[-1]
    if isinstance(parent, dict) and last in parent:
        return parent[last]
    if isinstance(parent, list):
        return parent[_index(parent, last, where)]
    raise _unprocessable(f"The path does not exist at '{last}'", where)


def _remove(doc: Any, tokens: list[str], where: str) -> Any:
    if not tokens:
        raise _unprocessable("The whole resource cannot be removed", where)
    parent = _parent(doc, tokens, where)
    last = tokens[-1]
    if isinstance(parent, dict) and last in parent:
        return parent.pop(last)
    if isinstance(parent, list):
        return parent.pop(_index(parent, last, where))
    raise _unprocessable(f"The path does not exist at '{last}'", where)


def _add(doc: Any, tokens: list[str], value: Any, where: str) -> Any:
    if not tokens:
        return value
    parent = _parent(doc, tokens, where)
    last = tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, last, where, append=True), value)
    else:
        raise _unprocessable(f"Cannot add to a {type(parent).__name__} at '{last}'", where)
    return doc


def _spend(value: Any, budget: list[int], where: str) -> None:
    """Count ``value``'s JSON values against ``budget`` (413 once it is used up)."""
    stack = [value]
    while stack:
        budget[0] -= 1
        if budget[0] < 0:
            raise FhirError.too_large(
                f"The copies of this patch exceed {MAX_COPIED_VALUES} values",
                where,
            )
        node = stack.pop()
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def _json_op(doc: Any, op: Any, where: str, budget: list[int]) -> Any:
    if not isinstance(op, dict):
        raise _bad("A JSON Patch operation is an object", where)
    name = op.get("op")
    if name not in _OPS:
        raise _bad(f"Unknown JSON Patch op '{name}' (one of {', '.join(_OPS)})", f"{where}.op")
    path = _pointer(op.get("path"), f"{where}.path")
    if name in ("add", "replace", "test") and "value" not in op:
        raise _bad(f"The '{name}' op needs a value", f"{where}.value")
    if name == "add":
        return _add(doc, path, copy.deepcopy(op["value"]), f"{where}.path")
    if name == "remove":
        _remove(doc, path, f"{where}.path")
        return doc
    if name == "replace":
        _get(doc, path, f"{where}.path")  # the target must exist
        if not path:
            return copy.deepcopy(op["value"])
        _remove(doc, path, f"{where}.path")
        return _add(doc, path, copy.deepcopy(op["value"]), f"{where}.path")
    if name == "test":
        if _get(doc, path, f"{where}.path") != op["value"]:
            raise _unprocessable(f"test failed: {op.get('path')} is not the expected value", where)
        return doc
    source = _pointer(op.get("from"), f"{where}.from")
    if name == "move":
        if path[: len(source)] == source and path != source:
            raise _unprocessable("A value cannot be moved into itself", f"{where}.from")
        value = _remove(doc, source, f"{where}.from")
    else:
        found = _get(doc, source, f"{where}.from")
        _spend(found, budget, where)
        value = copy.deepcopy(found)
    return _add(doc, path, value, f"{where}.path")
