"""The tuned Gemini evaluated like the open-source model.

`gemini_batch_job` submits one Vertex batch prediction job over the test split and the external set and returns;
the job-status sensor polls it (as it polls tuning jobs) and reports `gemini_predictions` when it succeeds;
`gemini_evaluation_report` reads the answers back, scores them beside the baselines and the open-source champion,
and applies the same promotion gate to the Gemini family.
"""

import dagster as dg
import pandas as pd

from obs_platform.cloud.costs import Prices, priced, usd_per_1000_gemini_predictions
from obs_platform.cloud.gemini_batch import (
    PREDICTIONS_FILE,
    REQUESTS_FILE,
    batch_requests,
    read_batch_answers,
    submitted_keys,
)
from obs_platform.cloud.vertex import VertexConfigError, label_value
from obs_platform.data.redaction import Roster
from obs_platform.defs.automation import AFTER_NEW_MODELS
from obs_platform.defs.data.resources import StorageResource, TaxonomyResource
from obs_platform.defs.evaluation.assets import (
    DECISION,
    REPORT_AUTOMATION,
    baselines,
    evaluation_set,
    evaluation_workspace,
    model_result,
    promotion_gate,
    stored_baselines,
)
from obs_platform.defs.evaluation.resources import EvaluationResource
from obs_platform.defs.metadata import submitted_job, table
from obs_platform.defs.training.assets import tuned_gemini_model
from obs_platform.defs.training.resources import ModelRegistryResource, TuningBackendResource
from obs_platform.evaluation import gate
from obs_platform.evaluation.evaluate import Cost, evaluate_answers
from obs_platform.evaluation.frames import LabelledObservation
from obs_platform.evaluation.runs import EvaluationSet
from obs_platform.evaluation.store import EvaluationStore
from obs_platform.settings import ROSTER_PATH
from obs_platform.storage import Storage
from obs_platform.training.registry import GEMINI_MODEL, ModelRegistry, ModelVersion

GROUP = "evaluation"
BATCH_BACKEND = "vertex-gemini-batch"
GEMINI_CHECK = "gemini_promotion_gate"


def newest_gemini(models: ModelRegistry) -> ModelVersion:
    """The tuned Gemini the newest tuning job gave (the registry's `tuned` alias, which the job-status sensor moves
    when it reports `tuned_gemini_model`)."""
    version = models.tuned(GEMINI_MODEL)
    if version is None:
        raise dg.Failure("there is no tuned Gemini yet: `gemini_tuning_job` tunes one")
    return version


def _batch_folder(version: ModelVersion, data_key: str) -> str:
    """Where one version's batch job on one evaluation's data keeps its requests and answers."""
    return f"{version.folder}/evaluation/{data_key}/batch"


def _observations(data: EvaluationSet) -> list[LabelledObservation]:
    return [*data.test, *(data.external or [])]


def _roster(home: Storage) -> Roster | None:
    return Roster.from_json(home.read_bytes(ROSTER_PATH)) if home.exists(ROSTER_PATH) else None


# Every new tuned Gemini is evaluated; new data alone does not start a (billed) batch job.
@dg.asset(
    group_name=GROUP,
    deps=[tuned_gemini_model],
    kinds={"gemini", "googlecloud"},
    automation_condition=AFTER_NEW_MODELS,
)
def gemini_batch_job(
    context: dg.AssetExecutionContext,
    training_splits: pd.DataFrame,
    storage: StorageResource,
    taxonomy: TaxonomyResource,
    registry: ModelRegistryResource,
    evaluation: EvaluationResource,
    tuning: TuningBackendResource,
) -> dg.MaterializeResult:
    """A Vertex AI batch prediction job of the newest tuned Gemini over the test split and the external comment
    bank: the requests (redacted, as the tuning lines were, with the same system instruction and user turn) are
    written to the bucket, the job is submitted and this returns at once, with the estimated tokens and cost.
    `tuning_job_sensor` polls it and reports `gemini_predictions`."""
    home, models = storage.client(), registry.registry()
    version = newest_gemini(models)
    data, data_key = evaluation_set(training_splits, evaluation, taxonomy)
    requests = batch_requests([o.instance() for o in _observations(data)], taxonomy.load(), _roster(home))
    folder = _batch_folder(version, data_key)
    home.write_bytes(f"{folder}/{REQUESTS_FILE}", requests.jsonl)
    try:
        backend = tuning.batch_backend()
    except VertexConfigError as exc:
        raise dg.Failure(str(exc)) from exc
    job_id = backend.submit(
        model=str(version.manifest["tuned_model"]),
        requests_uri=home.uri(f"{folder}/{REQUESTS_FILE}"),
        output_uri=home.uri(f"{folder}/output"),
        display_name=f"obs-platform-eval-{version.version}-{data_key}",
        labels={"model_version": label_value(version.label), "data_key": label_value(data_key)},
    )
    context.log.info(f"submitted batch job {job_id}: {len(requests.keys)} requests to {version.label}")
    prices = tuning.vertex.prices()
    estimate = {
        "requests": len(requests.keys),
        "input_tokens": requests.estimated_input_tokens,
        "output_tokens": requests.estimated_output_tokens,
        "usd": _batch_usd(requests.estimated_input_tokens, requests.estimated_output_tokens, prices),
    }
    return dg.MaterializeResult(
        metadata={
            **submitted_job(job_id, BATCH_BACKEND),
            "model_name": "",  # the sensor registers no model for this job: its result is answers
            "model_version": version.label,
            "dataset_version": version.dataset_version,
            "data_key": data_key,
            "spec": dg.MetadataValue.json(
                {"dataset_version": version.dataset_version, "data_key": data_key, "model_version": version.label}
            ),
            "requests_uri": dg.MetadataValue.path(home.uri(f"{folder}/{REQUESTS_FILE}")),
            "estimated_usd": estimate["usd"],
            "cost_estimate": dg.MetadataValue.json(estimate),
        }
    )


