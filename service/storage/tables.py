"""The schema: current resource rows, superseded versions, and search-index rows.

Times are integers (microseconds since the Unix epoch, UTC) so that SQLite and PostgreSQL
compare and index them identically and exactly.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

#: The sort date of a resource without a date: it sorts first (ascending), last (descending).
NULL_DATE = -(2**62)

#: BIGINT on PostgreSQL; INTEGER on SQLite so that it aliases the rowid (autoincrement).
RowId = BigInteger().with_variant(Integer(), "sqlite")

resources = Table(
    "resources",
    metadata,
    Column("rid", RowId, primary_key=True, autoincrement=True),
    Column("res_type", String(64), nullable=False),
    Column("res_id", String(64), nullable=False),
    Column("version_id", Integer, nullable=False),
    Column("last_updated", BigInteger, nullable=False),
    Column("deleted", Boolean, nullable=False),
    Column("patient_id", String(64)),
    Column("date_low", BigInteger),
    Column("date_high", BigInteger),
    Column("content", Text),
    UniqueConstraint("res_type", "res_id", name="uq_resources_type_id"),
    Index("ix_resources_patient_date", "res_type", "patient_id", "date_low"),
    # "since <date>" filters on date_high (0005)
    Index("ix_resources_patient_recent", "res_type", "patient_id", "date_high"),
    Index("ix_resources_type_date", "res_type", "date_low"),
    Index("ix_resources_type_updated", "res_type", "last_updated"),
)

resource_history = Table(
    "resource_history",
    metadata,
    Column("rid", RowId, ForeignKey("resources.rid"), primary_key=True),
    Column("version_id", Integer, primary_key=True),
    Column("res_type", String(64), nullable=False),
    Column("last_updated", BigInteger, nullable=False),
    Column("deleted", Boolean, nullable=False),
    Column("content", Text),
    Index("ix_history_type_updated", "res_type", "last_updated"),
)


def _index_table(name: str, *columns: Column[Any], indexes: tuple[tuple[str, ...], ...]) -> Table:
    # No foreign key to resources (0011): index rows are written with their resource row, which
    # is never deleted, and the check cost PostgreSQL a lookup per index row.
    table = Table(
        name,
        metadata,
        Column("rid", RowId, nullable=False),
        Column("param", String(64), nullable=False),
        *columns,
    )
    for cols in indexes:
        Index(f"ix_{name}_{'_'.join(cols)}", *(table.c[c] for c in cols))
    return table


#: Token rows also carry their resource's type, patient, sort date (``coalesce(date_low,
#: NULL_DATE)``) and date_high, so "this patient's <code>, newest first" (a patient's weights,
#: $lastn, a patient's active Flags) is one range of one index whatever the planner's
#: statistics say (0010): both indexes that start with the code or the patient continue
#: with the other, then system, sort date and row id, so whichever the planner picks reads
#: only that patient's rows, newest first. Joining the resource row to filter by patient let a
#: planner without statistics scan every row of the code once per patient row.
sp_token = _index_table(
    "sp_token",
    Column("system", String(255)),
    Column("code", String(255), nullable=False),
    Column("res_type", String(64), nullable=False),
    Column("patient_id", String(64)),
    Column("sort_date", BigInteger, nullable=False),
    Column("date_high", BigInteger),
    indexes=(
        ("rid", "param", "code"),
        ("param", "code", "patient_id", "res_type", "system", "sort_date", "rid"),
        ("patient_id", "res_type", "param", "code", "system", "sort_date", "rid"),
    ),
)
sp_reference = _index_table(
    "sp_reference",
    Column("target_type", String(64), nullable=False),
    Column("target_id", String(64), nullable=False),
    indexes=(("rid", "param"), ("param", "target_id", "target_type")),
)
sp_date = _index_table(
    "sp_date",
    Column("low", BigInteger, nullable=False),
    Column("high", BigInteger, nullable=False),
    indexes=(("rid", "param"), ("param", "low"), ("param", "high")),
)
sp_quantity = _index_table(
    "sp_quantity",
    Column("value", Float, nullable=False),
    Column("system", String(255)),
    Column("code", String(64)),
    indexes=(("rid", "param"), ("param", "code", "value")),
)
sp_string = _index_table(
    "sp_string",
    Column("value", String(255), nullable=False),
    indexes=(("rid", "param"), ("param", "value")),
)

alert_episodes = Table(
    "alert_episodes",
    metadata,
    Column("alert_id", String(64), primary_key=True),
    Column("patient_id", String(64), nullable=False),
    Column("rule_id", String(64), nullable=False),
    Column("status", String(32), nullable=False),
    Column("updated", BigInteger, nullable=False),
    Column("state", Text, nullable=False),
    Index("ix_alert_episodes_patient", "patient_id", "updated"),
)

INDEX_TABLES = (sp_token, sp_reference, sp_date, sp_quantity, sp_string)
#: The tables a load of resources writes (``telemon import`` analyzes them afterwards).
RESOURCE_TABLES = (resources, resource_history, *INDEX_TABLES, alert_episodes)

# -- authorization server (service/auth) -------------------------------------------------------
# Times here are epoch seconds. Secrets, codes and refresh tokens are stored only as hashes.

oauth_clients = Table(
    "oauth_clients",
    metadata,
    Column("client_id", String(255), primary_key=True),
    Column("kind", String(16), nullable=False),  # "pgo" | "backend"
    Column("name", String(255), nullable=False),
    Column("secret_hash", String(128)),
    Column("redirect_uris", Text, nullable=False),  # JSON array
    Column("scope", Text, nullable=False),
    Column("jwks", Text),
    Column("jwks_url", String(2048)),
    Column("active", Boolean, nullable=False),
    Column("created", BigInteger, nullable=False),
)

oauth_codes = Table(
    "oauth_codes",
    metadata,
    Column("code_hash", String(64), primary_key=True),
    Column("client_id", String(255), nullable=False),
    Column("redirect_uri", Text, nullable=False),
    Column("scope", Text, nullable=False),
    Column("patient_id", String(64), nullable=False),
    Column("subject", String(255), nullable=False),
    Column("code_challenge", String(128), nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    Column("used", Boolean, nullable=False),
    # the patient's choice on the consent page (0009): long-term, until when (None: indefinite)
    Column("long_term", Boolean),
    Column("consent_ends_at", BigInteger),
)

oauth_tokens = Table(
    "oauth_tokens",
    metadata,
    Column("jti", String(64), primary_key=True),
    Column("client_id", String(255), nullable=False),
    Column("code_hash", String(64)),
    Column("scope", Text, nullable=False),
    Column("patient_id", String(64)),
    Column("expires_at", BigInteger, nullable=False),
    Column("revoked", Boolean, nullable=False),
    Index("ix_oauth_tokens_code", "code_hash"),
)

#: What a patient granted one PGO (service/auth/consent_records.py): this once, or long-term
#: until ``ends_at`` (None: indefinitely); ``status`` active | withdrawn | lapsed | revoked.
oauth_consents = Table(
    "oauth_consents",
    metadata,
    Column("consent_id", String(64), primary_key=True),
    Column("client_id", String(255), nullable=False),
    Column("patient_id", String(64), nullable=False),
    Column("subject", String(255), nullable=False),
    Column("scope", Text, nullable=False),
    Column("long_term", Boolean, nullable=False),
    Column("granted_at", BigInteger, nullable=False),
    Column("ends_at", BigInteger),
    Column("last_exchange_at", BigInteger, nullable=False),
    Column("status", String(16), nullable=False),
    Column("ended_at", BigInteger),
    Column("code_hash", String(64)),  # the authorization code it was granted with
    Index("ix_oauth_consents_patient", "patient_id", "status"),
    Index("ix_oauth_consents_code", "code_hash"),
    Index("ix_oauth_consents_lapse", "status", "long_term", "last_exchange_at"),
)

#: The rotating refresh tokens of long-term consents (hashes only); ``status`` active |
#: rotated (exchanged once: presenting it again revokes the family) | revoked.
oauth_refresh_tokens = Table(
    "oauth_refresh_tokens",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("consent_id", String(64), nullable=False),
    Column("client_id", String(255), nullable=False),
    Column("issued_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    Column("status", String(16), nullable=False),
    Index("ix_oauth_refresh_tokens_consent", "consent_id", "status"),
)

oauth_jti = Table(
    "oauth_jti",
    metadata,
    Column("issuer", String(255), primary_key=True),
    Column("jti", String(255), primary_key=True),
    Column("expires_at", BigInteger, nullable=False),
    Index("ix_oauth_jti_expires", "expires_at"),
)

#: Failure counters of the login and token rate limits (service/auth/rate_limits.py), shared by
#: every worker: one row per limited key (a keyed hash: no BSN or address in clear), counting
#: failures in the window that ends at ``window_end`` (Unix seconds).
rate_limits = Table(
    "rate_limits",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("failures", Integer, nullable=False),
    Column("window_end", BigInteger, nullable=False),
    Index("ix_rate_limits_window_end", "window_end"),
)

#: Revoked access tokens, clients and consents (service/auth/revocations.py): appended in
#: ``seq`` order, read incrementally by every worker, deleted once they can refuse no live token.
oauth_revocations = Table(
    "oauth_revocations",
    metadata,
    Column("seq", RowId, primary_key=True, autoincrement=True),
    Column("kind", String(16), nullable=False),  # token | client | consent
    Column("value", String(255), nullable=False),  # the jti, client_id or consent id
    Column("revoked_at", BigInteger, nullable=False),  # Unix seconds
    Column("expires_at", BigInteger, nullable=False),  # Unix seconds: no live token after it
)

server_keys = Table(
    "server_keys",
    metadata,
    Column("kid", String(64), primary_key=True),
    Column("private_jwk", Text, nullable=False),
    Column("created", BigInteger, nullable=False),
)

# -- FHIR Subscriptions (service/subscriptions) ------------------------------------------------
# Three tables, so that the three writers never wait for each other's row locks: alert
# transactions bump ``subscriptions.event_count`` and append ``subscription_events``; delivery
# workers lock ``subscription_delivery`` (for the length of an HTTP call on PostgreSQL); clients
# change ``subscriptions`` through the FHIR API. Times are microseconds since the epoch.

subscriptions = Table(
    "subscriptions",
    metadata,
    Column("subscription_id", String(64), primary_key=True),  # the Subscription's FHIR id
    Column("active", Boolean, nullable=False),  # False: the client set status 'off'
    Column("criteria", Text, nullable=False),
    Column("endpoint", String(2048), nullable=False),
    Column("content", String(16), nullable=False),  # empty | id-only | full-resource
    Column("headers", Text, nullable=False),  # JSON array of "Name: value" (secret)
    Column("secret", String(255)),  # HMAC signing secret (secret)
    Column("heartbeat_seconds", Integer, nullable=False),  # 0: no heartbeat
    Column("timeout_seconds", Float),  # None: the server's setting
    Column("max_count", Integer),  # None: the server's batch size
    Column("end_at", BigInteger),  # Subscription.end: no new events after it
    Column("revision", Integer, nullable=False),  # +1 on every client update
    Column("event_count", BigInteger, nullable=False),  # events since the subscription started
)

subscription_delivery = Table(
    "subscription_delivery",
    metadata,
    Column("subscription_id", String(64), primary_key=True),
    Column("delivered_through", BigInteger, nullable=False),  # highest event number delivered
    Column("status", String(16), nullable=False),  # active | error
    Column("failures", Integer, nullable=False),  # consecutive failed attempts
    Column("next_attempt_at", BigInteger, nullable=False),
    Column("last_sent_at", BigInteger, nullable=False),  # last successful send (heartbeats)
    Column("last_error", Text),
    Column("revision_seen", Integer, nullable=False),  # the config revision last attempted
    Column("lease_owner", String(64)),  # SQLite: the worker delivering now
    Column("lease_until", BigInteger),
)

subscription_events = Table(
    "subscription_events",
    metadata,
    Column("subscription_id", String(64), primary_key=True),
    Column("event_number", BigInteger, primary_key=True),
    Column("res_type", String(64), nullable=False),
    Column("res_id", String(64), nullable=False),
    Column("version_id", Integer, nullable=False),
    Column("created_at", BigInteger, nullable=False),
)

# -- Bulk Data export (service/bulk) -----------------------------------------------------------
# One row per $export job; its NDJSON files live in TELEMON_EXPORT_DIR/<job_id>/. Times are
# microseconds since the epoch.

export_jobs = Table(
    "export_jobs",
    metadata,
    Column("job_id", String(64), primary_key=True),
    Column("client_id", String(255)),  # who kicked it off (None in TELEMON_AUTH=open)
    Column("request_url", Text, nullable=False),  # the kick-off URL, for the manifest
    Column("params", Text, nullable=False),  # JSON: level, group, types, since, type filters
    # queued | running | completed | failed | cancelled
    Column("status", String(16), nullable=False),
    Column("progress", String(100)),
    Column("manifest", Text),  # JSON: output and error file items (when completed)
    Column("error", Text),  # why it failed
    Column("created_at", BigInteger, nullable=False),
    Column("transaction_time", BigInteger),
    Column("finished_at", BigInteger),
    Column("expires_at", BigInteger),  # completed/failed: files and row are swept after it
    Column("lease_owner", String(64)),  # the worker writing it
    Column("lease_until", BigInteger),
    Index("ix_export_jobs_status", "status", "lease_until"),
    Index("ix_export_jobs_client", "client_id", "status"),
)
