"""Starting telemon prints no warnings: importing and building the app, and ``telemon --help``.

Each runs in a fresh interpreter (modules imported anew) with every warning an error; stderr must
stay empty as well, because Authlib sets its own deprecation warnings to "always" (printed, never
raised, whatever ``-W`` or ``PYTHONWARNINGS`` says).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# OAuth with the OIDC broker: the configuration that loads and builds the most (Authlib's httpx
# client among it).
BUILD_APP = """
import sys
from pathlib import Path
from service.app import create_app
from service.settings import Settings
from service.storage import migrate
from service.storage.db import Database

url = f"sqlite:///{sys.argv[1]}"
db = Database(url)
migrate.upgrade(db)
create_app(Settings(
    database_url=url, auth="oauth", base_url="http://127.0.0.1:8000/fhir",
    identity_provider="oidc", oidc_issuer="http://127.0.0.1:9", oidc_client_id="telemon",
    oidc_client_secret="secret", profiles_dir=Path("fhir_profiles"),
), db=db)
db.dispose()
print("built")
"""


def _run(*command: str) -> subprocess.CompletedProcess[str]:
    """``command`` with every warning an error (``PYTHONWARNINGS`` reaches the console script)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELEMON_")}
    return subprocess.run(
        command, cwd=ROOT, env={**env, "PYTHONWARNINGS": "error"},
        capture_output=True, text=True, timeout=120,
    )


def test_importing_and_building_the_app_warns_nothing(tmp_path: Path) -> None:
    done = _run(sys.executable, "-c", BUILD_APP, str(tmp_path / "telemon.sqlite"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "built"
    assert done.stderr == ""


def test_telemon_help_warns_nothing() -> None:
    done = _run(str(Path(sys.executable).with_name("telemon")), "--help")
    assert done.returncode == 0, done.stderr
    assert "Usage" in done.stdout
    assert done.stderr == ""
