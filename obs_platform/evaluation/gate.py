"""The promotion rule: a retrained model never replaces a better one, and never serves below a baseline.

"Below the baseline" is the point estimate: a challenger whose test macro-F1 is below the baseline's (TF-IDF +
logistic regression, a 30-line script) is rejected, however wide the sampling noise. The burden of proof is on
the model: when the two cannot be told apart on the test split, the platform has no reason to serve the costlier
one. Recipes are chosen by repeated cross-validation (`benchmarks/recipes.py`), not by this gate, so a strict
gate does not turn test-split noise into recipe choices. The 95 % paired-bootstrap interval of the difference is
kept in the decision as information (about ±0.06 on the 161 test notes of the sample corpus): how far the
verdict could move on other notes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from obs_platform.training.registry import ModelRegistry, ModelVersion


class Outcome(StrEnum):
    PROMOTE = "promote"  # the challenger becomes the champion
    KEEP = "keep"  # the champion stays; the challenger is worse by more than the tolerance
    REJECT = "reject"  # the challenger is below the baseline floor: never served


@dataclass(frozen=True)
class PromotionDecision:
    outcome: Outcome
    reason: str
    challenger_f1: float
    champion_f1: float | None
    baseline_f1: float
    tolerance: float
    versus_baseline: tuple[float, float]  # 95 % interval of challenger − baseline macro-F1

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "outcome": self.outcome.value}


@dataclass(frozen=True)
class PromotionRule:
    """How a family's gate is set: the baseline a challenger must not fall below, and the macro-F1 it may lose
    against the champion and still replace it."""

    floor: str  # a baseline's name, or "none": no floor
    tolerance: float


class VersionDecision(BaseModel):
    """The gate's decision on one model version: the value an evaluation report hands on (through the I/O manager,
    as JSON) to what applies it."""

    model_config = ConfigDict(frozen=True)

    model_version: str  # the version's label
    decision: PromotionDecision


def apply_decision(models: ModelRegistry, version: ModelVersion, outcome: Outcome) -> None:
    """The gate's verdict on the registry: a promoted version becomes its family's champion, a kept one a
    challenger; a rejected one gets no alias."""
    if outcome is Outcome.PROMOTE:
        models.set_alias(version.name, "champion", version.version)
    elif outcome is Outcome.KEEP:
        models.set_alias(version.name, "challenger", version.version)


def decide(
    challenger_f1: float,
    champion_f1: float | None,
    baseline_f1: float,
    tolerance: float,
    versus_baseline: tuple[float, float],
) -> PromotionDecision:
    """Compare test macro-F1 (attribute level) of challenger, champion (None: there is none) and baseline."""

    def decision(outcome: Outcome, reason: str) -> PromotionDecision:
        return PromotionDecision(outcome, reason, challenger_f1, champion_f1, baseline_f1, tolerance, versus_baseline)

    low, high = versus_baseline
    if challenger_f1 < baseline_f1:
        return decision(
            Outcome.REJECT,
            f"macro-F1 {challenger_f1:.4f} is below the baseline's {baseline_f1:.4f} "
            f"(95 % interval of the difference {low:+.3f} to {high:+.3f})",
        )
    if champion_f1 is None:
        return decision(Outcome.PROMOTE, "there is no champion yet")
    if challenger_f1 < champion_f1 - tolerance:
        return decision(
            Outcome.KEEP,
            f"macro-F1 {challenger_f1:.4f} is worse than the champion's {champion_f1:.4f} by more than {tolerance}",
        )
    return decision(
        Outcome.PROMOTE, f"macro-F1 {challenger_f1:.4f} vs champion {champion_f1:.4f} (tolerance {tolerance})"
    )
