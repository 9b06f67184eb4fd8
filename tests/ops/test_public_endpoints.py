"""What answers without a token: in oauth mode the API description and the metrics only when a
setting says so (in open mode, as for ``make run``, everything does)."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings
from tests.ops.test_probes import PROFILES


def _app(database_url: str, **settings: Any) -> TestClient:
    base = {"database_url": database_url, "profiles_dir": PROFILES, "alerts_enabled": False}
    if settings.get("auth", "oauth") == "oauth":
        base["base_url"] = "http://testserver/fhir"
    return TestClient(create_app(Settings(**{**base, **settings})), base_url="http://testserver")


def test_oauth_mode_hides_the_api_description_and_metrics(database_url: str) -> None:
    with _app(database_url, auth="oauth") as c:
        for path in ("/openapi.json", "/docs", "/redoc", "/metrics"):
            assert c.get(path).status_code == 404, path
        assert c.get("/metrics", headers={"Authorization": "Bearer guess"}).status_code == 404
        assert c.get("/health").status_code == 200  # probes stay open


def test_settings_open_the_api_description_and_metrics(database_url: str) -> None:
    with _app(database_url, auth="oauth", public_api_docs=True, public_metrics=True) as c:
        assert c.get("/openapi.json").json()["info"]["title"] == "telemon"
        assert c.get("/docs").status_code == 200
        assert "telemon_http_requests_total" in c.get("/metrics").text


@pytest.mark.parametrize(
    ("header", "status"),
    [
        (None, 401),
        ("Bearer wrong-token", 401),
        ("Basic c2NyYXBlcjpzM2NyZXQ=", 401),
        ("Bearer s3cret-scrape-token", 200),
    ],
)
def test_metrics_token_lets_the_scraper_in(
    database_url: str, header: str | None, status: int
) -> None:
    with _app(database_url, auth="oauth", metrics_token="s3cret-scrape-token") as c:
        response = c.get("/metrics", headers={"Authorization": header} if header else {})
        assert response.status_code == status
        if status == 401:
            assert response.headers["www-authenticate"].startswith("Bearer")
        assert c.get("/openapi.json").status_code == 404


def test_open_mode_serves_everything(database_url: str) -> None:
    with _app(database_url, auth="open") as c:
        for path in ("/openapi.json", "/docs", "/metrics"):
            assert c.get(path).status_code == 200, path
