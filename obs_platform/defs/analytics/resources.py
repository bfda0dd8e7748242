"""Resources of the analytics layer: the warehouse analysts query with SQL, and how the archive is scored.

Locally the warehouse is one DuckDB file under the storage root (`<OBS_PLATFORM_HOME>/warehouse.duckdb`, schema
`analytics`), written by dagster-duckdb-pandas's I/O manager. A bucket-backed deployment's is BigQuery (dataset
`OBS_PLATFORM_BIGQUERY_DATASET` of `OBS_PLATFORM_BIGQUERY_PROJECT`), written by dagster-gcp-pandas's; never a DuckDB
file in a work dir that no analyst could reach.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
from dagster._core.storage.db_io_manager import DbIOManager
from dagster_duckdb_pandas import DuckDBPandasIOManager
from dagster_gcp.bigquery.io_manager import BigQueryClient
from dagster_gcp_pandas import BigQueryPandasIOManager
from google.cloud import bigquery

from obs_platform.cloud.bigquery import warehouse_client
from obs_platform.defs.config import default, from_env
from obs_platform.settings import Settings

WAREHOUSE_FILE = "warehouse.duckdb"
WAREHOUSE_SCHEMA = "analytics"


class AnalyticsResource(dg.ConfigurableResource):
    """How `scored_observations` runs the champion: on the endpoint's runtime (`OBS_PLATFORM_ENDPOINT_RUNTIME`),
    `batch_size` observations at a time, a progress line every `progress_every_seconds`."""

    runtime: str = default("endpoint_runtime")
    batch_size: int = 64
    progress_every_seconds: float = 10.0


class WarehouseRefused(dg.ConfigurableIOManager):
    """A warehouse this deployment cannot have as configured: every use fails, saying why."""

    reason: str

    def handle_output(self, context: dg.OutputContext, obj: object) -> None:
        raise dg.Failure(self.reason)

    def load_input(self, context: dg.InputContext) -> object:
        raise dg.Failure(self.reason)


class _WarehouseBigQueryClient(BigQueryClient):
    @staticmethod
    @contextmanager
    def connect(context, table_slice) -> Iterator[bigquery.Client]:
        config = context.resource_config or {}
        yield warehouse_client(config["project"], config.get("location"), config.get("api_endpoint") or "")


class BigQueryWarehouseIOManager(BigQueryPandasIOManager):
    """dagster-gcp-pandas's BigQuery I/O manager (tables in `project.dataset`, replaced on each materialisation),
    its client made by `obs_platform.cloud.bigquery.warehouse_client`, which also reaches an emulator."""

    api_endpoint: str = ""

    def create_io_manager(self, context) -> DbIOManager:
        return DbIOManager(
            db_client=_WarehouseBigQueryClient(write_mode=self.write_mode, gcp_credentials=self.gcp_credentials),
            io_manager_name="BigQueryIOManager",
            database=self.project,
            schema=self.dataset,
            type_handlers=self.type_handlers(),
            default_load_type=self.default_load_type(),
        )


def warehouse_io_manager(settings: Settings) -> dg.ConfigurableIOManagerFactory | dg.ConfigurableIOManager:
    """DuckDB under a local storage root, or BigQuery (the default for a bucket); a refusal naming what is missing."""
    home = settings.home
    kind = settings.warehouse or ("bigquery" if home.startswith("gs://") else "duckdb")
    if kind == "duckdb":
        if home.startswith("gs://"):
            return WarehouseRefused(
                reason=f"a DuckDB warehouse is a file under a local OBS_PLATFORM_HOME, not {home}: use "
                f"{Settings.variable('warehouse')}=bigquery"
            )
        return DuckDBPandasIOManager(
            database=str(Path(home).expanduser().resolve() / WAREHOUSE_FILE), schema=WAREHOUSE_SCHEMA
        )
    if not settings.bigquery_project:
        return WarehouseRefused(
            reason=f"the BigQuery warehouse needs its project: set {Settings.variable('bigquery_project')}"
        )
    return BigQueryWarehouseIOManager(
        project=from_env(settings, "bigquery_project"),
        dataset=from_env(settings, "bigquery_dataset"),
        location=from_env(settings, "bigquery_location") or None,
        api_endpoint=from_env(settings, "bigquery_api_endpoint"),
    )


@dg.definitions
def resources() -> dg.Definitions:
    settings = Settings.from_env()
    return dg.Definitions(
        resources={
            "analytics": AnalyticsResource(runtime=from_env(settings, "endpoint_runtime")),
            "warehouse_io_manager": warehouse_io_manager(settings),
        }
    )
