"""One model version evaluated: scored beside the baselines (and its family's champion), reported, and judged by the
promotion gate.

`evaluate_version` (a classifier, scored through its endpoint) and `evaluate_answers` (a model whose answers came
back from a batch job: the tuned Gemini) store the JSON report, the confusion matrices and the family summary with
the version, and return an `EvaluationOutcome`: what the report assets show as metadata and hand on as a value (the
decision). How a version is scored, and what educators said of its served predictions, are the caller's to give:
evaluation serves nothing itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import pandas as pd

from obs_platform.evaluation import gate, plots
from obs_platform.evaluation.families import FamilySummary, summary_path
from obs_platform.evaluation.frames import prediction_frame
from obs_platform.evaluation.metrics import (
    domain_f1_table,
    evaluate_domains,
    evaluate_predictions,
    macro_f1_difference_interval,
)
from obs_platform.evaluation.report import REPORT_FILE, build_report, comparison_table, markdown_summary
from obs_platform.evaluation.runs import EvaluationSet, SystemResult
from obs_platform.evaluation.store import EvaluationStore
from obs_platform.predictions import Calibration, Prediction
from obs_platform.storage import Storage
from obs_platform.taxonomy import Taxonomy
from obs_platform.training.registry import ModelRegistry, ModelVersion

CONFUSION_LEVELS = ("domain", "attribute", "level")
# A version's scores on the data, and the folder they (and its report) are stored in.
Scores = Callable[[ModelVersion], tuple[SystemResult, str]]
# A model version's accuracy on educators' feedback (None with none) and how much feedback that is.
FieldAccuracy = Callable[[str], tuple[float | None, int]]


@dataclass(frozen=True)
class Cost:
    """What 1,000 predictions of a family cost (None: no price configured), and how that was reckoned."""

    usd_per_1000_predictions: float | None
    basis: str


@dataclass(frozen=True)
class EvaluationOutcome:
    """A version's evaluation: the stored report and what it says."""

    version: ModelVersion
    data_key: str
    result: SystemResult  # the version's own scores
    report: dict[str, Any]  # the JSON report, as stored
    report_uri: str
    decision: gate.PromotionDecision
    family_summary: FamilySummary  # as stored with the version (`families.summary_path`)
    confusion: dict[str, tuple[str, bytes]]  # level → (where the PNG is stored, the PNG)

    @property
    def verdict(self) -> gate.VersionDecision:
        """The decision as a value, for what applies it."""
        return gate.VersionDecision(model_version=self.version.label, decision=self.decision)

    @property
    def summary(self) -> str:
        """The report in markdown, for a person."""
        return markdown_summary(self.report)

    @property
    def comparison(self) -> pd.DataFrame:
        return comparison_table(self.report)

    @property
    def domain_f1(self) -> pd.DataFrame:
        return domain_f1_table(self.result.test_metrics)


