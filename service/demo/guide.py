"""What ``telemon demo`` prints after loading: what to open and try, for the server's auth mode.

Plain lines, no markup: every command is one line that can be pasted into a shell as it is (the
tests run them against a live server). ``TELEMON_AUTH=open`` (what ``make run`` serves) needs no
token, so the guide shows plain reads and how to switch to OAuth; ``oauth`` shows the EHR
(backend service) and PGO flows with the demo clients.
"""

from __future__ import annotations

import base64
import hashlib
import shlex
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

from service.demo.clients import ASSERTION_TYPE, DemoClients
from service.demo.data import LOINC_CODES, PROGRAMMES, DemoSummary
from service.validation import BSN_SYSTEM

DEFAULT_KEYS_DIR = Path("demo-keys")


@dataclass(frozen=True, slots=True)
class DemoLogin:
    """One identity to log in with in the demo."""

    who: str
    kind: str  # what the identifier is, e.g. "BSN"
    identifier: str
    note: str


def demo_logins(summary: DemoSummary) -> list[DemoLogin]:
    """Every demo login, from the demo data: the one place the printout lists them.

    The clinician logs in to the dashboard with a UZI number, the patients with their BSN at
    the simulated DigiD (PGO flow).
    """
    logins = [
        DemoLogin(
            summary.clinician_name, "UZI", summary.clinician_uzi, "clinician: /dashboard"
        )
    ]
    for p in summary.patients:
        conditions = " + ".join(p.conditions)
        alerts = ", ".join(p.alerts) or "no open alerts"
        logins.append(DemoLogin(p.name, "BSN", p.bsn, f"{conditions}; {alerts}"))
    return logins


@dataclass(frozen=True, slots=True)
class Endpoints:
    """Where the server is: the FHIR base and the authorization server's root (issuer)."""

    base: str  # …/fhir, no trailing slash
    issuer: str  # /oauth/* lives under it

    @property
    def root(self) -> str:
        """The server root (dashboard, health)."""
        return self.base.removesuffix("/fhir")

    @property
    def token_url(self) -> str:
        """The token endpoint, also the ``aud`` of client assertions."""
        return f"{self.issuer}/oauth/token"


def pkce_challenge(verifier: str) -> str:
    """The PKCE ``S256`` challenge of ``verifier`` (RFC 7636 section 4.2)."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


def authorize_url(clients: DemoClients, where: Endpoints, verifier: str) -> str:
    """The PGO's authorization request (code flow, PKCE S256), as a browser opens it."""
    query = urlencode(
        {
            "response_type": "code",
            "client_id": clients.pgo_id,
            "redirect_uri": clients.redirect_uri,
            "scope": "launch/patient patient/Patient.rs patient/Observation.rs "
            "patient/Flag.rs patient/AuditEvent.rs",
            "state": "demo",
            "aud": where.base,
            "code_challenge": pkce_challenge(verifier),
            "code_challenge_method": "S256",
        }
    )
    return f"{where.issuer}/oauth/authorize?{query}"


def guide(
    summary: DemoSummary,
    clients: DemoClients,
    where: Endpoints,
    *,
    auth: str,
    program: str,
    verifier: str,
) -> list[str]:
    """The lines to print. ``program`` is how to call ``telemon`` from the user's shell."""
    mode = (
        "no authorization, loopback only"
        if auth == "open"
        else "every FHIR request needs an access token"
    )
    lines = [
        f"What to open and try (the server runs with TELEMON_AUTH={auth}: {mode})",
        f"  FHIR API   {where.base}   (what it supports: {where.base}/metadata)",
        f"  Dashboard  {where.root}/dashboard",
        f"  Health     {where.root}/health",
        "",
        "Demo logins (simulated, test and demo only; patients use their BSN in the PGO flow)",
    ]
    logins = demo_logins(summary)
    width = max(len(login.who) for login in logins)
    for login in logins:
        lines.append(f"  {login.who:<{width}}  {login.kind} {login.identifier}  {login.note}")
    lines += ["", "Programmes (PlanDefinitions; a CarePlan enrols a patient)"]
    for condition, plan in PROGRAMMES.items():
        enrolled = ", ".join(p.name for p in summary.patients if condition in p.conditions)
        lines.append(f"  {condition:<13}  {where.base}/PlanDefinition/{plan}  ({enrolled})")
    lines.append("")
    if auth == "open":
        lines += _open_mode(summary, clients, where)
    else:
        lines += [
            f"The server must run with TELEMON_BASE_URL={where.base} (`make run` sets it): "
            "tokens are issued for that URL, never for the Host a request names.",
            "",
        ]
        lines += _backend(summary, clients, where, program)
        lines.append("")
        lines += _pgo(clients, where, verifier)
    return lines


