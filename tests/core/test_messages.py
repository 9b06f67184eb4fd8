"""The message catalogue: both languages for every text, the same placeholders in each, and
numbers written the language's way."""

from __future__ import annotations

import string

import pytest

from service.alerts.rules import default_rule_set
from service.core.messages import (
    _CATALOGUE,
    limit_text,
    message,
    method_text,
    number,
    quantity,
    rule_title,
)


@pytest.mark.parametrize("key", sorted(_CATALOGUE))
def test_every_text_has_both_languages_with_the_same_placeholders(key: str) -> None:
    dutch, english = _CATALOGUE[key]
    assert dutch.strip() and english.strip()

    def fields(text: str) -> set[str]:
        return {name for _, name, _, _ in string.Formatter().parse(text) if name}

    assert fields(dutch) == fields(english)


def test_every_rule_has_a_title_in_both_languages() -> None:
    for rule in default_rule_set().rules:
        assert rule_title(rule.id, "nl") != rule.id
        assert rule_title(rule.id, "en") != rule.id


def test_numbers_units_and_limits() -> None:
    assert number(3.25, "nl") == "3,2" and number(3.0, "en") == "3"
    assert quantity(97, "/min", "nl") == "97/min" and quantity(86, "%", "en") == "86 %"
    assert quantity(-2.1, "kg", "nl", sign=True) == "-2,1 kg"
    assert limit_text(">=", 85.2, "/min", "nl", personal=True) == "persoonlijke grens ≥ 85,2/min"
    assert limit_text("<", 90, "%", "en", personal=False) == "limit < 90 %"
    assert message("days.many", "nl", n=3) == "3 dagen"


def test_baseline_methods_are_translated() -> None:
    method = "median 14 d excl. last 2 d, room air"
    assert method_text(method, "nl") == "mediaan 14 d excl. laatste 2 d, zonder extra zuurstof"
    assert method_text(method, "en") == method
    assert method_text("clinician-set", "nl") == "ingesteld door behandelaar"
