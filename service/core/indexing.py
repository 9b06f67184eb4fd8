"""Extract search-index values from a resource, driven by the registry's search parameters."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

from service.core.dates import DateFormatError, parse_range
from service.core.registry import ResourceType, SearchParam


@dataclass(slots=True)
class IndexValues:
    """Everything storage indexes for one resource version."""

    patient_id: str | None = None
    date_low: int | None = None
    date_high: int | None = None
    tokens: list[tuple[str, str | None, str]] = field(default_factory=list)
    references: list[tuple[str, str, str]] = field(default_factory=list)
    dates: list[tuple[str, int, int]] = field(default_factory=list)
    quantities: list[tuple[str, float, str | None, str | None]] = field(default_factory=list)
    strings: list[tuple[str, str]] = field(default_factory=list)


#: Widths of the index columns (service/storage/tables.py): token codes and systems, quantity
#: systems; quantity unit codes, reference types and ids.
WIDE_KEY = 255
NARROW_KEY = 64
_HASH_CHARS = 32


def index_key(text: str, width: int) -> str:
    """``text`` as an index key of at most ``width`` characters.

    FHIR strings have no length limit, index columns do (PostgreSQL refuses a longer value,
    SQLite keeps it). A longer value is stored as its first characters, ``#`` and a hash of
    the whole; searches pass their values through this same function, so an exact match
    still finds it on both backends.
    """
    if len(text) <= width:
        return text
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:_HASH_CHARS]
    return f"{text[: width - _HASH_CHARS - 1]}#{digest}"


def optional_key(text: str | None, width: int) -> str | None:
    """:func:`index_key` for a value that may be absent."""
    return None if text is None else index_key(text, width)


def normalize_string(text: str) -> str:
    """Case- and accent-insensitive form used for string search (``Ç`` → ``c``)."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def string_key(text: str) -> str:
    """A string as indexed and searched: normalised, its first :data:`WIDE_KEY` characters
    (string search matches on a prefix, so it is cut rather than hashed)."""
    return normalize_string(text)[:WIDE_KEY]


_STEP = re.compile(r"([A-Za-z_]+(?:\[x\])?)(?:\('([^']*)'\))?")


@lru_cache(maxsize=1024)
def _steps(path: str) -> tuple[tuple[str, str | None, str | None], ...]:
    """``(element, extension url, choice prefix)`` per step of ``path``, tokenised once.

    "extension('http://…/flag-priority').valueCodeableConcept": URLs contain dots, so the
    path is tokenised rather than split. The prefix is set for a choice step ``name[x]``.
    """
    return tuple(
        (m.group(1), m.group(2), m.group(1)[:-3] if m.group(1).endswith("[x]") else None)
        for m in _STEP.finditer(path)
    )


def resolve_path(resource: dict[str, Any], path: str) -> Iterator[tuple[str, Any]]:
    """Yield ``(element_name, value)`` for every value at the dotted ``path`` (lists flattened).

    A step ``name[x]`` matches a choice element; ``extension('url')`` keeps only the
    extensions with that url.
    """
    nodes: list[tuple[str, Any]] = [("", resource)]
    for step, url, prefix in _steps(path):
        found: list[tuple[str, Any]] = []
        for _, node in nodes:
            if not isinstance(node, dict):
                continue
            if prefix is not None:
                items = [
                    (k, v)
                    for k, v in node.items()
                    if k.startswith(prefix) and k[len(prefix) : len(prefix) + 1].isupper()
                ]
            elif step in node:
                items = [(step, node[step])]
            else:
                continue
            for key, value in items:
                values = value if isinstance(value, list) else [value]
                found.extend(
                    (key, v)
                    for v in values
                    if url is None or (isinstance(v, dict) and v.get("url") == url)
                )
        nodes = found
    return iter(nodes)