def _q(text: str) -> str:
    return shlex.quote(text)


def _reads(summary: DemoSummary, where: Endpoints) -> list[tuple[str, str]]:
    """(comment, URL) of the example reads."""
    hf, copd = summary.patients[0], summary.patients[1]
    base = where.base
    return [
        (
            "the open alerts, with the measurements behind them",
            f"{base}/Flag?status=active&_include=Flag:detail",
        ),
        (
            f"{hf.name}'s weights, newest first",
            f"{base}/Observation?patient={hf.patient_id}&code=http://loinc.org|"
            f"{LOINC_CODES['weight']}&_sort=-date&_count=7",
        ),
        (
            f"{hf.name}'s latest three of every vital sign",
            f"{base}/Observation/$lastn?patient={hf.patient_id}&category=vital-signs&max=3",
        ),
        (
            f"{copd.name}'s oxygen saturation, newest first",
            f"{base}/Observation?patient={copd.patient_id}&code=http://loinc.org|"
            f"{LOINC_CODES['spo2']}&_sort=-date&_count=7",
        ),
        ("a patient by BSN", f"{base}/Patient?identifier={BSN_SYSTEM}|{hf.bsn}"),
    ]


def _open_mode(summary: DemoSummary, clients: DemoClients, where: Endpoints) -> list[str]:
    lines = ["Reads (no token needed in open mode)"]
    for comment, url in _reads(summary, where):
        lines += [f"  # {comment}", f"  curl -s {_q(url)}"]
    lines += [
        "",
        f"OAuth clients, registered (credentials in {clients.keys_dir}/)",
        f"  PGO app      {clients.pgo_id}  authorization code + PKCE, "
        f"redirect URI {clients.redirect_uri}",
        f"  EHR backend  {clients.backend_id}  SMART Backend Services (private_key_jwt, ES384)",
        "  Open mode has no authorization server. To try them, stop the server and run",
        "  TELEMON_AUTH=oauth make run",
        f"  (or TELEMON_AUTH=oauth and TELEMON_BASE_URL={where.base} for both `telemon demo` "
        "and `telemon serve`): the demo then prints the OAuth steps.",
    ]
    return lines


def _backend(
    summary: DemoSummary, clients: DemoClients, where: Endpoints, program: str
) -> list[str]:
    token_cmd = f"{_q(program)} demo token"
    if clients.keys_dir != DEFAULT_KEYS_DIR:
        token_cmd += f" --keys-dir {_q(str(clients.keys_dir))}"
    bearer = '-H "Authorization: Bearer $TOKEN"'
    lines = [
        f"EHR: backend service {clients.backend_id} (SMART Backend Services; private key "
        f"{clients.private_key_file}, public JWKS {clients.public_jwks_file})",
        "  # a 5-minute access token: signs a client assertion with the demo key, posts it to "
        f"{where.token_url}",
        f"  TOKEN=$({token_cmd})",
    ]
    for comment, url in _reads(summary, where):
        lines += [f"  # {comment}", f"  curl -s {bearer} {_q(url)}"]
    lines += [
        "  # the token request by hand (each assertion is single use)",
        f"  curl -s {where.token_url} -d grant_type=client_credentials "
        f"-d scope=system/Flag.rs -d client_assertion_type={ASSERTION_TYPE} "
        f'-d client_assertion="$({token_cmd} --assertion)"',
    ]
    return lines


def _pgo(clients: DemoClients, where: Endpoints, verifier: str) -> list[str]:
    bearer = '-H "Authorization: Bearer $PGO_TOKEN"'
    return [
        f"PGO app {clients.pgo_id} (authorization code + PKCE S256; client secret in "
        f"{clients.pgo_secret_file})",
        "  # 1. open in a browser, log in with a BSN above (simulated DigiD) and allow:",
        f"  {authorize_url(clients, where, verifier)}",
        f"  # 2. the browser goes to {clients.redirect_uri}?code=…&state=demo, where nothing "
        "listens:",
        "  #    set CODE to the code in its address bar and, within 60 s, exchange it:",
        f"  curl -s -u {_q(clients.pgo_id + ':' + clients.pgo_secret)} {where.token_url} "
        f'-d grant_type=authorization_code -d code="$CODE" -d redirect_uri={clients.redirect_uri} '
        f"-d code_verifier={verifier}",
        "  # 3. set PGO_TOKEN and PATIENT to access_token and patient from its answer: the "
        "patient's own data, and who read it",
        f'  curl -s {bearer} "{where.base}/Observation?patient=$PATIENT&_sort=-date&_count=5"',
        f'  curl -s {bearer} "{where.base}/Flag?patient=$PATIENT&status=active"',
        f'  curl -s {bearer} "{where.base}/AuditEvent?patient=$PATIENT&_sort=-date&_count=10"',
    ]
