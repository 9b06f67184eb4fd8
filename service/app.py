"""The ASGI application factory."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from starlette.exceptions import HTTPException as StarletteHTTPException

from service import __version__
from service.alerts.ingest import AlertService
from service.api.bulk_routes import router as bulk_router
from service.api.conformance import ConformanceStore
from service.api.consent_routes import router as consent_router
from service.api.create_path import CreatePath, create_route
from service.api.deps import AppState, AuthState
from service.api.group_commit import AuditLog, create_batcher
from service.api.middleware import RequestTelemetry
from service.api.nul_guard import RefuseNul
from service.api.oauth_routes import router as oauth_router
from service.api.openapi import openapi_document
from service.api.ops_routes import router as ops_router
from service.api.routes import router as fhir_router
from service.api.wire import FhirResponse, UrlLimit, outcome_response
from service.audit.trail import AuditTrail
from service.auth import lapse
from service.auth.identity import build_identity_provider
from service.auth.rate_limits import RateLimiter
from service.auth.server import AuthServer
from service.auth.tokens import TokenService, load_or_create_key
from service.bootstrap import build_service, count_alert, instrument, open_database
from service.bulk.jobs import BulkExports
from service.bulk.worker import ExportWorker
from service.bulk.worker import runs_in_serve as exports_in_serve
from service.core.clock import Clock, system_clock
from service.core.outcome import FhirError, Issue, operation_outcome
from service.dashboard.routes import build_dashboard
from service.dashboard.routes import router as dashboard_router
from service.fhir.service import FhirService
from service.runtime import logs
from service.settings import Settings, get_settings
from service.storage.db import Database
from service.subscriptions.worker import DeliveryWorker, runs_in_serve

log = logging.getLogger("telemon")

_HTTP_CODES = {404: "not-found", 405: "not-supported", 413: "too-costly"}


async def _sweep_forever(alerts: AlertService, interval: int) -> None:
    """Run the missing-data sweep every ``interval`` seconds, in a worker thread."""
    while True:
        await asyncio.sleep(interval)
        try:
            summary = await run_in_threadpool(alerts.sweep)
            log.info("alert sweep: %s patients, %s changes", summary.patients, summary.changes)
        except Exception:  # a failed sweep must not stop the next one
            log.exception("alert sweep failed")


async def _lapse_forever(auth: AuthState, db: Database, clock: Clock, interval: int) -> None:
    """End lapsed long-term consents every ``interval`` seconds (service/auth/lapse.py)."""
    while True:
        try:
            ended = await run_in_threadpool(lapse.sweep, db, auth.audit.trail, clock)
            if ended:
                log.info("consent sweep: %s long-term consents lapsed", len(ended))
        except Exception:  # a failed sweep must not stop the next one
            log.exception("consent sweep failed")
        await asyncio.sleep(interval)


def build_auth(settings: Settings, db: Database, fhir: FhirService) -> AuthState | None:
    """The authorization server and audit trail; None (with a loud warning) in open mode."""
    if settings.auth == "open":
        log.warning("TELEMON_AUTH=open: NO authorization and NO audit trail. Local demos only.")
        return None
    tokens = TokenService(db, load_or_create_key(db))
    return AuthState(
        server=AuthServer(db, settings, tokens),
        tokens=tokens,
        identity=build_identity_provider(settings, fhir),
        audit=AuditLog(AuditTrail(fhir)),
    )


def create_app(
    settings: Settings | None = None, db: Database | None = None, clock: Clock = system_clock
) -> FastAPI:
    """Build the application with its database, validator and services.

    ``clock`` is the service's "now" (the real time; tests pin it to a chosen instant).
    """
    settings = settings or get_settings()
    problem = settings.serving_problem()
    if problem is not None:
        raise ValueError(problem)
    db = db or open_database(settings)
    wakeup = threading.Event()
    fhir = build_service(
        settings, db, alert_listeners=[count_alert], delivery_wakeup=wakeup, clock=clock
    )
    instrument(fhir)
    exports = BulkExports(fhir)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        auth = app.state.telemon.auth
        if auth is not None:
            await run_in_threadpool(auth.tokens.revoked.start)
        lapsing = None
        if auth is not None and settings.consent_sweep_interval_seconds > 0:
            lapsing = asyncio.create_task(
                _lapse_forever(auth, db, clock, settings.consent_sweep_interval_seconds)
            )
        sweeper = None
        if settings.alerts_enabled and settings.alert_sweep_interval_seconds > 0:
            alerts = AlertService(fhir)
            alerts.listeners.append(count_alert)
            sweeper = asyncio.create_task(
                _sweep_forever(alerts, settings.alert_sweep_interval_seconds)
            )
        worker = None
        if runs_in_serve(settings, embedded=db.embedded):
            worker = DeliveryWorker(fhir, wakeup)
            worker.start()
        exporter = None
        if exports_in_serve(settings, embedded=db.embedded):
            exporter = ExportWorker(exports)
            exporter.start()
        yield
        # Cancelled, and awaited: a round running in a worker thread finishes (anyio does not
        # abandon the thread) before the database is closed under it.
        for task in (lapsing, sweeper):
            if task is not None:
                task.cancel()
                with suppress(asyncio.CancelledError):
                    await task
        if worker is not None:
            await run_in_threadpool(worker.stop)
        if exporter is not None:
            await run_in_threadpool(exporter.stop)
        if auth is not None:
            await run_in_threadpool(auth.tokens.revoked.stop)
        db.dispose()

    # The API description is no secret, but in oauth mode nothing is public that need not be.
    docs = settings.auth == "open" or settings.public_api_docs
    app = FastAPI(
        lifespan=lifespan,
        title="telemon",
        version=__version__,
        description="FHIR R4 telemonitoring data-exchange service",
        openapi_url="/openapi.json" if docs else None,
        docs_url="/docs" if docs else None,
        redoc_url=None,
        # Starlette would answer "/fhir/Patient/" with a redirect to an absolute URL built
        # from the Host header; a URL with a trailing slash is simply not found.
        redirect_slashes=False,
    )
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            generated = get_openapi(
                title=app.title, version=app.version, description=app.description,
                routes=app.routes,
            )
            app.openapi_schema = openapi_document(fhir.registry, generated)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.state.telemon = AppState(
        settings=settings,
        fhir=fhir,
        conformance=ConformanceStore(fhir.profiles.conformance_resources()),
        creates=create_batcher(fhir),
        started_at=datetime.now(UTC).isoformat(timespec="seconds"),
        limiter=RateLimiter(db, settings),
        auth=build_auth(settings, db, fhir),
    )
    app.state.exports = exports
    app.include_router(oauth_router)  # first: /fhir/.well-known/… is not a FHIR read
    app.include_router(consent_router)
    app.include_router(bulk_router)  # before: /fhir/$export is not a search
    app.include_router(fhir_router)
    app.include_router(ops_router)
    app.state.dashboard = build_dashboard(
        settings, fhir, app.state.telemon.auth, app.state.telemon.limiter
    )
    app.include_router(dashboard_router)
    # Inside the telemetry (added last, so outermost): creates are counted and logged as well.
    app.add_middleware(
        CreatePath, types=frozenset(fhir.registry.names()), route=create_route(fhir_router.routes)
    )
    app.add_middleware(RefuseNul)  # outside the create path: creates are checked too
    app.add_middleware(UrlLimit, max_bytes=settings.max_url_bytes)
    app.add_middleware(RequestTelemetry)

    @app.exception_handler(FhirError)
    async def _fhir_error(_: Request, exc: FhirError) -> FhirResponse:
        return outcome_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> FhirResponse:
        issues = [
            Issue("invalid", str(e.get("msg")), (".".join(str(p) for p in e.get("loc", ())),))
            for e in exc.errors()
        ]
        return outcome_response(FhirError.malformed(issues))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> FhirResponse:
        code = _HTTP_CODES.get(exc.status_code, "processing")
        issue = Issue(code, str(exc.detail))
        return FhirResponse(operation_outcome([issue]), status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> FhirResponse:
        log.exception("unhandled error", exc_info=exc)
        error = FhirError.server_error("Internal server error; the request was not processed")
        # Answered outside the request middleware: give the client the id to report.
        if rid := logs.request_id.get():
            error.headers["X-Request-ID"] = rid
        return outcome_response(error)

    return app
