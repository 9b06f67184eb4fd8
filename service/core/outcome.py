"""OperationOutcome issues and the error type every domain failure is raised as.

The API layer turns a :class:`FhirError` into an HTTP response with an ``OperationOutcome`` body;
the domain never knows about HTTP beyond the status code it suggests.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

Severity = Literal["fatal", "error", "warning", "information"]


@dataclass(frozen=True, slots=True)
class Issue:
    """One ``OperationOutcome.issue``.

    ``code`` is from the FHIR issue-type value set (``invalid``, ``structure``, ``required``,
    ``value``, ``invariant``, ``processing``, ``not-found``, ``conflict``, ``not-supported``,
    ``too-costly``, ``forbidden``, ``security``, ``login``, ``deleted``, ``duplicate``, ...).
    ``expression`` names the element in FHIRPath, e.g. ``Observation.valueQuantity.code``.
    """

    code: str
    diagnostics: str
    expression: tuple[str, ...] = ()
    severity: Severity = "error"

    def to_fhir(self) -> dict[str, Any]:
        """Render as a FHIR ``OperationOutcome.issue`` JSON object."""
        out: dict[str, Any] = {
            "severity": self.severity,
            "code": self.code,
            "diagnostics": self.diagnostics,
        }
        if self.expression:
            out["expression"] = list(self.expression)
        return out

    def prefixed(self, prefix: str) -> Issue:
        """The same issue with every expression re-rooted under ``prefix``.

        Used for Bundle entries: ``Observation.subject`` → ``Bundle.entry[3].resource.subject``.
        """
        exprs = tuple(_reroot(prefix, e) for e in self.expression) or (prefix,)
        return Issue(self.code, self.diagnostics, exprs, self.severity)


def _reroot(prefix: str, expression: str) -> str:
    head, _, rest = expression.partition(".")
    if head[:1].isupper():  # "Observation.subject" → drop the type name
        return f"{prefix}.{rest}" if rest else prefix
    return f"{prefix}.{expression}"


@dataclass(slots=True)
class FhirError(Exception):
    """A failure to report to the client as an ``OperationOutcome`` with ``status``."""

    status: int
    issues: list[Issue] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        Exception.__init__(self, "; ".join(i.diagnostics for i in self.issues))

    @classmethod
    def single(
        cls,
        status: int,
        code: str,
        diagnostics: str,
        expression: str | Iterable[str] | None = None,
    ) -> FhirError:
        """A ``FhirError`` with a single error issue."""
        if expression is None:
            exprs: tuple[str, ...] = ()
        elif isinstance(expression, str):
            exprs = (expression,)
        else:
            exprs = tuple(expression)
        return cls(status, [Issue(code, diagnostics, exprs)])


def nul_error(where: str, name: str | None = None) -> FhirError:
    """The 400 for a NUL character (U+0000) in ``where``; ``name`` goes in the expression.

    PostgreSQL cannot store or compare text holding NUL, SQLite can: both refuse it alike, as
    input, before it reaches a query.
    """
    where = where.replace("\x00", "\\0")
    shown = name.replace("\x00", "\\0") if name is not None else None
    return FhirError.single(
        400, "invalid", f"NUL character (U+0000) in {where} is not allowed", shown
    )


def operation_outcome(issues: Iterable[Issue]) -> dict[str, Any]:
    """A FHIR ``OperationOutcome`` resource (as JSON) holding ``issues``."""
    rendered = [i.to_fhir() for i in issues]
    if not rendered:
        rendered = [{"severity": "information", "code": "informational", "diagnostics": "OK"}]
    return {"resourceType": "OperationOutcome", "issue": rendered}
