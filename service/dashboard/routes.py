"""HTTP endpoints of the clinician dashboard (``/dashboard``): server-rendered pages behind a
clinician login, in both authorization modes.

- ``GET /dashboard/login``, ``POST /dashboard/login`` — the simulated UZI login (test and demo
  only); with ``TELEMON_IDENTITY_PROVIDER=oidc`` the login goes to the identity broker
  (``GET /dashboard/login/oidc``) and returns to ``GET /dashboard/oidc/callback``.
- ``GET /dashboard`` — the worklist of open alerts; ``GET /dashboard/patients`` — the enrolled
  patients; ``GET /dashboard/patients/{id}?days=30|90`` — one patient's trend charts.
- ``POST /dashboard/alerts/{id}/acknowledge`` and ``…/resolve``; ``POST /dashboard/logout``.

Every page needs a session cookie (:mod:`service.dashboard.sessions`); a bearer token does not
count. Every form carries the session's CSRF token. Pages are sent with a strict
Content-Security-Policy (no scripts, nothing from elsewhere, no framing). With
``TELEMON_AUTH=oauth`` logins, logouts, every page showing patient data and every alert action
are written to the NEN 7513 audit trail, with the clinician as the user.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import timedelta
from functools import cache
from importlib import resources
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from joserfc.jwk import ECKey

from service.api.deps import AuthState, client_address, is_https, issuer_url
from service.api.group_commit import AuditLog
from service.api.wire import read_small_form
from service.audit.events import AccessRecord, Actor
from service.auth import consent
from service.auth.consent import ConsentError, PendingLogin
from service.auth.identity import LoginError, SimulatedDigiD, build_identity_provider
from service.auth.oidc import OidcDigiD
from service.auth.rate_limits import Blocked, RateLimiter
from service.auth.tokens import load_or_create_key
from service.core.messages import message
from service.core.outcome import FhirError
from service.dashboard import sessions, views, worklist
from service.dashboard.overview import (
    latest_per_chart,
    load_enrolled,
    load_last_seen,
    load_overview,
)
from service.dashboard.sessions import Session, SessionError
from service.fhir.reads import MAX_VERSION
from service.fhir.service import FhirService
from service.fhir.writes import check_id
from service.runtime import logs
from service.settings import Settings
from service.validation.integers import parse_unsigned

router = APIRouter(prefix="/dashboard", include_in_schema=False)

#: The "client" of dashboard accesses in the audit trail (the dashboard is no OAuth client).
DASHBOARD_CLIENT = "telemon-dashboard"
MAX_FORM_BYTES = 16 * 1024

#: Headers of every dashboard page: no scripts, nothing from elsewhere, no framing, no caching.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'none'; style-src 'self'; "
    "img-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}
_STATIC = {"dashboard.css": "text/css; charset=utf-8", "icon.svg": "image/svg+xml"}
_NEXT = re.compile(r"^/dashboard(?:/[A-Za-z0-9._~/-]*)?(?:\?[A-Za-z0-9._~=&%-]*)?$")
_NOTICES = ("acknowledged", "resolved", "logged-out")  # texts: ui.notice.* in the catalogue
#: Longest note a clinician can add to an acknowledge or resolve.
MAX_NOTE = 500


@dataclass(slots=True)
class DashboardState:
    """What the dashboard holds: the FHIR service, the clinician login, the signing key."""

    fhir: FhirService
    identity: SimulatedDigiD | OidcDigiD
    audit: AuditLog | None  # None with TELEMON_AUTH=open (no audit trail at all)
    session_seconds: int
    limiter: RateLimiter
    _key: ECKey | None = None

    @property
    def zone(self) -> ZoneInfo:
        """The zone times are shown in (``TELEMON_TIMEZONE``)."""
        return self.fhir.zone

    def signing_key(self) -> ECKey:
        """The server key that signs sessions, read from the database on first use.

        Not at start-up: in open mode the application must start (and ``/ready`` answer 503)
        while the database is unreachable or behind.
        """
        if self._key is None:
            self._key = load_or_create_key(self.fhir.db)
        return self._key


def build_dashboard(
    settings: Settings, fhir: FhirService, auth: AuthState | None, limiter: RateLimiter
) -> DashboardState:
    """The dashboard's state: in oauth mode it shares the authorization server's key, identity
    provider and audit trail; in open mode it has its own login and no audit. The login rate
    limits are the application's, in both modes."""
    seconds = settings.dashboard_session_minutes * 60
    if auth is not None:
        return DashboardState(fhir, auth.identity, auth.audit, seconds, limiter, auth.tokens.key)
    return DashboardState(fhir, build_identity_provider(settings, fhir), None, seconds, limiter)


