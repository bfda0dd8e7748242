"""Metrics of one set of predictions against the truth, at every level of the taxonomy.

Predictions and truth meet in one frame (`PREDICTION_COLUMNS`), whoever made the predictions: the endpoint,
a baseline, or a hand-made test table.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, f1_score
from sklearn.preprocessing import MultiLabelBinarizer

from obs_platform.taxonomy import Taxonomy

# One row per observation. Attributes are taxonomy ids; levels are indices on the ordered scale.
PREDICTION_COLUMNS = {
    "observation_id": "string",
    "true_domain": "string",  # domain key
    "true_attribute": "int64",
    "true_level": "int64",
    "true_tags": "object",  # list[int]: every attribute the observation carries, primary first
    "pred_domain": "string",
    "pred_attribute": "int64",
    "pred_level": "int64",
    "pred_top_k": "object",  # list[int]: ranked attributes
    "pred_tags": "object",  # list[int]
    "confidence": "float64",  # of the predicted attribute
}
ECE_BINS = 10


def check_predictions(frame: pd.DataFrame) -> None:
    missing = sorted(set(PREDICTION_COLUMNS) - set(frame.columns))
    if missing:
        raise ValueError(f"prediction table lacks columns {missing}")


def expected_calibration_error(confidence: Sequence[float], correct: Sequence[bool], bins: int = ECE_BINS) -> float:
    """Mean gap between confidence and accuracy over equal-width confidence bins, weighted by bin size."""
    confidence, correct = np.asarray(confidence, dtype=float), np.asarray(correct, dtype=float)
    if confidence.size == 0:
        return 0.0
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    error = 0.0
    for b in range(bins):
        in_bin = which == b
        if in_bin.any():
            error += in_bin.mean() * abs(confidence[in_bin].mean() - correct[in_bin].mean())
    return float(error)


def _level_metrics(truth: Sequence[Any], predicted: Sequence[Any], names: dict[Any, str]) -> dict[str, Any]:
    labels = sorted(set(truth) | set(predicted), key=str)
    target_names = [names.get(label, str(label)) for label in labels]
    return {
        "accuracy": float(accuracy_score(truth, predicted)),
        "macro_f1": float(f1_score(truth, predicted, labels=labels, average="macro", zero_division=0)),
        "micro_f1": float(f1_score(truth, predicted, labels=labels, average="micro", zero_division=0)),
        "weighted_f1": float(f1_score(truth, predicted, labels=labels, average="weighted", zero_division=0)),
        "classification_report": classification_report(
            truth, predicted, labels=labels, target_names=target_names, output_dict=True, zero_division=0
        ),
        "confusion_matrix": {
            "labels": target_names,
            "matrix": confusion_matrix(truth, predicted, labels=labels).tolist(),
        },
    }


def evaluate_predictions(frame: pd.DataFrame, taxonomy: Taxonomy) -> dict[str, Any]:
    """Accuracy, macro/micro/weighted F1, per-class report and confusion matrix for domain, attribute and level;
    top-3 attribute accuracy, within-one-level accuracy, multi-label F1 over all tags, calibration error."""
    check_predictions(frame)
    domain_names = {d.key: d.name for d in taxonomy.domains}
    attribute_names = {a.id: a.name for d in taxonomy.domains for a in d.attributes}
    level_names = {i: level.title for i, level in enumerate(taxonomy.levels)}
    truth_attr, pred_attr = frame["true_attribute"].tolist(), frame["pred_attribute"].tolist()
    correct = [t == p for t, p in zip(truth_attr, pred_attr)]
    top3 = [t in list(k)[:3] for t, k in zip(truth_attr, frame["pred_top_k"])]
    level_gap = (frame["pred_level"] - frame["true_level"]).abs()
    tags = MultiLabelBinarizer()
    tags.fit([*frame["true_tags"], *frame["pred_tags"]])
    true_tags, pred_tags = tags.transform(frame["true_tags"]), tags.transform(frame["pred_tags"])
    return {
        "count": len(frame),
        "domain": _level_metrics(frame["true_domain"].tolist(), frame["pred_domain"].tolist(), domain_names),
        "attribute": {
            **_level_metrics(truth_attr, pred_attr, attribute_names),
            "top3_accuracy": float(np.mean(top3)) if len(frame) else 0.0,
        },
        "level": {
            **_level_metrics(frame["true_level"].tolist(), frame["pred_level"].tolist(), level_names),
            "within_one_accuracy": float((level_gap <= 1).mean()) if len(frame) else 0.0,
        },
        "tags": {
            "micro_f1": float(f1_score(true_tags, pred_tags, average="micro", zero_division=0)),
            "samples_f1": float(f1_score(true_tags, pred_tags, average="samples", zero_division=0)),
        },
        "calibration": {"attribute_ece": expected_calibration_error(frame["confidence"], correct)},
    }


def evaluate_domains(frame: pd.DataFrame, taxonomy: Taxonomy) -> dict[str, Any]:
    """Domain-level metrics only: for a set whose truth is a domain (the external comment bank)."""
    check_predictions(frame)
    names = {d.key: d.name for d in taxonomy.domains}
    return {"count": len(frame), **_level_metrics(frame["true_domain"].tolist(), frame["pred_domain"].tolist(), names)}


def macro_f1_difference_interval(
    truth: Sequence[Any], first: Sequence[Any], second: Sequence[Any], resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """95 % paired-bootstrap interval of macro-F1(first) − macro-F1(second) on the same observations: how far
    apart two systems really are on a small test split (61 notes over 17 classes move macro-F1 by ±0.15)."""
    labels, codes = np.unique(
        np.concatenate([np.asarray(v, dtype=object) for v in (truth, first, second)]).astype(str), return_inverse=True
    )
    truth_codes, first_codes, second_codes = np.split(codes, 3)
    rng = np.random.default_rng(seed)
    differences = np.empty(resamples)
    for index in range(resamples):
        sample = rng.integers(0, len(truth_codes), len(truth_codes))
        differences[index] = macro_f1(truth_codes[sample], first_codes[sample], len(labels)) - macro_f1(
            truth_codes[sample], second_codes[sample], len(labels)
        )
    low, high = np.percentile(differences, [2.5, 97.5])
    return float(low), float(high)


def macro_f1(truth: np.ndarray, predicted: np.ndarray, n_labels: int) -> float:
    """Macro-F1 over the labels that occur in either array, as scikit-learn's `f1_score(average="macro")` computes
    it, on integer codes: the bootstrap calls it thousands of times, where scikit-learn's checks cost ~1 ms each."""
    true_counts = np.bincount(truth, minlength=n_labels)
    predicted_counts = np.bincount(predicted, minlength=n_labels)
    hits = np.bincount(truth[truth == predicted], minlength=n_labels)
    present = (true_counts + predicted_counts) > 0
    return float(np.mean(2 * hits[present] / (true_counts + predicted_counts)[present]))


def domain_f1_table(metrics: dict[str, Any]) -> pd.DataFrame:
    """Per-domain precision, recall, F1 and support from an evaluation's domain report."""
    report = metrics["domain"]["classification_report"]
    rows = [
        {"domain": name, **{k: round(v, 3) if k != "support" else int(v) for k, v in values.items()}}
        for name, values in report.items()
        if isinstance(values, dict) and name not in ("macro avg", "weighted avg", "micro avg")
    ]
    return pd.DataFrame(rows)


def summary_row(metrics: dict[str, Any]) -> dict[str, float]:
    """The headline numbers of one evaluation: what the side-by-side table shows."""
    return {
        "attribute_accuracy": metrics["attribute"]["accuracy"],
        "attribute_macro_f1": metrics["attribute"]["macro_f1"],
        "attribute_top3": metrics["attribute"]["top3_accuracy"],
        "domain_macro_f1": metrics["domain"]["macro_f1"],
        "level_accuracy": metrics["level"]["accuracy"],
        "level_within_one": metrics["level"]["within_one_accuracy"],
        "tags_micro_f1": metrics["tags"]["micro_f1"],
    }
