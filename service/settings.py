"""All configuration in one place: environment variables with the ``TELEMON_`` prefix."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """telemon settings. Every field can be set as ``TELEMON_<FIELD_NAME>`` (upper case)."""

    model_config = SettingsConfigDict(env_prefix="TELEMON_", env_file=".env", extra="ignore")

    database_url: str = Field(
        default="sqlite:///telemon.sqlite",
        description="SQLAlchemy URL; an SQLite file (embedded default) or postgresql://…",
    )
    auth: Literal["oauth", "open"] = Field(
        default="oauth",
        description="Authorization mode: 'oauth' (SMART/MedMij tokens, NEN 7513 audit) or "
        "'open' (no authorization, no audit; local demos on loopback only).",
    )
    base_url: str | None = Field(
        default=None,
        description="Public base URL of the FHIR endpoint (…/fhir). Required in 'oauth' mode: "
        "token audience, issuer and every link are built from it, never from a request's Host; "
        "'open' mode takes it from the request when unset.",
    )
    timezone: str = Field(
        default="Europe/Amsterdam",
        description="Zone for search dates without an offset and for 'local day' logic.",
    )
    language: Literal["nl", "en"] = Field(
        default="nl",
        description="Language of the dashboard and of alert Flag texts: 'nl' (Dutch) or 'en'.",
    )
    max_body_bytes: int = Field(default=5 * 1024 * 1024, description="Request body limit (413).")
    max_json_depth: int = Field(default=64, description="Deepest JSON nesting accepted.")
    max_url_bytes: int = Field(
        default=8192, ge=1024, description="Longest path plus query string accepted (414)."
    )
    bundle_max_entries: int = Field(default=1000, description="Most entries in one Bundle.")
    default_page_size: int = Field(default=50, description="Search page size without _count.")
    max_page_size: int = Field(default=500, description="Cap on _count.")
    max_revinclude: int = Field(
        default=1000,
        ge=0,
        description="Most _revinclude resources in one search page; beyond, the Bundle says "
        "so with an OperationOutcome warning entry.",
    )
    clock_skew_seconds: int = Field(
        default=300, description="How far in the future an effective time may lie."
    )
    profiles_dir: Path = Field(
        default=Path(__file__).resolve().parent.parent / "fhir_profiles",
        description="Directory with the StructureDefinitions and other conformance resources.",
    )
    sqlite_synchronous: Literal["OFF", "NORMAL", "FULL", "EXTRA"] = Field(
        default="FULL", description="SQLite durability: FULL survives power loss with WAL."
    )
    db_pool_size: int = Field(default=10, description="PostgreSQL connection pool size.")
    alerts_enabled: bool = Field(
        default=True, description="Evaluate the alert rules on every Observation write."
    )
    alert_sweep_interval_seconds: int = Field(
        default=300, description="How often `serve` runs the missing-data sweep (0: never)."
    )
    public_api_docs: bool = Field(
        default=False,
        description="Serve /openapi.json and /docs to anyone in 'oauth' mode (always in 'open').",
    )
    public_metrics: bool = Field(
        default=False,
        description="Serve /metrics to anyone in 'oauth' mode (always in 'open'); else only "
        "with the metrics_token.",
    )
    metrics_token: SecretStr | None = Field(
        default=None,
        description="In 'oauth' mode, /metrics answers a request with 'Authorization: Bearer "
        "<this token>' (the Prometheus scraper's credentials).",
    )
    log_format: Literal["json", "text"] | None = Field(
        default=None,
        description="Log lines: 'json' (one object per line, with the request id) or 'text'; "
        "unset: json for `serve`, text for the other commands.",
    )
    # -- authorization server (service/auth) ------------------------------------------------
    issuer: str | None = Field(
        default=None,
        description="Public base URL of the authorization server (…/oauth's parent); "
        "else derived from base_url.",
    )
    auth_code_seconds: int = Field(default=60, le=60, description="Authorization code lifetime.")
    pgo_token_seconds: int = Field(
        default=900, le=900, description="Access token lifetime for PGO (patient) tokens."
    )
    backend_token_seconds: int = Field(
        default=300, le=300, description="Access token lifetime for backend-service tokens."
    )
    assertion_max_seconds: int = Field(
        default=300, le=300, description="Longest a client assertion may live (exp - now)."
    )
    consent_sweep_interval_seconds: int = Field(
        default=3600,
        ge=0,
        description="How often long-term consents unused for six months are ended (0: never).",
    )
    identity_provider: Literal["simulated-digid", "oidc"] = Field(
        default="simulated-digid",
        description="Patient login: 'oidc' (DigiD through a TVS/OIDC broker, oidc_* settings) "
        "or the clearly labelled 'simulated-digid' (development, demos and tests only).",
    )
    oidc_issuer: str | None = Field(
        default=None,
        description="The OIDC broker's issuer; its discovery document is read from "
        "{issuer}/.well-known/openid-configuration (https; http only on loopback).",
    )
    oidc_client_id: str | None = Field(default=None, description="telemon's id at the broker.")
    oidc_client_secret: SecretStr | None = Field(
        default=None, description="telemon's secret at the broker (client_secret_basic)."
    )
    oidc_bsn_claim: str = Field(
        default="bsn", description="The id_token claim that carries the patient's BSN."
    )
    oidc_uzi_claim: str = Field(
        default="uzi",
        description="The id_token claim that carries a clinician's UZI number (dashboard login).",
    )
    oidc_timeout_seconds: float = Field(default=5.0, description="Timeout of calls to the broker.")
    medmij_scopes: dict[str, str] = Field(
        default={
            "telemonitoring": "launch/patient patient/Patient.rs patient/Observation.rs "
            "patient/Flag.rs patient/AuditEvent.rs"
        },
        description="MedMij data-service scope (gegevensdienst) → the SMART v2 scopes it grants.",
    )
    forwarded_allow_ips: str = Field(
        default="127.0.0.1,::1",
        description="Addresses (comma-separated, or '*') of the reverse proxies whose "
        "X-Forwarded-For/-Proto `serve` believes: the client address of the rate limits and "
        "the audit trail.",
    )
    # -- rate limits (service/auth/rate_limits.py); 0 turns one off ---------------------------
    rate_limit_window_seconds: int = Field(
        default=900, ge=1, description="The window the failure allowances below count in."
    )
    login_failures_per_address: int = Field(
        default=20,
        ge=0,
        description="Failed logins (patient and clinician, counted apart) from one source "
        "address per window.",
    )
    login_failures_per_identifier: int = Field(
        default=5,
        ge=0,
        description="Failed logins with one BSN or UZI number from one source address per "
        "window.",
    )
    login_failures_per_client: int = Field(
        default=200,
        ge=0,
        description="Failed patient logins through one PGO app, over all addresses, per window.",
    )
    token_failures_per_address: int = Field(
        default=30, ge=0, description="Failed token requests from one source address per window."
    )
    token_failures_per_client: int = Field(
        default=10,
        ge=0,
        description="Failed token requests for one client from one source address per window.",
    )
    jwks_allow_private: bool = Field(
        default=False,
        description="Allow JWKS URLs on loopback/private addresses and over http (dev/tests only).",
    )
    jwks_timeout_seconds: float = Field(default=5.0, description="Timeout of a JWKS URL fetch.")
    # -- clinician dashboard (service/dashboard) ----------------------------------------------
    dashboard_session_minutes: int = Field(
        default=30,
        ge=5,
        le=120,
        description="Dashboard session lifetime without activity (renewed while in use; "
        "at most 12 hours after login).",
    )
    # -- FHIR Subscriptions (service/subscriptions) -------------------------------------------
    subscription_allow_private: bool = Field(
        default=False,
        description="Allow Subscription endpoints on loopback/private addresses and over http "
        "(dev/tests only).",
    )
    delivery_worker: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="Run notification delivery inside `serve`: 'auto' (on for SQLite, off for "
        "PostgreSQL, where `telemon worker` processes deliver), 'on' or 'off'.",
    )
    subscription_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        description="Connect/read timeout of one notification request (a Subscription's "
        "backport-timeout may only lower it).",
    )
    subscription_max_failures: int = Field(
        default=8,
        ge=1,
        description="Consecutive failed attempts after which a Subscription's status is 'error' "
        "(delivery keeps being retried at the backoff cap).",
    )
    subscription_retry_base_seconds: float = Field(
        default=1.0, gt=0, description="First retry delay; it doubles per failure (full jitter)."
    )
    subscription_retry_max_seconds: float = Field(
        default=300.0, gt=0, description="Cap of the retry delay."
    )
    subscription_batch_size: int = Field(
        default=50,
        ge=1,
        description="Most events in one notification (a Subscription's backport-max-count may "
        "only lower it).",
    )
    subscription_poll_seconds: float = Field(
        default=2.0,
        gt=0,
        description="How often an idle delivery worker looks for work it was not woken for.",
    )
    # -- Bulk Data export (service/bulk) ------------------------------------------------------
    export_dir: Path = Field(
        default_factory=lambda: Path.home() / ".local" / "state" / "telemon" / "exports",
        description="Where $export jobs write their NDJSON files (one folder per job, mode "
        "0700); shared by `serve` and the workers. Keep it outside any source checkout.",
    )
    export_retention_hours: float = Field(
        default=24.0,
        gt=0,
        description="How long the files of a finished export stay downloadable; then a sweep "
        "deletes them and the job.",
    )
    export_worker: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="Write exports inside `serve`: 'auto' (on for SQLite, off for PostgreSQL, "
        "where `telemon worker` processes write them), 'on' or 'off'.",
    )


    @field_validator("base_url", "issuer")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        """An absolute http(s) URL without query, fragment or credentials (no trailing slash)."""
        if value is None or not value.strip():
            return None  # TELEMON_BASE_URL= (empty) is unset
        parts = urlsplit(value.strip())
        if (
            parts.scheme not in ("http", "https")
            or not parts.hostname
            or parts.query
            or parts.fragment
            or parts.username is not None
            or any(c.isspace() for c in value.strip())
        ):
            raise ValueError(f"'{value}' is not an absolute http(s) URL without query or fragment")
        return value.strip().rstrip("/")

    def serving_problem(self) -> str | None:
        """Why these settings cannot serve requests, or None when they can."""
        if self.auth == "oauth" and not self.base_url:
            return (
                "TELEMON_BASE_URL is required with TELEMON_AUTH=oauth: set it to the public "
                "URL of the FHIR endpoint, e.g. TELEMON_BASE_URL=https://telemon.example.org/fhir "
                "(the token audience and issuer, and every link, are built from it; never from a "
                "request's Host header)."
            )
        return None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
