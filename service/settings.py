"""All configuration in one place: environment variables with the ``TELEMON_`` prefix."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """telemon settings. Every field can be set as ``TELEMON_<FIELD_NAME>`` (upper case)."""

    model_config = SettingsConfigDict(env_prefix="TELEMON_", env_file=".env", extra="ignore")

    database_url: str = Field(
        default="sqlite:///telemon.sqlite",
        description="SQLAlchemy URL; an SQLite file (embedded default) or postgresql://…",
    )
    auth: Literal["open"] = Field(
        default="open",
        description="Authorization mode. 'open' (no authorization) only serves on loopback.",
    )
    base_url: str | None = Field(
        default=None,
        description="Public base URL of the FHIR endpoint (…/fhir); else taken from requests.",
    )
    timezone: str = Field(
        default="Europe/Amsterdam",
        description="Zone for search dates without an offset and for 'local day' logic.",
    )
    max_body_bytes: int = Field(default=5 * 1024 * 1024, description="Request body limit (413).")
    max_json_depth: int = Field(default=64, description="Deepest JSON nesting accepted.")
    bundle_max_entries: int = Field(default=1000, description="Most entries in one Bundle.")
    default_page_size: int = Field(default=50, description="Search page size without _count.")
    max_page_size: int = Field(default=500, description="Cap on _count.")
    clock_skew_seconds: int = Field(
        default=300, description="How far in the future an effective time may lie."
    )
    profiles_dir: Path = Field(
        default=Path(__file__).resolve().parent.parent / "fhir_profiles",
        description="Directory with the StructureDefinitions and other conformance resources.",
    )
    sqlite_synchronous: Literal["OFF", "NORMAL", "FULL", "EXTRA"] = Field(
        default="FULL", description="SQLite durability: FULL survives power loss with WAL."
    )
    db_pool_size: int = Field(default=10, description="PostgreSQL connection pool size.")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
