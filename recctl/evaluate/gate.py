"""The cron gate: is a candidate at least as good as the reference, within a tolerance?"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class GateResult:
    passed: bool
    metric: str
    candidate: str
    candidate_value: float
    reference: str
    reference_value: float
    tolerance: float
    note: str = ""  # e.g. that the reference was re-fitted with settings other than the current ones

    @property
    def reason(self) -> str:
        rel = (
            (self.candidate_value - self.reference_value) / self.reference_value
            if self.reference_value
            else 0.0
        )
        verdict = "passes" if self.passed else "fails"
        return (
            f"gate {verdict}: {self.candidate} {self.metric} {self.candidate_value:.4f} vs "
            f"{self.reference} {self.reference_value:.4f} ({rel:+.1%}; tolerance -{self.tolerance:.0%})"
            + (f"; {self.note}" if self.note else "")
        )


def check(
    metric: str, candidate: tuple[str, float], reference: tuple[str, float], tolerance: float, note: str = ""
) -> GateResult:
    """Pass unless the candidate is worse than the reference by more than ``tolerance`` (relative)."""
    floor = reference[1] * (1.0 - tolerance)
    return GateResult(
        candidate[1] >= floor, metric, candidate[0], candidate[1], reference[0], reference[1], tolerance, note
    )


MODEL_SECTIONS = ("candidates", "ranker", "prepare", "rules", "features", "evaluate", "seed")


def settings_diff(
    old: dict[str, Any], new: dict[str, Any], sections: tuple[str, ...] = MODEL_SECTIONS
) -> list[str]:
    """The dotted keys of the model settings where two resolved configs differ (the reference run's own
    settings against the current ones), sorted."""

    def flat(d: Any, prefix: str) -> dict[str, Any]:
        if isinstance(d, dict):
            out: dict[str, Any] = {}
            for k, v in d.items():
                out |= flat(v, f"{prefix}.{k}" if prefix else str(k))
            return out
        if isinstance(d, list) and d and all(isinstance(x, dict) and "name" in x for x in d):
            return flat({str(x["name"]): x for x in d}, prefix)
        return {prefix: d}

    a = flat({k: old.get(k) for k in sections}, "")
    b = flat({k: new.get(k) for k in sections}, "")
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
