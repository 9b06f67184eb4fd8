"""The ASGI application factory."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from service import __version__
from service.api.deps import AppState
from service.api.routes import router as fhir_router
from service.api.wire import FhirResponse, outcome_response
from service.bootstrap import build_service, open_database
from service.fhir.conformance import ConformanceStore
from service.fhir.outcome import FhirError, Issue, operation_outcome
from service.settings import Settings, get_settings
from service.storage.db import Database

log = logging.getLogger("telemon")

_HTTP_CODES = {404: "not-found", 405: "not-supported", 413: "too-costly"}


def create_app(settings: Settings | None = None, db: Database | None = None) -> FastAPI:
    """Build the application with its database, validator and services."""
    settings = settings or get_settings()
    db = db or open_database(settings)
    fhir = build_service(settings, db)
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        db.dispose()

    app = FastAPI(
        lifespan=lifespan,
        title="telemon",
        version=__version__,
        description="FHIR R4 telemonitoring data-exchange service",
    )
    app.state.telemon = AppState(
        settings=settings,
        fhir=fhir,
        conformance=ConformanceStore(fhir.profiles.conformance_resources()),
        started_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    app.include_router(fhir_router)

    @app.exception_handler(FhirError)
    async def _fhir_error(_: Request, exc: FhirError) -> FhirResponse:
        return outcome_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> FhirResponse:
        issues = [
            Issue("invalid", str(e.get("msg")), (".".join(str(p) for p in e.get("loc", ())),))
            for e in exc.errors()
        ]
        return FhirResponse(operation_outcome(issues), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> FhirResponse:
        code = _HTTP_CODES.get(exc.status_code, "processing")
        issue = Issue(code, str(exc.detail))
        return FhirResponse(operation_outcome([issue]), status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> FhirResponse:
        log.exception("unhandled error", exc_info=exc)
        issue = Issue("exception", "Internal server error; the request was not processed")
        return FhirResponse(operation_outcome([issue]), status_code=500)

    return app
