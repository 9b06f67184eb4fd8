"""The OpenAPI document describes the FHIR API per resource type, from the registry and models."""

from __future__ import annotations

from fastapi.testclient import TestClient

from service.core.registry import default_registry


def test_every_type_has_its_interactions_and_search_parameters(client: TestClient) -> None:
    document = client.app.openapi()  # type: ignore[attr-defined]
    paths = document["paths"]
    assert not [p for p in paths if "{res_type}" in p]
    for rtype in default_registry():
        search = paths[f"/fhir/{rtype.name}"]["get"]
        names = {p["name"] for p in search["parameters"]}
        assert set(rtype.params) | {"_id", "_lastUpdated", "_count"} <= names, rtype.name
        writable = {"post", "put", "delete"} & {
            *paths[f"/fhir/{rtype.name}"], *paths[f"/fhir/{rtype.name}/{{id}}"]
        }
        assert bool(writable) != rtype.read_only, rtype.name
    assert "max" in {p["name"] for p in paths["/fhir/Observation/$lastn"]["get"]["parameters"]}


def test_resource_bodies_describe_the_elements(client: TestClient) -> None:
    schemas = client.app.openapi()["components"]["schemas"]  # type: ignore[attr-defined]
    observation = schemas["Observation"]
    assert observation["properties"]["resourceType"]["const"] == "Observation"
    assert {"resourceType", "status", "code"} <= set(observation["required"])
    assert observation["properties"]["valueQuantity"] == {"$ref": "#/components/schemas/Quantity"}
    assert observation["properties"]["status"]["enum"][:2] == ["registered", "preliminary"]
    component = observation["properties"]["component"]["items"]
    assert "code" in component["properties"]


def test_the_document_is_served(client: TestClient) -> None:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    assert "/fhir/Patient/{id}/_history/{vid}" in response.json()["paths"]
