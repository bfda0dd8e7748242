"""The evaluation assets: baselines, the model's calibration, the evaluation report, and the champion."""

import base64
import hashlib
from dataclasses import asdict
from pathlib import Path

import dagster as dg
import pandas as pd

from obs_platform.cloud.costs import usd_per_1000_endpoint_predictions
from obs_platform.data import prepare
from obs_platform.defs.data.resources import StorageResource, TaxonomyResource
from obs_platform.defs.evaluation.resources import EvaluationResource
from obs_platform.defs.metadata import table
from obs_platform.defs.training.assets import latest_metadata, tuned_oss_model
from obs_platform.defs.training.resources import ModelRegistryResource, TuningBackendResource
from obs_platform.evaluation import gate, plots
from obs_platform.evaluation.calibration import CALIBRATION_FILE, Calibration
from obs_platform.evaluation.families import FamilySummary, summary_path
from obs_platform.evaluation.metrics import domain_f1_table, macro_f1_difference_interval
from obs_platform.evaluation.report import REPORT_FILE, build_report, comparison_table, markdown_summary
from obs_platform.evaluation.runs import EvaluationSet, SystemResult, fit_calibration, score_baselines, score_model
from obs_platform.evaluation.store import EvaluationStore
from obs_platform.serving import endpoint
from obs_platform.serving.client import ObservationClassifier
from obs_platform.serving.monitor import field_accuracy
from obs_platform.serving.predictor import ClassifierPredictor, model_mode
from obs_platform.storage import LocalStorage, Storage
from obs_platform.taxonomy import Taxonomy
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


def external_section(data: EvaluationSet, results: dict[str, SystemResult]) -> dict:
    if not data.external:
        return {"skipped": data.external_skipped}
    return {"examples": len(data.external), "results": {n: r.external_metrics for n, r in results.items()}}


def stored_baselines(store: EvaluationStore, evaluation: EvaluationResource, data_key: str) -> dict[str, SystemResult]:
    """Every configured baseline's results on the data, as `baselines` stored them."""
    found = {name: store.load(f"evaluation/baselines/{data_key}/{name}") for name in evaluation.baselines}
    missing = [name for name, result in found.items() if result is None]
    if missing:
        raise dg.Failure(f"baselines {missing} have no results for data {data_key}: materialise `baselines` first")
    return {name: result for name, result in found.items() if result is not None}


def apply_decision(models: ModelRegistry, version: ModelVersion, outcome: gate.Outcome) -> None:
    """The gate's verdict on the registry: a promoted version becomes its family's champion, a kept one a
    challenger; a rejected one gets no alias."""
    if outcome is gate.Outcome.PROMOTE:
        models.set_alias(version.name, "champion", version.version)
    elif outcome is gate.Outcome.KEEP:
        models.set_alias(version.name, "challenger", version.version)


def family_summary(
    family: str,
    version: ModelVersion,
    data_key: str,
    result: SystemResult,
    invalid_rate: float,
    usd_per_1000_predictions: float | None,
    cost_basis: str,
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
        usd_per_1000_predictions=usd_per_1000_predictions,
        cost_basis=cost_basis,
    )


# Reports follow a newly reported model; new data or new baselines alone re-evaluate nothing.
REPORT_AUTOMATION = dg.AutomationCondition.eager().ignore(
    dg.AssetSelection.groups("data") | dg.AssetSelection.assets("baselines")
)


def _candidate(context: dg.AssetExecutionContext, registry: ModelRegistry) -> ModelVersion:
    return registry.by_label(str(latest_metadata(context, tuned_oss_model.key)["model_version"]))


