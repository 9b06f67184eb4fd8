"""FastAPI dependencies: the services held by the application."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from service.fhir.conformance import ConformanceStore
from service.fhir.service import FhirService
from service.settings import Settings


@dataclass(slots=True)
class AppState:
    """What one running application holds."""

    settings: Settings
    fhir: FhirService
    conformance: ConformanceStore
    started_at: str


def get_state(request: Request) -> AppState:
    """The application's state (set up by :func:`service.app.create_app`)."""
    state: AppState = request.app.state.telemon
    return state


def base_url(request: Request) -> str:
    """The public base URL of the FHIR endpoint, without a trailing slash."""
    configured = get_state(request).settings.base_url
    if configured:
        return configured.rstrip("/")
    return str(request.base_url).rstrip("/") + "/fhir"
