"""DigiD through a TVS/OIDC broker: telemon as an OpenID Connect client (Authlib).

``TELEMON_IDENTITY_PROVIDER=oidc``. The patient's login step of ``/oauth/authorize`` redirects
to the broker (authorization-code flow with PKCE S256, ``state`` and ``nonce``, endpoints from
the broker's discovery document); the broker sends the browser back to
``/oauth/oidc/callback``, telemon redeems the code (``client_secret_basic``), verifies the
id_token with the broker's JWKS (signature, ``iss``, ``aud``, ``exp``, ``nonce``, ``azp``) and
maps the BSN claim (``TELEMON_OIDC_BSN_CLAIM``) to the stored Patient (11-check, must exist).
A clinician's dashboard login goes through the same broker and checks, and maps the UZI claim
(``TELEMON_OIDC_UZI_CLAIM``) to the stored, active Practitioner.

Between the redirect and the callback nothing is stored server-side: ``state``, ``nonce``, the
PKCE verifier and the pending authorization travel in a short-lived JWT signed with the server
key, in an HttpOnly cookie on ``/oauth`` (:func:`service.auth.consent.seal_login`).
"""

from __future__ import annotations

import ipaddress
import warnings
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
from authlib.deprecate import AuthlibDeprecationWarning
from authlib.integrations.base_client import BaseApp, OAuth2Mixin, OAuthError, OpenIDMixin
from authlib.oauth2 import OAuth2Error
from joserfc.errors import JoseError

from service.auth.consent import PendingLogin
from service.auth.grants import PatientUser
from service.auth.identity import ClinicianUser, LoginError, patient_by_bsn, practitioner_by_uzi
from service.fhir.service import FhirService
from service.settings import Settings

# Authlib's httpx integration warns on import that it wants the httpx2 package; telemon runs on
# httpx by design and the integration works on it, so only that one warning of that one import
# is silenced (Authlib's own "always" filter, set when authlib.deprecate loads above, is older).
with warnings.catch_warnings():
    warnings.filterwarnings(
        "ignore",
        message="The httpx module is deprecated; please use httpx2 instead.",
        category=AuthlibDeprecationWarning,
        module=r"authlib\.integrations\.httpx_client",
    )
    from authlib.integrations.httpx_client import OAuth2Client

#: id_token algorithms accepted whatever the broker advertises (never ``none`` or HMAC).
ID_TOKEN_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384")
_LEEWAY = 30


@dataclass(frozen=True, slots=True)
class BrokerLogin:
    """One login started at the broker: where to send the browser and what to check after."""

    url: str
    state: str
    nonce: str
    code_verifier: str


class _Broker(OAuth2Mixin, OpenIDMixin, BaseApp):
    """Authlib's OpenID client (discovery, PKCE, nonce, JWKS) over httpx."""

    client_cls = OAuth2Client


def _check_issuer_url(issuer: str) -> None:
    """https, or http only on loopback (tests, a local broker)."""
    parts = urlsplit(issuer)
    if parts.scheme == "https" and parts.hostname:
        return
    host = parts.hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if parts.scheme != "http" or not loopback:
        raise ValueError("TELEMON_OIDC_ISSUER must be an https URL (http only on loopback)")


