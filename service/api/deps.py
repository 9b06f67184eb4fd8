"""FastAPI dependencies: the services held by the application."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fastapi import Request
from fastapi.concurrency import run_in_threadpool

from service.api.conformance import ConformanceStore
from service.api.group_commit import AuditLog, Create, GroupCommit, touched
from service.api.wire import negotiate
from service.audit.events import AccessRecord, Actor, Touched
from service.auth.identity import SimulatedDigiD
from service.auth.policy import OPEN, Principal
from service.auth.rate_limits import RateLimiter
from service.auth.revocations import RevocationUnavailable
from service.auth.scopes import Grants
from service.auth.server import AuthServer
from service.auth.tokens import TokenError, TokenService
from service.core.outcome import FhirError
from service.fhir.reads import ReadHook, VersionResult
from service.fhir.service import FhirService
from service.fhir.writes import TransactionHook
from service.settings import Settings
from service.storage.db import Connection, after_commit
from service.storage.repository import NewVersion, StoredVersion

if TYPE_CHECKING:
    from service.auth.oidc import OidcDigiD


@dataclass(slots=True)
class AppState:
    """What one running application holds."""

    settings: Settings
    fhir: FhirService
    conformance: ConformanceStore
    creates: GroupCommit[Create, VersionResult]
    started_at: str
    limiter: RateLimiter
    auth: AuthState | None = None  # None in TELEMON_AUTH=open


@dataclass(slots=True)
class AuthState:
    """The authorization server and audit trail (TELEMON_AUTH=oauth)."""

    server: AuthServer
    tokens: TokenService
    identity: SimulatedDigiD | OidcDigiD
    audit: AuditLog


def get_state(request: Request) -> AppState:
    """The application's state (set up by :func:`service.app.create_app`)."""
    state: AppState = request.app.state.telemon
    return state


def base_url(request: Request) -> str:
    """The public base URL of the FHIR endpoint, without a trailing slash.

    The configured one; only in open mode, when none is configured, the request's (its Host
    header is the client's to choose: in oauth mode, where tokens and assertions are checked
    against this URL, the application does not start without one).
    """
    configured = get_state(request).settings.base_url
    if configured:
        return configured
    scope = request.scope
    # Starlette's base_url depends on these alone; building its URL object costs more than
    # the rest of a create's request handling, so the answer is kept per distinct key (the
    # Host header is the client's: the cache is bounded).
    server = scope.get("server")
    key = (
        scope.get("scheme"),
        request.headers.get("host"),
        tuple(server) if server else None,  # a list under some servers
        scope.get("app_root_path", scope.get("root_path", "")),
    )
    derived = _DERIVED_BASE_URLS.get(key)
    if derived is None:
        if len(_DERIVED_BASE_URLS) >= 64:
            _DERIVED_BASE_URLS.clear()
        derived = _DERIVED_BASE_URLS[key] = str(request.base_url).rstrip("/") + "/fhir"
    return derived


_DERIVED_BASE_URLS: dict[tuple[object, ...], str] = {}


async def state_dependency(request: Request) -> AppState:
    """:func:`get_state` as a dependency.

    Dependencies are ``async`` on purpose: FastAPI runs a plain function dependency in the
    thread pool, and that hand-off costs more than the function itself.
    """
    return get_state(request)


async def base_url_dependency(request: Request) -> str:
    """:func:`base_url` as a dependency (async, see :func:`state_dependency`)."""
    return base_url(request)


def issuer_url(request: Request) -> str:
    """The authorization server's public root (``…/oauth/*`` lives under it)."""
    settings = get_state(request).settings
    if settings.issuer:
        return settings.issuer.rstrip("/")
    return base_url(request).removesuffix("/fhir")


def client_address(request: Request) -> str:
    """The address the request came from (the proxy's client when its headers are trusted)."""
    return request.client.host if request.client else "unknown"


def is_https(request: Request) -> bool:
    """Whether the public URL is https (cookies are then ``Secure``); TLS ends at the proxy,
    so the configured URL says so, not the scheme of the hop to telemon."""
    return base_url(request).startswith("https:")


def token_url(request: Request) -> str:
    """The token endpoint's public URL (the ``aud`` of client assertions)."""
    return issuer_url(request) + "/oauth/token"


_REQUEST_ID_HEADERS = ("x-request-id", "medmij-request-id", "x-correlation-id")


