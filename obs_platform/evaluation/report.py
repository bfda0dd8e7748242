"""The evaluation report: the seed's JSON (accuracy, F1, classification report, confusion matrices) and more,
with the model beside every baseline, and a markdown summary an analyst reads without opening a file."""

from __future__ import annotations

from typing import Any

import pandas as pd

from obs_platform.evaluation.metrics import summary_row

REPORT_FILE = "report.json"
REPORT_VERSION = 1


def comparison_table(report: dict[str, Any]) -> pd.DataFrame:
    """One row per system (the model, then the baselines): test-split headline numbers, external macro-F1, and the
    field: the share of educators' feedback on the version's served predictions that accepted its first suggestion
    (with how much feedback that is; empty for a system never served)."""
    rows = []
    for name, metrics in report["test"].items():
        external = report.get("external", {}).get("results", {}).get(name)
        field = report.get("field", {}).get(name, {})
        accuracy = field.get("accuracy")
        rows.append(
            {
                "system": name,
                **{k: round(v, 3) for k, v in summary_row(metrics).items()},
                "external_domain_macro_f1": round(external["macro_f1"], 3) if external else None,
                "field_accuracy": round(accuracy, 3) if accuracy is not None else None,
                "field_feedback": field.get("feedback", 0),
            }
        )
    return pd.DataFrame(rows)


def build_report(
    model: dict[str, Any],
    test: dict[str, dict[str, Any]],
    external: dict[str, Any] | None,
    calibration: dict[str, Any] | None,
    field: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """`test` maps a system name (the model version's label first, then baselines) to its metrics; `field` a served
    system's name to its accuracy on educators' feedback (`accuracy`, `feedback`)."""
    report = {
        "report_version": REPORT_VERSION,
        "model": model,
        "test": test,
        "calibration": calibration,
        "field": field or {},
    }
    if external is not None:
        report["external"] = external
    table = comparison_table(report)
    report["comparison"] = table.astype(object).where(table.notna(), None).to_dict(orient="records")
    return report


def _shown_comparison(report: dict[str, Any]) -> pd.DataFrame:
    """The comparison table, without the field columns while no version has feedback, and blank where a system
    was never served."""
    table = comparison_table(report)
    if not report.get("field"):
        return table.drop(columns=["field_accuracy", "field_feedback"])
    served = table["field_feedback"] > 0
    table["field_accuracy"] = [f"{a:.3f}" if s else "" for a, s in zip(table["field_accuracy"], served)]
    table["field_feedback"] = [str(n) if s else "" for n, s in zip(table["field_feedback"], served)]
    return table


def markdown_summary(report: dict[str, Any]) -> str:
    model = report["model"]
    lines = [
        f"### {model['label']} on the test split ({model['test_examples']} observations, dataset "
        f"{model['dataset_version']})",
        "",
        _shown_comparison(report).to_markdown(index=False),
        "",
    ]
    external = report.get("external")
    if external and external.get("results"):
        lines += [
            f"External comment bank: {external['examples']} comments nobody on the team wrote, scored at the "
            "domain level (evaluation only, never trained or tuned on).",
            "",
        ]
    elif external:
        lines += [f"External comment bank not scored: {external.get('skipped')}", ""]
    calibration = report.get("calibration")
    if calibration:
        validation, test = calibration.get("validation", {}), calibration.get("test", {})
        lines += [
            f"Calibration (fitted on validation): attribute temperature {calibration['attribute_temperature']}; "
            f"ECE on validation {validation.get('attribute_ece_before')} → {validation.get('attribute_ece_after')}, "
            f"on test {test.get('attribute_ece_before')} → {test.get('attribute_ece_after')}; "
            f"{test.get('confident_share') or 0:.0%} of test suggestions confident, "
            f"{test.get('confident_precision') or 0:.0%} of those right "
            f"(target {calibration['target_precision']:.0%}).",
        ]
    return "\n".join(lines)
