"""What ``telemon import`` did: counts per resource type and outcome, reasons, rejections."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path

from service.core.outcome import Issue

CREATED, UPDATED, SKIPPED, REJECTED = "created", "updated", "skipped", "rejected"
OUTCOMES = (CREATED, UPDATED, SKIPPED, REJECTED)
ALREADY_PRESENT = "already present (same identifier)"
NOT_STORED = "type telemon does not import (--skip-unsupported)"
NOT_DATA = "not data (a search's OperationOutcome)"
#: The type counted for what could not be read as a resource (a malformed line or file).
UNKNOWN_TYPE = "(unreadable)"

_ENTRY_ROOT = re.compile(r"^Bundle\.entry\[\d+\]\.resource")
_INDEX = re.compile(r"\[\d+\]")


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why one resource (or a whole transaction Bundle or part of one, or a file) was refused.

    ``line`` is the 1-based NDJSON line, ``entry`` the 0-based Bundle entry index; both are None
    when the whole file or transaction Bundle (``part`` of it) was rejected.
    """

    status: int
    issues: tuple[Issue, ...]
    line: int | None = None
    entry: int | None = None
    file: Path | None = None
    res_type: str | None = None
    part: int | None = None
    #: Only references that did not resolve: they may resolve later in the run.
    waits: bool = False

    @property
    def where(self) -> str:
        """Where: ``Observation.000.ndjson line 7``, ``bundle.json entry 3``, ``x.json``."""
        return location(self.file, self.line, self.entry, self.part)

    @property
    def reason(self) -> str:
        """The kind of failure, without the particulars: what rejections are grouped by.

        ``422 not-found at Observation.subject``: the status, and each issue's code and
        element (Bundle entry prefixes and list indexes left out).
        """
        whole = self.res_type == "Bundle"
        root = None if whole else self.res_type
        kinds = dict.fromkeys(
            f"{i.code} at {', '.join(_general(e, root) for e in i.expression)}"
            if i.expression
            else i.code
            for i in self.issues
        )
        text = f"{self.status} {'; '.join(kinds) or HTTPStatus(self.status).phrase}"
        return f"transaction refused whole: {text}" if whole else text

    def describe(self) -> str:
        """One line per issue: ``<diagnostics> (at <expression>)``."""
        parts = []
        for issue in self.issues:
            at = f" (at {', '.join(issue.expression)})" if issue.expression else ""
            parts.append(f"{issue.diagnostics}{at}")
        return "; ".join(parts) or HTTPStatus(self.status).phrase


def location(
    file: Path | None, line: int | None, entry: int | None = None, part: int | None = None
) -> str:
    """Where in the input: ``Observation.000.ndjson line 7``, ``bundle.json entry 3``, …"""
    name = file.name if file is not None else "file"
    if line is not None:
        return f"{name} line {line}"
    if entry is not None:
        return f"{name} entry {entry}"
    if part is not None:
        return f"{name} part {part}"
    return name


def _general(expression: str, res_type: str | None) -> str:
    """``Bundle.entry[3].resource.component[1].code`` → ``Observation.component.code``."""
    if res_type is not None:
        expression = _ENTRY_ROOT.sub(res_type, expression)
    return _INDEX.sub("", expression)


@dataclass(slots=True)
class Tally:
    """How often one (type, outcome, reason) happened, and where it happened first."""

    count: int
    first: str
    example: str | None = None


@dataclass(slots=True)
class ImportSummary:
    """What an import did, per resource type and per reason.

    ``counts`` maps a resource type to its count per outcome (:data:`OUTCOMES`); ``reasons``
    maps (type, outcome, reason) to a :class:`Tally` for every skip and rejection.
    ``rejections`` lists each rejection in file order; ``notes`` say how transaction Bundles
    above the entry limit were split; ``ignored`` names files a directory held that are not
    FHIR JSON or NDJSON.
    """

    counts: dict[str, Counter[str]] = field(default_factory=dict)
    reasons: dict[tuple[str, str, str], Tally] = field(default_factory=dict)
    rejections: list[Rejection] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    ignored: list[Path] = field(default_factory=list)

    def add(
        self,
        res_type: str,
        outcome: str,
        reason: str | None = None,
        *,
        count: int = 1,
        where: str = "",
        example: str | None = None,
    ) -> None:
        """Count ``count`` resources of ``res_type`` with ``outcome`` (for ``reason``)."""
        self.counts.setdefault(res_type, Counter())[outcome] += count
        if reason is not None:
            tally = self.reasons.get((res_type, outcome, reason))
            if tally is None:
                self.reasons[(res_type, outcome, reason)] = Tally(count, where, example)
            else:
                tally.count += count

    def reject(self, rejection: Rejection, types: Mapping[str, int] | None = None) -> None:
        """Record a rejection covering ``types`` (type → resources; default: its own one)."""
        for res_type, count in (types or {rejection.res_type or UNKNOWN_TYPE: 1}).items():
            self.add(
                res_type,
                REJECTED,
                rejection.reason,
                count=count,
                where=rejection.where,
                example=rejection.describe(),
            )
        self.rejections.append(rejection)

    def total(self, outcome: str) -> int:
        """Resources of every type with ``outcome``."""
        return sum(c[outcome] for c in self.counts.values())

    @property
    def created(self) -> int:
        """Resources created."""
        return self.total(CREATED)

    @property
    def updated(self) -> int:
        """Resources updated (PUT entries of a transaction Bundle)."""
        return self.total(UPDATED)

    @property
    def skipped(self) -> int:
        """Resources skipped: already present, or of a type telemon does not store."""
        return self.total(SKIPPED)

    @property
    def rejected(self) -> int:
        """Resources rejected."""
        return self.total(REJECTED)