async def _signing_key(state: DashboardState) -> ECKey:
    """The signing key, read (once) off the event loop."""
    return await run_in_threadpool(state.signing_key)


def _state(request: Request) -> DashboardState:
    state: DashboardState = request.app.state.dashboard
    return state


# -- responses and cookies -----------------------------------------------------------------


def _html(content: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(content, status_code=status, headers=PAGE_HEADERS)


def _redirect(location: str) -> Response:
    return RedirectResponse(location, status_code=303, headers=PAGE_HEADERS)


def _set_cookie(
    response: Response,
    request: Request,
    name: str,
    value: str,
    max_age: int,
    samesite: str = "strict",
) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=sessions.PATH,
        httponly=True,
        samesite=samesite,  # type: ignore[arg-type]
        secure=is_https(request),
    )


def _with_session(response: Response, request: Request, key: ECKey, s: Session) -> None:
    remaining = max(0, s.expires_at - int(time.time()))
    _set_cookie(response, request, sessions.COOKIE, sessions.seal(key, s), remaining)


def _clear(response: Response, name: str) -> None:
    response.delete_cookie(name, path=sessions.PATH)


def _translated_page(
    state: DashboardState,
    title: str,
    text: str,
    status: int,
    back: str = "/dashboard",
    **values: object,
) -> HTMLResponse:
    """A message page whose title and text are catalogue keys, in the configured language
    (``values`` fill the text's placeholders)."""
    language = state.fhir.language
    page = views.page(
        "message.html",
        lang=language,
        title=message(title, language),
        message=message(text, language, **values),
        back=back,
    )
    return _html(page, status)


def _safe_next(value: str | None) -> str:
    """Where to go after a login or an action: a dashboard path, never elsewhere."""
    return value if value and _NEXT.match(value) and "//" not in value else "/dashboard"


def _with_notice(path: str, notice: str) -> str:
    return f"{path}{'&' if '?' in path else '?'}{urlencode({'notice': notice})}"


def _login_redirect(request: Request) -> Response:
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return _redirect("/dashboard/login?" + urlencode({"next": _safe_next(here)}))


async def _form(request: Request) -> dict[str, str] | None:
    """The fields of a small urlencoded form post, or None for anything else."""
    fields = await read_small_form(request, MAX_FORM_BYTES)
    return None if fields is None else dict(fields)


# -- sessions and audit --------------------------------------------------------------------


def _live_session(state: DashboardState, sealed: str | None) -> Session | None:
    now = int(time.time())
    try:
        session = sessions.open_session(state.signing_key(), sealed, now)
    except SessionError:
        return None
    with state.fhir.db.read() as conn:
        return None if sessions.is_ended(conn, session, now) else session


async def _session(request: Request, state: DashboardState) -> Session | None:
    """The clinician's session from the cookie, or None (bearer tokens do not count)."""
    sealed = request.cookies.get(sessions.COOKIE)
    if not sealed:
        return None
    return await run_in_threadpool(_live_session, state, sealed)


def _actor(request: Request, user: str | None, sid: str | None) -> Actor:
    rid = logs.request_id.get()
    return Actor(
        client_id=DASHBOARD_CLIENT,
        user=user,
        token_id=sid,
        address=request.client.host if request.client else None,
        request_ids=(("x-request-id", rid),) if rid else (),
    )


