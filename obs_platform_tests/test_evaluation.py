"""Evaluation: metrics on hand-made predictions with known answers, calibration, the report's schema,
baselines, the external set, and the promotion rule's three outcomes."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score

from obs_platform.evaluation import gate
from obs_platform.evaluation.baselines import majority, tfidf_logistic
from obs_platform.evaluation.calibration import calibrate, fit_temperature, softmax
from obs_platform.evaluation.external import ExternalSetError, load_comment_bank
from obs_platform.evaluation.frames import LabelledObservation, prediction_frame
from obs_platform.evaluation.metrics import (
    evaluate_domains,
    evaluate_predictions,
    expected_calibration_error,
    macro_f1,
    macro_f1_difference_interval,
    summary_row,
)
from obs_platform.evaluation.plots import confusion_matrix_png
from obs_platform.evaluation.report import build_report, markdown_summary
from obs_platform.evaluation.runs import EvaluationSet
from obs_platform.predictions import Calibration, Prediction, Suggestion

COMMENT_BANK = Path(__file__).resolve().parents[1].parent / "shared" / "eval" / "eyfs_comment_bank.csv"


def _attribute(eyfs, name):
    return next(a for d in eyfs.domains for a in d.attributes if a.name == name)


def _prediction(eyfs, name, level, confidence=0.9, top=(), tags=()):
    attribute = _attribute(eyfs, name)
    domain = eyfs.domain(attribute.domain_id)
    top_k = [Suggestion(domain.key, domain.name, attribute.name, attribute.id, confidence)] + [
        Suggestion("x", "x", n, _attribute(eyfs, n).id, 0.01) for n in top
    ]
    return Prediction(
        domain.key,
        domain.name,
        attribute.name,
        attribute.id,
        level,
        confidence,
        0.5,
        top_k,
        tags=[attribute.id, *(_attribute(eyfs, t).id for t in tags)],
    )


def _observation(eyfs, number, name, level, secondary=()):
    attribute = _attribute(eyfs, name)
    return LabelledObservation(
        f"o{number}",
        "text",
        None,
        eyfs.domain(attribute.domain_id).key,
        attribute.id,
        level,
        (attribute.id, *(_attribute(eyfs, s).id for s in secondary)),
    )


@pytest.fixture
def known(eyfs) -> pd.DataFrame:
    """Four observations; the answers below are worked out by hand."""
    observations = [
        _observation(eyfs, 1, "Number", "Reception"),
        _observation(eyfs, 2, "Numerical Patterns", "Birth to three", secondary=["Number"]),
        _observation(eyfs, 3, "Speaking", "Reception"),
        _observation(eyfs, 4, "Gross Motor Skills", "Early Learning Goal"),
    ]
    predictions = [
        _prediction(eyfs, "Number", "Reception", 0.9),  # all right
        _prediction(eyfs, "Number", "Three and four-year-olds", 0.8, top=["Numerical Patterns"], tags=["Speaking"]),
        _prediction(eyfs, "Speaking", "Birth to three", 0.7),  # attribute right, level two steps off
        _prediction(eyfs, "Fine Motor Skills", "Early Learning Goal", 0.6, top=["Speaking", "Number"]),
    ]
    return prediction_frame(observations, predictions, eyfs)


def test_metrics_on_known_answers(known, eyfs):
    metrics = evaluate_predictions(known, eyfs)
    assert metrics["count"] == 4
    assert metrics["attribute"]["accuracy"] == 0.5
    assert metrics["domain"]["accuracy"] == 1.0  # every wrong attribute is in the right domain
    # Top-3: obs 2 has the truth second; obs 4 never names Gross Motor Skills.
    assert metrics["attribute"]["top3_accuracy"] == 0.75
    assert metrics["level"]["accuracy"] == 0.5
    assert metrics["level"]["within_one_accuracy"] == 0.75  # obs 3 is two levels off
    # Attribute macro-F1 over the 5 labels seen: Number 2/3, Numerical Patterns 0, Speaking 1, Gross 0, Fine 0.
    assert metrics["attribute"]["macro_f1"] == pytest.approx((2 / 3 + 1) / 5)
    assert metrics["attribute"]["micro_f1"] == 0.5
    report = metrics["attribute"]["classification_report"]
    assert report["Number"]["support"] == 1 and report["Number"]["precision"] == 0.5
    assert metrics["attribute"]["confusion_matrix"]["labels"][0] == "Number"
    # Tags: true {N},{NP,N},{S},{G}; predicted {N},{N,S},{S},{F}: 3 of 5 true, 3 of 5 predicted right.
    assert metrics["tags"]["micro_f1"] == pytest.approx(0.6)
    # Calibration: confidences 0.9, 0.8, 0.7, 0.6 against right, wrong, right, wrong.
    assert metrics["calibration"]["attribute_ece"] == pytest.approx((0.1 + 0.8 + 0.3 + 0.6) / 4)
    assert set(summary_row(metrics)) >= {"attribute_macro_f1", "domain_macro_f1", "level_within_one"}
    json.dumps(metrics)  # the report is JSON


def test_domain_only_metrics_for_the_external_set(known, eyfs):
    metrics = evaluate_domains(known, eyfs)
    assert metrics["accuracy"] == 1.0 and metrics["macro_f1"] == 1.0 and metrics["count"] == 4


def test_ece_is_zero_when_confidence_matches_accuracy():
    assert expected_calibration_error([0.75] * 4, [True, True, True, False]) == pytest.approx(0.0)
    assert expected_calibration_error([], []) == 0.0


def test_temperature_scaling_tames_overconfidence():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, 400)
    logits = rng.normal(0, 1, (400, 5))
    logits[np.arange(400), labels] += 1.0  # right about half the time...
    logits *= 6  # ...and far too sure of itself
    temperature = fit_temperature(logits, labels)
    assert temperature > 2
    correct = logits.argmax(-1) == labels
    before = expected_calibration_error(softmax(logits).max(-1), correct)
    after = expected_calibration_error(softmax(logits, temperature).max(-1), correct)
    assert after < before / 2
    fitted = calibrate(logits, logits, labels, labels, ["a" if i % 2 else "b" for i in range(400)], 0.8)
    assert fitted.validation["attribute_ece_after"] < fitted.validation["attribute_ece_before"]
    assert set(fitted.thresholds) == {"a", "b"}
    assert Calibration.from_json(fitted.to_json()) == fitted
    assert fitted.threshold("unknown domain") > 1  # never confident where nothing was measured


def test_report_schema_and_summary(known, eyfs):
    metrics = evaluate_predictions(known, eyfs)
    report = build_report(
        model={"label": "oss-classifier/v3", "dataset_version": "abc", "test_examples": 4},
        test={"oss-classifier/v3": metrics, "tfidf_logistic": metrics},
        external={"examples": 4, "results": {"oss-classifier/v3": evaluate_domains(known, eyfs)}},
        calibration=None,
    )
    assert {"report_version", "model", "test", "external", "comparison"} <= set(report)
    assert [row["system"] for row in report["comparison"]] == ["oss-classifier/v3", "tfidf_logistic"]
    assert report["comparison"][0]["external_domain_macro_f1"] is not None
    assert report["comparison"][1]["external_domain_macro_f1"] is None
    summary = markdown_summary(report)
    assert "| system" in summary and "External comment bank" in summary
    json.dumps(report)
    png = confusion_matrix_png(
        metrics["attribute"]["confusion_matrix"]["matrix"], metrics["attribute"]["confusion_matrix"]["labels"], "test"
    )
    assert png.startswith(b"\x89PNG")


ABOVE, NOISE, BELOW = (0.02, 0.2), (-0.15, 0.1), (-0.3, -0.02)  # intervals of challenger − baseline macro-F1


@pytest.mark.parametrize(
    ("challenger", "champion", "versus_baseline", "outcome"),
    [
        (0.60, None, ABOVE, gate.Outcome.PROMOTE),  # first model, above the floor
        (0.48, None, NOISE, gate.Outcome.REJECT),  # below on the point estimate: rejected, however noisy the split
        (0.51, None, NOISE, gate.Outcome.PROMOTE),  # above on the point estimate, within the split's noise
        (0.60, 0.55, ABOVE, gate.Outcome.PROMOTE),  # better
        (0.545, 0.55, ABOVE, gate.Outcome.PROMOTE),  # worse, within the tolerance
        (0.52, 0.55, ABOVE, gate.Outcome.KEEP),  # worse by more than the tolerance
        (0.40, None, BELOW, gate.Outcome.REJECT),  # below the baseline, even with no champion
        (0.45, 0.30, BELOW, gate.Outcome.REJECT),  # below the baseline, even when better than the champion
    ],
)
def test_the_promotion_rule(challenger, champion, versus_baseline, outcome):
    decision = gate.decide(challenger, champion, 0.5, 0.01, versus_baseline)
    assert decision.outcome is outcome and decision.reason
    assert decision.to_dict()["outcome"] == outcome.value


def test_the_bootstrap_interval_of_a_macro_f1_difference():
    truth = [i % 5 for i in range(100)]
    assert macro_f1_difference_interval(truth, truth, truth) == (0.0, 0.0)
    half_wrong = [t if i % 2 else (t + 1) % 5 for i, t in enumerate(truth)]
    low, high = macro_f1_difference_interval(truth, half_wrong, truth)
    assert low < high < 0  # clearly worse: the whole interval is below zero
    low, high = macro_f1_difference_interval(truth, truth, half_wrong)
    assert 0 < low < high


def test_the_fast_macro_f1_is_scikit_learns():
    rng = np.random.default_rng(1)
    for _ in range(50):
        truth, predicted = rng.integers(0, 9, 40), rng.integers(0, 12, 40)
        assert macro_f1(truth, predicted, 12) == pytest.approx(f1_score(truth, predicted, average="macro"))


def test_baselines_fit_on_train_and_predict_labels(split_frame, eyfs):
    from obs_platform.data import prepare

    data = EvaluationSet.from_split_records(prepare.split_records(split_frame))
    tfidf = tfidf_logistic(eyfs).fit(data.train, data.valid)
    assert tfidf.chosen_c in (1.0, 10.0, 100.0)
    predictions = tfidf.predict(data.test)
    assert len(predictions) == len(data.test) and all(len(p.top_k) == 3 for p in predictions)
    accuracy = np.mean([p.attribute_id == o.attribute for p, o in zip(predictions, data.test)])
    assert accuracy > 0.3  # far above chance (1/17) on the sample corpus
    constant = {p.attribute_id for p in majority(eyfs).fit(data.train, data.valid).predict(data.test)}
    assert len(constant) == 1


@pytest.mark.skipif(not COMMENT_BANK.exists(), reason="../shared is absent")
def test_the_external_comment_bank_maps_onto_the_eyfs_domains(eyfs, seed_taxonomy):
    observations = load_comment_bank(COMMENT_BANK, eyfs)
    assert len(observations) == 519 and len({o.domain for o in observations}) == 7
    assert any("[child]" in o.text for o in observations)  # placeholders stay as written
    with pytest.raises(ExternalSetError, match="not domains of this taxonomy"):
        load_comment_bank(COMMENT_BANK, seed_taxonomy)


@pytest.mark.slow
def test_the_frozen_minilm_baseline_on_the_corpus_and_the_comment_bank(split_frame, eyfs):
    """The real packaged MiniLM as a frozen sentence encoder under a logistic regression."""
    from obs_platform.data import prepare
    from obs_platform.evaluation.baselines import MiniLMEmbeddings, frozen_minilm_logistic
    from obs_platform.evaluation.runs import score_baselines

    external = load_comment_bank(COMMENT_BANK, eyfs) if COMMENT_BANK.exists() else None
    data = EvaluationSet.from_split_records(prepare.split_records(split_frame), external=external)
    [(name, result)] = score_baselines([frozen_minilm_logistic(eyfs, MiniLMEmbeddings())], data, eyfs).items()
    assert name == "frozen_minilm_logistic"
    assert result.test_metrics["attribute"]["accuracy"] > 0.3  # chance is 1/17
    if external is not None:
        assert result.external_metrics["count"] == 519
        assert result.external_metrics["macro_f1"] > 1 / 7  # better than guessing an area