# New data alone does not re-calibrate the served model: only a newly reported model does.
@dg.asset(
    group_name=GROUP,
    deps=[tuned_oss_model],
    kinds={"pytorch"},
    automation_condition=dg.AutomationCondition.eager().ignore(dg.AssetSelection.groups("data")),
)
def model_calibration(
    context: dg.AssetExecutionContext,
    training_splits: pd.DataFrame,
    storage: StorageResource,
    taxonomy: TaxonomyResource,
    registry: ModelRegistryResource,
    evaluation: EvaluationResource,
) -> dg.MaterializeResult:
    """Temperature scaling and per-domain confidence thresholds for the newest model version, fitted on the
    validation split only and stored with the version (`calibration.json`), where the endpoint reads them."""
    models = registry.registry()
    version = _candidate(context, models)
    model_dir = _model_dir(models, version, evaluation_workspace(storage, evaluation))
    path = f"{version.folder}/files/{CALIBRATION_FILE}"
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


@dg.asset(
    group_name=GROUP,
    deps=[model_calibration, baselines],
    kinds={"scikitlearn", "matplotlib"},
    automation_condition=REPORT_AUTOMATION,
)
def evaluation_report(
    context: dg.AssetExecutionContext,
    training_splits: pd.DataFrame,
    storage: StorageResource,
    taxonomy: TaxonomyResource,
    registry: ModelRegistryResource,
    evaluation: EvaluationResource,
    tuning: TuningBackendResource,
) -> dg.MaterializeResult:
    """The newest model version on the test split, through its endpoint, beside every baseline (and the champion
    when it is another version): metrics at each taxonomy level, confusion matrices, per-domain F1, calibration,
    the external comment bank at the domain level, and the promotion decision the gate enforces."""
    workspace, models = evaluation_workspace(storage, evaluation), registry.registry()
    store = EvaluationStore(storage.client())
    data, data_key = evaluation_set(training_splits, evaluation, taxonomy)
    version = _candidate(context, models)
    result, folder = model_result(workspace, models, store, version, data, data_key, taxonomy)
    system_results = {version.label: result}
    system_results |= stored_baselines(store, evaluation, data_key)
    champion = models.champion(version.name)
    champion_f1 = None
    if champion is not None and champion.version != version.version:
        champion_result, _ = model_result(workspace, models, store, champion, data, data_key, taxonomy)
        champion_f1 = champion_result.test_metrics["attribute"]["macro_f1"]
        system_results[f"{champion.label} (champion)"] = champion_result
    elif champion is not None:
        champion_f1 = result.test_metrics["attribute"]["macro_f1"]
    calibration_path = f"{version.folder}/files/{CALIBRATION_FILE}"
    calibration = (
        asdict(Calibration.from_json(models.storage.read_bytes(calibration_path)))
        if models.storage.exists(calibration_path)
        else None
    )
    served = {version.label: version.label} | ({f"{champion.label} (champion)": champion.label} if champion else {})
    report = build_report(
        model={
            "label": version.label,
            "dataset_version": version.dataset_version,
            "data_key": data_key,
            "test_examples": len(data.test),
            "champion": champion.label if champion else None,
        },
        test={name: r.test_metrics for name, r in system_results.items()},
        external=external_section(data, system_results),
        calibration=calibration,
        field=field_results(storage.client(), taxonomy.load(), served),
    )
    report["promotion"] = promotion_decision(report, system_results, version.label, champion_f1, evaluation).to_dict()
    report_uri = store.write_json(f"{folder}/{REPORT_FILE}", report)
    summary = family_summary(
        "open-source",
        version,
        data_key,
        result,
        invalid_rate=float((result.test_predictions["pred_attribute"] == 0).mean()),  # an invalid answer's id
        usd_per_1000_predictions=usd_per_1000_endpoint_predictions(ENDPOINT_REPLICAS, tuning.vertex.prices()),
        cost_basis=f"a dedicated endpoint's machine-hours ({ENDPOINT_REPLICAS} replica) spread over the expected "
        "predictions per hour; locally, no bill",
    )
    storage.client().write_bytes(summary_path(version.folder, data_key), summary.model_dump_json(indent=2).encode())
    images = {}
    for level in ("domain", "attribute", "level"):
        matrix = result.test_metrics[level]["confusion_matrix"]
        png = plots.confusion_matrix_png(matrix["matrix"], matrix["labels"], f"{version.label}: {level} (test)")
        storage.client().write_bytes(f"{folder}/confusion_{level}.png", png)
        images[level] = (storage.client().uri(f"{folder}/confusion_{level}.png"), png)
    decision = report["promotion"]
    return dg.MaterializeResult(
        metadata={
            "model_version": version.label,
            "summary": dg.MetadataValue.md(markdown_summary(report)),
            "comparison": table(comparison_table(report)),
            "domain_f1": table(domain_f1_table(result.test_metrics)),
            "test_attribute_macro_f1": result.test_metrics["attribute"]["macro_f1"],
            "test_attribute_accuracy": result.test_metrics["attribute"]["accuracy"],
            "external_domain_macro_f1": (result.external_metrics or {}).get("macro_f1"),
            "promotion": decision["outcome"],
            "promotion_reason": decision["reason"],
            "versus_baseline_interval": dg.MetadataValue.json(list(decision["versus_baseline"])),
            "report": dg.MetadataValue.path(report_uri),
            **{f"confusion_{level}": dg.MetadataValue.path(uri) for level, (uri, _) in images.items()},
            "confusion_domain_plot": dg.MetadataValue.md(
                f"![domain confusion](data:image/png;base64,{base64.b64encode(images['domain'][1]).decode()})"
            ),
        }
    )


