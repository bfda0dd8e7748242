"""The Vertex AI resource: project, region, bucket, machines and models, from `OBS_PLATFORM_VERTEX_*`.

With `OBS_PLATFORM_BACKEND=vertex` the settings are validated when the definitions load, so a missing variable is
named at once rather than when a job is first submitted; locally they stay empty, and only an asset that needs
Vertex (Gemini tuning) fails, with the same message.
"""

import dagster as dg

from obs_platform.cloud.vertex import ENV_VARIABLES, REQUIRED, VertexConfigError, VertexSettings
from obs_platform.settings import Settings


class VertexResource(dg.ConfigurableResource):
    """Where and how tuning jobs run on Vertex AI (see `VertexSettings`)."""

    project: str = ""
    region: str = ""
    staging_bucket: str = ""
    trainer_image_uri: str = ""
    service_account: str = ""
    machine_type: str = "n1-standard-8"
    accelerator_type: str = "NVIDIA_TESLA_T4"
    accelerator_count: int = 1
    gemini_base_model: str = "gemini-2.5-flash"
    serving_image_uri: str = ""
    serving_machine_type: str = "n1-standard-2"
    api_endpoint: str = ""
    usd_per_million_training_tokens: float | None = None  # a configured price: the cost estimate shows dollars

    def settings(self) -> VertexSettings:
        missing = [ENV_VARIABLES[name] for name in REQUIRED if not getattr(self, name)]
        if missing:
            raise VertexConfigError(f"this runs on Vertex AI: set OBS_PLATFORM_BACKEND=vertex and {', '.join(missing)}")
        return VertexSettings(**self.model_dump(exclude={"usd_per_million_training_tokens"}))


def configured_vertex(settings: Settings) -> VertexResource:
    """The Vertex resource of this deployment: empty locally; validated from the environment with
    `OBS_PLATFORM_BACKEND=vertex` (every missing variable named, and the storage root must be a bucket)."""
    if settings.backend != "vertex":
        return VertexResource()
    if not settings.home.startswith("gs://"):
        raise VertexConfigError(
            f"OBS_PLATFORM_BACKEND=vertex needs OBS_PLATFORM_HOME=gs://bucket/prefix (Vertex jobs read the training "
            f"files from it), not {settings.home!r}"
        )
    vertex = VertexSettings.from_env()
    return VertexResource(
        **{name: getattr(vertex, name) for name in VertexSettings.__dataclass_fields__},
        usd_per_million_training_tokens=settings.usd_per_million_training_tokens,
    )


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources={"vertex": configured_vertex(Settings.from_env())})