def _session_actor(request: Request, session: Session | None) -> Actor:
    user, sid = (session.subject, session.sid) if session else (None, None)
    return _actor(request, user, sid)


async def _audit(
    state: DashboardState, request: Request, session: Session | None, record: AccessRecord
) -> None:
    """Audit an access; committed before the response is sent."""
    if state.audit is not None:
        await state.audit.write(_session_actor(request, session), record)


def _page(
    request: Request, state: DashboardState, session: Session, template: str, **context: Any
) -> HTMLResponse:
    """A page for the logged-in clinician (renewing the session once half of it has passed)."""
    asked = request.query_params.get("notice", "")
    language = state.fhir.language
    notice = message(f"ui.notice.{asked}", language) if asked in _NOTICES else None
    html = views.page(
        template,
        lang=language,
        zone=state.zone,
        user=session.name,
        csrf=session.csrf,
        notice=notice,
        now=state.fhir.clock(),
        **context,
    )
    response = _html(html)
    renewed = sessions.renewed(session, int(time.time()), state.session_seconds)
    if renewed is not None:  # the key is loaded: the session was just verified with it
        _with_session(response, request, state.signing_key(), renewed)
    return response


# -- login and logout ----------------------------------------------------------------------


def _login_page(
    state: DashboardState,
    csrf: str,
    next_path: str,
    error: str | None = None,
    notice: str | None = None,
) -> str:
    identity = state.identity
    return views.page(
        "login.html",
        lang=state.fhir.language,
        simulated=isinstance(identity, SimulatedDigiD),
        label=identity.clinician_label,
        csrf=csrf,
        next=next_path,
        error=error,
        notice=notice,
    )


@router.get("/login")
async def login_form(request: Request) -> Response:
    """The login page (a logged-in clinician goes straight on)."""
    state = _state(request)
    next_path = _safe_next(request.query_params.get("next"))
    if await _session(request, state) is not None:
        return _redirect(next_path)
    csrf = sessions.new_token()
    asked = request.query_params.get("notice", "")
    notice = message(f"ui.notice.{asked}", state.fhir.language) if asked in _NOTICES else None
    response = _html(_login_page(state, csrf, next_path, notice=notice))
    _set_cookie(response, request, sessions.LOGIN_COOKIE, csrf, sessions.LOGIN_FORM_SECONDS)
    return response


def _login_record(outcome: str, what: str) -> AccessRecord:
    return AccessRecord("login", outcome=outcome, description=what)


async def _logged_in(
    request: Request, state: DashboardState, session: Session, response: Response
) -> Response:
    """``response`` with the new session's cookie."""
    _with_session(response, request, await _signing_key(state), session)
    return response


@router.post("/login")
async def login(request: Request) -> Response:
    """The simulated UZI login: a UZI number of a stored, active Practitioner."""
    state = _state(request)
    identity = state.identity
    if not isinstance(identity, SimulatedDigiD):
        return _translated_page(state, "ui.msg.not_available", "ui.msg.use_broker", 404)
    form = await _form(request)
    cookie = request.cookies.get(sessions.LOGIN_COOKIE)
    if form is None or not sessions.csrf_ok(cookie, form.get("csrf_token")):
        return _translated_page(
            state, "ui.msg.form_expired", "ui.msg.form_expired_text", 403, "/dashboard/login"
        )
    next_path = _safe_next(form.get("next"))
    limits = state.limiter.clinician_login(client_address(request), form.get("uzi", ""))
    blocked = await run_in_threadpool(state.limiter.check, limits)
    if blocked is not None:
        return await _login_refused(state, request, blocked)
    try:
        user = await run_in_threadpool(identity.clinician_for_uzi, form.get("uzi", ""))
    except LoginError as exc:
        record = _login_record("4", f"clinician login failed: {exc}")
        await _audit(state, request, None, record)
        blocked = await run_in_threadpool(state.limiter.failed, limits)
        if blocked is not None:
            return await _login_refused(state, request, blocked)
        page = _login_page(state, cookie or "", next_path, error=str(exc))
        return _html(page, 400)
    session = sessions.start(user, int(time.time()), state.session_seconds)
    await _audit(state, request, session, _login_record("0", "clinician login"))
    response = await _logged_in(request, state, session, _redirect(next_path))
    _clear(response, sessions.LOGIN_COOKIE)
    return response


