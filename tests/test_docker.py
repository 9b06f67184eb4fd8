"""``docker/``: the compose file and the Dockerfile agree with the CLI (no engine needed)."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml

from service.cli import app

DOCKER = Path(__file__).resolve().parent.parent / "docker"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """docker/compose.yaml, parsed."""
    parsed: dict[str, Any] = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    return parsed


def _parses(args: list[str]) -> None:
    """Fail unless ``telemon <args>`` names a command and its options parse (nothing is run)."""
    command: Any = typer.main.get_command(app)
    ctx = command.context_class(command, info_name="telemon")
    name = "telemon"
    while hasattr(command, "get_command"):  # a group: the next word names a command in it
        name, *args = args
        found = command.get_command(ctx, name)
        assert found is not None, f"no command {name!r}"
        command = found
    command.make_context(name, args, parent=ctx)


def test_compose_services_and_their_commands(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"postgres", "migrate", "telemon", "worker"}
    assert "CMD-SHELL" in services["postgres"]["healthcheck"]["test"]
    assert "pg_isready" in services["postgres"]["healthcheck"]["test"][1]
    assert services["postgres"]["volumes"] == ["pgdata:/var/lib/postgresql/data"]
    telemons = [services[n] for n in ("migrate", "telemon", "worker")]
    url = telemons[0]["environment"]["TELEMON_DATABASE_URL"]
    assert url.startswith("postgresql://telemon:${POSTGRES_PASSWORD:?")
    assert url.endswith("@postgres:5432/telemon")
    for service in telemons:
        assert service["environment"]["TELEMON_DATABASE_URL"] == url  # one database for all
        assert service["environment"]["TELEMON_AUTH"] == "oauth"
        assert service["environment"]["TELEMON_BASE_URL"].startswith("${TELEMON_BASE_URL:?")
        assert service["env_file"] == ".env"  # secrets from the git-ignored docker/.env
        assert service["read_only"] is True
        assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["migrate"]["command"] == ["db", "upgrade"]
    assert services["migrate"]["restart"] == "no"
    for name in ("telemon", "worker"):
        assert services[name]["restart"] == "unless-stopped"
        assert services[name]["depends_on"]["migrate"] == {
            "condition": "service_completed_successfully"
        }
    assert services["worker"]["command"] == ["worker"]
    assert services["worker"]["healthcheck"] == {"disable": True}
    for name in ("migrate", "telemon", "worker"):
        _parses(services[name]["command"])
    serve = services["telemon"]["command"]
    assert serve[serve.index("--host") + 1] == "0.0.0.0"
    probe = services["telemon"]["healthcheck"]["test"]
    assert probe[:3] == ["CMD", "python", "-c"] and "/ready" in probe[3]
    ast.parse(probe[3])


def test_env_file_is_an_example_and_the_real_one_is_ignored() -> None:
    example = (DOCKER / ".env.example").read_text()
    assert re.search(r"^POSTGRES_PASSWORD=$", example, re.MULTILINE)  # no default password
    ignored = (DOCKER.parent / ".gitignore").read_text().splitlines()
    assert "/docker/.env" in ignored


def _instruction(dockerfile: str, name: str) -> str:
    """The last ``name`` instruction with its continuation lines joined."""
    joined = re.sub(r"\\\n\s*", " ", dockerfile)
    lines = [line for line in joined.splitlines() if line.startswith(f"{name} ")]
    assert lines, name
    return lines[-1][len(name) + 1 :]


def test_dockerfile_slim_non_root_with_a_python_healthcheck() -> None:
    dockerfile = (DOCKER / "Dockerfile").read_text()
    assert re.findall(r"^FROM (\S+)", dockerfile, re.MULTILINE) == [
        "python:3.11-slim",
        "python:3.11-slim",
    ]
    assert _instruction(dockerfile, "USER") == "telemon"
    healthcheck = _instruction(dockerfile, "HEALTHCHECK")
    exec_form = json.loads(healthcheck[healthcheck.index("CMD ") + 4 :])
    assert exec_form[:2] == ["python", "-c"] and "/health" in exec_form[2]
    ast.parse(exec_form[2])
    assert json.loads(_instruction(dockerfile, "ENTRYPOINT")) == ["telemon"]
    _parses(json.loads(_instruction(dockerfile, "CMD")))
    for path in ("service", "fhir_profiles", "migrations"):
        assert f"COPY {path} ./{path}" in dockerfile  # the code finds them beside the package
