"""What a rule returns: severity, readable text, evidence and the baseline used."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import IntEnum


class Severity(IntEnum):
    """Alert severity, ordered: info < orange < red (§3.1)."""

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
    """The baseline a rule compared against, stored with the alert (§3.5)."""

    value: float
    unit: str
    method: str  # e.g. "clinician-set", "median 14 d excl. last 3 d"
    n: int = 0

    def describe(self) -> str:
        """Human text such as ``78.1 kg (median 14 d excl. last 3 d, n=9)``."""
        count = f", n={self.n}" if self.n else ""
        return f"{self.value:.1f} {self.unit} ({self.method}{count})"


@dataclass(frozen=True, slots=True)
class RuleResult:
    """A rule that qualifies at one evaluation point."""

    rule_id: str
    severity: Severity
    text: str
    evidence: tuple[str, ...]
    triggered_at: datetime
    baseline: Baseline | None = None
    # Texts of weaker rules merged into this one (§3.2(6)).
    reasons: tuple[str, ...] = field(default=())