async def _login_refused(
    state: DashboardState, request: Request, blocked: Blocked
) -> Response:
    """429: too many failed logins (audited in oauth mode; the UZI number is not looked at)."""
    record = _login_record("4", f"clinician login refused: {blocked.describe()}")
    await _audit(state, request, None, record)
    response = _translated_page(
        state,
        "ui.msg.too_many",
        "ui.msg.too_many_text",
        429,
        "/dashboard/login",
        minutes=blocked.minutes,
    )
    response.headers.update(blocked.header)
    return response


def _callback_url(request: Request) -> str:
    """Where the identity broker sends the browser back (register it at the broker)."""
    return issuer_url(request) + "/dashboard/oidc/callback"


@router.get("/login/oidc")
async def login_oidc(request: Request) -> Response:
    """Start a clinician login at the identity broker (TELEMON_IDENTITY_PROVIDER=oidc)."""
    state = _state(request)
    identity = state.identity
    if not isinstance(identity, OidcDigiD):
        return _translated_page(state, "ui.msg.not_available", "ui.msg.no_broker", 404)
    try:
        started = await run_in_threadpool(identity.start, _callback_url(request))
    except LoginError as exc:
        return _translated_page(
            state, "ui.msg.login_unavailable", "ui.msg.detail", 502, "/dashboard/login", detail=exc
        )
    next_path = _safe_next(request.query_params.get("next"))
    pending = PendingLogin(
        [("next", next_path)],
        started.state,
        started.nonce,
        started.code_verifier,
        consent.new_tx_id(),
    )
    response = RedirectResponse(started.url, status_code=302, headers=PAGE_HEADERS)
    # SameSite=lax: the broker's redirect back (a cross-site top-level GET) must carry it.
    _set_cookie(
        response,
        request,
        sessions.OIDC_COOKIE,
        consent.seal_login(await _signing_key(state), pending),
        consent.TX_SECONDS,
        samesite="lax",
    )
    return response


@router.get("/oidc/callback")
async def oidc_callback(request: Request) -> Response:
    """The broker's redirect back: verify the login, then start the session."""
    state = _state(request)
    identity = state.identity
    if not isinstance(identity, OidcDigiD):
        return _translated_page(state, "ui.msg.not_available", "ui.msg.no_broker", 404)
    query = request.query_params
    try:
        pending = consent.open_login(
            await _signing_key(state),
            request.cookies.get(sessions.OIDC_COOKIE),
            query.get("state", ""),
        )
    except ConsentError as exc:
        return _translated_page(
            state, "ui.msg.login_failed", "ui.msg.detail", 400, "/dashboard/login", detail=exc
        )
    if "error" in query or not query.get("code"):
        what = f"clinician login failed at the broker: {query.get('error', 'no code')[:100]}"
        await _audit(state, request, None, _login_record("4", what))
        response = _translated_page(
            state, "ui.msg.login_failed", "ui.msg.broker_refused", 400, "/dashboard/login"
        )
        _clear(response, sessions.OIDC_COOKIE)
        return response
    try:
        user = await run_in_threadpool(
            identity.finish_clinician, query["code"], _callback_url(request), pending
        )
    except LoginError as exc:
        what = f"clinician login failed: {exc} ({exc.__cause__ or 'no detail'})"[:500]
        await _audit(state, request, None, _login_record("4", what))
        response = _translated_page(
            state, "ui.msg.login_failed", "ui.msg.detail", 400, "/dashboard/login", detail=exc
        )
        _clear(response, sessions.OIDC_COOKIE)
        return response
    session = sessions.start(user, int(time.time()), state.session_seconds)
    await _audit(state, request, session, _login_record("0", "clinician login"))
    next_path = _safe_next(dict(pending.params).get("next"))
    # A page, not a redirect: after a cross-site redirect chain the browser would not send the
    # new SameSite=Strict cookie with the next request.
    response = _html(views.page("continue.html", next=next_path))
    _clear(response, sessions.OIDC_COOKIE)
    return await _logged_in(request, state, session, response)


