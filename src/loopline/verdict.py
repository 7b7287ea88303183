"""One verdict type for every quality gate (labels' agreement, a model against its champion).

A gate is a pure function that returns a ``GateVerdict``: every violated rule at once, plus notes that
qualify the verdict without failing it (e.g. "the test set is too small to tell"). The flow decides what
to do with it; ``raise_if_failed`` turns a failed verdict into one ``QualityGateFailed`` listing them all.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from loopline.errors import QualityGateFailed


@dataclass(frozen=True)
class GateVerdict:
    gate: str  # what was judged, e.g. "agreement", "model"
    violations: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def passed(self) -> bool:
        return not self.violations

    def summary(self) -> str:
        """One line for a report: passed, or failed with every violation."""
        return "passed" if self.passed else "**failed**: " + "; ".join(self.violations)

    def raise_if_failed(self, fix: str) -> None:
        """Raise ``QualityGateFailed`` naming every violated rule and ``fix`` (what a person can do)."""
        if self.passed:
            return
        listed = "\n".join(f"- {v}" for v in self.violations)
        raise QualityGateFailed(f"The {self.gate} gate failed:\n{listed}\nTo fix this, {fix}")
