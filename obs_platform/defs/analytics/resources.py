"""Resources of the analytics layer: the warehouse analysts query with SQL, and how the archive is scored.

Locally the warehouse is one DuckDB file under the storage root (`<OBS_PLATFORM_HOME>/warehouse.duckdb`, schema
`analytics`), written by dagster-duckdb-pandas's I/O manager. A bucket-backed deployment's warehouse would be
BigQuery, which is not built yet: there the I/O manager refuses, naming why, rather than hiding a DuckDB file in a
work dir that no analyst could reach.
"""

from pathlib import Path

import dagster as dg
from dagster_duckdb_pandas import DuckDBPandasIOManager

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


class WarehouseNotBuilt(dg.ConfigurableIOManager):
    """The warehouse of a storage root that is a bucket: BigQuery, not built yet. Every use fails, saying so."""

    root_uri: str

    def _refuse(self) -> dg.Failure:
        return dg.Failure(
            f"the analytics warehouse of {self.root_uri} would be BigQuery, which is not built yet; the local "
            f"DuckDB warehouse needs a local OBS_PLATFORM_HOME"
        )

    def handle_output(self, context: dg.OutputContext, obj: object) -> None:
        raise self._refuse()

    def load_input(self, context: dg.InputContext) -> object:
        raise self._refuse()


def warehouse_io_manager(home: str) -> dg.ConfigurableIOManagerFactory | dg.ConfigurableIOManager:
    """DuckDB under a local storage root; a refusal for a bucket."""
    if home.startswith("gs://"):
        return WarehouseNotBuilt(root_uri=home)
    return DuckDBPandasIOManager(
        database=str(Path(home).expanduser().resolve() / WAREHOUSE_FILE), schema=WAREHOUSE_SCHEMA
    )


@dg.definitions
def resources() -> dg.Definitions:
    settings = Settings.from_env()
    return dg.Definitions(
        resources={
            "analytics": AnalyticsResource(runtime=from_env(settings, "endpoint_runtime")),
            "warehouse_io_manager": warehouse_io_manager(settings.home),
        }
    )
