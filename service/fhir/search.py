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

from service.core.criteria import (
    ChainCriterion,
    Criterion,
    Cursor,
    DateCriterion,
    DateValue,
    HasCriterion,
    IdCriterion,
    Include,
    LocalCriterion,
    Prefix,
    QuantityCriterion,
    QuantityValue,
    ReferenceCriterion,
    RevInclude,
    SearchQuery,
    SortKey,
    StringCriterion,
    SummaryMode,
    TokenCriterion,
    TokenValue,
)
from service.core.dates import DateFormatError, parse_range, to_micros
from service.core.indexing import (
    NARROW_KEY,
    WIDE_KEY,
    index_key,
    optional_key,
    split_reference,
    string_key,
)
from service.core.outcome import FhirError, Issue, nul_error
from service.core.registry import COMMON_PARAMS, Registry, ResourceType, SearchParam
from service.validation.integers import parse_unsigned

_PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$", re.ASCII)
#: Caps that keep one query's SQL bounded (SQLite refuses expression trees deeper than 1000).
MAX_PARAMS = 100
MAX_VALUES = 100
#: Parameters that shape the result rather than select resources.
_CONTROL = {
    "_count", "_sort", "_include", "_summary", "_total", "_cursor", "_format", "_pretty",
    "_revinclude", "_elements", "_include:iterate", "_revinclude:iterate",
}
_ELEMENT = re.compile(r"^[A-Za-z][A-Za-z0-9]*(\[x\])?$", re.ASCII)


def split_values(raw: str, *, keep_escaped_bars: bool = False) -> list[str]:
    """Split a parameter value on unescaped commas (``\\,`` stays a comma). ``\\|`` becomes a
    bar, unless the caller still splits the value on bars (``keep_escaped_bars``)."""
    parts = [p.replace("\\,", ",") for p in re.split(r"(?<!\\),", raw)]
    return parts if keep_escaped_bars else [p.replace("\\|", "|") for p in parts]


def _split_bars(value: str, limit: int) -> list[str]:
    """``value`` split on its first ``limit`` unescaped bars, each ``\\|`` then a literal bar
    (FHIR search escaping: ``urn:x|a\\|b`` is system ``urn:x``, code ``a|b``)."""
    return [p.replace("\\|", "|") for p in re.split(r"(?<!\\)\|", value, maxsplit=limit)]


def _bad(param: str, message: str) -> FhirError:
    return FhirError.invalid(message, param)


def _split_prefix(value: str) -> tuple[Prefix, str]:
    if len(value) > 2 and value[:2] in _PREFIXES and not value[:2].isdigit():
        return cast(Prefix, value[:2]), value[2:]
    return "eq", value


def _token_value(raw: str) -> TokenValue:
    """``[system|]code`` as the index keys them (:func:`~service.core.indexing.index_key`)."""
    parts = _split_bars(raw, 1)
    if len(parts) == 1:
        return TokenValue(None, index_key(parts[0], WIDE_KEY))
    system, code = parts
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
    for value in split_values(raw, keep_escaped_bars=True):
        prefix, text = _split_prefix(value)
        number_text, system, code = [*_split_bars(text, 2), "", ""][:3]
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
            raise FhirError.unsupported(message, name)
        warnings.append(Issue("not-supported", message, (name,), "warning"))

    if len(params) > MAX_PARAMS:
        raise FhirError.too_costly(f"At most {MAX_PARAMS} search parameters per request")
    for name, raw in params:
        # Parameters also come from inside bodies (If-None-Exist, Bundle entry URLs,
        # Subscription criteria), past the HTTP layer's own check.
        if "\x00" in name or "\x00" in raw:
            raise nul_error(f"search parameter '{name}'", name)
        if raw.count(",") >= MAX_VALUES:
            raise FhirError.too_costly(f"At most {MAX_VALUES} values per search parameter", name)
        if name in _CONTROL:
            used = _control(query, rtype, registry, name, raw, max_count, unsupported)
            if used is not None:
                query.applied.append((name, used))
            continue
        if raw == "":
            continue  # FHIR: an empty parameter value is ignored
        linked: Criterion | None
        if name.startswith("_has:"):
            linked = parse_has(rtype, name, raw, registry=registry, zone=zone)
        elif "." in name:
            linked = parse_chain(rtype, name, raw, registry=registry, zone=zone)
        else:
            linked = _local_criterion(rtype, name, raw, zone, unsupported)
        if linked is None:
            continue
        query.criteria.append(linked)
        query.applied.append((name, raw))
    if query.cursor is not None:
        _check_cursor(query.cursor, query.sort[0])
    if query.count == 0:
        query.total = True  # no entries asked for: the count is the answer (fhirpy's count())
    return query, warnings


