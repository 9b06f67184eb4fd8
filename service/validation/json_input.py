"""Strict FHIR JSON parsing: everything ``orjson`` accepts that FHIR JSON forbids is rejected too.

Hot path (thousands of calls per second), so the work is split in two:

* ``orjson`` does the parse. It already rejects invalid UTF-8, a BOM, lone surrogates, control
  characters, ``NaN``/``Infinity`` and nesting beyond 1024 (without recursing in Python).
* One iterative pass over the result checks what ``orjson`` cannot: our own depth cap, empty values
  (``null``, ``""``, ``{}``, ``[]``), NUL characters and — via a key count compared with the raw
  bytes — whether duplicate keys are possible. Only then does the slow exact duplicate check
  (stdlib ``json`` with ``object_pairs_hook``) run.

Any failure re-walks the document once more, slowly, to name every offending element.

FHIR decimals keep the digits they were written with (``80.50`` is not ``80.5``). A float
cannot, so a body with such a decimal (rare: a regex finds them) is parsed once more with the
stdlib parser into :class:`WrittenDecimal` values, which :func:`dumps_resource` writes back.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

from service.core.outcome import FhirError, Issue

_BOM = b"\xef\xbb\xbf"
# A key is a string followed (after optional whitespace) by ':'; only keys can be, because a '"'
# inside a string is always escaped. Matches with whitespace before the colon are rare enough to
# send the document to the exact duplicate check instead of counting them.
_SPACED_COLON = re.compile(rb'"[ \t\r\n]+:')
# A JSON number with a fraction or an exponent, as a value (after ':', '[' or ',').
_DECIMAL = re.compile(
    rb"[:\[,][ \t\r\n]*(-?(?:0|[1-9][0-9]*)(?:\.[0-9]+(?:[eE][-+]?[0-9]+)?|[eE][-+]?[0-9]+))"
)


def parse_json(raw: bytes, *, max_depth: int = 64) -> Any:
    """Parse a FHIR JSON body strictly.

    Raises :class:`FhirError` (400) for invalid UTF-8, a BOM, NUL characters, lone surrogates,
    malformed JSON, duplicate keys, nesting deeper than ``max_depth`` and the empty values FHIR JSON
    forbids (``null``, ``""``, ``{}``, ``[]``). A ``null`` is accepted only where FHIR needs it: as
    a placeholder inside a primitive array that has a ``_name`` sibling carrying extensions.
    """
    if raw.startswith(_BOM):
        raise FhirError.structure("A UTF-8 byte order mark (BOM) is not allowed")
    if b"\x00" in raw:
        raise FhirError.structure("NUL characters are not allowed")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _decode_error(raw, exc, max_depth) from None

    key_count = _fast_scan(data, max_depth, check_nul=b"\\u0000" in raw)
    if key_count < 0:
        raise FhirError.malformed(_describe(data, max_depth))
    if _SPACED_COLON.search(raw) or raw.count(b'":') != key_count:
        _check_duplicates(raw)
    if _loses_precision(raw):
        return json.loads(raw, parse_float=WrittenDecimal)
    return data


class WrittenDecimal(float):
    """A JSON decimal that keeps the digits it was written with.

    FHIR requires a decimal's precision to be kept (``80.50`` stays ``80.50``), which a float
    cannot do. Computations use the float value; :func:`dumps_resource` writes the digits back.
    """

    __slots__ = ("text",)
    text: str

    def __new__(cls, text: str) -> WrittenDecimal:
        value = super().__new__(cls, text)
        value.text = text
        return value


def _loses_precision(raw: bytes) -> bool:
    """True when a decimal in ``raw`` would not read back as written from a float.

    ``80.5`` and ``37.0`` survive a float; ``80.50``, ``1e2`` or 20 significant digits do not.
    Digits inside strings may match too; that only costs the slower exact parse.
    """
    return any(repr(float(token)) != token.decode() for token in _DECIMAL.findall(raw))


def dumps_resource(resource: Any) -> tuple[bytes, bool]:
    """Serialise a resource, writing each decimal with the digits it was received with.

    Also tells whether there were any such decimals (then the dict holds :class:`WrittenDecimal`
    values, which only this function can serialise).
    """
    written = False

    def write_decimal(value: Any) -> orjson.Fragment:
        nonlocal written
        if isinstance(value, WrittenDecimal):
            written = True
            return orjson.Fragment(value.text)
        raise TypeError(f"{type(value).__name__} is not JSON serialisable")

    return orjson.dumps(resource, default=write_decimal), written


def _decode_error(raw: bytes, exc: orjson.JSONDecodeError, max_depth: int) -> FhirError:
    message = exc.msg
    if message.startswith("depth limit"):
        return FhirError.structure(f"JSON nesting is deeper than {max_depth} levels")
    if "UTF-8" in message:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as err:
            return FhirError.invalid(f"Body is not valid UTF-8 (byte {err.start})")
        # Valid UTF-8 by Python's rules but not orjson's: encoded surrogate code points.
        return FhirError.invalid("Body contains an encoded surrogate code point")
    if "surrogate" in message:
        message = f"lone surrogate escape ({message})"
    return FhirError.structure(f"Malformed JSON at line {exc.lineno} column {exc.colno}: {message}")


def _fast_scan(root: Any, max_depth: int, *, check_nul: bool) -> int:
    """The number of object keys in ``root``, or -1 if anything is wrong (no paths: hot path)."""
    keys = 0
    # (node, depth, whether a list may hold null padding: checked against its twin when pushed)
    stack: list[tuple[Any, int, bool]] = [(root, 1, False)]
    while stack:
        node, depth, nulls_ok = stack.pop()
        if depth > max_depth:
            return -1
        if type(node) is dict:
            if not node:
                return -1
            keys += len(node)
            for key, value in node.items():
                kind = type(value)
                if kind is dict:
                    stack.append((value, depth + 1, False))
                elif kind is list:
                    stack.append((value, depth + 1, None in value and _null_allowed(node, key)))
                elif kind is str:
                    if not value or (check_nul and "\x00" in value):
                        return -1
                elif value is None:
                    return -1
                if check_nul and "\x00" in key:
                    return -1
        elif type(node) is list:
            if not node:
                return -1
            for value in node:
                kind = type(value)
                if kind is dict or kind is list:
                    stack.append((value, depth + 1, False))
                elif kind is str:
                    if not value or (check_nul and "\x00" in value):
                        return -1
                elif value is None and not nulls_ok:
                    return -1
        elif node is None or (type(node) is str and (not node or (check_nul and "\x00" in node))):
            return -1
    return keys


def _null_allowed(obj: dict[str, Any], key: str) -> bool:
    """FHIR JSON pads a primitive array and its ``_name`` twin with ``null``s to align them."""
    twin = key[1:] if key.startswith("_") else f"_{key}"
    return type(obj.get(twin)) is list


def _describe(root: Any, max_depth: int) -> list[Issue]:
    """Every problem :func:`_fast_scan` stops at, each with its element path."""
    issues: list[Issue] = []
    base = root.get("resourceType") if type(root) is dict else None
    stack: list[tuple[Any, str, int, bool]] = [
        (root, base if type(base) is str and base else "$", 1, False)
    ]
    while stack:
        node, path, depth, null_ok = stack.pop()
        if depth > max_depth:
            issues.append(
                Issue("structure", f"JSON nesting is deeper than {max_depth} levels", (path,))
            )
            break  # one is enough; deeper levels would repeat it
        if node is None:
            if not null_ok:
                issues.append(Issue("structure", "null is not allowed in FHIR JSON", (path,)))
        elif type(node) is str:
            if not node:
                issues.append(Issue("structure", "Empty strings are not allowed", (path,)))
            elif "\x00" in node:
                issues.append(Issue("structure", "NUL characters are not allowed", (path,)))
        elif type(node) is dict:
            if not node:
                issues.append(Issue("structure", "Empty objects are not allowed", (path,)))
            for key, value in reversed(node.items()):
                if "\x00" in key:
                    issues.append(Issue("structure", "NUL characters are not allowed", (path,)))
                allow = type(value) is list and _null_allowed(node, key)
                stack.append((value, f"{path}.{key}", depth + 1, allow))
        elif type(node) is list:
            if not node:
                issues.append(Issue("structure", "Empty arrays are not allowed", (path,)))
            for index in range(len(node) - 1, -1, -1):
                item = node[index]  # padding nulls only: a nested array never is a primitive array
                stack.append((item, f"{path}[{index}]", depth + 1, null_ok and item is None))
    return issues


def _check_duplicates(raw: bytes) -> None:
    """Exact duplicate-key check; only runs when the cheap key count cannot rule duplicates out.

    The document has already been parsed by ``orjson`` within the depth cap, so the stdlib's
    recursive parser is safe here.
    """
    duplicates: list[str] = []

    def pairs_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, value in pairs:
            if key in result:
                duplicates.append(key)
            result[key] = value
        return result

    json.loads(raw, object_pairs_hook=pairs_hook)
    if duplicates:
        names = ", ".join(sorted(set(duplicates)))
        raise FhirError.structure(f"Duplicate JSON object keys: {names}")


def parse_patch_json(raw: bytes, *, max_depth: int = 64) -> Any:
    """Parse a PATCH body: as strict as :func:`parse_json`, except that empty values are allowed.

    A merge patch removes an element with ``null``; a JSON Patch may carry any JSON value. The
    patched resource is held to the FHIR JSON rules again by :func:`check_resource_json`.
    """
    if raw.startswith(_BOM):
        raise FhirError.structure("A UTF-8 byte order mark (BOM) is not allowed")
    if b"\x00" in raw or b"\\u0000" in raw:
        raise FhirError.structure("NUL characters are not allowed")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _decode_error(raw, exc, max_depth) from None
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > max_depth:
            raise FhirError.structure(f"JSON nesting is deeper than {max_depth} levels")
        children = node.values() if type(node) is dict else node if type(node) is list else ()
        stack.extend((child, depth + 1) for child in children)
    _check_duplicates(raw)
    return json.loads(raw, parse_float=WrittenDecimal) if _loses_precision(raw) else data


def parse_stored(content: str | bytes) -> Any:
    """Parse JSON that telemon stored, keeping each decimal's digits (:class:`WrittenDecimal`)."""
    raw = content.encode() if isinstance(content, str) else content
    if _loses_precision(raw):
        return json.loads(raw, parse_float=WrittenDecimal)
    return orjson.loads(raw)


def check_resource_json(data: Any, *, max_depth: int = 64) -> None:
    """400 for what FHIR JSON forbids (empty values, NUL, nesting), e.g. in a patched resource."""
    if _fast_scan(data, max_depth, check_nul=True) < 0:
        raise FhirError.malformed(_describe(data, max_depth))
