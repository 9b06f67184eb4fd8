"""Dutch citizen service number (BSN) check."""

from __future__ import annotations

BSN_SYSTEM = "http://fhir.nl/fhir/NamingSystem/bsn"

# 11-proef weights for the nine digits: 9..2, and -1 for the check digit.
_WEIGHTS = (9, 8, 7, 6, 5, 4, 3, 2, -1)


def is_valid_bsn(value: str) -> bool:
    """Whether ``value`` passes the BSN 11-proef.

    Nine ASCII digits (eight are accepted as a BSN that lost its leading zero), weighted sum
    divisible by 11, and not all zeros.
    """
    if not (value.isascii() and value.isdigit() and len(value) in (8, 9)):
        return False
    digits = value.zfill(9)
    if digits == "000000000":
        return False
    return sum(w * int(d) for w, d in zip(_WEIGHTS, digits, strict=True)) % 11 == 0
