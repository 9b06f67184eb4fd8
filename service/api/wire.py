"""The FHIR JSON wire format: content negotiation, bounded body reading, responses."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from email.utils import format_datetime
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl

import orjson
from fastapi import Request
from fastapi.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from service.core.dates import format_instant, from_micros
from service.core.outcome import FhirError, Issue, nul_error, operation_outcome
from service.fhir.reads import VersionResult
from service.validation import parse_json
from service.validation.integers import parse_unsigned

FHIR_JSON = "application/fhir+json"
_JSON_TYPES = {"application/fhir+json", "application/json", "application/json+fhir"}
_ACCEPTABLE = _JSON_TYPES | {"*/*", "application/*"}
_FORMAT_PARAMS = {"json", "application/json", "application/fhir+json"}
_NOSNIFF = (b"x-content-type-options", b"nosniff")


class FhirResponse(Response):
    """A response whose body is FHIR JSON (already serialised, or data to serialise).

    Always with ``X-Content-Type-Options: nosniff``: a browser must never guess another type
    for the JSON (a resource's text could otherwise be rendered as HTML).
    """

    media_type = f"{FHIR_JSON}; charset=utf-8"

    def init_headers(self, headers: Mapping[str, str] | None = None) -> None:
        """Starlette's headers, plus ``nosniff``."""
        super().init_headers(headers)
        self.raw_headers.append(_NOSNIFF)

    def render(self, content: Any) -> bytes:
        """Serialise ``content`` (bytes/str pass through; data via orjson, Fragments inline)."""
        if isinstance(content, bytes):
            return content
        if isinstance(content, str):
            return content.encode()
        return orjson.dumps(content)


def outcome_response(error: FhirError) -> FhirResponse:
    """The HTTP response for a domain error."""
    return FhirResponse(
        operation_outcome(error.issues), status_code=error.status, headers=error.headers
    )


async def negotiate(request: Request) -> None:
    """Refuse (406) an ``Accept`` header or ``_format`` that allows no JSON."""
    fmt = request.query_params.get("_format")
    if fmt is not None and fmt not in _FORMAT_PARAMS:
        raise FhirError.not_acceptable(f"_format={fmt} is not supported", "_format")
    accept = request.headers.get("accept")
    if not accept:
        return
    for part in accept.split(","):
        media = part.split(";")[0].strip().lower()
        if media in _ACCEPTABLE:
            return
    raise FhirError.not_acceptable(
        f"Cannot produce '{accept}'; this server speaks {FHIR_JSON}", "Accept"
    )


async def read_json_body(
    request: Request,
    *,
    max_bytes: int,
    max_depth: int,
    media_types: Collection[str] = _JSON_TYPES,
    parser: Callable[..., Any] = parse_json,
) -> Any:
    """Read and strictly parse a FHIR JSON body: 415 wrong type, 413 too large, 400 bad JSON.

    ``media_types``: the Content-Types accepted (a PATCH also takes JSON Patch and merge patch);
    ``parser``: how the bytes are parsed (called with ``max_depth``).
    """
    content_type = request.headers.get("content-type", "")
    media = content_type.split(";")[0].strip().lower()
    if media not in media_types:
        wanted = FHIR_JSON if media_types is _JSON_TYPES else " or ".join(media_types)
        raise FhirError.unsupported_media_type(
            f"Content-Type '{content_type or '(none)'}' is not supported; send {wanted}",
            "Content-Type",
        )
    length = request.headers.get("content-length")
    declared = parse_unsigned(length, maximum=max_bytes + 1, clamp=True)
    if declared is not None and declared > max_bytes:
        raise _too_large(max_bytes)
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise _too_large(max_bytes)
        chunks.append(chunk)
    body = b"".join(chunks)
    if not body:
        raise FhirError.required("The request body is empty")
    return parser(body, max_depth=max_depth)


def _too_large(max_bytes: int) -> FhirError:
    return FhirError.too_large(f"The request body exceeds {max_bytes} bytes")


def prefer(request: Request, key: str) -> str | None:
    """The value of one ``Prefer`` header token (``return``, ``handling``)."""
    for part in request.headers.get("prefer", "").split(";"):
        for token in part.split(","):
            name, _, value = token.strip().partition("=")
            if name.strip().lower() == key:
                return value.strip().strip('"').lower()
    return None


def version_headers(result: VersionResult, base: str) -> dict[str, str]:
    """ETag, Last-Modified and Location (for a write's response) of a version."""
    return {
        "ETag": f'W/"{result.version_id}"',
        "Last-Modified": format_datetime(from_micros(result.last_updated), usegmt=True),
        "Location": f"{base}/{result.res_type}/{result.res_id}/_history/{result.version_id}",
    }


def resource_response(
    result: VersionResult, base: str, *, return_pref: str | None = None, location: bool = False
) -> FhirResponse:
    """The response to a read or a write (201 when it created the resource), honouring
    ``Prefer: return=``."""
    status = HTTPStatus.CREATED if result.created else HTTPStatus.OK
    headers = version_headers(result, base)
    if not location:
        headers.pop("Location", None)
    if return_pref == "minimal":
        return FhirResponse(b"", status_code=status, headers=headers)
    if return_pref == "operationoutcome":
        issue = Issue(
            "informational", f"{result.res_type}/{result.res_id} stored", (), "information"
        )
        outcome = operation_outcome([issue, *result.issues])  # and the write's warnings
        return FhirResponse(outcome, status_code=status, headers=headers)
    body = result.content if result.content is not None else operation_outcome(result.issues)
    return FhirResponse(body, status_code=status, headers=headers)


def instant(micros: int) -> str:
    """A FHIR instant string."""
    return format_instant(micros)


async def read_small_form(request: Request, max_bytes: int) -> list[tuple[str, str]] | None:
    """The fields of a small urlencoded form post (login, consent, token requests, dashboard
    buttons); None when the body is another type or larger than ``max_bytes``.

    A body that is not UTF-8 or holds a NUL character raises :class:`FhirError` (400)."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "application/x-www-form-urlencoded":
        return None
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            return None
    return parse_form(body)


def parse_form(body: bytes) -> list[tuple[str, str]]:
    """The fields of an ``application/x-www-form-urlencoded`` body.

    400 when it is not UTF-8, or when a field holds a NUL character (which PostgreSQL cannot
    store or compare, see :func:`~service.core.outcome.nul_error`): the error names the field.
    """
    try:
        fields = parse_qsl(body.decode("utf-8"), keep_blank_values=True)
    except UnicodeDecodeError as exc:
        raise FhirError.invalid("The form body is not valid UTF-8") from exc
    for name, value in fields:
        if "\x00" in name or "\x00" in value:
            raise nul_error(f"form field '{name}'", name)
    return fields


class UrlLimit:
    """Answers 414 (an OperationOutcome) when a request's path and query together exceed
    ``max_bytes``, before anything parses them; longer searches belong in ``POST _search``."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Refuse an over-long request target; pass everything else on."""
        if scope["type"] == "http":
            path = scope.get("raw_path") or scope["path"].encode()
            if len(path) + len(scope.get("query_string", b"")) > self.max_bytes:
                error = FhirError.uri_too_long(
                    f"The URL exceeds {self.max_bytes} bytes; use POST _search"
                )
                await outcome_response(error)(scope, receive, send)
                return
        await self.app(scope, receive, send)