def actor_of(request: Request, principal: Principal) -> Actor:
    """Who is acting, for the audit trail."""
    ids = tuple(
        (name, request.headers[name][:200])
        for name in _REQUEST_ID_HEADERS
        if name in request.headers
    )
    return Actor(
        client_id=principal.client_id,
        user=principal.subject if principal.kind == "patient" else None,
        token_id=principal.token_id,
        address=request.client.host if request.client else None,
        request_ids=ids,
    )


def _unauthorized(error: str | None, message: str) -> FhirError:
    challenge = 'Bearer realm="telemon"'
    if error:
        challenge += f', error="{error}", error_description="{message}"'
    return FhirError.unauthorized(message, challenge)


async def current_principal(request: Request) -> Principal:
    """The caller, from its bearer token (401 with WWW-Authenticate when missing or bad).

    No database read: the token's signature and claims are checked in memory and the
    revocation set is every worker's own (only when it is stale is it read first).
    """
    state = get_state(request)
    auth = state.auth
    if auth is None:
        return OPEN
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    error: FhirError | None = None
    claims = None
    if not header:
        error = _unauthorized(None, "An access token is required")
    elif scheme.lower() != "bearer" or not token.strip():
        error = _unauthorized("invalid_request", "Use 'Authorization: Bearer <token>'")
    else:
        if auth.tokens.needs_sync():
            try:
                await run_in_threadpool(auth.tokens.revoked.sync)
            except RevocationUnavailable as exc:
                raise FhirError.unavailable(
                    "Cannot check token revocations now; try again"
                ) from exc
        try:
            claims = auth.tokens.verify(
                token.strip(), issuer=issuer_url(request), audience=base_url(request)
            )
        except TokenError:
            error = _unauthorized("invalid_token", "The access token is invalid or expired")
    if error is not None or claims is None:
        record = AccessRecord(
            "login", query=str(request.url.path), outcome="4", description="401 no valid token"
        )
        await auth.audit.write(actor_of(request, OPEN), record)
        raise error or _unauthorized("invalid_token", "The access token is invalid")
    return _principal(claims)


def _principal(claims: dict[str, Any]) -> Principal:
    """The Principal of a verified token, built once per token (parsing its scopes is a
    noticeable share of a create's CPU)."""
    jti = claims["jti"]
    found = _PRINCIPALS.get(jti)
    if found is None:
        patient = claims.get("patient")
        found = Principal(
            kind="patient" if patient else "system",
            client_id=claims.get("client_id"),
            grants=Grants.parse(claims.get("scope")),
            patient_id=patient,
            subject=claims.get("sub"),
            token_id=jti,
            scope=claims.get("scope", ""),
        )
        if len(_PRINCIPALS) >= 4096:
            _PRINCIPALS.clear()
        _PRINCIPALS[jti] = found
    return found


_PRINCIPALS: dict[str, Principal] = {}


