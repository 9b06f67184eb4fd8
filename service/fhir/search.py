"""Parse FHIR search parameters into a typed :class:`SearchQuery`.

Unknown or unsupported parameters become warnings (lenient handling) or a 400 error when the
client asked for ``Prefer: handling=strict``.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, cast
from zoneinfo import ZoneInfo

import orjson

from service.fhir.criteria import (
    Criterion,
    Cursor,
    DateCriterion,
    DateValue,
    IdCriterion,
    Include,
    Prefix,
    QuantityCriterion,
    QuantityValue,
    ReferenceCriterion,
    SearchQuery,
    SortKey,
    StringCriterion,
    TokenCriterion,
    TokenValue,
)
from service.fhir.dates import DateFormatError, parse_range, to_micros
from service.fhir.indexing import (
    NARROW_KEY,
    WIDE_KEY,
    index_key,
    optional_key,
    split_reference,
    string_key,
)
from service.fhir.outcome import FhirError, Issue, nul_error
from service.fhir.registry import COMMON_PARAMS, Registry, ResourceType
from service.validation.integers import parse_unsigned

_PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$", re.ASCII)
#: Caps that keep one query's SQL bounded (SQLite refuses expression trees deeper than 1000).
MAX_PARAMS = 100
MAX_VALUES = 100
#: Parameters that shape the result rather than select resources.
_CONTROL = {"_count", "_sort", "_include", "_summary", "_total", "_cursor", "_format", "_pretty"}


def split_values(raw: str) -> list[str]:
    """Split a parameter value on unescaped commas (``\\,`` stays a comma)."""
    parts = re.split(r"(?<!\\),", raw)
    return [p.replace("\\,", ",").replace("\\|", "|") for p in parts]


def _bad(param: str, message: str) -> FhirError:
    return FhirError.single(400, "invalid", message, param)


def _split_prefix(value: str) -> tuple[Prefix, str]:
    if len(value) > 2 and value[:2] in _PREFIXES and not value[:2].isdigit():
        return cast(Prefix, value[:2]), value[2:]
    return "eq", value


def _token_value(raw: str) -> TokenValue:
    """``[system|]code`` as the index keys them (:func:`~service.fhir.indexing.index_key`)."""
    if "|" not in raw:
        return TokenValue(None, index_key(raw, WIDE_KEY))
    system, _, code = raw.partition("|")
    return TokenValue(index_key(system, WIDE_KEY), optional_key(code or None, WIDE_KEY))


def _date_values(param: str, raw: str, zone: ZoneInfo) -> tuple[DateValue, ...]:
    out = []
    now = to_micros(datetime.now(UTC))
    for value in split_values(raw):
        prefix, text = _split_prefix(value)
        try:
            low, high = parse_range(text, zone)
        except DateFormatError as exc:
            raise _bad(param, f"Invalid date for '{param}': {exc}") from exc
        slack = max(86_400_000_000, abs(now - low) // 10) if prefix == "ap" else 0
        out.append(DateValue(prefix, low, high, slack))
    return tuple(out)


def _quantity_values(param: str, raw: str) -> tuple[QuantityValue, ...]:
    out = []
    for value in split_values(raw):
        prefix, text = _split_prefix(value)
        number_text, _, rest = text.partition("|")
        system, _, code = rest.partition("|") if rest or "|" in text else ("", "", "")
        if not _NUMBER.match(number_text):
            raise _bad(param, f"Invalid number '{number_text}' for '{param}'")
        number = float(number_text)
        # Precision of the given number sets the eq range: 80.5 means [80.45, 80.55).
        decimals = len(number_text.split(".")[1]) if "." in number_text else 0
        half = 0.5 * 10 ** (-decimals)
        out.append(
            QuantityValue(
                prefix,
                number,
                number - half,
                number + half,
                optional_key(system or None, WIDE_KEY),
                optional_key(code or None, NARROW_KEY),
            )
        )
    return tuple(out)


def encode_cursor(cursor: Cursor) -> str:
    """An opaque, URL-safe paging token."""
    return base64.urlsafe_b64encode(orjson.dumps([cursor.value, cursor.rid])).decode().rstrip("=")


def decode_cursor(token: str) -> Cursor:
    """Inverse of :func:`encode_cursor`; a tampered token is a 400."""
    try:
        value, rid = orjson.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        if not isinstance(rid, int) or not isinstance(value, int | str | None):
            raise ValueError("bad cursor")
    except (ValueError, orjson.JSONDecodeError, TypeError) as exc:
        raise _bad("_cursor", "Invalid paging cursor") from exc
    return Cursor(value, rid)


def parse_search(
    rtype: ResourceType,
    params: Sequence[tuple[str, str]],
    *,
    registry: Registry,
    zone: ZoneInfo,
    default_count: int,
    max_count: int,
    strict: bool,
) -> tuple[SearchQuery, list[Issue]]:
    """Turn query parameters into a :class:`SearchQuery`; also returns warnings."""
    query = SearchQuery(res_type=rtype.name, count=default_count)
    warnings: list[Issue] = []

    def unsupported(name: str, message: str) -> None:
        if strict:
            raise FhirError.single(400, "not-supported", message, name)
        warnings.append(Issue("not-supported", message, (name,), "warning"))

    if len(params) > MAX_PARAMS:
        raise FhirError.single(
            400, "too-costly", f"At most {MAX_PARAMS} search parameters per request"
        )
    for name, raw in params:
        # Parameters also come from inside bodies (If-None-Exist, Bundle entry URLs,
        # Subscription criteria), past the HTTP layer's own check.
        if "\x00" in name or "\x00" in raw:
            raise nul_error(f"search parameter '{name}'", name)
        if raw.count(",") >= MAX_VALUES:
            raise FhirError.single(
                400, "too-costly", f"At most {MAX_VALUES} values per search parameter", name
            )
        if name in _CONTROL:
            used = _control(query, rtype, registry, name, raw, max_count, unsupported)
            if used is not None:
                query.applied.append((name, used))
            continue
        if raw == "":
            continue  # FHIR: an empty parameter value is ignored
        base, _, modifier = name.partition(":")
        if base == "_id":
            query.criteria.append(IdCriterion(tuple(split_values(raw))))
        elif base == "_lastUpdated":
            query.criteria.append(
                DateCriterion(base, _date_values(base, raw, zone), column="last_updated")
            )
        else:
            param = rtype.params.get(base)
            if param is None:
                if base not in COMMON_PARAMS:
                    unsupported(
                        name, f"Unknown search parameter '{name}' for {rtype.name}; ignored"
                    )
                continue
            criterion = _criterion(
                rtype, param.name, param.type, modifier, raw, zone, unsupported
            )
            if criterion is None:
                continue
            query.criteria.append(criterion)
        query.applied.append((name, raw))
    if query.cursor is not None:
        _check_cursor(query.cursor, query.sort[0])
    if query.count == 0:
        query.total = True  # no entries asked for: the count is the answer (fhirpy's count())
    return query, warnings


def _check_cursor(cursor: Cursor, sort_key: str) -> None:
    """A cursor's values must fit the sort column (a crafted one would otherwise fail in SQL)."""

    def is_bigint(value: object) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63

    fits = isinstance(cursor.value, str) if sort_key == "_id" else is_bigint(cursor.value)
    if not fits or not is_bigint(cursor.rid):
        raise _bad("_cursor", "The paging cursor does not belong to this search")


