"""Compile a :class:`SearchQuery` into SQL over the resource row and the index tables."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from sqlalchemy import (
    BigInteger,
    BindParameter,
    ColumnElement,
    Connection,
    Select,
    and_,
    bindparam,
    exists,
    false,
    func,
    not_,
    or_,
    select,
    true,
    tuple_,
)

from service.core.criteria import (
    ChainCriterion,
    Criterion,
    Cursor,
    DateCriterion,
    DateValue,
    HasCriterion,
    IdCriterion,
    LocalCriterion,
    Prefix,
    QuantityCriterion,
    ReferenceCriterion,
    RevInclude,
    SearchQuery,
    StringCriterion,
    TokenCriterion,
    TokenValue,
)
from service.storage.repository import (
    StoredVersion,
    fetch_current_where,
    fetch_many_current,
)
from service.storage.tables import (
    NULL_DATE,
    resources,
    sp_date,
    sp_quantity,
    sp_reference,
    sp_string,
    sp_token,
)

R = resources.c


@dataclass(slots=True)
class SearchPage:
    """One page of matches, newest sort position last, plus what is needed to page on."""

    rows: list[StoredVersion]
    next_cursor: Cursor | None
    total: int | None


def _token_match(table: Any, value: TokenValue) -> ColumnElement[bool]:
    parts: list[ColumnElement[bool]] = []
    if value.code is not None:
        parts.append(table.c.code == value.code)
    if value.system == "":
        parts.append(table.c.system.is_(None))
    elif value.system is not None:
        parts.append(table.c.system == value.system)
    return and_(*parts) if parts else true()


class _BoundDate(NamedTuple):
    """A date value whose bounds are bind parameters (see :class:`_TokenRowsShape`)."""

    prefix: Prefix
    low: BindParameter[int]
    high: BindParameter[int]
    slack: BindParameter[int]


def _range_condition(
    lo: ColumnElement[Any], hi: ColumnElement[Any], v: DateValue | _BoundDate
) -> ColumnElement[bool]:
    match v.prefix:
        case "eq":
            return and_(lo >= v.low, hi <= v.high)
        case "ne":
            return not_(and_(lo >= v.low, hi <= v.high))
        case "gt":
            return hi > v.high
        case "lt":
            return lo < v.low
        case "ge":
            return hi >= v.low
        case "le":
            return lo <= v.high
        case "sa":
            return lo > v.high
        case "eb":
            return hi < v.low
        case _:  # "ap": overlaps the value widened by the slack the parser computed
            return and_(lo <= v.high + v.slack, hi >= v.low - v.slack)


def _quantity_condition(v: Any) -> ColumnElement[bool]:
    col = sp_quantity.c.value
    match v.prefix:
        case "eq":  # [low, high): 80 matches 79.5 but not 80.5
            cond = and_(col >= v.low, col < v.high)
        case "ne":
            cond = not_(and_(col >= v.low, col < v.high))
        case "gt" | "sa":
            cond = col > v.number
        case "lt" | "eb":
            cond = col < v.number
        case "ge":
            cond = col >= v.number
        case "le":
            cond = col <= v.number
        case _:  # "ap": within 10 %
            slack = abs(v.number) * 0.1
            cond = and_(col >= v.number - slack, col <= v.number + slack)
    parts = [cond]
    if v.system:
        parts.append(sp_quantity.c.system == v.system)
    if v.code:
        parts.append(sp_quantity.c.code == v.code)
    return and_(*parts)


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _criterion(c: Criterion, patients: tuple[str, ...] | None) -> ColumnElement[bool]:
    if isinstance(c, IdCriterion):
        return R.res_id.in_(c.ids)
    if isinstance(c, TokenCriterion):
        probe = select(true()).where(
            sp_token.c.rid == R.rid,
            sp_token.c.param == c.param,
            or_(*(_token_match(sp_token, v) for v in c.values)),
        )
        if patients:
            # OFFSET 0 keeps PostgreSQL from turning it into a join: one index probe per row
            # of the patient. Without statistics it hashed every row of the code once per
            # patient row instead.
            probe = probe.offset(0)
        sub = probe.exists()
        return not_(sub) if c.negate else sub
    if isinstance(c, ReferenceCriterion):
        if c.on_patient_column:
            return R.patient_id.in_([i for _, i in c.values])
        return exists().where(
            sp_reference.c.rid == R.rid,
            sp_reference.c.param == c.param,
            or_(
                *(
                    and_(sp_reference.c.target_id == i, sp_reference.c.target_type == t)
                    if t
                    else sp_reference.c.target_id == i
                    for t, i in c.values
                )
            ),
        )
    if isinstance(c, DateCriterion):
        if c.column == "primary":
            return or_(*(_range_condition(R.date_low, R.date_high, v) for v in c.values))
        if c.column == "last_updated":
            return or_(*(_range_condition(R.last_updated, R.last_updated, v) for v in c.values))
        return exists().where(
            sp_date.c.rid == R.rid,
            sp_date.c.param == c.param,
            or_(*(_range_condition(sp_date.c.low, sp_date.c.high, v) for v in c.values)),
        )
    if isinstance(c, QuantityCriterion):
        return exists().where(
            sp_quantity.c.rid == R.rid,
            sp_quantity.c.param == c.param,
            or_(*(_quantity_condition(v) for v in c.values)),
        )
    if isinstance(c, StringCriterion):
        col = sp_string.c.value
        if c.mode == "exact":
            conds = [col == v for v in c.values]
        elif c.mode == "contains":
            conds = [col.like(f"%{_escape_like(v)}%", escape="\\") for v in c.values]
        else:
            conds = [col.like(f"{_escape_like(v)}%", escape="\\") for v in c.values]
        return exists().where(sp_string.c.rid == R.rid, sp_string.c.param == c.param, or_(*conds))
    raise TypeError(f"unknown criterion {c!r}")


def where_clause(q: SearchQuery) -> ColumnElement[bool]:
    """The WHERE condition for ``q`` on the ``resources`` table (no paging)."""
    conds: list[ColumnElement[bool]] = [R.res_type == q.res_type, R.deleted.is_(False)]
    if q.patient_ids is not None:
        conds.append(R.patient_id.in_(q.patient_ids) if q.patient_ids else false())
    patients = _patients(q)
    conds.extend(
        _linked(c, q.res_type, q.patient_ids) if isinstance(c, ChainCriterion | HasCriterion)
        else _criterion(c, patients)
        for c in q.criteria
    )
    return and_(*conds)


def _patients(q: SearchQuery) -> tuple[str, ...] | None:
    """The patients ``q`` is confined to, by authorization or by its patient parameter."""
    chosen = q.patient_ids
    for c in q.criteria:
        if isinstance(c, ReferenceCriterion) and c.on_patient_column:
            ids = tuple(i for _, i in c.values)
            if chosen is None or len(ids) < len(chosen):
                chosen = ids
    return chosen


#: The token rows ``$lastn`` ranks (an alias, so that the code criteria's own EXISTS over
#: ``sp_token`` still correlate correctly when it falls back to the general conditions).
_LASTN_CODE = sp_token.alias("lastn_code")


@dataclass(frozen=True, slots=True)
class _TokenRowsShape:
    """What the SQL of a search on the token rows alone depends on, its values aside.

    Such searches (a patient's weights of the last 30 days, their active Flags, ``$lastn``) are
    most of the traffic, and building and compiling their statement cost the server several
    times what PostgreSQL spends running it; so a statement is built once per shape and run
    with the values (:func:`_token_rows_plan`) as parameters.
    """

    patients: int  # the patients it is confined to
    codes: tuple[tuple[bool, str], ...]  # per token value: has a code, system "any"/"none"/"one"
    restrictions: tuple[int, ...]  # the sizes of further patient restrictions
    dates: tuple[tuple[Prefix, ...], ...]  # per date criterion, its values' prefixes


def _token_rows_plan(
    q: SearchQuery, param: str, driving: TokenCriterion | None
) -> tuple[_TokenRowsShape, dict[str, Any]] | None:
    """``q`` as a search of the token rows of ``param`` alone, as a shape and its values: a
    patient's search by one token criterion (``driving``), dates and nothing else; None for
    any other search.

    Single-table conditions leave the planner one way in, an index range of (patient, type,
    param, code, sort date) — with or without statistics.
    """
    patients = _patients(q)
    if not patients:
        return None
    values: dict[str, Any] = {"res_type": q.res_type, "param": param}
    values.update((f"patient{i}", p) for i, p in enumerate(patients))
    codes: list[tuple[bool, str]] = []
    for i, token in enumerate(driving.values if driving is not None else ()):
        values[f"code{i}"], values[f"system{i}"] = token.code, token.system
        system = "any" if token.system is None else "none" if token.system == "" else "one"
        codes.append((token.code is not None, system))
    restrictions = [q.patient_ids] if q.patient_ids is not None else []
    dates: list[tuple[DateValue, ...]] = []
    for c in q.criteria:
        if c is driving:
            continue
        if isinstance(c, ReferenceCriterion) and c.on_patient_column:
            restrictions.append(tuple(i for _, i in c.values))
        elif isinstance(c, DateCriterion) and c.column == "primary":
            dates.append(c.values)
        else:
            return None
    for k, ids in enumerate(restrictions):
        values.update((f"r{k}_{j}", i) for j, i in enumerate(ids))
    for k, date_values in enumerate(dates):
        for j, v in enumerate(date_values):
            values.update({f"d{k}_{j}_low": v.low, f"d{k}_{j}_high": v.high})
            values[f"d{k}_{j}_slack"] = v.slack
    shape = _TokenRowsShape(
        len(patients),
        tuple(codes),
        tuple(len(r) for r in restrictions),
        tuple(tuple(v.prefix for v in date_values) for date_values in dates),
    )
    return shape, values


def _date_bound(name: str) -> BindParameter[int]:
    return bindparam(name, type_=BigInteger)


@functools.lru_cache(maxsize=256)
def _token_rows_conditions(
    shape: _TokenRowsShape, table: Any = sp_token
) -> tuple[ColumnElement[bool], ...]:
    """The conditions of a :class:`_TokenRowsShape` on ``table`` (the token rows or an alias),
    on bind parameters named as the values of :func:`_token_rows_plan`."""
    T = table.c
    patients: list[BindParameter[str]] = [
        bindparam(f"patient{i}") for i in range(shape.patients)
    ]
    conds: list[ColumnElement[bool]] = [
        T.patient_id == patients[0] if len(patients) == 1 else T.patient_id.in_(patients),
        T.res_type == bindparam("res_type"),
        T.param == bindparam("param"),
    ]
    if shape.codes:
        matches = []
        for i, (has_code, system) in enumerate(shape.codes):
            parts: list[ColumnElement[bool]] = []
            if has_code:
                parts.append(T.code == bindparam(f"code{i}"))
            if system == "none":
                parts.append(T.system.is_(None))
            elif system == "one":
                parts.append(T.system == bindparam(f"system{i}"))
            matches.append(and_(*parts) if parts else true())
        conds.append(or_(*matches))
    for k, size in enumerate(shape.restrictions):
        conds.append(T.patient_id.in_([bindparam(f"r{k}_{j}") for j in range(size)]))
    for k, prefixes in enumerate(shape.dates):
        # A resource without a date matches no date condition (NULL on the row); its
        # sort_date is NULL_DATE, as is that of a Period without a start, so ask date_high.
        bound = [
            _BoundDate(
                prefix,
                _date_bound(f"d{k}_{j}_low"),
                _date_bound(f"d{k}_{j}_high"),
                _date_bound(f"d{k}_{j}_slack"),
            )
            for j, prefix in enumerate(prefixes)
        ]
        ranges = (_range_condition(T.sort_date, T.date_high, v) for v in bound)
        conds.append(and_(T.date_high.is_not(None), or_(*ranges)))
    return tuple(conds)


def _one_value_token(q: SearchQuery) -> TokenCriterion | None:
    """The search's only token criterion, when it asks for one code."""
    tokens = [c for c in q.criteria if isinstance(c, TokenCriterion)]
    if len(tokens) != 1 or tokens[0].negate or len(tokens[0].values) != 1:
        return None
    return tokens[0] if tokens[0].values[0].code is not None else None


def _sort_column(q: SearchQuery) -> Any:
    key = q.sort[0]
    if key == "date":
        return func.coalesce(R.date_low, NULL_DATE)
    if key == "_lastUpdated":
        return R.last_updated
    if key == "_id":
        return R.res_id
    return R.rid


def search(conn: Connection, q: SearchQuery) -> SearchPage:
    """Run ``q``: one page of current resources, a keyset cursor for the next, the total.

    A patient's search by one token value and dates (their weights of the last 30 days, their
    active Flags) is answered from the token rows alone (:func:`_token_rows_plan`).
    """
    driving = _one_value_token(q)
    plan = None
    if driving is not None and q.sort[0] in ("date", "rid"):
        plan = _token_rows_plan(q, driving.param, driving)
    if plan is not None:
        return _search_token_rows(conn, q, *plan)
    where = where_clause(q)
    total = None
    if q.total or q.summary_count:
        total = conn.execute(select(func.count()).select_from(resources).where(where)).scalar_one()
    if q.summary_count or q.count == 0:
        return SearchPage([], None, total)
    key = _sort_column(q)
    descending = q.sort[1]
    stmt = select(
        R.rid,
        R.res_type,
        R.res_id,
        R.version_id,
        R.last_updated,
        R.deleted,
        R.content,
        R.patient_id,
        key.label("sort_value"),
    ).where(where)
    if q.cursor is not None:
        v, rid = q.cursor.value, q.cursor.rid
        if q.sort[0] == "rid":
            stmt = stmt.where(R.rid < rid if descending else R.rid > rid)
        elif descending:
            stmt = stmt.where(or_(key < v, and_(key == v, R.rid < rid)))
        else:
            stmt = stmt.where(or_(key > v, and_(key == v, R.rid > rid)))
    tiebreak = R.rid.desc() if descending else R.rid.asc()
    order: list[Any] = [tiebreak]
    if q.sort[0] != "rid":
        order.insert(0, key.desc() if descending else key.asc())
    rows = conn.execute(stmt.order_by(*order).limit(q.count + 1)).all()
    return _page(q, rows, total)


def _search_token_rows(
    conn: Connection, q: SearchQuery, shape: _TokenRowsShape, values: dict[str, Any]
) -> SearchPage:
    """:func:`search` over the token rows: the page's row ids first (one index range, newest
    first, deduplicated — a resource may carry the code in two systems), then their rows."""
    total = None
    if q.total or q.summary_count:
        total = conn.execute(_token_rows_count(shape), values).scalar_one()
    if q.summary_count or q.count == 0:
        return SearchPage([], None, total)
    by_date = q.sort[0] == "date"
    params = {**values, "limit": q.count + 1}
    if q.cursor is not None:
        params["after_value"], params["after_rid"] = q.cursor.value, q.cursor.rid
    stmt = _token_rows_page(shape, by_date, q.sort[1], q.cursor is not None)
    return _page(q, conn.execute(stmt, params).all(), total)


def _token_rows_matches(shape: _TokenRowsShape) -> Select[Any]:
    T = sp_token.c
    return select(T.sort_date, T.rid).where(*_token_rows_conditions(shape)).distinct()


@functools.lru_cache(maxsize=256)
def _token_rows_count(shape: _TokenRowsShape) -> Select[Any]:
    return select(func.count()).select_from(_token_rows_matches(shape).subquery())


@functools.lru_cache(maxsize=256)
def _token_rows_page(
    shape: _TokenRowsShape, by_date: bool, descending: bool, after: bool
) -> Select[Any]:
    """A page of :func:`_search_token_rows`, from the keyset position ``after_value`` and
    ``after_rid`` when ``after``; ``limit`` rows."""
    T = sp_token.c
    matches = _token_rows_matches(shape)
    if after:
        rid = bindparam("after_rid", type_=BigInteger)
        if by_date:  # a row comparison: the index range starts at the cursor
            pair, at = tuple_(T.sort_date, T.rid), tuple_(_date_bound("after_value"), rid)
            matches = matches.where(pair < at if descending else pair > at)
        else:
            matches = matches.where(T.rid < rid if descending else T.rid > rid)
    order = [T.sort_date, T.rid] if by_date else [T.rid]
    page_ids = (
        matches.order_by(*(c.desc() if descending else c.asc() for c in order))
        .limit(bindparam("limit", type_=BigInteger))
        .subquery("page")
    )
    P = page_ids.c
    sort_value = P.sort_date if by_date else P.rid
    return (
        select(
            R.rid, R.res_type, R.res_id, R.version_id, R.last_updated, R.deleted, R.content,
            R.patient_id, sort_value.label("sort_value"),
        )
        .select_from(page_ids.join(resources, R.rid == P.rid))
        .order_by(*(c.desc() if descending else c.asc() for c in (sort_value, P.rid)))
    )  # fmt: skip


def _page(q: SearchQuery, rows: Sequence[Any], total: int | None) -> SearchPage:
    more = len(rows) > q.count
    rows = rows[: q.count]
    page = [
        StoredVersion(
            r.rid, r.res_type, r.res_id, r.version_id, r.last_updated, False, r.content,
            r.patient_id,
        )
        for r in rows
    ]
    cursor = Cursor(rows[-1].sort_value, rows[-1].rid) if more and rows else None
    return SearchPage(page, cursor, total)


def included(
    conn: Connection, rids: list[int], param: str, target_type: str | None
) -> list[StoredVersion]:
    """Resources that ``param`` of the given rows points at (``_include``)."""
    if not rids:
        return []
    stmt = select(sp_reference.c.target_type, sp_reference.c.target_id).where(
        sp_reference.c.rid.in_(rids), sp_reference.c.param == param
    )
    if target_type:
        stmt = stmt.where(sp_reference.c.target_type == target_type)
    keys = {(r.target_type, r.target_id) for r in conn.execute(stmt.distinct())}
    found = fetch_many_current(conn, keys)
    return [found[k] for k in sorted(found)]


def lastn(conn: Connection, q: SearchQuery, max_per_code: int) -> list[StoredVersion]:
    """The newest ``max_per_code`` matches per patient and per code (``Observation/$lastn``).

    A patient's ``$lastn`` (by code and dates) ranks the code rows alone: they carry patient and
    sort date, so it reads one index range. Codes asked for select the code rows ranked.
    """
    code = _LASTN_CODE
    codes = [c for c in q.criteria if isinstance(c, TokenCriterion) and c.param == "code"]
    plan = None
    if len(codes) <= 1 and not any(c.negate for c in codes):
        plan = _token_rows_plan(q, "code", codes[0] if codes else None)
    source: Any = code
    params: dict[str, Any] = {}
    if plan is not None:
        conds: Sequence[ColumnElement[bool]] = _token_rows_conditions(plan[0], code)
        params = plan[1]
    else:
        source = code.join(resources, code.c.rid == R.rid)
        conds = [code.c.param == "code", where_clause(q)]
    ranked = (
        select(
            code.c.rid.label("rid"),
            func.row_number()
            .over(
                partition_by=(code.c.patient_id, code.c.system, code.c.code),
                order_by=(code.c.sort_date.desc(), code.c.rid.desc()),
            )
            .label("rn"),
        )
        .select_from(source)
        .where(*conds)
        .subquery()
    )
    chosen = select(ranked.c.rid).where(ranked.c.rn <= max_per_code).distinct()
    rows = conn.execute(
        select(
            R.rid, R.res_type, R.res_id, R.version_id, R.last_updated, R.deleted, R.content,
            R.patient_id,
        )
        .where(R.rid.in_(chosen))
        .order_by(R.patient_id, func.coalesce(R.date_low, NULL_DATE).desc(), R.rid.desc()),
        params,
    )
    return [
        StoredVersion(
            r.rid, r.res_type, r.res_id, r.version_id, r.last_updated, False, r.content,
            r.patient_id,
        )
        for r in rows
    ]


# -- chains, _has and _revinclude ----------------------------------------------------------------

#: A chain or ``_has`` resolving to at most this many ids is run as a list of ids (an index
#: range on the resource row whatever the planner knows); beyond, as a nested subquery.
MAX_RESOLVED_IDS = 1000


def _compartment(patient_ids: tuple[str, ...] | None) -> ColumnElement[bool]:
    if patient_ids is None:
        return true()
    return R.patient_id.in_(patient_ids) if patient_ids else false()


def _checked_type(res_type: str) -> ColumnElement[bool]:
    """The row is a ``res_type``, checked without an index: where index rows drive the lookup
    (``rid IN (…)``), the type must not tempt the planner (no statistics tell it better) into
    walking every row of the type instead. ``res_type || ''`` matches no index."""
    return R.res_type.concat("") == res_type


def _driven(c: LocalCriterion) -> ColumnElement[bool] | None:
    """``c`` as ``rid IN (index rows)`` where it can be (None otherwise): the lookup starts at
    the index (param, code …) rather than probing every row of the type."""
    if isinstance(c, TokenCriterion) and not c.negate:
        return R.rid.in_(
            select(sp_token.c.rid).where(
                sp_token.c.param == c.param, or_(*(_token_match(sp_token, v) for v in c.values))
            )
        )
    return None


def _link_select(
    c: ChainCriterion | HasCriterion, res_type: str, patient_ids: tuple[str, ...] | None
) -> Any:
    """The ids of ``res_type`` rows that ``c`` admits, looked up on the linked type and
    confined to the same compartments (a chain or ``_has`` never reaches outside them)."""
    linked_type = c.target_type if isinstance(c, ChainCriterion) else c.source_type
    driven = _driven(c.inner)
    of_type = _checked_type(linked_type) if driven is not None else R.res_type == linked_type
    inner = driven if driven is not None else _criterion(c.inner, patient_ids)
    conds = [of_type, R.deleted.is_(False), inner, _compartment(patient_ids)]
    if isinstance(c, ChainCriterion):
        stmt = select(R.res_id).where(*conds)
    elif c.on_patient_column:
        stmt = select(R.patient_id).where(*conds, R.patient_id.is_not(None))
    else:
        ref = sp_reference
        stmt = select(ref.c.target_id).where(
            ref.c.rid == R.rid, ref.c.param == c.param, ref.c.target_type == res_type, *conds
        )
    # Its own FROM: nested in the search over ``resources`` it must not correlate to it.
    return stmt.correlate(None)


def _admitting(c: ChainCriterion | HasCriterion, ids: Any) -> ColumnElement[bool]:
    """The condition on the searched row for ``ids`` (a list or a subquery) of ``c``."""
    if isinstance(c, HasCriterion):
        return R.res_id.in_(ids)
    if c.on_patient_column:
        return R.patient_id.in_(ids)
    ref = sp_reference
    return exists().where(
        ref.c.rid == R.rid,
        ref.c.param == c.param,
        ref.c.target_type == c.target_type,
        ref.c.target_id.in_(ids),
    )


def _linked(
    c: ChainCriterion | HasCriterion, res_type: str, patient_ids: tuple[str, ...] | None
) -> ColumnElement[bool]:
    return _admitting(c, _link_select(c, res_type, patient_ids))


def resolve_links(conn: Connection, q: SearchQuery, limit: int = MAX_RESOLVED_IDS) -> SearchQuery:
    """``q`` with each chain and ``_has`` replaced by the ids it resolves to, when they are
    few: one index lookup first, then the search is a plain range on indexed columns."""
    criteria: list[Criterion] = []
    for c in q.criteria:
        if isinstance(c, ChainCriterion | HasCriterion):
            stmt = _link_select(c, q.res_type, q.patient_ids).distinct().limit(limit + 1)
            ids = list(conn.execute(stmt).scalars())
            if len(ids) <= limit:
                c = _as_ids(c, sorted(ids))
        criteria.append(c)
    return dataclasses.replace(q, criteria=criteria)


def _as_ids(c: ChainCriterion | HasCriterion, ids: list[str]) -> Criterion:
    """The plain criterion equivalent to ``c`` resolved to ``ids``."""
    if isinstance(c, HasCriterion) or not ids:
        return IdCriterion(tuple(ids))  # no ids: nothing matches
    return ReferenceCriterion(
        c.param, tuple((c.target_type, i) for i in ids), on_patient_column=c.on_patient_column
    )


def revincluded(
    conn: Connection,
    rev: RevInclude,
    target_type: str,
    target_ids: list[str],
    patient_ids: tuple[str, ...] | None,
    limit: int,
) -> list[StoredVersion]:
    """At most ``limit`` ``rev.source_type`` resources whose ``rev.param`` points at one of
    ``target_ids`` (``_revinclude``), within the compartments ``patient_ids``."""
    if not target_ids:
        return []
    ref = sp_reference
    if rev.on_patient_column and target_type == "Patient":
        points = and_(R.res_type == rev.source_type, R.patient_id.in_(target_ids))
    else:
        points = and_(
            _checked_type(rev.source_type),
            R.rid.in_(
                select(ref.c.rid).where(
                    ref.c.param == rev.param,
                    ref.c.target_id.in_(target_ids),
                    ref.c.target_type == target_type,
                )
            ),
        )
    condition = and_(points, _compartment(patient_ids))
    return fetch_current_where(conn, condition, limit)
