"""Helpers for the rate-limit tests: two source addresses and a pinned clock."""

from __future__ import annotations

from fastapi.testclient import TestClient

from service.auth.rate_limits import RateLimiter

T0 = 1_800_000_000  # the pinned clock's start (2027-01-15); any moment would do
ATTACKER = ("203.0.113.66", 40000)
PATIENT = ("198.51.100.7", 40001)


class Clock:
    """A pinned clock for the limiter: it moves only when the test says so."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return float(self.now)


def pin(client: TestClient) -> Clock:
    """Pin the clock of ``client``'s app's rate limiter (at :data:`T0`)."""
    clock = Clock()
    limiter: RateLimiter = client.app.state.telemon.limiter  # type: ignore[attr-defined]
    limiter.clock = clock
    return clock


def from_address(client: TestClient, address: tuple[str, int]) -> TestClient:
    """``client``'s app as seen from ``address``."""
    return TestClient(client.app, base_url="http://testserver", client=address)
