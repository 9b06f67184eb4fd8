"""Criteria → SQL below HTTP: typed criteria run against a small real database (SQLite and
PostgreSQL), asserting the ids found and their order."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest

from service.core.criteria import (
    ChainCriterion,
    Criterion,
    DateCriterion,
    DateValue,
    HasCriterion,
    IdCriterion,
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
from service.core.dates import parse_range
from service.core.indexing import extract
from service.core.registry import default_registry
from service.storage import repository as repo
from service.storage import search_sql
from service.storage.db import Database
from service.storage.repository import NewVersion
from tests.factories import LOINC, UCUM, blood_pressure, flag, heart_rate, patient, weight

REGISTRY = default_registry()
ZONE = ZoneInfo("Europe/Amsterdam")
WEIGHT = TokenValue(LOINC, "29463-7")
#: lastUpdated of the first resource stored; each next one a second later
T0 = 1_772_000_000_000_000


def _resources() -> list[dict[str, Any]]:
    """Two patients; five Observations stored out of date order; one Flag."""
    return [
        {**patient(family="Jansen"), "id": "p1"},
        {**patient(family="Bakker", given="Çees"), "id": "p2"},
        {**weight("p1", kg=80.5, effective="2026-03-01T08:00:00Z"), "id": "o1"},
        {**weight("p1", kg=82, effective="2026-03-02T08:00:00Z"), "id": "o2"},
        {**heart_rate("p1", bpm=72, effective="2026-03-03T08:00:00Z"), "id": "o3"},
        {**weight("p2", kg=79, effective="2026-03-01T09:00:00Z"), "id": "o4"},
        {**blood_pressure("p2", effective="2026-03-04T08:00:00Z"), "id": "o5"},
        {**flag("p2"), "id": "f1"},
    ]


@pytest.fixture
def stored(db: Database) -> Database:
    """``db`` holding :func:`_resources`, inserted in list order (row ids ascending)."""
    versions = []
    for n, resource in enumerate(_resources()):
        rtype = REGISTRY.get(resource["resourceType"])
        assert rtype is not None
        versions.append(
            NewVersion(
                rtype.name, resource["id"], 1, T0 + n * 1_000_000,
                orjson.dumps(resource).decode(), extract(resource, rtype, ZONE), resource,
            )
        )
    with db.write() as conn:
        repo.insert_resources(conn, versions)
    return db


def _ids(
    db: Database,
    res_type: str,
    *criteria: Criterion,
    sort: tuple[SortKey, bool] = ("rid", False),
    patient_ids: tuple[str, ...] | None = None,
) -> list[str]:
    query = SearchQuery(res_type, list(criteria), sort=sort, patient_ids=patient_ids)
    with db.read() as conn:
        page = search_sql.search(conn, search_sql.resolve_links(conn, query))
    assert page.next_cursor is None
    return [row.res_id for row in page.rows]


def _date(prefix: Prefix, text: str) -> DateValue:
    low, high = parse_range(text, UTC)
    return DateValue(prefix, low, high)


def _quantity(prefix: Prefix, number: float, half: float, code: str | None) -> QuantityValue:
    return QuantityValue(prefix, number, number - half, number + half, UCUM if code else None, code)


def test_tokens_by_system_and_code_negated_and_ored(stored: Database) -> None:
    assert _ids(stored, "Observation", TokenCriterion("code", (WEIGHT,))) == ["o1", "o2", "o4"]
    assert _ids(stored, "Observation", TokenCriterion("code", (WEIGHT,), negate=True)) == [
        "o3", "o5"
    ]
    heart = TokenValue(None, "8867-4")  # any system
    assert _ids(stored, "Observation", TokenCriterion("code", (WEIGHT, heart))) == [
        "o1", "o2", "o3", "o4"
    ]
    assert _ids(stored, "Observation", TokenCriterion("code", (TokenValue("", "8867-4"),))) == []
    assert _ids(stored, "Observation", TokenCriterion("code", (TokenValue(LOINC, None),))) == [
        "o1", "o2", "o3", "o4", "o5"
    ]
    components = TokenCriterion("component-code", (TokenValue(LOINC, "8480-6"),))
    assert _ids(stored, "Observation", components) == ["o5"]


def test_a_patients_search_by_code_sorted_by_date(stored: Database) -> None:
    mine = ReferenceCriterion("patient", (("Patient", "p1"),), on_patient_column=True)
    by_code = TokenCriterion("code", (WEIGHT,))
    # one token value and the patient: answered from the token rows
    assert _ids(stored, "Observation", mine, by_code, sort=("date", True)) == ["o2", "o1"]
    assert _ids(stored, "Observation", mine, sort=("date", True)) == ["o3", "o2", "o1"]
    assert _ids(stored, "Observation", by_code, sort=("date", False)) == ["o1", "o4", "o2"]
    assert _ids(stored, "Observation", by_code, sort=("_id", True)) == ["o4", "o2", "o1"]


def test_references_by_type_and_id(stored: Database) -> None:
    subject = ReferenceCriterion("subject", (("Patient", "p2"),))
    assert _ids(stored, "Observation", subject) == ["o4", "o5"]
    assert _ids(stored, "Observation", replace(subject, values=((None, "p2"),))) == ["o4", "o5"]
    assert _ids(stored, "Observation", replace(subject, values=(("Device", "p2"),))) == []
    assert _ids(stored, "Flag", subject) == ["f1"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (_date("eq", "2026-03-01"), ["o1", "o4"]),
        (_date("ne", "2026-03-01"), ["o2", "o3", "o5"]),
        (_date("ge", "2026-03-02"), ["o2", "o3", "o5"]),
        (_date("gt", "2026-03-02"), ["o3", "o5"]),
        (_date("le", "2026-03-02"), ["o1", "o2", "o4"]),
        (_date("lt", "2026-03-01T09:00:00Z"), ["o1"]),
        (_date("sa", "2026-03-03"), ["o5"]),
        (_date("eb", "2026-03-02"), ["o1", "o4"]),
        (_date("eq", "2026-03-01T09:00:00Z"), ["o4"]),
        (replace(_date("ap", "2026-03-03"), slack=86_400_000_000), ["o2", "o3", "o5"]),
    ],
)
def test_date_prefixes_on_the_primary_date(
    stored: Database, value: DateValue, expected: list[str]
) -> None:
    assert _ids(stored, "Observation", DateCriterion("date", (value,), "primary")) == expected


def test_date_values_are_ored_and_last_updated_is_its_own_column(stored: Database) -> None:
    either = DateCriterion("date", (_date("eq", "2026-03-01"), _date("eq", "2026-03-04")))
    assert _ids(stored, "Observation", replace(either, column="primary")) == ["o1", "o4", "o5"]
    # lastUpdated: o3 is the fifth resource stored, o4 the sixth
    fifth = DateValue("ge", T0 + 4_000_000, T0 + 4_000_000)
    assert _ids(stored, "Observation", DateCriterion("_lastUpdated", (fifth,), "last_updated")) == [
        "o3", "o4", "o5"
    ]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (_quantity("eq", 80.5, 0.05, "kg"), ["o1"]),
        (_quantity("eq", 80, 0.5, "kg"), []),  # [79.5, 80.5): 80.5 is outside
        (_quantity("eq", 79, 0.5, None), ["o4"]),
        (_quantity("gt", 80, 0.5, "kg"), ["o1", "o2"]),
        (_quantity("le", 80.5, 0.05, "kg"), ["o1", "o4"]),
        (_quantity("ne", 82, 0.5, "kg"), ["o1", "o4"]),
        (_quantity("ap", 80, 0.5, None), ["o1", "o2", "o3", "o4"]),  # within 10 %: 72 /min too
        (_quantity("ap", 80, 0.5, "kg"), ["o1", "o2", "o4"]),
        (_quantity("lt", 100, 0.5, "mm[Hg]"), []),  # component values are not the value
    ],
)
def test_quantity_prefixes_and_units(
    stored: Database, value: QuantityValue, expected: list[str]
) -> None:
    criterion = QuantityCriterion("value-quantity", (value,))
    assert _ids(stored, "Observation", criterion) == expected


def test_strings_start_exact_and_contains(stored: Database) -> None:
    assert _ids(stored, "Patient", StringCriterion("family", ("ba",))) == ["p2"]
    assert _ids(stored, "Patient", StringCriterion("name", ("cees",))) == ["p2"]
    assert _ids(stored, "Patient", StringCriterion("name", ("jans",), "exact")) == []
    assert _ids(stored, "Patient", StringCriterion("name", ("jansen",), "exact")) == ["p1"]
    assert _ids(stored, "Patient", StringCriterion("name", ("akk",), "contains")) == ["p2"]
    # LIKE wildcards in the value are literal characters
    assert _ids(stored, "Patient", StringCriterion("name", ("%",), "contains")) == []
    assert _ids(stored, "Patient", StringCriterion("name", ("_ansen",))) == []


def test_ids_and_the_compartments_of_the_caller(stored: Database) -> None:
    assert _ids(stored, "Observation", IdCriterion(("o5", "o1", "nope"))) == ["o1", "o5"]
    assert _ids(stored, "Observation", patient_ids=("p2",)) == ["o4", "o5"]
    assert _ids(stored, "Observation", IdCriterion(("o1", "o4")), patient_ids=("p2",)) == ["o4"]
    assert _ids(stored, "Observation", patient_ids=()) == []


def test_chains_and_has(stored: Database) -> None:
    bakker = StringCriterion("family", ("bakker",))
    chain = ChainCriterion("patient", "Patient", bakker, on_patient_column=True)
    assert _ids(stored, "Observation", chain) == ["o4", "o5"]
    flagged = HasCriterion(
        "Flag", "patient", TokenCriterion("status", (TokenValue(None, "active"),)), True
    )
    assert _ids(stored, "Patient", flagged) == ["p2"]
    nobody = ChainCriterion("patient", "Patient", StringCriterion("family", ("visser",)), True)
    assert _ids(stored, "Observation", nobody) == []


def test_pages_follow_the_keyset_cursor_and_count_the_total(stored: Database) -> None:
    query = SearchQuery("Observation", sort=("date", False), count=2, total=True)
    pages: list[list[str]] = []
    with stored.read() as conn:
        while True:
            page = search_sql.search(conn, query)
            assert page.total == 5
            pages.append([row.res_id for row in page.rows])
            if page.next_cursor is None:
                break
            query = replace(query, cursor=page.next_cursor)
        counted = search_sql.search(conn, replace(query, cursor=None, summary_count=True))
    assert pages == [["o1", "o4"], ["o2", "o3"], ["o5"]]
    assert (counted.rows, counted.total) == ([], 5)


def test_lastn_is_the_newest_per_patient_and_code(stored: Database) -> None:
    query = SearchQuery("Observation")
    with stored.read() as conn:
        newest = search_sql.lastn(conn, query, 1)
        two = search_sql.lastn(conn, query, 2)
        weights = search_sql.lastn(
            conn, replace(query, criteria=[TokenCriterion("code", (WEIGHT,))]), 1
        )
    # per patient, newest first
    assert [r.res_id for r in newest] == ["o3", "o2", "o5", "o4"]
    assert [r.res_id for r in two] == ["o3", "o2", "o1", "o5", "o4"]
    assert [r.res_id for r in weights] == ["o2", "o4"]


def _pages(db: Database, query: SearchQuery) -> tuple[list[str], int | None]:
    """Every match of ``query``, following its cursor page by page, and its total."""
    found: list[str] = []
    with db.read() as conn:
        while True:
            page = search_sql.search(conn, query)
            found += [row.res_id for row in page.rows]
            if page.next_cursor is None:
                return found, page.total
            query = replace(query, cursor=page.next_cursor)


MINE = ReferenceCriterion("patient", (("Patient", "p1"),), on_patient_column=True)
BOTH = ReferenceCriterion("patient", (("Patient", "p1"), ("Patient", "p2")), on_patient_column=True)


@pytest.mark.parametrize(
    ("criteria", "patient_ids"),
    [
        ([MINE, TokenCriterion("code", (WEIGHT,))], None),
        ([BOTH, TokenCriterion("code", (WEIGHT,))], None),
        ([BOTH, TokenCriterion("code", (WEIGHT,))], ("p2",)),
        ([BOTH, TokenCriterion("code", (TokenValue(None, "29463-7"),))], None),
        ([BOTH, TokenCriterion("code", (TokenValue("", "29463-7"),))], None),
        ([MINE, TokenCriterion("code", (WEIGHT,)), DateCriterion(
            "date", (_date("ge", "2026-03-02"), _date("eq", "2026-03-01")), "primary"
        )], None),
        ([BOTH, TokenCriterion("code", (WEIGHT,)), DateCriterion(
            "date", (replace(_date("ap", "2026-03-02"), slack=3_600_000_000),), "primary"
        ), DateCriterion("date", (_date("lt", "2026-03-03"),), "primary")], None),
    ],
)
@pytest.mark.parametrize("sort", [("date", True), ("date", False), ("rid", True)])
def test_statements_built_once_per_shape_find_what_the_general_search_finds(
    stored: Database,
    criteria: list[Criterion],
    patient_ids: tuple[str, ...] | None,
    sort: tuple[SortKey, bool],
) -> None:
    """A patient's search by one token value runs a statement built for its shape, its values
    bound as parameters; it finds, pages and counts as the general search does (which the
    same token criterion given twice selects)."""
    token = next(c for c in criteria if isinstance(c, TokenCriterion))
    query = SearchQuery(
        "Observation", criteria, sort=sort, count=1, total=True, patient_ids=patient_ids
    )
    general = replace(query, criteria=[*criteria, replace(token)])
    assert search_sql._token_rows_plan(query, "code", token) is not None
    assert search_sql._one_value_token(general) is None  # not the token rows' path
    found, total = _pages(stored, query)
    assert (found, total) == _pages(stored, general)
    assert total == len(found)


def test_one_statement_serves_every_patient_and_date(stored: Database) -> None:
    built = search_sql._token_rows_page.cache_info().misses
    for pid, day in (("p1", "2026-03-01"), ("p2", "2026-02-01"), ("p1", "2026-03-02")):
        mine = ReferenceCriterion("patient", (("Patient", pid),), on_patient_column=True)
        since = DateCriterion("date", (_date("ge", day),), "primary")
        query = SearchQuery(
            "Observation", [mine, TokenCriterion("code", (WEIGHT,)), since], sort=("date", True)
        )
        with stored.read() as conn:
            page = search_sql.search(conn, query)
        assert [r.patient_id for r in page.rows] == [pid] * len(page.rows) and page.rows
    assert search_sql._token_rows_page.cache_info().misses - built <= 1
