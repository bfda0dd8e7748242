"""Calibrated confidences and per-domain thresholds, fitted on the validation split only.

Temperature scaling divides a head's logits by one number chosen to minimise the validation negative
log-likelihood: the ranking (and so every prediction) is unchanged, only the confidences move towards
the accuracy they stand for. A suggestion is then `confident` when its calibrated probability reaches its
domain's threshold: the lowest one at which the validation suggestions of that domain were right at least
`target_precision` of the time (domains with too few validation examples never mark a tag confident).
"""

from __future__ import annotations

import numpy as np

from obs_platform.evaluation.metrics import expected_calibration_error
from obs_platform.predictions import Calibration

TEMPERATURES = np.exp(np.linspace(np.log(0.05), np.log(20.0), 400))


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    scaled = logits / temperature
    scaled = scaled - scaled.max(axis=-1, keepdims=True)
    exp = np.exp(scaled)
    return exp / exp.sum(axis=-1, keepdims=True)


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature with the lowest negative log-likelihood of the true labels (a fine grid: robust, fast)."""
    if len(labels) == 0:
        return 1.0
    rows = np.arange(len(labels))

    def nll(t: float) -> float:
        return float(-np.log(softmax(logits, t)[rows, labels] + 1e-12).mean())

    return float(min(TEMPERATURES, key=nll))


def domain_thresholds(
    confidence: np.ndarray, correct: np.ndarray, domains: list[str], target_precision: float, min_support: int
) -> dict[str, float]:
    thresholds: dict[str, float] = {}
    for domain in sorted(set(domains)):
        mine = np.array([d == domain for d in domains])
        conf, right = confidence[mine], correct[mine]
        chosen = 1.01  # never confident
        if mine.sum() >= min_support:
            for threshold in sorted(set(conf.round(4))):
                above = conf >= threshold
                if above.sum() >= 3 and right[above].mean() >= target_precision:
                    chosen = float(threshold)
                    break
        thresholds[domain] = chosen
    return thresholds


def calibrate(
    attribute_logits: np.ndarray,
    level_logits: np.ndarray,
    attribute_labels: np.ndarray,
    level_labels: np.ndarray,
    predicted_domains: list[str],
    target_precision: float = 0.8,
    min_support: int = 5,
) -> Calibration:
    """Fit temperatures and thresholds on validation logits (label arguments are class indices of each head)."""
    attribute_t = fit_temperature(attribute_logits, attribute_labels)
    level_t = fit_temperature(level_logits, level_labels)
    before, after = softmax(attribute_logits), softmax(attribute_logits, attribute_t)
    correct = before.argmax(-1) == attribute_labels
    confidence = after.max(-1)
    return Calibration(
        attribute_temperature=round(attribute_t, 4),
        level_temperature=round(level_t, 4),
        thresholds=domain_thresholds(confidence, correct, predicted_domains, target_precision, min_support),
        target_precision=target_precision,
        validation={
            "examples": int(len(attribute_labels)),
            "attribute_ece_before": round(expected_calibration_error(before.max(-1), correct), 4),
            "attribute_ece_after": round(expected_calibration_error(confidence, correct), 4),
        },
    )
