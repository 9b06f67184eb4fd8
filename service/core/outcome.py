"""OperationOutcome issues and the error type every domain failure is raised as.

The API layer turns a :class:`FhirError` into an HTTP response with an ``OperationOutcome`` body;
the domain names the kind of failure (:meth:`FhirError.not_found`, ...), and each kind owns its
HTTP status and issue code here, in one place.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

Severity = Literal["fatal", "error", "warning", "information"]
#: Where an issue is: one FHIRPath expression, several, or none.
Where: TypeAlias = str | Iterable[str] | None


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
    """A failure to report to the client as an ``OperationOutcome`` with ``status``.

    Raise one through a named constructor (:meth:`invalid`, :meth:`not_found`, ...): each kind
    of failure owns its HTTP status and FHIR issue code, so every caller reporting it answers
    alike. ``tests/test_architecture_errors.py`` refuses literal statuses elsewhere.
    """

    status: int
    issues: list[Issue] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        Exception.__init__(self, "; ".join(i.diagnostics for i in self.issues))

    @classmethod
    def _single(
        cls,
        status: int,
        code: str,
        diagnostics: str,
        expression: Where = None,
        headers: dict[str, str] | None = None,
    ) -> FhirError:
        """A ``FhirError`` with a single error issue."""
        if expression is None:
            exprs: tuple[str, ...] = ()
        elif isinstance(expression, str):
            exprs = (expression,)
        else:
            exprs = tuple(expression)
        return cls(status, [Issue(code, diagnostics, exprs)], dict(headers or {}))

    def with_issues(self, issues: list[Issue]) -> FhirError:
        """The same failure (status, headers) reported with ``issues`` (e.g. re-rooted ones)."""
        return FhirError(self.status, issues, dict(self.headers))

    # -- 400: the request itself is wrong ------------------------------------------------------

    @classmethod
    def invalid(cls, diagnostics: str, expression: Where = None) -> FhirError:
        """400 ``invalid``: a malformed value, parameter or header."""
        return cls._single(400, "invalid", diagnostics, expression)

    @classmethod
    def structure(cls, diagnostics: str, expression: Where = None) -> FhirError:
        """400 ``structure``: content that is not well-formed JSON or FHIR."""
        return cls._single(400, "structure", diagnostics, expression)

    @classmethod
    def required(cls, diagnostics: str, expression: Where = None) -> FhirError:
        """400 ``required``: something the request must carry is missing."""
        return cls._single(400, "required", diagnostics, expression)

    @classmethod
    def unsupported(cls, diagnostics: str, expression: Where = None) -> FhirError:
        """400 ``not-supported``: a parameter or feature this server does not offer."""
        return cls._single(400, "not-supported", diagnostics, expression)

    @classmethod
    def too_costly(cls, diagnostics: str, expression: Where = None) -> FhirError:
        """400 ``too-costly``: a request (a search) that would cost more than the server allows."""
        return cls._single(400, "too-costly", diagnostics, expression)

    @classmethod
    def malformed(cls, issues: list[Issue]) -> FhirError:
        """400 with ``issues``: every fault found in the request's content or parameters."""
        return cls(400, issues)

    # -- 401, 403: who is asking ---------------------------------------------------------------

    @classmethod
    def unauthorized(cls, diagnostics: str, challenge: str) -> FhirError:
        """401 ``login``: no usable credentials; ``challenge`` is the ``WWW-Authenticate``."""
        return cls._single(401, "login", diagnostics, headers={"WWW-Authenticate": challenge})

    @classmethod
    def forbidden(cls, diagnostics: str, expression: Where = None) -> FhirError:
        """403 ``forbidden``: the caller may not do this."""
        return cls._single(403, "forbidden", diagnostics, expression)

    # -- 404, 405, 406, 410: what is addressed -------------------------------------------------

    @classmethod
    def not_found(cls, diagnostics: str, expression: Where = None) -> FhirError:
        """404 ``not-found``: no such resource, version, job or page (or not the caller's)."""
        return cls._single(404, "not-found", diagnostics, expression)

    @classmethod
    def unknown_type(cls, diagnostics: str, expression: Where = None) -> FhirError:
        """404 ``not-supported``: a resource type this server does not serve."""
        return cls._single(404, "not-supported", diagnostics, expression)

    @classmethod
    def method_not_allowed(cls, diagnostics: str, expression: Where = None) -> FhirError:
        """405 ``not-supported``: an interaction the target does not allow (a read-only type)."""
        return cls._single(405, "not-supported", diagnostics, expression)

    @classmethod
    def not_acceptable(cls, diagnostics: str, expression: Where = None) -> FhirError:
        """406 ``not-supported``: no response format the client accepts."""
        return cls._single(406, "not-supported", diagnostics, expression)

    @classmethod
    def no_match(cls, diagnostics: str, expression: Where = None) -> FhirError:
        """404 ``invalid``: a transaction entry's conditional criteria match nothing."""
        return cls._single(404, "invalid", diagnostics, expression)

    @classmethod
    def gone(
        cls,
        diagnostics: str,
        expression: Where = None,
        *,
        etag: str | None = None,
    ) -> FhirError:
        """410 ``deleted``: the resource or version is a deletion (``etag``: its version)."""
        headers = {"ETag": etag} if etag is not None else None
        return cls._single(410, "deleted", diagnostics, expression, headers)

    # -- 409, 412: the resource's state --------------------------------------------------------

    @classmethod
    def conflict(cls, diagnostics: str, expression: Where = None) -> FhirError:
        """409 ``conflict``: the write clashes with a resource that exists."""
        return cls._single(409, "conflict", diagnostics, expression)

    @classmethod
    def precondition_failed(cls, diagnostics: str, expression: Where = None) -> FhirError:
        """412 ``conflict``: ``If-Match`` names another version than the current one."""
        return cls._single(412, "conflict", diagnostics, expression)

    @classmethod
    def ambiguous_match(cls, diagnostics: str, expression: Where = None) -> FhirError:
        """412 ``duplicate``: a conditional write's criteria match more than one resource."""
        return cls._single(412, "duplicate", diagnostics, expression)

    # -- 413, 415: the request body ------------------------------------------------------------

    @classmethod
    def too_large(cls, diagnostics: str, expression: Where = None) -> FhirError:
        """413 ``too-costly``: a body (or Bundle, or patch) larger than the server takes."""
        return cls._single(413, "too-costly", diagnostics, expression)

    @classmethod
    def uri_too_long(cls, diagnostics: str, expression: Where = None) -> FhirError:
        """414 ``too-long``: a request URL longer than the server reads (use ``POST _search``)."""
        return cls._single(414, "too-long", diagnostics, expression)

    @classmethod
    def unsupported_media_type(cls, diagnostics: str, expression: Where = None) -> FhirError:
        """415 ``not-supported``: a body in a format the server does not read."""
        return cls._single(415, "not-supported", diagnostics, expression)

    # -- 422: well-formed content the server's rules refuse ------------------------------------

    @classmethod
    def unprocessable(cls, diagnostics: str, expression: Where = None) -> FhirError:
        """422 ``processing``: an operation (a patch) that cannot be applied to the resource."""
        return cls._single(422, "processing", diagnostics, expression)

    @classmethod
    def invalid_value(cls, diagnostics: str, expression: Where = None) -> FhirError:
        """422 ``value``: an element whose value the server's rules refuse."""
        return cls._single(422, "value", diagnostics, expression)

    @classmethod
    def unsupported_content(cls, diagnostics: str, expression: Where = None) -> FhirError:
        """422 ``not-supported``: content asking for something the server does not offer."""
        return cls._single(422, "not-supported", diagnostics, expression)

    @classmethod
    def rejected(cls, issues: list[Issue]) -> FhirError:
        """422 with ``issues``: every profile rule or reference the content breaks."""
        return cls(422, issues)

    # -- 429, 5xx: the server's state ----------------------------------------------------------

    @classmethod
    def rate_limited(cls, diagnostics: str, *, retry_after: int) -> FhirError:
        """429 ``throttled``: too much at once; try again in ``retry_after`` seconds."""
        return cls._single(429, "throttled", diagnostics, headers={"Retry-After": str(retry_after)})

    @classmethod
    def server_error(cls, diagnostics: str, expression: Where = None) -> FhirError:
        """500 ``exception``: the server failed at something it should have done."""
        return cls._single(500, "exception", diagnostics, expression)

    @classmethod
    def unavailable(cls, diagnostics: str, expression: Where = None) -> FhirError:
        """503 ``transient``: a dependency is down for now; the client may retry."""
        return cls._single(503, "transient", diagnostics, expression)


def nul_error(where: str, name: str | None = None) -> FhirError:
    """The 400 for a NUL character (U+0000) in ``where``; ``name`` goes in the expression.

    PostgreSQL cannot store or compare text holding NUL, SQLite can: both refuse it alike, as
    input, before it reaches a query.
    """
    where = where.replace("\x00", "\\0")
    shown = name.replace("\x00", "\\0") if name is not None else None
    return FhirError.invalid(f"NUL character (U+0000) in {where} is not allowed", shown)


def operation_outcome(issues: Iterable[Issue]) -> dict[str, Any]:
    """A FHIR ``OperationOutcome`` resource (as JSON) holding ``issues``."""
    rendered = [i.to_fhir() for i in issues]
    if not rendered:
        rendered = [{"severity": "information", "code": "informational", "diagnostics": "OK"}]
    return {"resourceType": "OperationOutcome", "issue": rendered}