def field_results(home: Storage, taxonomy: Taxonomy, served: dict[str, str]) -> dict[str, dict]:
    """Each served system's accuracy on educators' feedback (`served`: system name → model version): a version
    answers the endpoint's traffic only once promoted, so its feedback is all from after its promotion."""
    results = {}
    for system, label in served.items():
        accuracy, feedback = field_accuracy(home, taxonomy, label)
        if feedback:
            results[system] = {"accuracy": accuracy, "feedback": feedback}
    return results


def promotion_decision(
    report: dict,
    results: dict[str, SystemResult],
    label: str,
    champion_f1: float | None,
    evaluation: EvaluationResource,
) -> gate.PromotionDecision:
    challenger = results[label].test_predictions
    challenger_f1 = report["test"][label]["attribute"]["macro_f1"]
    if evaluation.floor == "none":
        return gate.decide(challenger_f1, champion_f1, 0.0, evaluation.tolerance, (0.0, 0.0))
    floor = results[evaluation.floor].test_predictions.set_index("observation_id").loc[challenger["observation_id"]]
    interval = macro_f1_difference_interval(
        challenger["true_attribute"], challenger["pred_attribute"], floor["pred_attribute"]
    )
    floor_f1 = report["test"][evaluation.floor]["attribute"]["macro_f1"]
    return gate.decide(challenger_f1, champion_f1, floor_f1, evaluation.tolerance, interval)


# Requested in the same run as the report: the blocking promotion gate skips it there when the model is rejected.
@dg.asset(group_name=GROUP, deps=[evaluation_report], automation_condition=dg.AutomationCondition.eager())
def champion_model(
    context: dg.AssetExecutionContext, registry: ModelRegistryResource, tuning: TuningBackendResource
) -> dg.MaterializeResult:
    """Applies the promotion decision of the report (checked by the blocking `promotion_gate`): the challenger
    becomes the champion, or stays a challenger while the champion keeps serving."""
    models = registry.registry()
    report = latest_metadata(context, evaluation_report.key)
    version = models.by_label(str(report["model_version"]))
    outcome = gate.Outcome(str(report["promotion"]))
    if outcome is gate.Outcome.REJECT:  # the gate blocks a rejected model before this runs; refuse if it did not
        raise dg.Failure(f"{version.label} was rejected: {report['promotion_reason']}")
    apply_decision(models, version, outcome)
    champion = models.champion(tuning.model_name)
    return dg.MaterializeResult(
        metadata={
            "champion": champion.label if champion else None,
            "candidate": version.label,
            "outcome": outcome.value,
            "reason": str(report["promotion_reason"]),
            "aliases": dg.MetadataValue.json(models.aliases(version.name)),
        }
    )