@dataclass(slots=True)
class AuditScope:
    """What one request touched, and writing its AuditEvents (TELEMON_AUTH=oauth).

    Every version the request touches is audited exactly once: a write's in the write's own
    transaction (:attr:`in_transaction`, :meth:`companions`), the rest — reads, and the
    request itself when nothing else recorded it or it failed — when the request ends
    (:meth:`end`), group-committed before the response is sent.
    """

    fhir: FhirService
    log: AuditLog | None = None  # None with TELEMON_AUTH=open: nothing is audited
    actor: Actor | None = None
    record: AccessRecord | None = None
    touched: list[Touched] = field(default_factory=list)  # not yet audited
    committed: bool = False  # an event of this request committed with its data
    read_audited: bool = False  # its read's events committed in the read's own transaction

    def begin(self, interaction: str, res_type: str | None, query: str | None = None) -> None:
        """Name the interaction (before anything can fail, so failures are logged too)."""
        self.record = AccessRecord(interaction, res_type, query)

    def result(self, result: VersionResult) -> None:
        """A version read (audited when the request ends); nothing when the read's own
        transaction already audited it (:attr:`in_read_transaction`)."""
        if not self.read_audited:
            self.touched.append(touched(result))

    def rows(self, rows: Sequence[StoredVersion]) -> None:
        """Stored versions returned (search, history); nothing when the read's own transaction
        already audited them (:attr:`in_read_transaction`)."""
        if not self.read_audited:
            self.touched.extend(self._touched(rows))

    def _touched(self, rows: Sequence[StoredVersion]) -> list[Touched]:
        compartment = self.fhir.compartment
        return [Touched(r.res_type, r.res_id, r.version_id, compartment(r)) for r in rows]

    @property
    def in_read_transaction(self) -> ReadHook | None:
        """The hook that writes this request's event, naming the versions read, into the read's
        own transaction; once that commits, the request counts as audited (None: no audit).

        One transaction, one commit and one thread hand-off for a read (a search, a read by id
        or version, a history, ``$everything``) and its audit, where the group commit costs a
        transaction and a hand-off of their own (in-server: ~0.5 ms of worker CPU and ~2 ms of
        latency a search). Not on SQLite, whose write transactions exclude each other: reads
        would queue behind one another; there the events are group-committed when the request
        ends.
        """
        if self.log is None or self.actor is None or self.record is None:
            return None
        if self.fhir.db.serializes_writes:
            return None
        trail, actor, record = self.log.trail, self.actor, self.record

        def hook(conn: Connection, rows: Sequence[StoredVersion]) -> None:
            done = dataclasses.replace(record, touched=[*self.touched, *self._touched(rows)])
            trail.write_in(conn, actor, done)
            after_commit(conn, f"telemon-audit-{id(self)}", self._mark_read_audited)

        return hook

    def _mark_read_audited(self) -> None:
        self.committed = self.read_audited = True
        self.touched = []

    @property
    def in_transaction(self) -> TransactionHook | None:
        """The hook that writes this request's event into a write transaction (None: no audit).

        Called with the transaction's results; once the transaction commits, the request
        counts as audited (what it touched outside it is still written at the end).
        """
        if self.log is None or self.actor is None or self.record is None:
            return None
        write = self.log.in_transaction(self.actor, self.record)

        def hook(conn: Connection, results: Sequence[VersionResult]) -> None:
            write(conn, results)
            after_commit(conn, f"telemon-audit-{id(self)}", self._mark_committed)

        return hook

    def _mark_committed(self) -> None:
        self.committed = True

    def companions(self, item: NewVersion) -> list[NewVersion]:
        """The events of creating ``item``, to store in its (group-committed) transaction.

        The caller marks the request audited (:meth:`stored`) once the create is stored.
        """
        if self.log is None or self.actor is None or self.record is None:
            return []
        done = Touched(item.res_type, item.res_id, item.version_id, item.index.patient_id)
        record = dataclasses.replace(self.record, touched=[done])
        return self.log.trail.versions(self.actor, record)

    def stored(self) -> None:
        """The events from :meth:`companions` committed with the create."""
        self.committed = True

    async def end(self, exc: Exception | None) -> None:
        """Write what is not audited yet; returns once it is committed."""
        record = self.record
        if self.log is None or self.actor is None or record is None:
            return
        if exc is not None:
            status = exc.status if isinstance(exc, FhirError) else 500
            record.outcome = "4" if status < 500 else "8"
            record.description = f"{status} {exc}"
            record.touched = []
        elif self.touched or not self.committed:
            record.touched = self.touched
        else:
            return
        await self.log.write(self.actor, record)


@dataclass(slots=True)
class RequestContext:
    """What a FHIR route needs to know about its request, resolved in one dependency.

    One dependency instead of four: FastAPI's per-dependency bookkeeping was a noticeable share
    of the CPU time of a create.
    """

    request: Request
    state: AppState
    base: str
    principal: Principal
    audit: AuditScope


async def request_context(request: Request) -> AsyncIterator[RequestContext]:
    """The caller (401 when the token is missing or bad) and the request's audit scope.

    Refuses (406) first what the caller will not accept, as every FHIR interaction must.

    The accesses the route reports to ``audit`` are audited before the response is sent, on
    success or failure (see :class:`AuditScope`).
    """
    await negotiate(request)  # here rather than as its own dependency: one fewer to solve
    state = get_state(request)
    principal = await current_principal(request)
    audit = AuditScope(state.fhir)
    if state.auth is not None:
        audit.log = state.auth.audit
        audit.actor = actor_of(request, principal)
    ctx = RequestContext(request, state, base_url(request), principal, audit)
    try:
        yield ctx
    except Exception as exc:
        await audit.end(exc)
        raise
    await audit.end(None)
