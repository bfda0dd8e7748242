"""The promotion gate: a blocking check, so a model below the bar never reaches the champion alias."""

import dagster as dg

from obs_platform.defs.evaluation.assets import evaluation_report
from obs_platform.evaluation.gate import Outcome


@dg.asset_check(asset=evaluation_report, blocking=True)
def promotion_gate(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    """Passes when the challenger is promoted; warns when the champion is kept (the challenger is worse by more
    than the tolerance); fails, blocking the promotion, when the challenger is below the baseline floor."""
    event = context.instance.get_latest_materialization_event(evaluation_report.key)
    metadata = {k: v.value for k, v in event.asset_materialization.metadata.items()}
    outcome = Outcome(str(metadata["promotion"]))
    return dg.AssetCheckResult(
        passed=outcome is Outcome.PROMOTE,
        severity=dg.AssetCheckSeverity.ERROR if outcome is Outcome.REJECT else dg.AssetCheckSeverity.WARN,
        description=f"{outcome.value}: {metadata['promotion_reason']}",
        metadata={
            "outcome": outcome.value,
            "model_version": str(metadata["model_version"]),
            "test_attribute_macro_f1": float(metadata["test_attribute_macro_f1"]),
            "reason": str(metadata["promotion_reason"]),
        },
    )