def evaluate_version(
    models: ModelRegistry,
    version: ModelVersion,
    data: EvaluationSet,
    data_key: str,
    scores: Scores,
    baselines: dict[str, SystemResult],
    rule: gate.PromotionRule,
    field_accuracy: FieldAccuracy,
    cost: Cost,
    home: Storage,
) -> EvaluationOutcome:
    """A classifier version on the test split (`scores`: through its endpoint), beside every baseline and its family's
    champion when that is another version: metrics at each level, calibration (the registry's file of the version),
    the external set at the domain level, the field accuracy of each served version, and the gate's decision. The
    report and the confusion matrices are stored beside the version's scores, its family summary with it."""
    result, folder = scores(version)
    results = {version.label: result} | baselines
    champion = models.champion(version.name)
    champion_f1 = None
    if champion is not None and champion.version != version.version:
        champion_result, _ = scores(champion)
        champion_f1 = champion_result.test_metrics["attribute"]["macro_f1"]
        results[f"{champion.label} (champion)"] = champion_result
    elif champion is not None:
        champion_f1 = result.test_metrics["attribute"]["macro_f1"]
    calibration_path = models.calibration_path(version)
    calibration = (
        asdict(Calibration.from_json(models.storage.read_bytes(calibration_path)))
        if models.storage.exists(calibration_path)
        else None
    )
    served = {version.label: version.label} | ({f"{champion.label} (champion)": champion.label} if champion else {})
    report = build_report(
        model=_model_section(version, data, data_key, champion),
        test={name: r.test_metrics for name, r in results.items()},
        external=external_section(data, results),
        calibration=calibration,
        field=field_results(served, field_accuracy),
    )
    decision = promotion_decision(report, results, version.label, champion_f1, rule)
    report["promotion"] = decision.to_dict()
    report_uri = EvaluationStore(home).write_json(f"{folder}/{REPORT_FILE}", report)
    invalid_rate = float((result.test_predictions["pred_attribute"] == 0).mean())  # an invalid answer's id
    summary = family_summary("open-source", version, data_key, result, invalid_rate, cost)
    return EvaluationOutcome(
        version=version,
        data_key=data_key,
        result=result,
        report=report,
        report_uri=report_uri,
        decision=decision,
        family_summary=_stored_summary(home, version, summary),
        confusion=_confusion_images(home, folder, version, result),
    )


def evaluate_answers(
    models: ModelRegistry,
    version: ModelVersion,
    data: EvaluationSet,
    data_key: str,
    predictions: list[Prediction],
    taxonomy: Taxonomy,
    baselines: dict[str, SystemResult],
    others: dict[str, SystemResult],
    rule: gate.PromotionRule,
    answers: dict[str, Any],
    cost: Cost,
    batch_usd: float | None,
    home: Storage,
) -> EvaluationOutcome:
    """A version whose answers came back from a batch job (the test split, then the external set, in order) scored as
    a classifier is, beside the baselines, `others` (other families' champions: name → scores) and its own family's
    champion's stored scores of the same data; `answers` is what reading them counted (rates of valid, repaired and
    invalid answers, failures, tokens), and `invalid_rate` among them is the family summary's."""
    store = EvaluationStore(home)
    folder = f"{version.folder}/evaluation/{data_key}"
    result = score_answers(data, predictions, taxonomy)
    store.save(folder, result)
    results = {version.label: result} | baselines | others
    champion = models.champion(version.name)
    champion_result = (
        store.load(f"{champion.folder}/evaluation/{data_key}") if champion and champion != version else None
    )
    if champion is not None and champion_result is not None:
        results[f"{champion.label} (champion)"] = champion_result
    champion_f1 = (champion_result or result).test_metrics["attribute"]["macro_f1"] if champion else None
    report = build_report(
        model=_model_section(version, data, data_key, champion),
        test={name: r.test_metrics for name, r in results.items()},
        external=external_section(data, results),
        calibration=None,
    )
    decision = promotion_decision(report, results, version.label, champion_f1, rule)
    report |= {
        "answers": answers,
        "promotion": decision.to_dict(),
        "usd_per_1000_predictions": cost.usd_per_1000_predictions,
        "batch_usd": batch_usd,
    }
    report_uri = store.write_json(f"{folder}/{REPORT_FILE}", report)
    summary = family_summary("gemini", version, data_key, result, answers["invalid_rate"], cost)
    return EvaluationOutcome(
        version=version,
        data_key=data_key,
        result=result,
        report=report,
        report_uri=report_uri,
        decision=decision,
        family_summary=_stored_summary(home, version, summary),
        confusion={},
    )


def score_answers(data: EvaluationSet, predictions: list[Prediction], taxonomy: Taxonomy) -> SystemResult:
    """Predictions of the test split, then the external set, scored as `evaluation.runs.score` scores a model."""
    test = prediction_frame(data.test, predictions[: len(data.test)], taxonomy)
    if not data.external:
        return SystemResult(evaluate_predictions(test, taxonomy), test)
    external = prediction_frame(data.external, predictions[len(data.test) :], taxonomy)
    return SystemResult(evaluate_predictions(test, taxonomy), test, evaluate_domains(external, taxonomy), external)


