"""The cron gate: is a candidate at least as good as the reference, within a tolerance?"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GateResult:
    passed: bool
    metric: str
    candidate: str
    candidate_value: float
    reference: str
    reference_value: float
    tolerance: float

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
        )


def check(
    metric: str, candidate: tuple[str, float], reference: tuple[str, float], tolerance: float
) -> GateResult:
    """Pass unless the candidate is worse than the reference by more than ``tolerance`` (relative)."""
    floor = reference[1] * (1.0 - tolerance)
    return GateResult(
        candidate[1] >= floor, metric, candidate[0], candidate[1], reference[0], reference[1], tolerance
    )