def _batch_usd(input_tokens: int, output_tokens: int, prices: Prices) -> float | None:
    input_usd = priced(input_tokens / 1e6, prices.batch_usd_per_million_input_tokens)
    output_usd = priced(output_tokens / 1e6, prices.batch_usd_per_million_output_tokens)
    return None if input_usd is None or output_usd is None else round(input_usd + output_usd, 4)


gemini_predictions = dg.AssetSpec(
    "gemini_predictions",
    deps=[gemini_batch_job],
    group_name=GROUP,
    kinds={"gemini", "googlecloud"},
    description="The answers of a Gemini batch prediction job, in the bucket in Vertex's output layout. Never "
    "executed by Dagster: `tuning_job_sensor` records it when the batch job succeeds.",
)


@dg.asset(
    group_name=GROUP,
    deps=[gemini_predictions, baselines],
    kinds={"gemini", "scikitlearn"},
    check_specs=[
        dg.AssetCheckSpec(
            GEMINI_CHECK,
            asset="gemini_evaluation_report",
            description="Passes when the tuned Gemini is promoted; warns when it is kept or rejected (the other "
            "family may still serve).",
        )
    ],
    automation_condition=REPORT_AUTOMATION,
    dagster_type=DECISION,
)
def gemini_evaluation_report(
    context: dg.AssetExecutionContext,
    training_splits: pd.DataFrame,
    storage: StorageResource,
    taxonomy: TaxonomyResource,
    registry: ModelRegistryResource,
    evaluation: EvaluationResource,
    tuning: TuningBackendResource,
) -> dg.MaterializeResult:
    """The tuned Gemini's batch answers read back against the taxonomy (valid / repaired / invalid; an invalid
    answer counts as wrong) and scored as the open-source model is: every metric at every level on the test split,
    the external set at the domain level, beside the baselines and the open-source champion of the same data. The
    same gate decides for the Gemini family (strict rule, baseline floor): promoted, the version becomes the
    family's champion. The decision is this asset's value; the check reports it without blocking: a rejected Gemini
    leaves the served-model decision to the other family."""
    home, models = storage.client(), registry.registry()
    store, workspace = EvaluationStore(home), evaluation_workspace(storage, evaluation)
    version = newest_gemini(models)
    data, data_key = evaluation_set(training_splits, evaluation, taxonomy)
    folder = _batch_folder(version, data_key)
    outputs = [p for p in home.list_files(f"{folder}/output") if p.endswith(f"/{PREDICTIONS_FILE}")]
    if not outputs:
        raise dg.Failure(f"no batch answers under {home.uri(folder)}/output: the batch job has not succeeded")
    keys = submitted_keys(home.read_bytes(f"{folder}/{REQUESTS_FILE}"))
    lines = [line for path in outputs for line in home.read_bytes(path).splitlines()]
    answers = read_batch_answers(lines, keys, taxonomy.load())
    others = {}
    oss_champion = models.champion(tuning.model_name)
    if oss_champion is not None:
        oss_result, _ = model_result(workspace, models, store, oss_champion, data, data_key, taxonomy)
        others[f"{oss_champion.label} (open-source champion)"] = oss_result
    counted = max(len(answers.predictions), 1)
    prices = tuning.vertex.prices()
    outcome = evaluate_answers(
        models,
        version,
        data,
        data_key,
        list(answers.predictions),
        taxonomy.load(),
        baselines=stored_baselines(store, evaluation, data_key),
        others=others,
        rule=gate.PromotionRule(evaluation.floor, evaluation.tolerance),
        answers={
            **answers.rates(),
            "failed_requests": answers.failed,
            "unanswered_requests": answers.unanswered,
            "input_tokens": answers.input_tokens,
            "output_tokens": answers.output_tokens,
        },
        cost=Cost(
            usd_per_1000_gemini_predictions(answers.input_tokens / counted, answers.output_tokens / counted, prices),
            "tokens per request measured in the batch job × the online price per token",
        ),
        batch_usd=_batch_usd(answers.input_tokens, answers.output_tokens, prices),
        home=home,
    )
    gate.apply_decision(models, version, outcome.decision.outcome)
    context.log.info(f"{version.label}: {outcome.decision.outcome.value} ({outcome.decision.reason})")
    report = outcome.report
    return dg.MaterializeResult(
        value=outcome.verdict,
        metadata={
            "model_version": version.label,
            "summary": dg.MetadataValue.md(outcome.summary),
            "comparison": table(outcome.comparison),
            "answers": dg.MetadataValue.json(report["answers"]),
            "invalid_rate": report["answers"]["invalid_rate"],
            "repaired_rate": report["answers"]["repaired_rate"],
            "test_attribute_macro_f1": outcome.result.test_metrics["attribute"]["macro_f1"],
            "promotion": outcome.decision.outcome.value,
            "promotion_reason": outcome.decision.reason,
            "usd_per_1000_predictions": report["usd_per_1000_predictions"],
            "batch_usd": report["batch_usd"],
            "report": dg.MetadataValue.path(outcome.report_uri),
        },
        check_results=[promotion_gate(outcome, GEMINI_CHECK, blocking=False)],
    )
