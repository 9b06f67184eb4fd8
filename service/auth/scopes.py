"""SMART v2 scopes (``patient/Observation.rs``) and the MedMij data-service scope mapping.

A scope names a context (``patient``, ``user``, ``system``), a resource type (or ``*``) and an
in-order subset of ``cruds``. v1 suffixes map onto v2 (``read`` → ``rs``, ``write`` → ``cud``,
``*`` → ``cruds``). Anything else is ignored, never read as broader access (SMART scopes page).

Granular scopes (SMART v2) add token-parameter filters to a patient scope of one type:
``patient/Observation.rs?category=vital-signs`` reads only vital signs (enforced through
:class:`~service.fhir.confinement.Confinement`). A filtered scope grants only reading and
searching; on ``*`` or in another context it is not understood, hence ignored.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl

from service.fhir.confinement import Filter

_V2 = re.compile(r"^(patient|user|system)/([A-Za-z]+|\*)\.(c?r?u?d?s?)$")
_V1 = {"read": "rs", "write": "cud", "*": "cruds"}
#: Scopes that grant no data access but are understood (``offline_access``: the app asks for
#: long-term access; the patient decides on the consent page whether it gets a refresh token).
CONTEXT_SCOPES = frozenset({"launch/patient", "offline_access"})


@dataclass(frozen=True, slots=True)
class ResourceScope:
    """One parsed resource scope."""

    context: str
    res_type: str
    permissions: frozenset[str]
    filters: Filter = ()  # a granular scope's conditions (all must match)

    def covers(self, res_type: str, permission: str) -> bool:
        """True when this scope allows ``permission`` (one of ``cruds``) on ``res_type``."""
        if self.filters and permission not in "rs":
            return False  # a granular scope only ever narrows reading
        return self.res_type in ("*", res_type) and permission in self.permissions


_FILTER_NAME = re.compile(r"^[a-z][a-z0-9-]*$")


def parse_scope(token: str) -> ResourceScope | None:
    """A resource scope, or None when ``token`` is not one (or has a malformed suffix)."""
    token, question, query = token.partition("?")
    filters: Filter = ()
    if question:
        pairs = parse_qsl(query, keep_blank_values=True)
        if not pairs or any(not _FILTER_NAME.match(k) or not v for k, v in pairs):
            return None
        filters = tuple(pairs)
    head, dot, suffix = token.rpartition(".")
    if dot and suffix in _V1:
        token = f"{head}.{_V1[suffix]}"
    match = _V2.match(token)
    if match is None or not match.group(3):
        return None
    if filters and (match.group(1) != "patient" or match.group(2) == "*"):
        return None
    return ResourceScope(match.group(1), match.group(2), frozenset(match.group(3)), filters)


def is_v2_scope(token: str) -> bool:
    """True when ``token`` is a resource scope in SMART v2 syntax (no v1 ``.read``/``.write``)."""
    match = _V2.match(token)
    return match is not None and bool(match.group(3))


def split(scope: str | None) -> list[str]:
    """The scope tokens of a space-separated scope string (duplicates removed, order kept)."""
    return list(dict.fromkeys((scope or "").split()))


def expand_medmij(tokens: Iterable[str], mapping: Mapping[str, str]) -> list[str]:
    """Replace MedMij data-service scopes by the SMART scopes they stand for."""
    out: list[str] = []
    for token in tokens:
        out.extend(split(mapping[token]) if token in mapping else [token])
    return list(dict.fromkeys(out))


def narrow(requested: Iterable[str], allowed: Iterable[str]) -> list[str]:
    """The requested scopes the client is pre-authorised for.

    A requested resource scope is kept with the permissions that one allowed scope of the same
    context and type (or ``*``) also grants; unknown tokens are dropped.
    """
    allowed_list = list(allowed)
    allowed_scopes = [s for s in (parse_scope(a) for a in allowed_list) if s is not None]
    out: list[str] = []
    for token in requested:
        if token in CONTEXT_SCOPES and token in allowed_list:
            out.append(token)
            continue
        wanted = parse_scope(token)
        if wanted is None:
            continue
        best: frozenset[str] = frozenset()
        for have in allowed_scopes:
            # an allowed granular scope covers only requests at least as filtered
            if (
                have.context == wanted.context
                and have.res_type in ("*", wanted.res_type)
                and set(have.filters) <= set(wanted.filters)
            ):
                best = best | (wanted.permissions & have.permissions)
        if wanted.filters:
            best = best & frozenset("rs")
        if best:
            perms = "".join(p for p in "cruds" if p in best)
            query = token.partition("?")[2]  # as the client wrote it
            suffix = f"?{query}" if query else ""
            out.append(f"{wanted.context}/{wanted.res_type}.{perms}{suffix}")
    return list(dict.fromkeys(out))


@dataclass(frozen=True, slots=True)
class Grants:
    """The resource scopes of a token, ready for permission checks."""

    scopes: tuple[ResourceScope, ...]

    @classmethod
    def parse(cls, scope: str | None) -> Grants:
        """Grants from a space-separated scope string (non-resource tokens are ignored)."""
        parsed = (parse_scope(t) for t in split(scope))
        return cls(tuple(s for s in parsed if s is not None))

    def allows(self, context: str, res_type: str, permission: str) -> bool:
        """True when a scope of ``context`` allows ``permission`` on ``res_type``."""
        return any(s.context == context and s.covers(res_type, permission) for s in self.scopes)

    def read_filters(self, context: str) -> dict[str, tuple[Filter, ...]]:
        """Per resource type, the filters of the granular scopes that read or search it,
        for the types no unfiltered scope lets this context read."""
        out: dict[str, tuple[Filter, ...]] = {}
        for scope in self.scopes:
            if scope.context != context or not scope.filters:
                continue
            if self.allows_unfiltered(context, scope.res_type, "r"):
                continue
            out[scope.res_type] = (*out.get(scope.res_type, ()), scope.filters)
        return out

    def allows_unfiltered(self, context: str, res_type: str, permission: str) -> bool:
        """True when a scope without filters allows ``permission`` on ``res_type``."""
        return any(
            s.context == context and not s.filters and s.covers(res_type, permission)
            for s in self.scopes
        )

    def has_context(self, context: str) -> bool:
        """True when any scope has this context (``patient/…`` establishes a patient)."""
        return any(s.context == context for s in self.scopes)
