"""Watching the served model from what the endpoint logged: how much it is asked and how fast it answers, whether
what it predicts still looks like what it learnt from, and how educators judge its suggestions.

Everything is read from the storage root (`serving/predictions/*.jsonl`, `serving/feedback/log.jsonl`), never from
another asset's metadata, and holds no note or name: the prediction log keeps a note's digest only.

Two warnings, each with its statistical reason (`MonitorSettings`):
- drift: the population stability index of the predicted ELGs in the window against the training split's. Under no
  drift `n · PSI` of `n` predictions over `k` labels is about χ²(k − 1) (PSI is a symmetric χ²-type divergence), so
  a small window shows a large PSI by chance alone; drift is judged only once the window holds enough predictions
  that its 99th no-drift percentile is below the threshold.
- acceptance: the served version's top-1 acceptance in the window against its test accuracy. It warns only when
  the 95 % Wilson interval's upper end lies more than the margin below the test accuracy: a handful of
  corrections is not evidence that the model got worse.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import orjson
import pandas as pd
from scipy.stats import chi2

from obs_platform.serving.feedback import FEEDBACK_LOG, read_feedback
from obs_platform.serving.prediction_log import PREDICTION_LOG_FOLDER
from obs_platform.storage import Storage
from obs_platform.taxonomy import Taxonomy

PSI_FLOOR = 1e-4  # a label never seen on one side counts as this share, so the index stays finite
FALSE_ALARM_RATE = 0.01  # how often a window with no drift may be judged drifting
WILSON_Z = 1.96
DAILY_COLUMNS = [
    "day",
    "predictions",
    "latency_p50_ms",
    "latency_p99_ms",
    "confident_share",
    "invalid_share",
    "domain_psi",
    "attribute_psi",
    "feedback",
    "accepted_top1",
    "accepted_top3",
    "corrected",
    "none_of_these",
    "top1_acceptance",
]


@dataclass(frozen=True)
class MonitorSettings:
    """When the monitor warns (defaults: `obs_platform.settings.Settings`, `OBS_PLATFORM_MONITOR_*`)."""

    drift_threshold: float  # PSI: under 0.1 stable, 0.1–0.25 a moderate shift, over 0.25 a major one
    acceptance_margin: float  # how far top-1 acceptance may fall below the test accuracy
    window_days: int  # the checks judge the last `window_days` days


def predictions_frame(storage: Storage) -> pd.DataFrame:
    """Every logged prediction: id, time, day, model version, the top attribute and its domain, the top-3, the
    confidence flags, status and latency. A line torn by a kill is skipped (its prediction was never answered)."""
    rows = []
    for path in storage.list_files(PREDICTION_LOG_FOLDER):
        if path.endswith(".jsonl"):
            rows.extend(_lines(storage.read_bytes(path)))
    frame = pd.DataFrame(
        rows,
        columns=[
            "prediction_id",
            "time",
            "model_version",
            "attribute_id",
            "top_k",
            "confident",
            "status",
            "latency_ms",
        ],
    )
    frame["domain"] = [top[0]["domain"] if top else "" for top in frame["top_k"]]
    frame["suggested"] = [tuple(s["attribute_id"] for s in top) for top in frame["top_k"]]
    frame["day"] = pd.to_datetime(frame["time"], unit="s", utc=True).dt.strftime("%Y-%m-%d")
    return frame.drop(columns="top_k").drop_duplicates("prediction_id")


def feedback_frame(storage: Storage, taxonomy: Taxonomy, predictions: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per feedback: its day, the model version, the domain of the suggestion it answered (`?` when the
    log no longer holds the prediction) and what the educator did: accepted the first suggestion, accepted one of
    the top 3, corrected, none of these."""
    predictions = predictions_frame(storage) if predictions is None else predictions
    suggested = dict(zip(predictions["prediction_id"], predictions["suggested"]))
    rows = []
    for record in read_feedback(storage.read_bytes(FEEDBACK_LOG) if storage.exists(FEEDBACK_LOG) else b""):
        top = next(iter(suggested.get(record.prediction_id, ())), 0)
        rows.append(
            {
                "day": pd.Timestamp(record.received_at, unit="s", tz="UTC").strftime("%Y-%m-%d"),
                "model_version": record.model_version,
                "domain": taxonomy.domain(taxonomy.attribute(top).domain_id).key if top else "?",
                "accepted_top1": record.choice == "accepted" and record.attribute_id == top,
                "accepted_top3": record.choice == "accepted",
                "corrected": record.choice == "corrected",
                "none_of_these": record.choice == "none_of_these",
            }
        )
    columns = ["day", "model_version", "domain", "accepted_top1", "accepted_top3", "corrected", "none_of_these"]
    return pd.DataFrame(rows, columns=columns)


