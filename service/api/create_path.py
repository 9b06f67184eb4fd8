"""A direct path to the create route for the hottest request there is: ``POST /fhir/{type}``.

Telemonitoring apps post one measurement at a time, so most requests a production server sees
are creates. FastAPI's router tries the routes one by one, solves the dependencies and wraps the
handler in three more layers; together that was about a quarter of a create's CPU time. This
ASGI middleware recognises ``POST /fhir/<stored type>`` and calls the very same route function
(:func:`service.api.routes.create`) with the very same request context
(:func:`service.api.deps.request_context`), and answers errors with the same OperationOutcome
as the application's handler. Everything else goes to FastAPI.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Any

from starlette.requests import Request
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from service.api import routes
from service.api.deps import request_context
from service.api.wire import outcome_response
from service.core.outcome import FhirError

_context = asynccontextmanager(request_context)
_PREFIX = "/fhir/"


def create_route(fhir_routes: list[BaseRoute]) -> BaseRoute:
    """The FHIR router's ``POST /fhir/{res_type}`` route (its template labels the metrics)."""
    for route in fhir_routes:
        if getattr(route, "path", None) == "/fhir/{res_type}" and "POST" in getattr(
            route, "methods", ()
        ):
            return route
    raise LookupError("the FHIR router has no POST /fhir/{res_type} route")


class CreatePath:
    """Sends ``POST /fhir/<type>`` for the given resource types straight to the create route."""

    def __init__(self, app: ASGIApp, *, types: frozenset[str], route: Any) -> None:
        self.app = app
        self.types = types
        self.route = route

    def _res_type(self, scope: Scope) -> str | None:
        if scope["type"] != "http" or scope["method"] != "POST":
            return None
        path = _route_path(scope)
        if not path.startswith(_PREFIX):
            return None
        name = path[len(_PREFIX) :]
        return name if name in self.types else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle a create directly, or pass the request on to the application."""
        res_type = self._res_type(scope)
        if res_type is None:
            await self.app(scope, receive, send)
            return
        scope["route"] = self.route
        scope["path_params"] = {"res_type": res_type}
        request = Request(scope, receive)
        try:
            async with _context(request) as ctx:
                response = await routes.create(res_type, request, ctx)
        except FhirError as exc:
            response = outcome_response(exc)
        await response(scope, receive, send)


def _route_path(scope: Scope) -> str:
    """The request path below the app's mount point (``root_path``), as the routes see it."""
    path: str = scope["path"]
    root = scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root) : len(root) + 1] in ("", "/"):
        return path[len(root) :]
    return path