def external_section(data: EvaluationSet, results: dict[str, SystemResult]) -> dict:
    """The report's external-set section: every system's domain-level results, or why there are none."""
    if not data.external:
        return {"skipped": data.external_skipped}
    return {"examples": len(data.external), "results": {n: r.external_metrics for n, r in results.items()}}


def field_results(served: dict[str, str], field_accuracy: FieldAccuracy) -> dict[str, dict]:
    """Each served system's accuracy on educators' feedback (`served`: system name → model version): a version
    answers the endpoint's traffic only once promoted, so its feedback is all from after its promotion."""
    results = {}
    for system, label in served.items():
        accuracy, feedback = field_accuracy(label)
        if feedback:
            results[system] = {"accuracy": accuracy, "feedback": feedback}
    return results


def promotion_decision(
    report: dict,
    results: dict[str, SystemResult],
    label: str,
    champion_f1: float | None,
    rule: gate.PromotionRule,
) -> gate.PromotionDecision:
    """The gate on the report: the challenger (`label`) against its champion's macro-F1 and the floor baseline's,
    with the paired-bootstrap interval of its difference from the floor."""
    challenger = results[label].test_predictions
    challenger_f1 = report["test"][label]["attribute"]["macro_f1"]
    if rule.floor == "none":
        return gate.decide(challenger_f1, champion_f1, 0.0, rule.tolerance, (0.0, 0.0))
    floor = results[rule.floor].test_predictions.set_index("observation_id").loc[challenger["observation_id"]]
    interval = macro_f1_difference_interval(
        challenger["true_attribute"], challenger["pred_attribute"], floor["pred_attribute"]
    )
    floor_f1 = report["test"][rule.floor]["attribute"]["macro_f1"]
    return gate.decide(challenger_f1, champion_f1, floor_f1, rule.tolerance, interval)


def family_summary(
    family: str, version: ModelVersion, data_key: str, result: SystemResult, invalid_rate: float, cost: Cost
) -> FamilySummary:
    metrics = result.test_metrics
    return FamilySummary(
        family=family,
        model_version=version.label,
        data_key=data_key,
        test_examples=len(result.test_predictions),
        attribute_macro_f1=metrics["attribute"]["macro_f1"],
        attribute_accuracy=metrics["attribute"]["accuracy"],
        domain_macro_f1=metrics["domain"]["macro_f1"],
        invalid_rate=invalid_rate,
        usd_per_1000_predictions=cost.usd_per_1000_predictions,
        cost_basis=cost.basis,
    )


def _model_section(
    version: ModelVersion, data: EvaluationSet, data_key: str, champion: ModelVersion | None
) -> dict[str, Any]:
    return {
        "label": version.label,
        "dataset_version": version.dataset_version,
        "data_key": data_key,
        "test_examples": len(data.test),
        "champion": champion.label if champion else None,
    }


def _stored_summary(home: Storage, version: ModelVersion, summary: FamilySummary) -> FamilySummary:
    """The summary, stored with its version where the served-model decision reads it."""
    home.write_bytes(summary_path(version.folder, summary.data_key), summary.model_dump_json(indent=2).encode())
    return summary


def _confusion_images(
    home: Storage, folder: str, version: ModelVersion, result: SystemResult
) -> dict[str, tuple[str, bytes]]:
    images = {}
    for level in CONFUSION_LEVELS:
        matrix = result.test_metrics[level]["confusion_matrix"]
        png = plots.confusion_matrix_png(matrix["matrix"], matrix["labels"], f"{version.label}: {level} (test)")
        home.write_bytes(f"{folder}/confusion_{level}.png", png)
        images[level] = (home.uri(f"{folder}/confusion_{level}.png"), png)
    return images
