"""The resources a search returns besides its matches: ``_include`` and ``_revinclude``, and
their ``:iterate`` forms followed from what was included.

Every resource goes through ``admit`` (the caller's compartments and scopes) before it is
returned or followed further, so nothing is reached *through* a resource the caller may not see.
``_revinclude`` resources are capped at ``budget`` per page; a warning says when the cap cut.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from service.core.criteria import SearchQuery
from service.core.outcome import Issue
from service.storage import search_sql
from service.storage.db import Connection
from service.storage.repository import StoredVersion

#: ``:iterate`` rounds after the first (FHIR leaves the depth to the server).
MAX_ITERATIONS = 3


@dataclass(slots=True)
class _Collector:
    conn: Connection
    query: SearchQuery
    admit: Callable[[StoredVersion], bool]
    budget: int
    seen: set[tuple[str, str]]
    found: list[StoredVersion] = field(default_factory=list)
    revincluded: int = 0
    capped: bool = False

    def add(self, rows: Iterable[StoredVersion]) -> list[StoredVersion]:
        """The rows not returned yet that the caller may see; they are now returned."""
        new = []
        for row in rows:
            key = (row.res_type, row.res_id)
            if key not in self.seen and self.admit(row):
                self.seen.add(key)
                new.append(row)
        self.found.extend(new)
        return new

    def round(self, pool: list[StoredVersion], first: bool) -> list[StoredVersion]:
        """One step out from ``pool``: every include (only the ``:iterate`` ones after the
        first round) of the pool's resources of its source type."""
        new: list[StoredVersion] = []
        for inc in self.query.includes:
            if not (first or inc.iterate):
                continue
            source = inc.source_type or self.query.res_type
            rids = [r.rid for r in pool if r.res_type == source]
            new += self.add(search_sql.included(self.conn, rids, inc.param, inc.target_type))
        for rev in self.query.revincludes:
            if not (first or rev.iterate) or self.capped:
                continue
            for target_type in sorted({r.res_type for r in pool}):
                if rev.targets and target_type not in rev.targets:
                    continue
                ids = [r.res_id for r in pool if r.res_type == target_type]
                room = self.budget - self.revincluded
                rows = search_sql.revincluded(
                    self.conn, rev, target_type, ids, self.query.patient_ids, room + 1
                )
                if len(rows) > room:
                    rows, self.capped = rows[:room], True
                added = self.add(rows)
                self.revincluded += len(added)
                new += added
        return new


def included_resources(
    conn: Connection,
    query: SearchQuery,
    matches: list[StoredVersion],
    *,
    admit: Callable[[StoredVersion], bool],
    budget: int,
    warnings: list[Issue],
) -> list[StoredVersion]:
    """The ``_include`` and ``_revinclude`` resources of ``matches`` (each once, none of them
    a match), at most ``budget`` of them from ``_revinclude``."""
    collector = _Collector(conn, query, admit, budget, {(m.res_type, m.res_id) for m in matches})
    pool = collector.round(matches, first=True)
    iterating = any(i.iterate for i in query.includes) or any(
        r.iterate for r in query.revincludes
    )
    for _ in range(MAX_ITERATIONS if iterating else 0):
        if not pool:
            break
        pool = collector.round(pool, first=False)
    if collector.capped:
        warnings.append(
            Issue(
                "too-costly",
                f"Only the first {budget} _revinclude resources are returned "
                "(TELEMON_MAX_REVINCLUDE); narrow the search or page with a smaller _count",
                ("_revinclude",),
                "warning",
            )
        )
    return collector.found