def split_reference(reference: str) -> tuple[str, str] | None:
    """``"Patient/123"`` (or an absolute URL ending so, or a versioned reference
    ``Patient/123/_history/2``) → ``("Patient", "123")``; else None."""
    parts = reference.split("/")
    if "#" in reference:
        return None
    if len(parts) >= 4 and parts[-2] == "_history" and parts[-1]:  # a versioned reference
        parts = parts[:-2]
    if len(parts) >= 2 and parts[-2][:1].isupper() and parts[-1]:
        return parts[-2], parts[-1]
    return None


def _tokens(value: Any) -> Iterator[tuple[str | None, str]]:
    if isinstance(value, str):
        yield None, value
    elif isinstance(value, bool):
        yield None, "true" if value else "false"
    elif isinstance(value, dict):
        if "coding" in value:
            for coding in value["coding"]:
                if "code" in coding:
                    yield coding.get("system"), coding["code"]
        elif "code" in value:  # Coding or Quantity
            yield value.get("system"), value["code"]
        elif "value" in value:  # Identifier
            yield value.get("system"), value["value"]


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):  # HumanName, Address
        for key in ("text", "family", "given", "prefix", "suffix", "line", "city", "postalCode"):
            part = value.get(key)
            if isinstance(part, str):
                yield part
            elif isinstance(part, list):
                yield from (p for p in part if isinstance(p, str))


def _date_range(value: Any, zone: ZoneInfo) -> tuple[int, int] | None:
    try:
        if isinstance(value, str):
            return parse_range(value, zone)
        if isinstance(value, dict) and ("start" in value or "end" in value):  # Period
            low = parse_range(value["start"], zone)[0] if "start" in value else -(2**62)
            high = parse_range(value["end"], zone)[1] if "end" in value else 2**62
            return low, high
    except DateFormatError:
        return None
    return None


def extract(resource: dict[str, Any], rtype: ResourceType, zone: ZoneInfo) -> IndexValues:
    """Compute the index values of ``resource`` for every search parameter of ``rtype``."""
    out = IndexValues()
    for param in rtype.params.values():
        _extract_param(resource, param, rtype, zone, out)
    if rtype.compartment == "self":
        out.patient_id = resource.get("id")
    elif rtype.compartment:
        for name, type_, id_ in out.references:
            if name == rtype.compartment and type_ == "Patient":
                out.patient_id = id_
                break
    return out


def _extract_param(
    resource: dict[str, Any],
    param: SearchParam,
    rtype: ResourceType,
    zone: ZoneInfo,
    out: IndexValues,
) -> None:
    for path in param.paths:
        for _, value in resolve_path(resource, path):
            if param.type == "token":
                out.tokens.extend(
                    (param.name, optional_key(s, WIDE_KEY), index_key(c, WIDE_KEY))
                    for s, c in _tokens(value)
                )
            elif param.type == "reference":
                # A Reference, or a canonical URL (CarePlan.instantiatesCanonical).
                ref = value.get("reference") if isinstance(value, dict) else value
                target = split_reference(ref) if isinstance(ref, str) else None
                if target and (not param.targets or target[0] in param.targets):
                    type_, id_ = (index_key(part, NARROW_KEY) for part in target)
                    out.references.append((param.name, type_, id_))
            elif param.type == "date":
                rng = _date_range(value, zone)
                if rng is None:
                    continue
                if param.name == rtype.primary_date and out.date_low is None:
                    out.date_low, out.date_high = rng
                else:
                    out.dates.append((param.name, rng[0], rng[1]))
            elif param.type == "quantity":
                if isinstance(value, dict) and isinstance(value.get("value"), int | float):
                    out.quantities.append(
                        (
                            param.name,
                            float(value["value"]),
                            optional_key(value.get("system"), WIDE_KEY),
                            optional_key(value.get("code"), NARROW_KEY),
                        )
                    )
            elif param.type in ("string", "uri"):
                out.strings.extend((param.name, string_key(s)) for s in _strings(value))
