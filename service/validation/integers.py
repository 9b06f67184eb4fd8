"""Unsigned integers written in request text: query parameters, path segments, form fields.

``str.isdigit()`` is true for ``'²'`` and ``'٣'`` too, and ``int()`` then raises or reads a
non-ASCII digit; ``int()`` also refuses more than 4300 digits, and a large number overflows a
database integer. Every such value is read here instead: ASCII digits only, bounded.
"""

from __future__ import annotations

import re

#: The largest values a database INTEGER and BIGINT hold (both backends).
MAX_INT = 2**31 - 1
MAX_BIGINT = 2**63 - 1

_DIGITS = re.compile(r"[0-9]+")


def parse_unsigned(
    text: str | None, *, maximum: int = MAX_BIGINT, clamp: bool = False
) -> int | None:
    """The value of ``text`` when it is ASCII digits only, else None.

    A value above ``maximum`` is None, or ``maximum`` itself with ``clamp`` (a ``_count`` of
    10**30 asks for as many as the server gives).
    """
    if text is None or not _DIGITS.fullmatch(text):
        return None
    significant = text.lstrip("0")
    if len(significant) > len(str(maximum)) or int(significant or "0") > maximum:
        return maximum if clamp else None
    return int(significant or "0")
