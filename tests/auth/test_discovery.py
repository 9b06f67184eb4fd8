"""Discovery: the CapabilityStatement's ``rest.security`` (SMART ``oauth-uris``) names exactly the
endpoints of ``/.well-known/smart-configuration``; open mode says that there is no security."""

from __future__ import annotations

from fastapi.testclient import TestClient

from service.api.conformance import OAUTH_URIS, RESTFUL_SECURITY_SERVICE


def test_capability_statement_security_matches_smart_configuration(
    oauth_client: TestClient,
) -> None:
    smart = oauth_client.get("/fhir/.well-known/smart-configuration").json()
    statement = oauth_client.get("/fhir/metadata").json()
    security = statement["rest"][0]["security"]
    assert security["service"][0]["coding"] == [
        {"system": RESTFUL_SECURITY_SERVICE, "code": "SMART-on-FHIR", "display": "SMART-on-FHIR"}
    ]
    assert security["description"]
    [oauth_uris] = [e for e in security["extension"] if e["url"] == OAUTH_URIS]
    uris = {e["url"]: e["valueUri"] for e in oauth_uris["extension"]}
    assert uris == {
        "authorize": smart["authorization_endpoint"],
        "token": smart["token_endpoint"],
        "revoke": smart["revocation_endpoint"],
        "introspect": smart["introspection_endpoint"],
        "manage": smart["management_endpoint"],
    }
    assert uris["token"] == "http://testserver/oauth/token"


def test_capability_statement_security_in_open_mode(client: TestClient) -> None:
    security = client.get("/fhir/metadata").json()["rest"][0]["security"]
    assert "service" not in security and "extension" not in security
    assert "TELEMON_AUTH=open" in security["description"]
    assert client.get("/fhir/.well-known/smart-configuration").status_code == 404