def _end_session(state: DashboardState, session: Session) -> None:
    with state.fhir.db.write() as conn:
        sessions.end(conn, session, int(time.time()))


@router.post("/logout")
async def logout(request: Request) -> Response:
    """End the session (its cookie stops working everywhere) and go back to the login."""
    state = _state(request)
    session = await _session(request, state)
    if session is None:
        return _redirect("/dashboard/login")
    form = await _form(request)
    if form is None or not sessions.csrf_ok(session.csrf, form.get("csrf_token")):
        return _translated_page(state, "ui.page.form_expired", "ui.page.reload", 403)
    await run_in_threadpool(_end_session, state, session)
    await _audit(state, request, session, AccessRecord("logout", description="clinician logout"))
    response = _redirect("/dashboard/login?notice=logged-out")
    _clear(response, sessions.COOKIE)
    return response


# -- pages -----------------------------------------------------------------------------------


@router.get("")
async def worklist_page(request: Request) -> Response:
    """The open alerts, most urgent first, with acknowledge and resolve buttons."""
    state = _state(request)
    session = await _session(request, state)
    if session is None:
        return _login_redirect(request)
    work = await run_in_threadpool(worklist.load_worklist, state.fhir)
    shown = list(dict.fromkeys(i.patient_id for i in work.new + work.acknowledged))
    work.last_seen, seen = await run_in_threadpool(
        load_last_seen, state.fhir, shown, state.fhir.clock()
    )
    record = AccessRecord(
        "search-type",
        "Flag",
        "status=active&_include=Flag:patient",
        touched=work.touched + seen,  # and each patient's recent Observations (adherence)
    )
    await _audit(state, request, session, record)
    return _page(request, state, session, "worklist.html", work=work, active="worklist")


@router.get("/patients")
async def patients_page(request: Request) -> Response:
    """The patients enrolled in a telemonitoring programme."""
    state = _state(request)
    session = await _session(request, state)
    if session is None:
        return _login_redirect(request)
    enrolled, seen = await run_in_threadpool(load_enrolled, state.fhir)
    work = await run_in_threadpool(worklist.load_worklist, state.fhir)
    counts: dict[str, int] = {}
    for item in work.new + work.acknowledged:
        counts[item.patient_id] = counts.get(item.patient_id, 0) + 1
    record = AccessRecord(
        "search-type",
        "CarePlan",
        "status=active&_include=CarePlan:patient",
        touched=seen + work.touched,  # the open-alert counts come from the Flags
    )
    await _audit(state, request, session, record)
    return _page(
        request,
        state,
        session,
        "patients.html",
        patients=enrolled,
        counts=counts,
        active="patients",
    )


@router.get("/patients/{patient_id}")
async def patient_page(request: Request, patient_id: str) -> Response:
    """One patient: open alerts and trend charts over 30 or 90 days."""
    state = _state(request)
    session = await _session(request, state)
    if session is None:
        return _login_redirect(request)
    asked = parse_unsigned(request.query_params.get("days"))
    days = asked if asked in views.PERIODS else 30
    until = state.fhir.clock()
    since = until - timedelta(days=days)
    try:
        check_id(patient_id)
        overview = await run_in_threadpool(load_overview, state.fhir, patient_id, since, until)
    except FhirError:
        return _translated_page(state, "ui.page.no_patient", "ui.page.no_such_patient", 404)
    record = AccessRecord(
        "search-type",
        "Observation",
        f"patient={patient_id}&date=ge{since:%Y-%m-%dT%H:%M:%SZ}",
        touched=overview.touched,
    )
    await _audit(state, request, session, record)
    charts = views.patient_charts(overview, state.zone, state.fhir.language)
    return _page(
        request,
        state,
        session,
        "patient.html",
        overview=overview,
        charts=charts,
        days=days,
        periods=views.PERIODS,
        here=f"/dashboard/patients/{patient_id}?days={days}",
        active="patients",
        last_seen=latest_per_chart(overview.measurements),
    )


