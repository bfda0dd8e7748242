"""The evaluation assets: baselines, the model's calibration, the evaluation report, and the champion."""

import base64
import hashlib
from pathlib import Path

import dagster as dg
import pandas as pd

from obs_platform.cloud.costs import usd_per_1000_endpoint_predictions
from obs_platform.data import prepare
from obs_platform.defs.automation import AFTER_NEW_MODELS
from obs_platform.defs.data.resources import StorageResource, TaxonomyResource
from obs_platform.defs.evaluation.resources import EvaluationResource
from obs_platform.defs.metadata import table
from obs_platform.defs.training.assets import tuned_oss_model
from obs_platform.defs.training.resources import ModelRegistryResource, TuningBackendResource
from obs_platform.evaluation import gate
from obs_platform.evaluation.evaluate import Cost, EvaluationOutcome, evaluate_version, external_section
from obs_platform.evaluation.report import comparison_table
from obs_platform.evaluation.runs import EvaluationSet, SystemResult, fit_calibration, score_baselines, score_model
from obs_platform.evaluation.store import EvaluationStore
from obs_platform.predictions import Calibration
from obs_platform.serving import endpoint
from obs_platform.serving.client import ObservationClassifier
from obs_platform.serving.monitor import feedback_frame, field_accuracy
from obs_platform.serving.predictor import ClassifierPredictor, model_mode
from obs_platform.storage import LocalStorage
from obs_platform.training.registry import ModelRegistry, ModelVersion

GROUP = "evaluation"
ENDPOINT_REPLICAS = 1  # what `VertexModelDeployer.deploy` starts by default


def evaluation_set(
    splits: pd.DataFrame, evaluation: EvaluationResource, taxonomy: TaxonomyResource
) -> tuple[EvaluationSet, str]:
    """The splits and the external set, and a key naming exactly that data (results are stored under it)."""
    external, skipped = evaluation.external_set(taxonomy.load())
    data = EvaluationSet.from_split_records(prepare.split_records(splits), external=external, external_skipped=skipped)
    digest = hashlib.sha256()
    for observation in (*data.train, *data.valid, *data.test, *(data.external or [])):
        digest.update(repr(observation).encode())
    return data, digest.hexdigest()[:16]


def evaluation_workspace(storage: StorageResource, evaluation: EvaluationResource) -> Path:
    """The local folder where models are loaded and the evaluation endpoint keeps its state: the storage root when
    it is a folder; for a bucket, a folder of the work dir named after it (evaluation runs where Dagster runs)."""
    client = storage.client()
    if isinstance(client, LocalStorage):
        return client.root
    return Path(evaluation.work_dir) / hashlib.sha256(client.root_uri.encode()).hexdigest()[:12]


def _model_dir(models: ModelRegistry, version: ModelVersion, workspace: Path) -> str:
    return str(models.local_files(version, workspace / "models"))


@dg.asset(group_name=GROUP, kinds={"scikitlearn"})
def baselines(
    training_splits: pd.DataFrame,
    storage: StorageResource,
    taxonomy: TaxonomyResource,
    evaluation: EvaluationResource,
) -> dg.MaterializeResult:
    """Majority class, TF-IDF + logistic regression and frozen MiniLM embeddings + logistic regression, fitted on
    the training split (regularisation chosen on validation) and scored on the test split and the external
    set: what a tuned model must beat. Stored per data version and reused."""
    data, data_key = evaluation_set(training_splits, evaluation, taxonomy)
    store = EvaluationStore(storage.client())
    results: dict[str, SystemResult] = {}
    todo = []
    for name in evaluation.baselines:
        found = store.load(f"evaluation/baselines/{data_key}/{name}")
        if found is None:
            todo.append(name)
        else:
            results[name] = found
    if todo:
        wanted = [b for b in evaluation.baseline_models(taxonomy.load()) if b.name in todo]
        for name, result in score_baselines(wanted, data, taxonomy.load()).items():
            store.save(f"evaluation/baselines/{data_key}/{name}", result)
            results[name] = result
    shown = comparison_table(
        {"test": {n: r.test_metrics for n, r in results.items()}, "external": external_section(data, results)}
    )
    return dg.MaterializeResult(
        metadata={
            "data_key": data_key,
            "computed": dg.MetadataValue.json(todo),
            "test_examples": len(data.test),
            "external_examples": len(data.external or []),
            "baselines": table(shown),
            "baselines_uri": dg.MetadataValue.path(storage.client().uri(f"evaluation/baselines/{data_key}")),
        }
    )


def stored_baselines(store: EvaluationStore, evaluation: EvaluationResource, data_key: str) -> dict[str, SystemResult]:
    """Every configured baseline's results on the data, as `baselines` stored them."""
    found = {name: store.load(f"evaluation/baselines/{data_key}/{name}") for name in evaluation.baselines}
    missing = [name for name, result in found.items() if result is None]
    if missing:
        raise dg.Failure(f"baselines {missing} have no results for data {data_key}: materialise `baselines` first")
    return {name: result for name, result in found.items() if result is not None}


