"""Constant-time comparison of secrets that arrive as text (CSRF tokens, states).

``hmac.compare_digest`` raises ``TypeError`` when a ``str`` holds anything but ASCII, and a
form field or cookie can hold anything: compare their UTF-8 bytes instead.
"""

from __future__ import annotations

import hmac


def secrets_equal(given: str | None, expected: str | None) -> bool:
    """Whether ``given`` equals ``expected`` (constant time); False when either is missing."""
    if not given or not expected:
        return False
    return hmac.compare_digest(
        given.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass")
    )
