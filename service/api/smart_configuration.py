"""The SMART App Launch discovery document: served at ``/fhir/.well-known/smart-configuration``
and repeated in the CapabilityStatement's security section."""

from __future__ import annotations

from typing import Any

from fastapi import Request

from service.api.deps import get_state, issuer_url


def smart_configuration_document(request: Request) -> dict[str, Any]:
    """The SMART App Launch discovery document (also used in the CapabilityStatement)."""
    issuer = issuer_url(request)
    return {
        "issuer": issuer,
        "jwks_uri": f"{issuer}/oauth/jwks",
        "authorization_endpoint": f"{issuer}/oauth/authorize",
        "token_endpoint": f"{issuer}/oauth/token",
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "revocation_endpoint": f"{issuer}/oauth/revoke",
        "introspection_endpoint": f"{issuer}/oauth/introspect",
        "management_endpoint": f"{issuer}/oauth/consents",
        "token_endpoint_auth_methods_supported": [
            "client_secret_basic",
            "client_secret_post",
            "private_key_jwt",
        ],
        "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384"],
        "scopes_supported": [
            "launch/patient",
            "offline_access",
            "patient/Patient.rs",
            "patient/Observation.rs",
            "patient/Flag.rs",
            "patient/AuditEvent.rs",
            "system/*.rs",
            "system/*.cruds",
            *get_state(request).settings.medmij_scopes,
        ],
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"],
        "capabilities": [
            "launch-standalone",
            "client-confidential-symmetric",
            "client-confidential-asymmetric",
            "context-standalone-patient",
            "permission-patient",
            "permission-offline",
            "permission-v2",
        ],
    }