# Reports follow a newly reported model; new data or new baselines alone re-evaluate nothing.
REPORT_AUTOMATION = dg.AutomationCondition.eager().ignore(
    dg.AssetSelection.groups("data") | dg.AssetSelection.assets("baselines")
)


def candidate(models: ModelRegistry, tuning: TuningBackendResource) -> ModelVersion:
    """The version the newest tuning job gave (the registry's `tuned` alias, which the job-status sensor moves when
    it reports `tuned_oss_model`)."""
    version = models.tuned(tuning.model_name)
    if version is None:
        raise dg.Failure(f"there is no {tuning.model_name} model yet: `oss_tuning_job` trains one")
    return version


# New data alone does not re-calibrate the served model: only a newly reported model does.
@dg.asset(
    group_name=GROUP,
    deps=[tuned_oss_model],
    kinds={"pytorch"},
    automation_condition=AFTER_NEW_MODELS,
)
def model_calibration(
    training_splits: pd.DataFrame,
    storage: StorageResource,
    taxonomy: TaxonomyResource,
    registry: ModelRegistryResource,
    evaluation: EvaluationResource,
    tuning: TuningBackendResource,
) -> dg.MaterializeResult:
    """Temperature scaling and per-domain confidence thresholds for the newest model version, fitted on the
    validation split only and stored with the version, among its files (`ModelRegistry.calibration_path`), where
    the endpoint reads them."""
    models = registry.registry()
    version = candidate(models, tuning)
    model_dir = _model_dir(models, version, evaluation_workspace(storage, evaluation))
    path = models.calibration_path(version)
    if model_mode(model_dir) != "classifier":
        return dg.MaterializeResult(
            metadata={
                "model_version": version.label,
                "calibrated": False,
                "why": "calibration applies to classifier heads",
            }
        )
    if models.storage.exists(path):
        calibration = Calibration.from_json(models.storage.read_bytes(path))
        reused = True
    else:
        data = EvaluationSet.from_split_records(prepare.split_records(training_splits))
        predictor = ClassifierPredictor(model_dir, taxonomy.load())
        calibration = fit_calibration(predictor, data, taxonomy.load(), evaluation.target_precision)
        models.storage.write_bytes(path, calibration.to_json())
        reused = False
    thresholds = pd.DataFrame(
        [{"domain": d, "confident_from": round(t, 3) if t <= 1 else "never"} for d, t in calibration.thresholds.items()]
    )
    return dg.MaterializeResult(
        metadata={
            "model_version": version.label,
            "calibrated": True,
            "reused": reused,
            "attribute_temperature": calibration.attribute_temperature,
            "level_temperature": calibration.level_temperature,
            **{f"valid_{k}": v for k, v in calibration.validation.items()},
            **{f"test_{k}": v for k, v in calibration.test.items() if v is not None},
            "thresholds": table(thresholds),
        }
    )


def _score_through_endpoint(
    workspace: Path,
    model_dir: str,
    version: ModelVersion,
    data: EvaluationSet,
    taxonomy: TaxonomyResource,
    storage_root: str,
) -> SystemResult:
    """Serve the version on the evaluation endpoint and classify through the client: the serving path is measured."""
    state = endpoint.start(
        workspace, model_dir, version.label, taxonomy.path, name=endpoint.EVALUATION, storage_root=storage_root
    )
    try:
        token, _ = endpoint.endpoint_token(workspace)
        return score_model(ObservationClassifier.for_local_endpoint(state.url, token), data, taxonomy.load())
    finally:
        endpoint.stop(workspace, name=endpoint.EVALUATION)


def model_result(
    workspace: Path,
    models: ModelRegistry,
    store: EvaluationStore,
    version: ModelVersion,
    data: EvaluationSet,
    data_key: str,
    taxonomy: TaxonomyResource,
) -> tuple[SystemResult, str]:
    model_dir = _model_dir(models, version, workspace)
    folder = f"{version.folder}/evaluation/{data_key}-{endpoint.model_revision(model_dir) or 'uncalibrated'}"
    result = store.load(folder)
    if result is None:
        result = _score_through_endpoint(workspace, model_dir, version, data, taxonomy, store.storage.root_uri)
        store.save(folder, result)
    return result, folder


PROMOTION_GATE = "promotion_gate"
# A report's value: the gate's decision, stored as JSON by the I/O manager.
DECISION = dg.PythonObjectDagsterType(gate.VersionDecision, name="VersionDecision")


