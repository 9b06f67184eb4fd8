"""Typed search criteria: what a parsed FHIR search asks for, independent of SQL and HTTP."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Prefix = Literal["eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap"]
SortKey = Literal["date", "_lastUpdated", "_id", "rid"]


@dataclass(frozen=True, slots=True)
class TokenValue:
    """``system|code``; ``system=None`` matches any system, ``""`` means "no system"."""

    system: str | None
    code: str | None


@dataclass(frozen=True, slots=True)
class TokenCriterion:
    """Token match; values are OR-ed. ``negate`` implements ``:not``."""

    param: str
    values: tuple[TokenValue, ...]
    negate: bool = False


@dataclass(frozen=True, slots=True)
class IdCriterion:
    """``_id`` (matched on the resource row)."""

    ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ReferenceCriterion:
    """Reference match; ``target_type=None`` means any type with that id."""

    param: str
    values: tuple[tuple[str | None, str], ...]
    on_patient_column: bool = False  # the compartment reference, kept on the resource row


@dataclass(frozen=True, slots=True)
class DateValue:
    """A prefixed date range (inclusive, UTC microseconds); ``slack`` widens ``ap``."""

    prefix: Prefix
    low: int
    high: int
    slack: int = 0


@dataclass(frozen=True, slots=True)
class DateCriterion:
    """Date match; ``column`` says where the value lives: the row's primary date, its
    lastUpdated, or the generic date index."""

    param: str
    values: tuple[DateValue, ...]
    column: Literal["primary", "last_updated", "index"] = "index"


@dataclass(frozen=True, slots=True)
class QuantityValue:
    """``[prefix]number|system|code``; ``low``/``high`` is the range implied by precision."""

    prefix: Prefix
    number: float
    low: float
    high: float
    system: str | None
    code: str | None


@dataclass(frozen=True, slots=True)
class QuantityCriterion:
    """Quantity match; values are OR-ed."""

    param: str
    values: tuple[QuantityValue, ...]


@dataclass(frozen=True, slots=True)
class StringCriterion:
    """String match on normalised text: starts-with by default, ``:exact`` or ``:contains``."""

    param: str
    values: tuple[str, ...]
    mode: Literal["start", "exact", "contains"] = "start"


#: A criterion on one resource's own index values (the target of a chain, the source of _has).
LocalCriterion = (
    TokenCriterion
    | IdCriterion
    | ReferenceCriterion
    | DateCriterion
    | QuantityCriterion
    | StringCriterion
)


@dataclass(frozen=True, slots=True)
class ChainCriterion:
    """``param[:Type].name=value``: the reference ``param`` points at a ``target_type``
    resource matching ``inner`` (one level). ``on_patient_column``: ``param`` is the
    compartment reference, kept on the resource row."""

    param: str
    target_type: str
    inner: LocalCriterion
    on_patient_column: bool = False


@dataclass(frozen=True, slots=True)
class HasCriterion:
    """``_has:Source:param:name=value``: a ``source_type`` resource matching ``inner``
    references this one through ``param``. ``on_patient_column``: ``param`` is the source's
    compartment reference (kept on its row)."""

    source_type: str
    param: str
    inner: LocalCriterion
    on_patient_column: bool = False


Criterion = LocalCriterion | ChainCriterion | HasCriterion


@dataclass(frozen=True, slots=True)
class Include:
    """``_include[:iterate]=Source:param[:Target]``; ``source_type`` None: the searched type."""

    param: str
    target_type: str | None
    source_type: str | None = None
    iterate: bool = False


@dataclass(frozen=True, slots=True)
class RevInclude:
    """``_revinclude[:iterate]=Source:param``: the ``source_type`` resources whose ``param``
    points at a match. ``on_patient_column``: ``param`` is the source's compartment reference
    (used when the target is a Patient)."""

    source_type: str
    param: str
    on_patient_column: bool = False
    targets: tuple[str, ...] = ()  # the types ``param`` may point at (empty: any)
    iterate: bool = False


#: ``_summary`` modes that shape the resources returned (``count`` and ``false`` do not).
SummaryMode = Literal["true", "text", "data"]


@dataclass(frozen=True, slots=True)
class Cursor:
    """Keyset position: the last row's sort value and row id."""

    value: int | str | None
    rid: int


@dataclass(slots=True)
class SearchQuery:
    """A complete, validated search over one resource type."""

    res_type: str
    criteria: list[Criterion] = field(default_factory=list)
    sort: tuple[SortKey, bool] = ("rid", False)  # (key, descending)
    count: int = 50
    cursor: Cursor | None = None
    includes: list[Include] = field(default_factory=list)
    summary_count: bool = False
    total: bool = False
    patient_ids: tuple[str, ...] | None = None  # restrict to these compartments (authorization)
    revincludes: list[RevInclude] = field(default_factory=list)
    #: ``_elements``: the top-level elements asked for (None: all).
    elements: tuple[str, ...] | None = None
    summary: SummaryMode | None = None
    #: The parameters as applied, for the Bundle's links: without those ignored (lenient
    #: handling) and with the values used (``_count`` capped, only the first ``_sort`` key).
    applied: list[tuple[str, str]] = field(default_factory=list)