def _local_criterion(
    rtype: ResourceType, name: str, raw: str, zone: ZoneInfo, unsupported: Any
) -> LocalCriterion | None:
    """One parameter of ``rtype`` itself; None when it is ignored (reported to ``unsupported``)."""
    base, _, modifier = name.partition(":")
    if base == "_id":
        return IdCriterion(tuple(split_values(raw)))
    if base == "_lastUpdated":
        return DateCriterion(base, _date_values(base, raw, zone), column="last_updated")
    param = rtype.params.get(base)
    if param is None:
        if base not in COMMON_PARAMS:
            unsupported(name, f"Unknown search parameter '{name}' for {rtype.name}; ignored")
        return None
    return _criterion(rtype, param.name, param.type, modifier, raw, zone, unsupported)


def _strictly(name: str, context: str) -> Any:
    """An ``unsupported`` callback that refuses: inside a chain or ``_has`` an ignored part
    would silently widen the result, so it is a 400 even with lenient handling."""

    def refuse(_part: str, message: str) -> None:
        raise FhirError.unsupported(f"{message} (in {context})", name)

    return refuse


def _compartment_paths(rtype: ResourceType) -> tuple[str, ...] | None:
    """The element paths of ``rtype``'s patient-compartment reference (kept on the row)."""
    if rtype.compartment in (None, "self"):
        return None
    return rtype.params[rtype.compartment].paths


def _on_patient_column(rtype: ResourceType, param: SearchParam, target: str) -> bool:
    """True when ``param`` pointing at a ``target`` is the compartment reference of the row."""
    return target == "Patient" and param.paths == _compartment_paths(rtype)


def _reference_param(rtype: ResourceType, name: str, expression: str) -> SearchParam:
    param = rtype.params.get(name)
    if param is None or param.type != "reference":
        raise _bad(expression, f"'{name}' is not a reference search parameter of {rtype.name}")
    return param


def chain_target(rtype: ResourceType, param: SearchParam) -> str | None:
    """The type a chain through ``param`` without ``:Type`` reaches: the parameter's only
    target type, or Patient for the compartment reference; None when ambiguous."""
    if len(param.targets) == 1:
        return param.targets[0]
    if param.paths == _compartment_paths(rtype):
        return "Patient"
    return None


def revinclude_names(rtype: ResourceType, registry: Registry) -> list[str]:
    """Every ``Source:param`` that ``_revinclude`` (and ``_has``) accept on ``rtype``."""
    return [
        f"{source.name}:{p.name}"
        for source in registry
        for p in source.params.values()
        if _revinclude(rtype, registry, f"{source.name}:{p.name}") is not None
    ]


def parse_chain(
    rtype: ResourceType, name: str, raw: str, *, registry: Registry, zone: ZoneInfo
) -> ChainCriterion:
    """``param[:Type].name[:modifier]=value`` (one level) on a reference parameter of ``rtype``.

    Without ``:Type`` the target is the parameter's only target type, or Patient for the
    compartment reference (``subject`` of an Observation); anything else is ambiguous (400).
    """
    head, _, tail = name.partition(".")
    ref_name, _, explicit = head.partition(":")
    param = _reference_param(rtype, ref_name, name)
    if "." in tail:
        raise FhirError.unsupported(
            f"Chains of more than one level are not supported: '{name}'",
            name,
        )
    target = explicit or chain_target(rtype, param)
    if target is None:
        raise _bad(name, f"Chain '{name}' is ambiguous: name the type ({ref_name}:Type.{tail})")
    target_type = registry.get(target)
    if target_type is None or (param.targets and target not in param.targets):
        raise _bad(name, f"'{ref_name}' of {rtype.name} cannot point at '{target}'")
    context = f"chain '{name}'"
    inner = _local_criterion(target_type, tail, raw, zone, _strictly(name, context))
    if inner is None:  # a common parameter that is not indexed, e.g. _text
        raise _bad(name, f"'{tail}' cannot be used in {context}")
    return ChainCriterion(
        ref_name, target, inner, on_patient_column=_on_patient_column(rtype, param, target)
    )


def parse_has(
    rtype: ResourceType, name: str, raw: str, *, registry: Registry, zone: ZoneInfo
) -> HasCriterion:
    """``_has:Source:param:name[:modifier]=value``: a ``Source`` resource whose reference
    ``param`` points at the match satisfies ``name`` (one level; no nested ``_has``)."""
    parts = name.split(":")
    if len(parts) not in (4, 5) or "_has" in parts[1:]:
        raise _bad(name, f"'{name}' is not of the form _has:Type:reference:parameter")
    source = registry.get(parts[1])
    if source is None:
        raise _bad(name, f"Unknown resource type '{parts[1]}' in '{name}'")
    param = _reference_param(source, parts[2], name)
    if param.targets and rtype.name not in param.targets:
        raise _bad(name, f"'{parts[2]}' of {source.name} does not point at {rtype.name}")
    inner_name = ":".join(parts[3:])
    inner = _local_criterion(source, inner_name, raw, zone, _strictly(name, f"'{name}'"))
    if inner is None:
        raise _bad(name, f"'{inner_name}' cannot be used in '{name}'")
    return HasCriterion(
        source.name, param.name, inner,
        on_patient_column=_on_patient_column(source, param, rtype.name),
    )


