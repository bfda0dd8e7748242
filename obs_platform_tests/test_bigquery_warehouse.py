"""The analytics warehouse on BigQuery: the same `analytics` job, dagster-gcp-pandas's I/O manager writing to a
BigQuery REST emulator (`bqemulator`) through the real google-cloud-bigquery client, and the README's queries
answered there as in DuckDB."""

from __future__ import annotations

import dagster as dg
import pandas as pd
import pytest

from obs_platform.cloud.bigquery import warehouse_client
from obs_platform.defs.analytics.resources import BigQueryWarehouseIOManager, WarehouseRefused, warehouse_io_manager
from obs_platform.evaluation.archive import SCORED_COLUMNS
from obs_platform.settings import Settings
from obs_platform.training.registry import OSS_MODEL

from .test_analytics import (
    DISAGREEMENTS_BY_DOMAIN,
    ELG_F1_SINCE_MARCH,
    F1,
    FakePredictor,
    readme_queries,
    sample,
    stored_versions,
)
from .test_data_assets import load_defs


@pytest.mark.slow  # an emulator process of its own
def test_the_analytics_job_fills_the_bigquery_warehouse(
    monkeypatch, bigquery_emulator, storage, tmp_path, split_frame, eyfs
):
    registry = stored_versions(storage, tmp_path)
    observations = sample(split_frame, 40)
    (storage.root / "assets").mkdir()
    observations.to_parquet(storage.root / "assets" / "redacted_observations.parquet")
    fake = FakePredictor(observations, eyfs)

    import obs_platform.serving.predictor

    monkeypatch.setattr(obs_platform.serving.predictor, "load_predictor", lambda *a, **k: fake)
    monkeypatch.setenv("OBS_PLATFORM_WAREHOUSE", "bigquery")
    monkeypatch.setenv("OBS_PLATFORM_BIGQUERY_PROJECT", "obs-test")
    monkeypatch.setenv("OBS_PLATFORM_BIGQUERY_API_ENDPOINT", bigquery_emulator)
    defs = load_defs(monkeypatch, storage.root)
    assert isinstance(defs.resources["warehouse_io_manager"], BigQueryWarehouseIOManager)
    with dg.instance_for_test() as instance:
        for _ in range(2):  # a second run replaces the tables' rows
            assert defs.resolve_job_def("analytics").execute_in_process(instance=instance).success

    client = warehouse_client("obs-test", api_endpoint=bigquery_emulator)
    scored = client.query("SELECT * FROM analytics.scored_observations").to_dataframe()
    # dagster-gcp-pandas stores column names in capitals; BigQuery's column names are case-insensitive in SQL
    assert list(scored.columns) == [c.upper() for c in SCORED_COLUMNS]
    assert len(scored) == 40 and set(scored["MODEL_VERSION"]) == {registry.champion(OSS_MODEL).label}
    by_domain = client.query(DISAGREEMENTS_BY_DOMAIN).to_dataframe()
    f1 = client.query(ELG_F1_SINCE_MARCH).to_dataframe()
    answers = [client.query(query).to_dataframe() for query in readme_queries()]
    assert [len(answer) for answer in answers] == [len(by_domain), len(f1)]
    print(by_domain.to_markdown(index=False), f1.to_markdown(index=False), sep="\n\n")
    assert by_domain["observations"].sum() == 40 and by_domain["disagreements"].sum() == 20
    assert f1["version"].tolist() == [f"{OSS_MODEL}/v2", f"{OSS_MODEL}/v3"]
    assert f1["elg_macro_f1"].tolist() == [F1[2], F1[3]]

    # and back through the I/O manager, as a downstream asset would read it
    @dg.asset(key="evaluation_history", io_manager_key="warehouse_io_manager")
    def stored() -> pd.DataFrame: ...

    @dg.asset
    def reader(evaluation_history: pd.DataFrame) -> None:
        assert len(evaluation_history) == 3 * (2 * 3 * 2 + 2)
        assert set(evaluation_history["level"]) == {"domain", "attribute", "level"}

    loaded = dg.materialize(
        [stored.to_source_asset(), reader],
        resources={"warehouse_io_manager": defs.resources["warehouse_io_manager"]},
        selection=[reader],
    )
    assert loaded.success


@pytest.mark.parametrize(
    ("variables", "refusal"),
    [
        ({"OBS_PLATFORM_HOME": "gs://bucket/home", "OBS_PLATFORM_WAREHOUSE": "duckdb"}, "a local OBS_PLATFORM_HOME"),
        ({"OBS_PLATFORM_HOME": "gs://bucket/home"}, "set OBS_PLATFORM_BIGQUERY_PROJECT"),
        ({"OBS_PLATFORM_WAREHOUSE": "bigquery"}, "set OBS_PLATFORM_BIGQUERY_PROJECT"),
    ],
)
def test_a_warehouse_that_cannot_be_is_refused_with_the_reason(monkeypatch, variables, refusal):
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    manager = warehouse_io_manager(Settings.from_env())
    assert isinstance(manager, WarehouseRefused) and refusal in manager.reason
    with pytest.raises(dg.Failure, match=refusal):
        manager.handle_output(None, pd.DataFrame())  # type: ignore[arg-type]


def test_a_bucket_home_writes_to_bigquery_by_default(monkeypatch):
    monkeypatch.setenv("OBS_PLATFORM_HOME", "gs://bucket/home")
    monkeypatch.setenv("OBS_PLATFORM_BIGQUERY_PROJECT", "my-project")
    manager = warehouse_io_manager(Settings.from_env())
    assert isinstance(manager, BigQueryWarehouseIOManager)
    assert manager.project == dg.EnvVar("OBS_PLATFORM_BIGQUERY_PROJECT")  # resolved when a run starts
    assert (manager.dataset, manager.location, manager.api_endpoint) == ("analytics", None, "")
