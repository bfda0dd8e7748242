"""What `obs-platform run` prints when the graph has run: each asset's latest figures and locations, the
evaluation table, and the endpoint's URL."""

from collections.abc import Callable

import dagster as dg

from obs_platform.defs.event_log import latest_materialization_metadata

NOT_MATERIALISED = "not materialised"
SHOWN_KEYS = (
    "dagster/row_count",
    "exports",
    "exports_reused",
    "notes_reused",
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
            rows.append((key.to_user_string(), NOT_MATERIALISED))
            continue
        parts = []
        for name in SHOWN_KEYS:
            if name in metadata:
                label = "rows" if name == "dagster/row_count" else name
                parts.append(f"{label}={metadata[name]}")
        rows.append((key.to_user_string(), "  ".join(parts)))
    return rows


def print_summary(instance: dg.DagsterInstance, defs: dg.Definitions, echo: Callable[[str], None]) -> None:
    """A line per materialised asset, then the ones never materialised here in one line (locally: the Gemini
    family, which runs on Vertex AI, and the serving monitor, which runs daily or on demand)."""
    rows = asset_rows(instance, defs)
    shown = [(name, description) for name, description in rows if description != NOT_MATERIALISED]
    width = max((len(name) for name, _ in shown), default=0)
    echo("")
    for name, description in shown:
        echo(f"  {name.ljust(width)}  {description}")
    if missing := [name for name, description in rows if description == NOT_MATERIALISED]:
        echo(f"  not materialised: {', '.join(missing)}")
    report = latest_materialization_metadata(instance, dg.AssetKey("evaluation_report"))
    if report and "summary" in report:
        echo("")
        echo(str(report["summary"]))
    served = latest_materialization_metadata(instance, dg.AssetKey("oss_endpoint"))
    if served and "url" in served:
        echo("")
        echo(f'endpoint: {served["url"]}  (model {served["model_version"]}; `obs-platform classify "..."`)')
        echo(f"review page: {served['url']}/  (the bearer token is in {served.get('token', 'endpoint/token')})")
