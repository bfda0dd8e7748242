"""The serving resource: where the champion is served (`OBS_PLATFORM_BACKEND`): the FastAPI app on loopback, or a
Vertex AI endpoint."""

import dagster as dg

from obs_platform.defs.cloud.resources import VertexResource, configured_vertex
from obs_platform.defs.config import default, from_env
from obs_platform.defs.data.resources import StorageResource, TaxonomyResource
from obs_platform.serving.hosts import LocalModelHost, ModelHost
from obs_platform.serving.monitor import MonitorSettings
from obs_platform.settings import Settings
from obs_platform.storage import LocalStorage
from obs_platform.training.registry import ModelRegistry


class ServingResource(dg.ConfigurableResource):
    """`local`: a managed process on 127.0.0.1 (state under the storage root); `vertex`: the Vertex endpoint named
    `endpoint_display_name`, each version uploaded as a Model once per calibration and deployed to it."""

    vertex: dg.ResourceDependency[VertexResource]
    kind: str = default("backend")
    endpoint_display_name: str = "obs-platform-oss"

    def host(self, storage: StorageResource, taxonomy: TaxonomyResource, models: ModelRegistry) -> ModelHost:
        if self.kind == "vertex":
            from obs_platform.cloud.endpoints import VertexModelDeployer, VertexModelHost

            deployer = VertexModelDeployer(self.vertex.settings())
            return VertexModelHost(deployer, models, self.endpoint_display_name, self.vertex.prices())
        client = storage.client()
        if not isinstance(client, LocalStorage):
            raise ValueError(f"the local endpoint needs a local OBS_PLATFORM_HOME, not {client.root_uri}")
        return LocalModelHost(client.root, taxonomy.path)


class MonitorResource(dg.ConfigurableResource):
    """When the serving monitor warns: the predicted ELGs' PSI against the training split above `drift_threshold`,
    or top-1 acceptance more than `acceptance_margin` below the test accuracy, over the last `window_days` days
    (`OBS_PLATFORM_MONITOR_DRIFT_THRESHOLD`, `OBS_PLATFORM_MONITOR_ACCEPTANCE_MARGIN`,
    `OBS_PLATFORM_MONITOR_WINDOW_DAYS`)."""

    drift_threshold: float = default("monitor_drift_threshold")
    acceptance_margin: float = default("monitor_acceptance_margin")
    window_days: int = default("monitor_window_days")

    def settings(self) -> MonitorSettings:
        return MonitorSettings(self.drift_threshold, self.acceptance_margin, self.window_days)


@dg.definitions
def resources() -> dg.Definitions:
    settings = Settings.from_env()
    return dg.Definitions(
        resources={
            "serving": ServingResource(vertex=configured_vertex(settings), kind=from_env(settings, "backend")),
            "monitor": MonitorResource(
                drift_threshold=settings.monitor_drift_threshold,
                acceptance_margin=settings.monitor_acceptance_margin,
                window_days=from_env(settings, "monitor_window_days"),
            ),
        }
    )