# -- alert actions -------------------------------------------------------------------------


async def _alert_action(request: Request, flag_id: str, action: str) -> Response:
    state = _state(request)
    session = await _session(request, state)
    form = await _form(request)
    next_path = _safe_next(form.get("next") if form else None)
    if session is None:
        return _redirect("/dashboard/login?" + urlencode({"next": next_path}))
    if form is None or not sessions.csrf_ok(session.csrf, form.get("csrf_token")):
        return _translated_page(
            state, "ui.page.form_expired", "ui.page.reload", 403, next_path
        )
    version = parse_unsigned(form.get("version"), maximum=MAX_VERSION)
    targets = _targets(flag_id, version, form)
    note = " ".join(form.get("note", "").split())  # one line, no control characters
    if targets is None or len(note) > MAX_NOTE:
        return _translated_page(
            state, "ui.page.invalid", "ui.page.invalid_action", 400, next_path
        )
    do = worklist.acknowledge if action == "acknowledge" else worklist.resolve
    by = worklist.Clinician(session.subject, session.name)
    for target_id, target_version in targets:
        what = f"clinician {action}s the alert" + (f"; note: {note}" if note else "")
        record = AccessRecord("update", "Flag", description=what)
        # The update's AuditEvent commits in the update's transaction.
        hook = (
            state.audit.in_transaction(_session_actor(request, session), record)
            if state.audit is not None
            else None
        )
        try:
            await run_in_threadpool(
                do, state.fhir, target_id, target_version, state.fhir.clock(), hook, by, note
            )
        except worklist.AlertActionError as exc:
            record.outcome, record.description = "4", f"{action} refused: {exc}"
            await _audit(state, request, session, record)
            return _translated_page(state, "ui.page.not_done", exc.key, 409, next_path)
    notice = "acknowledged" if action == "acknowledge" else "resolved"
    return _redirect(_with_notice(next_path, notice))


_FLAG_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")


def _targets(
    flag_id: str, version: int | None, form: dict[str, str]
) -> list[tuple[str, int]] | None:
    """The alerts one action acts on: this one, or with ``scope=group`` every alert named in
    ``group`` (``id:version,…``, the patient's concurrent alerts); None when malformed."""
    if version is None or not _FLAG_ID.fullmatch(flag_id):
        return None
    if form.get("scope") != "group":
        return [(flag_id, version)]
    targets = []
    for part in form.get("group", "").split(",")[:50]:
        target_id, _, text = part.partition(":")
        target_version = parse_unsigned(text, maximum=MAX_VERSION)
        if target_version is None or not _FLAG_ID.fullmatch(target_id):
            return None
        targets.append((target_id, target_version))
    return targets if (flag_id, version) in targets else None


@router.post("/alerts/{flag_id}/acknowledge")
async def acknowledge(request: Request, flag_id: str) -> Response:
    """Acknowledge an open alert (it leaves the worklist's to-do list, stays open)."""
    return await _alert_action(request, flag_id, "acknowledge")


@router.post("/alerts/{flag_id}/resolve")
async def resolve(request: Request, flag_id: str) -> Response:
    """Resolve an open alert (the episode ends; the rule's cooldown starts)."""
    return await _alert_action(request, flag_id, "resolve")


# -- static files ---------------------------------------------------------------------------


@cache
def _static(name: str) -> bytes:
    return resources.files("service.dashboard").joinpath("static", name).read_bytes()


@router.get("/static/{name}")
async def static(request: Request, name: str) -> Response:
    """The stylesheet and icon (package data; no login needed, no patient data)."""
    media = _STATIC.get(name)
    if media is None:
        return _translated_page(_state(request), "ui.msg.not_found", "ui.msg.no_file", 404)
    headers = {"Cache-Control": "public, max-age=300", "X-Content-Type-Options": "nosniff"}
    return Response(_static(name), media_type=media, headers=headers)
