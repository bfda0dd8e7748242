"""What `obs-platform run` prints when the graph has run: each asset's latest figures and locations, the
evaluation table, and the endpoint's URL."""

from collections.abc import Callable

import dagster as dg

from obs_platform.defs.event_log import latest_materialization_metadata

SHOWN_KEYS = (
    "dagster/row_count",
    "dataset_version",
    "splits_uri",
    "folder_uri",
    "landing_uri",
    "outcome",
    "job_id",
    "model_version",
    "valid_attribute_accuracy",
    "job_seconds",
    "model_uri",
    "attribute_temperature",
    "valid_attribute_ece_after",
    "test_attribute_macro_f1",
    "promotion",
    "champion",
    "served_family",
    "url",
    "example",
)


def asset_rows(instance: dg.DagsterInstance, defs: dg.Definitions) -> list[tuple[str, str]]:
    """(asset, short description of its latest materialisation) in topological order."""
    graph = defs.resolve_asset_graph()
    rows = []
    for key in graph.toposorted_asset_keys:
        metadata = latest_materialization_metadata(instance, key)
        if metadata is None:
            rows.append((key.to_user_string(), "not materialised"))
            continue
        parts = []
        for name in SHOWN_KEYS:
            if name in metadata:
                label = "rows" if name == "dagster/row_count" else name
                parts.append(f"{label}={metadata[name]}")
        rows.append((key.to_user_string(), "  ".join(parts)))
    return rows


def print_summary(instance: dg.DagsterInstance, defs: dg.Definitions, echo: Callable[[str], None]) -> None:
    rows = asset_rows(instance, defs)
    width = max(len(name) for name, _ in rows)
    echo("")
    for name, description in rows:
        echo(f"  {name.ljust(width)}  {description}")
    report = latest_materialization_metadata(instance, dg.AssetKey("evaluation_report"))
    if report and "summary" in report:
        echo("")
        echo(str(report["summary"]))
    served = latest_materialization_metadata(instance, dg.AssetKey("oss_endpoint"))
    if served and "url" in served:
        echo("")
        echo(f'endpoint: {served["url"]}  (model {served["model_version"]}; `obs-platform classify "..."`)')
        echo(f"review page: {served['url']}/  (the bearer token is in {served.get('token', 'endpoint/token')})")