@dg.asset(
    group_name=GROUP,
    deps=[model_calibration, baselines],
    kinds={"scikitlearn", "matplotlib"},
    automation_condition=REPORT_AUTOMATION,
    dagster_type=DECISION,
    check_specs=[
        dg.AssetCheckSpec(
            PROMOTION_GATE,
            asset="evaluation_report",
            blocking=True,
            description="Passes when the challenger is promoted; warns when the champion is kept (the challenger is "
            "worse by more than the tolerance); fails, blocking the promotion, when the challenger is below the "
            "baseline floor.",
        )
    ],
)
def evaluation_report(
    training_splits: pd.DataFrame,
    storage: StorageResource,
    taxonomy: TaxonomyResource,
    registry: ModelRegistryResource,
    evaluation: EvaluationResource,
    tuning: TuningBackendResource,
) -> dg.MaterializeResult:
    """The newest model version on the test split, through its endpoint, beside every baseline (and the champion
    when it is another version): metrics at each taxonomy level, confusion matrices, per-domain F1, calibration,
    the external comment bank at the domain level, and the promotion decision: this asset's value (what
    `champion_model` applies) and its blocking `promotion_gate` check, so a model below the bar never reaches the
    champion alias."""
    workspace, models, home = evaluation_workspace(storage, evaluation), registry.registry(), storage.client()
    store = EvaluationStore(home)
    data, data_key = evaluation_set(training_splits, evaluation, taxonomy)
    feedback = feedback_frame(home, taxonomy.load())  # the logs read once, for every served version
    outcome = evaluate_version(
        models,
        candidate(models, tuning),
        data,
        data_key,
        scores=lambda version: model_result(workspace, models, store, version, data, data_key, taxonomy),
        baselines=stored_baselines(store, evaluation, data_key),
        rule=gate.PromotionRule(evaluation.floor, evaluation.tolerance),
        field_accuracy=lambda label: field_accuracy(feedback, label),
        cost=Cost(
            usd_per_1000_endpoint_predictions(ENDPOINT_REPLICAS, tuning.vertex.prices()),
            f"a dedicated endpoint's machine-hours ({ENDPOINT_REPLICAS} replica) spread over the expected "
            "predictions per hour; locally, no bill",
        ),
        home=home,
    )
    return dg.MaterializeResult(
        value=outcome.verdict,
        metadata=report_metadata(outcome),
        check_results=[promotion_gate(outcome, PROMOTION_GATE, blocking=True)],
    )


def report_metadata(outcome: EvaluationOutcome) -> dict:
    """What a person reads of an evaluation: the summary, the tables, the headline figures and the decision."""
    metrics, decision, images = outcome.result.test_metrics, outcome.decision, outcome.confusion
    shown = {
        "model_version": outcome.version.label,
        "summary": dg.MetadataValue.md(outcome.summary),
        "comparison": table(outcome.comparison),
        "domain_f1": table(outcome.domain_f1),
        "test_attribute_macro_f1": metrics["attribute"]["macro_f1"],
        "test_attribute_accuracy": metrics["attribute"]["accuracy"],
        "external_domain_macro_f1": (outcome.result.external_metrics or {}).get("macro_f1"),
        "promotion": decision.outcome.value,
        "promotion_reason": decision.reason,
        "versus_baseline_interval": dg.MetadataValue.json(list(decision.versus_baseline)),
        "report": dg.MetadataValue.path(outcome.report_uri),
        **{f"confusion_{level}": dg.MetadataValue.path(uri) for level, (uri, _) in images.items()},
    }
    if "domain" in images:
        shown["confusion_domain_plot"] = dg.MetadataValue.md(
            f"![domain confusion](data:image/png;base64,{base64.b64encode(images['domain'][1]).decode()})"
        )
    return shown


def promotion_gate(outcome: EvaluationOutcome, name: str, *, blocking: bool) -> dg.AssetCheckResult:
    """The gate's verdict as the report's check: passed when promoted; a kept champion warns; a rejected challenger
    is an error when the check is `blocking` (what follows in the run is then skipped), else a warning."""
    decision = outcome.decision
    error = blocking and decision.outcome is gate.Outcome.REJECT
    return dg.AssetCheckResult(
        check_name=name,
        passed=decision.outcome is gate.Outcome.PROMOTE,
        severity=dg.AssetCheckSeverity.ERROR if error else dg.AssetCheckSeverity.WARN,
        description=f"{decision.outcome.value}: {decision.reason}",
        metadata={
            "outcome": decision.outcome.value,
            "model_version": outcome.version.label,
            "test_attribute_macro_f1": decision.challenger_f1,
            "reason": decision.reason,
        },
    )


# Requested in the same run as the report: the blocking promotion gate skips it there when the model is rejected.
@dg.asset(group_name=GROUP, automation_condition=dg.AutomationCondition.eager())
def champion_model(
    evaluation_report: gate.VersionDecision, registry: ModelRegistryResource, tuning: TuningBackendResource
) -> dg.MaterializeResult:
    """Applies the report's promotion decision (its value, checked by the blocking `promotion_gate`): the challenger
    becomes the champion, or stays a challenger while the champion keeps serving."""
    models = registry.registry()
    version, decision = models.by_label(evaluation_report.model_version), evaluation_report.decision
    if decision.outcome is gate.Outcome.REJECT:  # the gate blocks a rejected model before this runs; refuse if not
        raise dg.Failure(f"{version.label} was rejected: {decision.reason}")
    gate.apply_decision(models, version, decision.outcome)
    champion = models.champion(tuning.model_name)
    return dg.MaterializeResult(
        metadata={
            "champion": champion.label if champion else None,
            "candidate": version.label,
            "outcome": decision.outcome.value,
            "reason": decision.reason,
            "aliases": dg.MetadataValue.json(models.aliases(version.name)),
        }
    )
