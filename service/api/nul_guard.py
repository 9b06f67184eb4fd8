"""Refuse NUL characters in the request line and headers, before any route sees them.

PostgreSQL cannot store or compare a text value holding U+0000 (psycopg raises), SQLite can:
so a NUL that reached a query would be a 500 on one backend and accepted on the other. It is
refused here, once for every route (FHIR, OAuth, dashboard), with a 400 naming where it was.
Bodies are checked where they are parsed (:func:`service.validation.parse_json`,
:func:`service.api.wire.parse_form`), and so are search parameters that travel inside them
(:func:`service.fhir.search.parse_search`).
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Receive, Scope, Send

from service.api.wire import outcome_response
from service.core.outcome import FhirError, nul_error


def _offence(scope: Scope) -> FhirError | None:
    if "\x00" in scope["path"]:
        return nul_error("the URL path")
    query: bytes = scope.get("query_string", b"")
    if b"\x00" in query or b"%00" in query:
        for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
            if "\x00" in name or "\x00" in value:
                return nul_error(f"query parameter '{name}'", name)
    for name, value in scope["headers"]:
        if b"\x00" in value:
            header = name.decode("latin-1")
            return nul_error(f"header '{header}'", header)
    return None


class RefuseNul:
    """Answers 400 (an OperationOutcome) to a request with NUL in its path, query or headers."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on, or refuse it."""
        if scope["type"] == "http" and (error := _offence(scope)) is not None:
            await outcome_response(error)(scope, receive, send)
            return
        await self.app(scope, receive, send)
