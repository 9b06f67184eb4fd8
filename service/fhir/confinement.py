"""What a confined caller may see: patient compartments, and per resource type the filters of
SMART v2 granular scopes (``patient/Observation.rs?category=vital-signs``).

A :class:`Confinement` is the tuple of patient ids the FHIR service already confines reads and
writes to, carrying the filters as well, so every place that applies the compartment (read,
vread, history, search and its ``_include``, ``$lastn``, paging, Bundle entries) applies them
too. A filter is a set of ``(parameter, value)`` pairs on token search parameters that must all
match; several filters for one type are alternatives (any may match). A value is ``code`` or
``system|code``, commas separating alternatives as in a search.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

#: One granular scope's conditions: (token search parameter, value), all of which must match.
Filter = tuple[tuple[str, str], ...]
#: A token index entry: (parameter, system, code).
Token = tuple[str, "str | None", str]


class Confinement(tuple[str, ...]):
    """Patient ids (the tuple) plus, per resource type, the granular-scope filters."""

    filters: dict[str, tuple[Filter, ...]]

    def __new__(
        cls, patient_ids: Iterable[str], filters: Mapping[str, tuple[Filter, ...]]
    ) -> Confinement:
        """Confined to ``patient_ids``; types in ``filters`` only where one filter matches."""
        made = super().__new__(cls, tuple(patient_ids))
        made.filters = dict(filters)
        return made

    def filtered(self, res_type: str) -> bool:
        """Whether resources of ``res_type`` are filtered at all."""
        return res_type in self.filters

    def admits(self, res_type: str, tokens: Iterable[Token]) -> bool:
        """Whether a resource of ``res_type`` with these token index values may be seen."""
        alternatives = self.filters.get(res_type)
        if alternatives is None:
            return True
        have = list(tokens)
        return any(all(_matches(have, p, v) for p, v in f) for f in alternatives)

    def search_params(self, res_type: str) -> list[tuple[str, str]]:
        """The filters as search parameters, when a search can express them (one filter, or
        one parameter in every filter: a comma OR); else none, and results are only filtered
        afterwards (pages may then hold fewer entries than ``_count``)."""
        alternatives = self.filters.get(res_type)
        if not alternatives:
            return []
        if len(alternatives) == 1:
            return list(alternatives[0])
        names = {p for f in alternatives for p, _ in f}
        if len(names) == 1 and all(len(f) == 1 for f in alternatives):
            return [(names.pop(), ",".join(f[0][1] for f in alternatives))]
        return []


def _matches(tokens: list[Token], param: str, value: str) -> bool:
    for wanted in value.split(","):
        system, bar, code = wanted.rpartition("|")
        for name, have_system, have_code in tokens:
            if name == param and have_code == code and (not bar or (have_system or "") == system):
                return True
    return False
