"""What a rule returns: severity, readable text, evidence, the baseline and the limit used."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import IntEnum

from service.core.messages import message, method_text, quantity


class Severity(IntEnum):
    """Alert severity, ordered: info < orange < red (docs/alerts/engine.md#severity)."""

    INFO = 1
    ORANGE = 2
    RED = 3

    @property
    def label(self) -> str:
        """Lower-case name used in texts and data files."""
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Severity:
        """The severity named ``text`` (info/orange/red)."""
        return cls[text.upper()]


@dataclass(frozen=True, slots=True)
class Baseline:
    """The baseline a rule compared against, stored with the alert."""

    value: float
    unit: str
    method: str  # e.g. "clinician-set", "median 14 d excl. last 3 d"
    n: int = 0

    def shown(self, language: str) -> str:
        """The value with its unit (``78,1 kg``), for a text's headline."""
        return quantity(self.value, self.unit, language)

    def describe(self, language: str) -> str:
        """The detail line: ``Basiswaarde 78,1 kg (mediaan 14 d excl. laatste 3 d, n=9)``."""
        count = f", n={self.n}" if self.n else ""
        how = f"{self.shown(language)} ({method_text(self.method, language)}{count})"
        return message("alert.baseline", language, baseline=how)


@dataclass(frozen=True, slots=True)
class Limit:
    """The limit that fired, as the chart draws it and the Flag states it.

    ``op`` compares a value with ``value`` (the alert fires when ``value op limit`` holds);
    ``personal`` when it comes from the patient's own values or a clinician's Goal; ``since``
    for a limit relative to an earlier reading (a weight gain): drawn from then on.
    """

    concept: str
    op: str  # <, <=, >, >=
    value: float
    unit: str
    personal: bool = False
    since: datetime | None = None


@dataclass(frozen=True, slots=True)
class RuleResult:
    """A rule that qualifies at one evaluation point."""

    rule_id: str
    severity: Severity
    text: str  # the headline: finding, value with unit, limit, when
    evidence: tuple[str, ...]
    triggered_at: datetime
    baseline: Baseline | None = None
    # Texts of weaker rules merged into this one (one alert per merge group).
    reasons: tuple[str, ...] = field(default=())
    detail: str = ""  # how it was computed (baseline method, values), the Flag's second line
    limit: Limit | None = None