def acceptance_table(feedback: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Feedback counted by `by`: accepted at top-1, within the top 3, corrected, none of these, and the share
    accepted at top-1 (what stands beside the evaluation's test accuracy)."""
    if feedback.empty:
        return pd.DataFrame(
            columns=[*by, "feedback", "accepted_top1", "accepted_top3", "corrected", "none_of_these", "top1_acceptance"]
        )
    table = feedback.groupby(by).agg(
        feedback=("accepted_top3", "size"),
        accepted_top1=("accepted_top1", "sum"),
        accepted_top3=("accepted_top3", "sum"),
        corrected=("corrected", "sum"),
        none_of_these=("none_of_these", "sum"),
    )
    table["top1_acceptance"] = (table["accepted_top1"] / table["feedback"]).round(3)
    return table.reset_index()


def feedback_table(storage: Storage, taxonomy: Taxonomy) -> pd.DataFrame:
    """Educators' verdicts per model version and per domain of the suggestion they answered."""
    return acceptance_table(feedback_frame(storage, taxonomy), ["model_version", "domain"])


def field_accuracy(feedback: pd.DataFrame, model_version: str) -> tuple[float | None, int]:
    """A version's accuracy in the field, from `feedback_frame`: the share of educators' feedback on its
    predictions that accepted its first suggestion (None with no feedback), and how much feedback that is."""
    mine = feedback[feedback["model_version"] == model_version]
    return (float(mine["accepted_top1"].mean()) if len(mine) else None), len(mine)


def population_stability_index(expected: pd.Series, actual: pd.Series) -> float:
    """PSI = Σ (a − e) · ln(a / e) over the labels of either count, each side as shares, floored at `PSI_FLOOR`."""
    labels = expected.index.union(actual.index)
    e = (expected.reindex(labels, fill_value=0) / max(expected.sum(), 1)).clip(lower=PSI_FLOOR)
    a = (actual.reindex(labels, fill_value=0) / max(actual.sum(), 1)).clip(lower=PSI_FLOOR)
    return float(((a - e) * np.log(a / e)).sum())


def drift_judgeable(predictions: int, labels: int, threshold: float) -> bool:
    """Whether `predictions` over `labels` are enough that a window with no drift stays under `threshold` but for
    `FALSE_ALARM_RATE` of the time (`n · PSI` ≈ χ²(labels − 1) under no drift)."""
    return predictions > 0 and chi2.ppf(1 - FALSE_ALARM_RATE, max(labels - 1, 1)) / predictions <= threshold


def wilson_interval(successes: int, trials: int) -> tuple[float, float]:
    if trials == 0:
        return 0.0, 1.0
    p, n, z = successes / trials, trials, WILSON_Z
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class CheckVerdict:
    passed: bool
    description: str
    figures: dict[str, float | int | str | None] = field(default_factory=dict)


@dataclass(frozen=True)
class MonitorReport:
    daily: pd.DataFrame  # DAILY_COLUMNS, one row per day with a prediction or a feedback
    window: dict[str, float | int | None]  # the window's headline figures
    distribution: pd.DataFrame  # domain, train_share, served_share (the window)
    acceptance_by_domain: pd.DataFrame  # the window's feedback per domain (all versions)
    drift: CheckVerdict
    acceptance: CheckVerdict


def monitor_report(
    storage: Storage,
    taxonomy: Taxonomy,
    training_splits: pd.DataFrame,
    settings: MonitorSettings,
    served_version: str | None,
    test_accuracy: float | None,
    today: str,
) -> MonitorReport:
    """The monitor's figures up to `today` (`YYYY-MM-DD`, UTC) and its two verdicts. `served_version` and its
    `test_accuracy` come from the served-model decision (None: no decision yet, acceptance not judged)."""
    predictions = predictions_frame(storage)
    feedback = feedback_frame(storage, taxonomy, predictions)
    train = training_splits[training_splits["split"] == "train"]
    train_attributes = train["attribute_id"].astype(int).value_counts()
    train_domains = _domain_keys(train["attribute_id"], taxonomy).value_counts()
    first_day = (pd.Timestamp(today) - pd.Timedelta(days=settings.window_days - 1)).strftime("%Y-%m-%d")
    recent = predictions[(predictions["day"] >= first_day) & (predictions["day"] <= today)]
    recent_feedback = feedback[(feedback["day"] >= first_day) & (feedback["day"] <= today)]
    labelled = recent[recent["status"] != "invalid"]
    served_domains = labelled["domain"].value_counts()
    attribute_psi = (
        population_stability_index(train_attributes, labelled["attribute_id"].value_counts()) if len(labelled) else None
    )
    window = {
        "first_day": first_day,
        "last_day": today,
        **_figures(recent),
        "domain_psi": population_stability_index(train_domains, served_domains) if len(labelled) else None,
        "attribute_psi": attribute_psi,
        **_feedback_figures(recent_feedback),
    }
    distribution = (
        pd.DataFrame(
            {
                "train_share": (train_domains / max(train_domains.sum(), 1)).round(3),
                "served_share": (served_domains / max(served_domains.sum(), 1)).round(3),
            }
        )
        .fillna(0.0)
        .rename_axis("domain")
        .reset_index()
    )
    return MonitorReport(
        daily=_daily(predictions, feedback, train_attributes, train_domains),
        window=window,
        distribution=distribution,
        acceptance_by_domain=acceptance_table(recent_feedback, ["domain"]),
        drift=_drift_verdict(len(labelled), attribute_psi, len(taxonomy.attributes), settings.drift_threshold),
        acceptance=_acceptance_verdict(recent_feedback, served_version, test_accuracy, settings.acceptance_margin),
    )


def _drift_verdict(predictions: int, psi: float | None, labels: int, threshold: float) -> CheckVerdict:
    figures = {
        "predictions": predictions,
        "attribute_psi": round(psi, 4) if psi is not None else None,
        "threshold": threshold,
    }
    if psi is None or not drift_judgeable(predictions, labels, threshold):
        needed = math.ceil(chi2.ppf(1 - FALSE_ALARM_RATE, labels - 1) / threshold)
        return CheckVerdict(
            True,
            f"{predictions} predictions in the window: too few to judge drift over {labels} ELGs (needs {needed})",
            figures,
        )
    if psi > threshold:
        return CheckVerdict(
            False,
            f"the predicted ELGs drifted from the training split: PSI {psi:.3f} > "
            f"{threshold} over {predictions} predictions",
            figures,
        )
    return CheckVerdict(True, f"PSI {psi:.3f} ≤ {threshold} over {predictions} predictions", figures)


def _acceptance_verdict(
    feedback: pd.DataFrame, version: str | None, test_accuracy: float | None, margin: float
) -> CheckVerdict:
    if version is None or test_accuracy is None:
        return CheckVerdict(True, "no served-model decision with a test accuracy yet: acceptance not judged")
    mine = feedback[feedback["model_version"] == version]
    accepted, total = int(mine["accepted_top1"].sum()), len(mine)
    low, high = wilson_interval(accepted, total)
    figures = {
        "model_version": version,
        "feedback": total,
        "top1_acceptance": round(accepted / total, 4) if total else None,
        "interval_high": round(high, 4),
        "test_accuracy": round(test_accuracy, 4),
        "margin": margin,
    }
    if total == 0:
        return CheckVerdict(True, f"no feedback on {version} in the window", figures)
    shown = f"{accepted}/{total} accepted at top-1 ({accepted / total:.1%}, 95% interval {low:.1%}–{high:.1%})"
    if high < test_accuracy - margin:
        return CheckVerdict(
            False, f"{version}: {shown}, below its test accuracy {test_accuracy:.1%} by more than {margin:.0%}", figures
        )
    return CheckVerdict(True, f"{version}: {shown}; test accuracy {test_accuracy:.1%}", figures)


def _daily(
    predictions: pd.DataFrame, feedback: pd.DataFrame, train_attributes: pd.Series, train_domains: pd.Series
) -> pd.DataFrame:
    days = sorted(set(predictions["day"]) | set(feedback["day"]))
    rows = []
    for day in days:
        logged = predictions[predictions["day"] == day]
        labelled = logged[logged["status"] != "invalid"]
        rows.append(
            {
                "day": day,
                **_figures(logged),
                "domain_psi": population_stability_index(train_domains, labelled["domain"].value_counts())
                if len(labelled)
                else None,
                "attribute_psi": population_stability_index(train_attributes, labelled["attribute_id"].value_counts())
                if len(labelled)
                else None,
                **_feedback_figures(feedback[feedback["day"] == day]),
            }
        )
    return pd.DataFrame(rows, columns=DAILY_COLUMNS)


def _figures(predictions: pd.DataFrame) -> dict[str, float | int | None]:
    if predictions.empty:
        return {
            "predictions": 0,
            "latency_p50_ms": None,
            "latency_p99_ms": None,
            "confident_share": None,
            "invalid_share": None,
        }
    latency = predictions["latency_ms"].astype(float)
    return {
        "predictions": len(predictions),
        "latency_p50_ms": round(float(latency.quantile(0.5)), 1),
        "latency_p99_ms": round(float(latency.quantile(0.99)), 1),
        "confident_share": round(float(predictions["confident"].astype(bool).mean()), 3),
        "invalid_share": round(float((predictions["status"] == "invalid").mean()), 3),
    }


def _feedback_figures(feedback: pd.DataFrame) -> dict[str, float | int | None]:
    counts = {
        name: int(feedback[name].sum()) for name in ("accepted_top1", "accepted_top3", "corrected", "none_of_these")
    }
    total = len(feedback)
    return {
        "feedback": total,
        **counts,
        "top1_acceptance": round(counts["accepted_top1"] / total, 3) if total else None,
    }


def _domain_keys(attribute_ids: Iterable[int], taxonomy: Taxonomy) -> pd.Series:
    return pd.Series([taxonomy.domain(taxonomy.attribute(int(a)).domain_id).key for a in attribute_ids], dtype=str)


def _lines(data: bytes) -> list[dict]:
    rows = []
    for line in data.splitlines():
        try:
            rows.append(orjson.loads(line))
        except orjson.JSONDecodeError:
            continue
    return rows
