"""BSN 11-proef."""

from __future__ import annotations

import pytest

from service.validation import BSN_SYSTEM, is_valid_bsn


@pytest.mark.parametrize("value", ["123456782", "111222333", "999999990", "12345672"])
def test_valid_bsn(value: str) -> None:
    assert is_valid_bsn(value)


@pytest.mark.parametrize(
    "value",
    [
        "123456789",  # fails the 11-proef
        "000000000",  # all zeros pass the sum but are no BSN
        "00000000",
        "1234567",  # too short
        "1234567820",  # too long
        "12345678a",
        "12345 782",
        "١٢٣٤٥٦٧٨٢",  # Arabic-Indic digits are digits, but not ASCII
        "",
    ],
)
def test_invalid_bsn(value: str) -> None:
    assert not is_valid_bsn(value)


def test_eight_digits_are_left_padded() -> None:
    assert is_valid_bsn("12345672") == is_valid_bsn("012345672")


def test_system() -> None:
    assert BSN_SYSTEM == "http://fhir.nl/fhir/NamingSystem/bsn"
