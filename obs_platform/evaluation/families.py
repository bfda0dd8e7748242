"""Model families side by side: each family's champion (the open-source classifier, the tuned Gemini) summarised
on one evaluation's data, and the decision which family the inference client uses by default.

A family's summary is stored with its version (`summary_path`) when that version is evaluated, so the decision is
made from the registry's champions and their stored figures, never from another asset's metadata. The choice is
evaluation's; where the chosen model answers, and the record clients follow, are serving's
(`obs_platform.serving.served`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel


class FamilySummary(BaseModel):
    """One version's test figures and cost, as the served-model decision compares them."""

    family: str  # "open-source" or "gemini"
    model_version: str
    data_key: str
    test_examples: int
    attribute_macro_f1: float
    attribute_accuracy: float
    domain_macro_f1: float
    invalid_rate: float  # answers that named no label (0 for a classifier)
    usd_per_1000_predictions: float | None  # None: no price configured
    cost_basis: str  # how the cost was reckoned, for the person reading the decision


def summary_path(version_folder: str, data_key: str) -> str:
    """Where a version's summary on one evaluation's data is stored, beside the version in the registry."""
    return f"{version_folder}/evaluation/summary-{data_key}.json"


@dataclass(frozen=True)
class FamilyChoice:
    """Which family's champion the inference client should use by default, and why."""

    family: str
    model_version: str
    reason: str
    compared: tuple[dict[str, Any], ...]  # every family's summary, best first


def decide_served_model(champions: list[FamilySummary], tolerance: float) -> FamilyChoice:
    """The family whose champion tags best (test ELG macro-F1, the metric the promotion gate judges), unless a
    cheaper family's champion is within `tolerance` of it: then the cheaper one.

    Quality comes first because a wrong suggestion costs an educator the minutes the platform exists to save; the
    tolerance is the gate's own "as good as" (the macro-F1 a challenger may lose and still replace a champion), so
    price decides only between models the gate would treat as equal. A family with no price configured never wins
    on price.
    """
    if not champions:
        raise ValueError("no family has an evaluated champion")
    ranked = sorted(champions, key=lambda s: s.attribute_macro_f1, reverse=True)
    best = ranked[0]
    compared = tuple(s.model_dump() for s in ranked)
    if len(ranked) == 1:
        only = f"{best.family} is the only family evaluated (ELG macro-F1 {best.attribute_macro_f1:.3f})"
        return FamilyChoice(best.family, best.model_version, only, compared)
    cheaper = [
        s
        for s in ranked[1:]
        if best.attribute_macro_f1 - s.attribute_macro_f1 <= tolerance
        and s.usd_per_1000_predictions is not None
        and best.usd_per_1000_predictions is not None
        and s.usd_per_1000_predictions < best.usd_per_1000_predictions
    ]
    runner_up = ranked[1]
    if cheaper:
        chosen = min(cheaper, key=lambda s: s.usd_per_1000_predictions or 0.0)
        return FamilyChoice(
            chosen.family,
            chosen.model_version,
            f"{chosen.family} is within {tolerance} ELG macro-F1 of {best.family} "
            f"({chosen.attribute_macro_f1:.3f} vs {best.attribute_macro_f1:.3f}) and cheaper: "
            f"{_usd(chosen)} vs {_usd(best)} per 1,000 predictions",
            compared,
        )
    return FamilyChoice(
        best.family,
        best.model_version,
        f"{best.family} tags better: ELG macro-F1 {best.attribute_macro_f1:.3f} vs {runner_up.attribute_macro_f1:.3f} "
        f"for {runner_up.family} ({best.attribute_macro_f1 - runner_up.attribute_macro_f1:+.3f}, more than the "
        f"tolerance {tolerance}); per 1,000 predictions {_usd(best)} vs {_usd(runner_up)}",
        compared,
    )


def _usd(summary: FamilySummary) -> str:
    cost = summary.usd_per_1000_predictions
    return "no price configured" if cost is None else f"${cost:.4f}"