def _include(
    rtype: ResourceType, registry: Registry, raw: str, *, iterate: bool = False
) -> Include | None:
    """``Source:param[:Target]`` declared by ``Source`` (the searched type unless
    ``iterate``, which follows it from included resources too); None otherwise."""
    parts = raw.split(":")
    source = registry.get(parts[0])
    if len(parts) not in (2, 3) or source is None or (source.name != rtype.name and not iterate):
        return None
    if f"{parts[0]}:{parts[1]}" not in source.includes:
        return None
    target = parts[2] if len(parts) == 3 else None
    if target is not None and target not in registry:
        return None
    return Include(parts[1], target, source.name if iterate else None, iterate)


def _revinclude(
    rtype: ResourceType, registry: Registry, raw: str, *, iterate: bool = False
) -> RevInclude | None:
    """``Source:param[:Target]`` whose reference can point at ``rtype`` (with ``iterate``:
    at any stored type, followed from included resources too); None otherwise."""
    parts = raw.split(":")
    source = registry.get(parts[0])
    if len(parts) not in (2, 3) or source is None:
        return None
    param = source.params.get(parts[1])
    if param is None or param.type != "reference":
        return None
    wanted = parts[2] if len(parts) == 3 else (None if iterate else rtype.name)
    if wanted is not None and (
        wanted not in registry
        or (param.targets and wanted not in param.targets)
        or (not iterate and wanted != rtype.name)
    ):
        return None
    return RevInclude(
        source.name,
        param.name,
        on_patient_column=_on_patient_column(source, param, "Patient"),
        targets=(wanted,) if wanted else param.targets,
        iterate=iterate,
    )


def linked_types(query: SearchQuery, registry: Registry) -> set[str]:
    """The other resource types ``query`` reads: chain targets, ``_has`` sources, the
    sources of ``_revinclude`` and the targets of ``_include`` (when they are known)."""
    types: set[str] = set()
    for c in query.criteria:
        if isinstance(c, ChainCriterion):
            types.add(c.target_type)
        elif isinstance(c, HasCriterion):
            types.add(c.source_type)
    types.update(r.source_type for r in query.revincludes)
    for inc in query.includes:
        source = registry.get(inc.source_type or query.res_type)
        targets = source.params[inc.param].targets if source else ()
        types.update([inc.target_type] if inc.target_type else targets)
        types.add(source.name if source else query.res_type)
    types.discard(query.res_type)
    return types


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
) -> LocalCriterion | None:
    if ptype == "token":
        if modifier not in ("", "not"):
            unsupported(f"{name}:{modifier}", f"Modifier ':{modifier}' is not supported on {name}")
            return None
        values = tuple(_token_value(v) for v in split_values(raw, keep_escaped_bars=True))
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
    if name in ("_include", "_include:iterate"):
        inc = _include(rtype, registry, raw, iterate=name != "_include")
        if inc is None:
            unsupported(name, f"{name}={raw} is not supported")
            return None
        query.includes.append(inc)
        return raw
    if name == "_summary":
        if raw == "count":
            query.summary_count = True
        elif raw in ("true", "text", "data"):
            query.summary = cast(SummaryMode, raw)
        elif raw != "false":
            unsupported("_summary", f"_summary={raw} is not supported; full resources returned")
            return None
        return raw
    if name == "_total":
        if raw not in ("accurate", "estimate", "none"):
            unsupported("_total", f"_total={raw} is not supported (accurate | estimate | none)")
            return None
        query.total = raw != "none"
        return raw
    if name in ("_revinclude", "_revinclude:iterate"):
        rev = _revinclude(rtype, registry, raw, iterate=name != "_revinclude")
        if rev is None:
            unsupported(name, f"{name}={raw} is not supported")
            return None
        query.revincludes.append(rev)
        return raw
    if name == "_elements":
        prefix = f"{rtype.name}."
        names = [e.removeprefix(prefix) for e in raw.split(",") if e.removeprefix(prefix)]
        bad = [e for e in names if not _ELEMENT.match(e)]
        if bad:
            raise _bad("_elements", f"'{bad[0]}' is not a top-level element name")
        if not names:
            return None
        query.elements = tuple(dict.fromkeys(names))
        return raw
    if name == "_cursor":
        query.cursor = decode_cursor(raw)
        return raw
    return None  # _format and _pretty are accepted and ignored: JSON is the only format.
