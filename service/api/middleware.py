"""Request telemetry: request id, metrics and the access log, as one pure ASGI middleware.

Pure ASGI rather than Starlette's ``BaseHTTPMiddleware``, which runs the app in a separate
task and streams the response through memory channels (tens of microseconds per request):
this wraps every request, so it only watches the ``send`` calls go by.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from contextvars import Token

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.runtime import logs, metrics

access_log = logging.getLogger("telemon.access")

_SANE_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_HEADER = b"x-request-id"
UNMATCHED = "unmatched"  # the route label of requests no route matched (404s)


def incoming_id(scope: Scope) -> str | None:
    """The client's ``X-Request-ID`` when it is sane (≤ 64 of ``[A-Za-z0-9._-]``), else None.

    Anything else (too long, spaces, control characters) is replaced, so that a client cannot
    forge log lines or blow up log storage through the id.
    """
    for name, value in scope["headers"]:
        if name == _HEADER:
            text = value.decode("latin-1")
            return text if _SANE_ID.fullmatch(text) else None
    return None


class RequestTelemetry:
    """Gives every HTTP request an id (echoed as ``X-Request-ID``), counts it in the metrics
    and writes one access-log line: method, route template, status, duration, request id."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI connection scope."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        rid = incoming_id(scope) or uuid.uuid4().hex
        token: Token[str | None] | None = logs.request_id.set(rid)
        header = (_HEADER, rid.encode())
        status = 500  # if the app raises before it responds

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except BaseException:
            # Keep the id set: the server's error handler, outside this middleware, logs the
            # failure in this same task and that line should carry it too.
            token = None
            raise
        finally:
            seconds = time.perf_counter() - start
            method: str = scope["method"]
            # The template (/fhir/{res_type}/{res_id}), never the raw path: no ids in metric
            # labels or logs, and a bounded number of series.
            route = getattr(scope.get("route"), "path", None) or UNMATCHED
            metrics.observe_request(method, route, status, seconds)
            if access_log.isEnabledFor(logging.INFO):
                millis = round(seconds * 1000, 1)
                access_log.info(
                    "%s %s %s %.1f ms",
                    method,
                    route,
                    status,
                    millis,
                    extra={
                        "method": method,
                        "route": route,
                        "status": status,
                        "duration_ms": millis,
                    },
                )
            if token is not None:
                logs.request_id.reset(token)
