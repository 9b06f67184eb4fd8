"""Every kind of failure owns its HTTP status: no literal statuses in raised errors.

Call sites name the failure (``FhirError.not_found(...)``); only ``service/core/outcome.py``
pairs a kind with its HTTP status and FHIR issue code.
"""

from __future__ import annotations

import ast
import inspect
from collections.abc import Callable
from pathlib import Path

import pytest

from service.core.outcome import FhirError, Issue

SERVICE = Path(__file__).resolve().parent.parent / "service"
OUTCOME = Path(inspect.getfile(FhirError)).resolve()  # the one place statuses are written
ERROR_TYPES = ("FhirError", "HTTPException")
STATUS_KEYWORDS = ("status", "status_code")


def _error_call(node: ast.Call) -> str | None:
    """``FhirError``, ``FhirError.x`` or ``HTTPException`` (also qualified), else None."""
    func = node.func
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name | ast.Attribute):
        owner = func.value.attr if isinstance(func.value, ast.Attribute) else func.value.id
        if owner in ERROR_TYPES:
            return f"{owner}.{func.attr}"
        name = func.attr
    elif isinstance(func, ast.Name):
        name = func.id
    else:
        return None
    return name if name in ERROR_TYPES else None


def _literal_int(node: ast.expr) -> bool:
    return (
        isinstance(node, ast.Constant)
        and isinstance(node.value, int)
        and not isinstance(node.value, bool)
    )


def offences(source: str, filename: str) -> list[str]:
    """``file:line`` of each error construction in ``source`` that passes an integer literal
    (positional, or as ``status=``/``status_code=``) or builds a ``FhirError`` directly."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if not isinstance(node, ast.Call) or (name := _error_call(node)) is None:
            continue
        values = [*node.args, *(k.value for k in node.keywords if k.arg in STATUS_KEYWORDS)]
        if any(_literal_int(v) for v in values):
            found.append(f"{filename}:{node.lineno}: {name}(...) passes a literal status")
        elif name in ("FhirError", "FhirError._single"):
            found.append(f"{filename}:{node.lineno}: {name}(...) instead of a named constructor")
    return found


def test_no_literal_status_in_raised_errors() -> None:
    found = [
        offence
        for path in sorted(SERVICE.rglob("*.py"))
        if path != OUTCOME
        for offence in offences(path.read_text(), str(path.relative_to(SERVICE.parent)))
    ]
    assert not found, "name the failure (FhirError.not_found, ...):\n" + "\n".join(found)


@pytest.mark.parametrize(
    "source",
    [
        'raise FhirError._single(400, "invalid", "x")',
        "raise FhirError(422, [])",
        "raise HTTPException(status_code=404)",
        'raise fastapi.HTTPException(403, "no")',
        "raise FhirError(status, [])",
        'raise FhirError.invalid(status=400, diagnostics="x")',
    ],
)
def test_the_check_catches(source: str) -> None:
    assert offences(source, "x.py") != []


def test_the_check_lets_named_failures_pass() -> None:
    source = (
        'raise FhirError.not_found("gone", "id")\n'
        'raise FhirError.rate_limited("slow", retry_after=30)\n'
        "raise exc.with_issues([])"
    )
    assert offences(source, "x.py") == []


NAMED: list[tuple[Callable[[str], FhirError], int, str]] = [
    (FhirError.invalid, 400, "invalid"),
    (FhirError.structure, 400, "structure"),
    (FhirError.required, 400, "required"),
    (FhirError.unsupported, 400, "not-supported"),
    (FhirError.too_costly, 400, "too-costly"),
    (lambda d: FhirError.unauthorized(d, 'Bearer realm="x"'), 401, "login"),
    (FhirError.forbidden, 403, "forbidden"),
    (FhirError.not_found, 404, "not-found"),
    (FhirError.unknown_type, 404, "not-supported"),
    (FhirError.no_match, 404, "invalid"),
    (FhirError.method_not_allowed, 405, "not-supported"),
    (FhirError.not_acceptable, 406, "not-supported"),
    (FhirError.conflict, 409, "conflict"),
    (FhirError.gone, 410, "deleted"),
    (FhirError.precondition_failed, 412, "conflict"),
    (FhirError.ambiguous_match, 412, "duplicate"),
    (FhirError.too_large, 413, "too-costly"),
    (FhirError.uri_too_long, 414, "too-long"),
    (FhirError.unsupported_media_type, 415, "not-supported"),
    (FhirError.unprocessable, 422, "processing"),
    (FhirError.invalid_value, 422, "value"),
    (FhirError.unsupported_content, 422, "not-supported"),
    (lambda d: FhirError.rate_limited(d, retry_after=5), 429, "throttled"),
    (FhirError.server_error, 500, "exception"),
    (FhirError.unavailable, 503, "transient"),
]


@pytest.mark.parametrize(("make", "status", "code"), NAMED)
def test_named_constructor_owns_its_status_and_code(
    make: Callable[[str], FhirError], status: int, code: str
) -> None:
    error = make("what went wrong")
    assert (error.status, [i.code for i in error.issues]) == (status, [code])
    assert error.issues[0].diagnostics == "what went wrong"
    assert error.issues[0].severity == "error"


def test_every_named_constructor_is_in_the_table() -> None:
    public = {
        name
        for name, value in vars(FhirError).items()
        if isinstance(value, classmethod) and not name.startswith("_")
    }
    tested = {make.__name__ for make, _, _ in NAMED if make.__name__ != "<lambda>"}
    assert public - {"malformed", "rejected"} == tested | {"unauthorized", "rate_limited"}


def test_constructors_keep_their_headers_and_expressions() -> None:
    assert FhirError.unauthorized("no", 'Bearer realm="x"').headers == {
        "WWW-Authenticate": 'Bearer realm="x"'
    }
    assert FhirError.rate_limited("slow", retry_after=25).headers == {"Retry-After": "25"}
    assert FhirError.gone("deleted", etag='W/"3"').headers == {"ETag": 'W/"3"'}
    assert FhirError.gone("deleted").headers == {}
    assert FhirError.invalid("x", "a.b").issues[0].expression == ("a.b",)
    assert FhirError.invalid("x", ["a", "b"]).issues[0].expression == ("a", "b")


def test_issue_lists_and_reissued_errors() -> None:
    issues = [Issue("value", "bad"), Issue("not-found", "missing")]
    assert FhirError.malformed(issues).status == 400
    assert FhirError.rejected(issues).status == 422
    limited = FhirError.rate_limited("slow", retry_after=5)
    moved = limited.with_issues([Issue("throttled", "slow", ("Bundle.entry[0]",))])
    assert (moved.status, moved.headers) == (429, {"Retry-After": "5"})
    assert moved.issues[0].expression == ("Bundle.entry[0]",)