def _criterion(
    rtype: ResourceType,
    name: str,
    ptype: str,
    modifier: str,
    raw: str,
    zone: ZoneInfo,
    unsupported: Any,
) -> Criterion | None:
    if ptype == "token":
        if modifier not in ("", "not"):
            unsupported(f"{name}:{modifier}", f"Modifier ':{modifier}' is not supported on {name}")
            return None
        values = tuple(_token_value(v) for v in split_values(raw))
        return TokenCriterion(name, values, negate=modifier == "not")
    if ptype == "reference":
        refs: list[tuple[str | None, str]] = []
        for v in split_values(raw):
            target = split_reference(v)
            if target is None:
                refs.append((optional_key(modifier or None, NARROW_KEY), index_key(v, NARROW_KEY)))
            else:
                refs.append((index_key(target[0], NARROW_KEY), index_key(target[1], NARROW_KEY)))
        on_row = name == rtype.compartment and all(t in (None, "Patient") for t, _ in refs)
        if rtype.params[name].targets == ("Patient",):
            refs = [("Patient", i) for _, i in refs]
        return ReferenceCriterion(name, tuple(refs), on_patient_column=on_row)
    if ptype == "date":
        dates = _date_values(name, raw, zone)
        if name == rtype.primary_date:
            return DateCriterion(name, dates, column="primary")
        return DateCriterion(name, dates, column="index")
    if ptype == "quantity":
        return QuantityCriterion(name, _quantity_values(name, raw))
    if ptype in ("string", "uri"):
        if modifier not in ("", "exact", "contains"):
            unsupported(f"{name}:{modifier}", f"Modifier ':{modifier}' is not supported on {name}")
            return None
        mode = cast(Any, modifier or "start")
        return StringCriterion(name, tuple(string_key(v) for v in split_values(raw)), mode)
    unsupported(name, f"Search parameter type '{ptype}' is not supported")
    return None


def _control(
    query: SearchQuery,
    rtype: ResourceType,
    registry: Registry,
    name: str,
    raw: str,
    max_count: int,
    unsupported: Any,
) -> str | None:
    """Apply one result parameter; the value applied, or None when it was ignored."""
    if name == "_count":
        count = parse_unsigned(raw, maximum=max_count, clamp=True)
        if count is None:
            raise _bad("_count", "_count must be a non-negative integer")
        query.count = count
        return str(query.count)
    if name == "_sort":
        keys = [k for k in raw.split(",") if k]
        if not keys:
            return None
        first = keys[0]
        descending = first.startswith("-")
        key = first.lstrip("-")
        allowed = {"_lastUpdated", "_id", *rtype.sort_params}
        if key not in allowed:
            raise _bad(
                "_sort", f"Cannot sort {rtype.name} by '{key}'; use one of {sorted(allowed)}"
            )
        query.sort = (cast(SortKey, "date" if key in rtype.sort_params else key), descending)
        if len(keys) > 1:
            unsupported("_sort", "Only the first _sort key is used")
        return first
    if name == "_include":
        parts = raw.split(":")
        if (
            len(parts) not in (2, 3)
            or parts[0] != rtype.name
            or f"{parts[0]}:{parts[1]}" not in (rtype.includes)
        ):
            unsupported("_include", f"_include={raw} is not supported")
            return None
        target = parts[2] if len(parts) == 3 else None
        if target is not None and target not in registry:
            unsupported("_include", f"Unknown _include target type '{target}'")
            return None
        query.includes.append(Include(parts[1], target))
        return raw
    if name == "_summary":
        if raw == "count":
            query.summary_count = True
        elif raw != "false":
            unsupported("_summary", f"_summary={raw} is not supported; full resources returned")
            return None
        return raw
    if name == "_total":
        query.total = raw in ("accurate", "estimate")
        return raw or None
    if name == "_cursor":
        query.cursor = decode_cursor(raw)
        return raw
    return None  # _format and _pretty are accepted and ignored: JSON is the only format.