class OidcDigiD:
    """DigiD through a TVS/OIDC broker."""

    name = "oidc"
    label = "DigiD"

    def __init__(self, settings: Settings, fhir: FhirService) -> None:
        issuer, client_id, secret = (
            settings.oidc_issuer,
            settings.oidc_client_id,
            settings.oidc_client_secret,
        )
        if not issuer or not client_id or secret is None:
            raise ValueError(
                "TELEMON_IDENTITY_PROVIDER=oidc needs TELEMON_OIDC_ISSUER, "
                "TELEMON_OIDC_CLIENT_ID and TELEMON_OIDC_CLIENT_SECRET"
            )
        _check_issuer_url(issuer)
        self.fhir = fhir
        self.issuer = issuer.rstrip("/")
        self.client_id = client_id
        self.bsn_claim = settings.oidc_bsn_claim
        self.uzi_claim = settings.oidc_uzi_claim
        self._broker = _Broker(
            framework=None,
            client_id=client_id,
            client_secret=secret.get_secret_value(),
            server_metadata_url=f"{self.issuer}/.well-known/openid-configuration",
            client_kwargs={
                "scope": "openid",
                "code_challenge_method": "S256",
                "token_endpoint_auth_method": "client_secret_basic",
                "timeout": settings.oidc_timeout_seconds,
                "follow_redirects": False,
            },
        )

    def _metadata(self) -> dict[str, Any]:
        """The broker's discovery document, checked once (OIDC Discovery section 4.3)."""
        metadata: dict[str, Any] = self._broker.load_server_metadata()
        if metadata.get("issuer") != self.issuer:
            self._broker.server_metadata.pop("_loaded_at", None)  # read it again next time
            raise LoginError("DigiD is niet beschikbaar / DigiD is unavailable (issuer mismatch)")
        advertised = metadata.get("id_token_signing_alg_values_supported") or ["RS256"]
        # Authlib verifies with whatever the broker advertises; never accept none or HMAC.
        metadata["id_token_signing_alg_values_supported"] = [
            a for a in advertised if a in ID_TOKEN_ALGORITHMS
        ] or ["RS256"]
        return metadata

    def start(self, redirect_uri: str) -> BrokerLogin:
        """A new login at the broker (fresh state, nonce and PKCE verifier)."""
        try:
            self._metadata()
            started = self._broker.create_authorization_url(redirect_uri)
        except (httpx.HTTPError, ValueError, RuntimeError) as exc:
            raise LoginError("DigiD is niet beschikbaar / DigiD is unavailable") from exc
        return BrokerLogin(
            started["url"], started["state"], started["nonce"], started["code_verifier"]
        )

    def _verified_claims(
        self,
        code: str,
        redirect_uri: str,
        login: PendingLogin,
        failed: str = "DigiD-login mislukt / DigiD login failed",
    ) -> dict[str, Any]:
        """Redeem the broker's code and verify its id_token; the id_token's claims."""
        try:
            self._metadata()
            token = self._broker.fetch_access_token(
                redirect_uri=redirect_uri, code=code, code_verifier=login.code_verifier
            )
            claims = self._broker.parse_id_token(
                token,
                nonce=login.nonce,
                claims_options={
                    "iss": {"essential": True, "value": self.issuer},
                    "aud": {"essential": True, "value": self.client_id},
                    "sub": {"essential": True},
                },
                leeway=_LEEWAY,
            )
        except (httpx.HTTPError, OAuthError, OAuth2Error, JoseError, ValueError) as exc:
            raise LoginError(failed) from exc
        if claims is None:
            raise LoginError(f"{failed} (no id_token)")
        return dict(claims)

    def finish(self, code: str, redirect_uri: str, login: PendingLogin) -> PatientUser:
        """Redeem the broker's code, verify the id_token and find the Patient by BSN."""
        bsn = self._verified_claims(code, redirect_uri, login).get(self.bsn_claim)
        if not isinstance(bsn, str):
            raise LoginError("DigiD gaf geen BSN / DigiD returned no BSN")
        return patient_by_bsn(self.fhir, bsn)

    clinician_label = "Inloggen via de identiteitsbroker / Log in through the identity broker"

    def finish_clinician(
        self, code: str, redirect_uri: str, login: PendingLogin
    ) -> ClinicianUser:
        """Redeem the broker's code, verify the id_token and find the Practitioner by UZI."""
        claims = self._verified_claims(
            code, redirect_uri, login, failed="Inloggen mislukt / Login failed"
        )
        uzi = claims.get(self.uzi_claim)
        if not isinstance(uzi, str):
            raise LoginError("De broker gaf geen UZI-nummer / The broker returned no UZI number")
        return practitioner_by_uzi(self.fhir, uzi)
