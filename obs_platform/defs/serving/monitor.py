"""The served model watched: the `serving_monitor` asset and its two warnings (drift, acceptance) as asset checks
reported by the asset itself, so a check never reads the asset's metadata back."""

import base64
import datetime
import json

import dagster as dg
import pandas as pd

from obs_platform.defs.data.resources import StorageResource, TaxonomyResource
from obs_platform.defs.metadata import table
from obs_platform.defs.serving.assets import served_model
from obs_platform.defs.serving.resources import MonitorResource
from obs_platform.evaluation import plots
from obs_platform.serving.monitor import CheckVerdict, monitor_report
from obs_platform.serving.served import SERVED_MODEL_PATH, ServedModelDecision

DRIFT_CHECK = "prediction_drift"
ACCEPTANCE_CHECK = "field_acceptance"


def _check(name: str, verdict: CheckVerdict) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        check_name=name,
        passed=verdict.passed,
        severity=dg.AssetCheckSeverity.WARN,
        description=verdict.description,
        metadata={key: value for key, value in verdict.figures.items() if value is not None},
    )


@dg.asset(
    group_name="serving",
    deps=[served_model],
    kinds={"pandas", "matplotlib"},
    check_specs=[
        dg.AssetCheckSpec(
            DRIFT_CHECK,
            asset="serving_monitor",
            description="The predicted ELGs' PSI against the training split, over the window.",
        ),
        dg.AssetCheckSpec(
            ACCEPTANCE_CHECK,
            asset="serving_monitor",
            description="Educators' top-1 acceptance of the served version against its test accuracy.",
        ),
    ],
)
def serving_monitor(
    context: dg.AssetExecutionContext,
    training_splits: pd.DataFrame,
    storage: StorageResource,
    taxonomy: TaxonomyResource,
    monitor: MonitorResource,
):
    """One row per day of the endpoint's prediction and feedback logs: volume, latency p50/p99, the share of
    confident suggestions, the population stability index of the predicted domains and ELGs against the training
    split, and educators' verdicts (accepted at top-1, within the top 3, corrected, none of these). Warns when the
    window's predictions drifted, or when the served version's acceptance is below its test accuracy."""
    home, settings = storage.client(), monitor.settings()
    decision = (
        ServedModelDecision.from_dict(json.loads(home.read_bytes(SERVED_MODEL_PATH)))
        if home.exists(SERVED_MODEL_PATH)
        else None
    )
    compared = {c["model_version"]: c for c in decision.compared} if decision else {}
    served = compared.get(decision.model_version) if decision else None
    test_accuracy = float(served["attribute_accuracy"]) if served else None
    today = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d")
    report = monitor_report(
        home,
        taxonomy.load(),
        training_splits,
        settings,
        decision.model_version if decision else None,
        test_accuracy,
        today,
    )
    window = report.window
    metadata = {
        "dagster/row_count": len(report.daily),
        "served_model_version": decision.model_version if decision else None,
        "window": f"{window['first_day']} to {window['last_day']}",
        **{f"window_{key}": value for key, value in window.items() if key not in ("first_day", "last_day")},
        "test_accuracy": test_accuracy,
        "daily": table(report.daily),
        "predicted_domains": table(report.distribution),
        "acceptance_by_domain": table(report.acceptance_by_domain),
    }
    if not report.daily.empty:
        png = plots.serving_trends_png(
            report.daily, settings.drift_threshold, test_accuracy, f"served model, {len(report.daily)} days"
        )
        metadata["trends"] = dg.MetadataValue.md(f"![trends](data:image/png;base64,{base64.b64encode(png).decode()})")
    context.log.info(f"{window['predictions']} predictions and {window['feedback']} feedback in the window")
    yield dg.Output(report.daily, metadata={key: value for key, value in metadata.items() if value is not None})
    yield _check(DRIFT_CHECK, report.drift)
    yield _check(ACCEPTANCE_CHECK, report.acceptance)
