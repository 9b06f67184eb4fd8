"""Rate limits on failed logins and failed token requests (brute force, BSN enumeration).

Each attempt is counted under several keys, each with its own allowance of failures per window
(``TELEMON_RATE_LIMIT_WINDOW_SECONDS``):

- patient login (``POST /oauth/login``, the simulated DigiD): per source address, per BSN from
  that address, and per PGO client over all addresses;
- clinician login (``POST /dashboard/login``, the simulated UZI login): per source address and
  per UZI number from that address;
- token requests (``POST /oauth/token``): per source address and per client from that address.

An identifier (BSN, UZI number, client) is counted together with the address it is tried
from: failures elsewhere never lock a patient, clinician or client out of their own address,
while the per-address key stops one address trying many identifiers. (The exception is the
per-app allowance of patient logins: a high ceiling on enumeration from many addresses.) Only
failures count (successes never lock anyone out). Once a key has used its allowance, attempts
are refused (429 with ``Retry-After``) until its window ends, without being checked.

The counters live in the database (:mod:`service.storage.rate_limits`), so every worker and
every process shares them. Keys are stored as keyed hashes (HMAC with a secret derived from the
server key): no BSN, UZI number or address is written in clear.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from service.auth.tokens import load_or_create_key
from service.settings import Settings
from service.storage import rate_limits as store
from service.storage.db import Database

#: Longest identifier part of a key that is kept (longer input is someone else's problem).
_MAX_PART = 255


@dataclass(frozen=True, slots=True)
class Limit:
    """One counter: at most ``allowed`` failures per window under ``key`` (0: unlimited)."""

    what: str  # for people: "failed logins from this address"
    key: str
    allowed: int


@dataclass(frozen=True, slots=True)
class Blocked:
    """An attempt refused: which allowance is used up, and for how many more seconds."""

    what: str
    retry_after: int

    def describe(self) -> str:
        """For the audit trail and messages."""
        return f"429 too many {self.what}; retry after {self.retry_after} s"

    @property
    def minutes(self) -> int:
        """``retry_after`` in whole minutes, rounded up (for people)."""
        return -(-self.retry_after // 60)

    @property
    def header(self) -> dict[str, str]:
        """The ``Retry-After`` header of the 429."""
        return {"Retry-After": str(self.retry_after)}


class RateLimiter:
    """Checks and counts failures against the limits in the settings."""

    def __init__(
        self, db: Database, settings: Settings, clock: Callable[[], float] = time.time
    ) -> None:
        self.db = db
        self.settings = settings
        self.clock = clock  # tests pin it
        self._secret: bytes | None = None

    # -- the limits of each endpoint ---------------------------------------------------------

    def patient_login(self, address: str, bsn: str, client_id: str | None) -> list[Limit]:
        """Limits of the simulated DigiD login."""
        per_client = Limit(
            "failed logins through this app",
            f"patient-login|client|{client_id}",
            self.settings.login_failures_per_client,
        )
        return [*self._login("patient-login", "BSN", address, bsn), per_client]

    def clinician_login(self, address: str, uzi: str) -> list[Limit]:
        """Limits of the dashboard's simulated UZI login."""
        return self._login("clinician-login", "UZI number", address, uzi)

    def _login(self, kind: str, noun: str, address: str, identifier: str) -> list[Limit]:
        """Per address, and per identifier (``noun``) from that address."""
        s = self.settings
        return [
            Limit(
                "failed logins from this address",
                f"{kind}|addr|{address}",
                s.login_failures_per_address,
            ),
            Limit(
                f"failed logins with this {noun} from this address",
                f"{kind}|id|{identifier.strip()[:_MAX_PART]}|{address}",
                s.login_failures_per_identifier,
            ),
        ]

    def token(self, address: str, client_id: str | None) -> list[Limit]:
        """Limits of the token endpoint."""
        s = self.settings
        return [
            Limit(
                "failed token requests from this address",
                f"token|addr|{address}",
                s.token_failures_per_address,
            ),
            Limit(
                "failed token requests for this client from this address",
                f"token|client|{(client_id or '')[:_MAX_PART]}|{address}",
                s.token_failures_per_client,
            ),
        ]

    # -- checking and counting ---------------------------------------------------------------

    def check(self, limits: Sequence[Limit]) -> Blocked | None:
        """Whether an attempt is refused: some allowance is used up in its current window."""
        active = [lim for lim in limits if lim.allowed > 0]
        if not active:
            return None
        now = self._now()
        keys = {self._hashed(lim.key): lim for lim in active}
        with self.db.read() as conn:
            counts = store.current(conn, list(keys), now)
        over = [
            (keys[key], window_end)
            for key, (failures, window_end) in counts.items()
            if failures >= keys[key].allowed
        ]
        return _blocked(over, now)

    def failed(self, limits: Sequence[Limit]) -> Blocked | None:
        """Count a failed attempt under every key; Blocked when it went over an allowance
        (attempts that raced past :meth:`check` together: the answer is then withheld)."""
        active = [lim for lim in limits if lim.allowed > 0]
        if not active:
            return None
        now = self._now()
        window = self.settings.rate_limit_window_seconds
        over = []
        with self.db.write() as conn:
            store.purge(conn, now)
            for lim in active:
                failures, window_end = store.count_failure(conn, self._hashed(lim.key), now, window)
                if failures > lim.allowed:
                    over.append((lim, window_end))
        return _blocked(over, now)

    def _now(self) -> int:
        return int(self.clock())

    def _hashed(self, key: str) -> str:
        if self._secret is None:
            private = load_or_create_key(self.db).as_dict(private=True)["d"]
            self._secret = hashlib.sha256(f"telemon rate limits|{private}".encode()).digest()
        return hmac.new(self._secret, key.encode(), hashlib.sha256).hexdigest()


def _blocked(over: list[tuple[Limit, int]], now: int) -> Blocked | None:
    if not over:
        return None
    limit, window_end = max(over, key=lambda item: item[1])
    return Blocked(limit.what, max(1, window_end - now))
