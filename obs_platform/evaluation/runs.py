"""One evaluation run: a model version (through its endpoint) and the baselines on the same observations."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

import numpy as np
import pandas as pd
from tqdm import tqdm

from obs_platform.evaluation.baselines import BaselineModel
from obs_platform.evaluation.calibration import calibrate, softmax
from obs_platform.evaluation.frames import LabelledObservation, prediction_frame
from obs_platform.evaluation.metrics import evaluate_domains, evaluate_predictions, expected_calibration_error
from obs_platform.predictions import Calibration, Prediction
from obs_platform.taxonomy import Taxonomy

REQUEST_BATCH = 32


class Classifier(Protocol):
    """What evaluation asks a served model through (`obs_platform.serving.client.ObservationClassifier` is one)."""

    def classify_batch(self, items: Sequence[dict[str, Any]]) -> Sequence[Prediction]: ...


@dataclass(frozen=True)
class EvaluationSet:
    """The labelled observations an evaluation uses: the splits, and the external set when there is one."""

    train: list[LabelledObservation]
    valid: list[LabelledObservation]
    test: list[LabelledObservation]
    external: list[LabelledObservation] | None = None
    external_skipped: str | None = None  # why there is no external set

    @classmethod
    def from_split_records(cls, records: dict[str, list[dict]], **external: Any) -> EvaluationSet:
        def observations(name: str) -> list[LabelledObservation]:
            return [LabelledObservation.from_split_record(r) for r in records.get(name, [])]

        return cls(observations("train"), observations("valid"), observations("test"), **external)


@dataclass(frozen=True)
class SystemResult:
    """What one system (the model or a baseline) scored, with its prediction tables."""

    test_metrics: dict[str, Any]
    test_predictions: pd.DataFrame
    external_metrics: dict[str, Any] | None = None
    external_predictions: pd.DataFrame | None = None


def classify_all(client: Classifier, observations: Sequence[LabelledObservation]) -> list[Prediction]:
    """Predictions through the inference client, in request-sized batches (the serving path is what is measured)."""
    predictions: list[Prediction] = []
    # A bar on a terminal (`obs-platform run`, `evaluate`); nothing when stderr is a file or a Dagster log.
    for start in tqdm(range(0, len(observations), REQUEST_BATCH), desc="classifying", unit="batch", disable=None):
        batch = observations[start : start + REQUEST_BATCH]
        predictions += client.classify_batch(
            [
                {"notes": o.text, "child_age_months": o.child_age_months, "observation_date": o.observation_date}
                for o in batch
            ]
        )
    return predictions


def score(
    predict: Any, data: EvaluationSet, taxonomy: Taxonomy
) -> SystemResult:  # predict: observations -> predictions
    test = prediction_frame(data.test, predict(data.test), taxonomy)
    result = SystemResult(evaluate_predictions(test, taxonomy), test)
    if data.external:
        external = prediction_frame(data.external, predict(data.external), taxonomy)
        result = SystemResult(result.test_metrics, test, evaluate_domains(external, taxonomy), external)
    return result


def score_model(client: Classifier, data: EvaluationSet, taxonomy: Taxonomy) -> SystemResult:
    return score(lambda observations: classify_all(client, observations), data, taxonomy)


def score_baselines(
    baselines: Sequence[BaselineModel], data: EvaluationSet, taxonomy: Taxonomy
) -> dict[str, SystemResult]:
    """Each baseline fitted on train (its regularisation chosen on valid) and scored like the model."""
    return {b.name: score(b.fit(data.train, data.valid).predict, data, taxonomy) for b in baselines}


def fit_calibration(
    predictor: Any, data: EvaluationSet, taxonomy: Taxonomy, target_precision: float = 0.8
) -> Calibration:
    """Temperatures and domain thresholds fitted on the validation split (a `ClassifierPredictor`'s logits);
    the test split only reports how they carry over (ECE before/after, share and precision of confident tags)."""
    labels = predictor.labels

    def head_outputs(observations: list[LabelledObservation]) -> tuple[np.ndarray, np.ndarray]:
        outputs = predictor.logits([o.instance() for o in observations])
        return outputs["attribute"].numpy(), outputs["level"].numpy()

    def domains(attribute_logits: np.ndarray) -> list[str]:
        return [
            taxonomy.domain(taxonomy.attribute(labels.attributes[i]).domain_id).key for i in attribute_logits.argmax(-1)
        ]

    def attribute_index(observations: list[LabelledObservation]) -> np.ndarray:
        return np.array([labels.attributes.index(o.attribute) for o in observations])

    valid_attribute, valid_level = head_outputs(data.valid)
    fitted = calibrate(
        valid_attribute,
        valid_level,
        attribute_index(data.valid),
        np.array([labels.levels.index(o.level) for o in data.valid]),
        domains(valid_attribute),
        target_precision=target_precision,
    )
    test_attribute, _ = head_outputs(data.test)
    correct = test_attribute.argmax(-1) == attribute_index(data.test)
    before = softmax(test_attribute).max(-1)
    after = softmax(test_attribute, fitted.attribute_temperature).max(-1)
    confident = after >= np.array([fitted.threshold(d) for d in domains(test_attribute)])
    return replace(
        fitted,
        test={
            "examples": len(data.test),
            "attribute_ece_before": round(expected_calibration_error(before, correct), 4),
            "attribute_ece_after": round(expected_calibration_error(after, correct), 4),
            "confident_share": round(float(confident.mean()), 4),
            "confident_precision": round(float(correct[confident].mean()), 4) if confident.any() else None,
        },
    )
