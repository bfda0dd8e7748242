"""The Vertex AI resource: project, region, bucket, machines and models, from `OBS_PLATFORM_VERTEX_*`.

With `OBS_PLATFORM_BACKEND=vertex` the settings are validated when the definitions load, so a missing variable is
named at once rather than when a job is first submitted; locally they stay empty, and only an asset that needs
Vertex (Gemini tuning) fails, with the same message.
"""

import dagster as dg

from obs_platform.cloud.costs import Prices
from obs_platform.cloud.vertex import ENV_VARIABLES, REQUIRED, VertexConfigError, VertexSettings
from obs_platform.defs.config import env_or_value
from obs_platform.settings import Settings


class VertexResource(dg.ConfigurableResource):
    """Where and how tuning jobs run on Vertex AI (see `VertexSettings`)."""

    # Required with OBS_PLATFORM_BACKEND=vertex (empty locally); the others default to VertexSettings'.
    project: str = ""
    region: str = ""
    staging_bucket: str = ""
    trainer_image_uri: str = ""
    service_account: str = VertexSettings.service_account
    machine_type: str = VertexSettings.machine_type
    accelerator_type: str = VertexSettings.accelerator_type
    accelerator_count: int = VertexSettings.accelerator_count
    gemini_base_model: str = VertexSettings.gemini_base_model
    serving_image_uri: str = VertexSettings.serving_image_uri
    serving_machine_type: str = VertexSettings.serving_machine_type
    keep_deployed: int = VertexSettings.keep_deployed
    api_endpoint: str = VertexSettings.api_endpoint
    # The configured prices (`Prices`): cost estimates show dollars where one is set.
    tuning_usd_per_million_tokens: float | None = None
    batch_usd_per_million_input_tokens: float | None = None
    batch_usd_per_million_output_tokens: float | None = None
    training_usd_per_machine_hour: float | None = None
    serving_usd_per_machine_hour: float | None = None
    online_usd_per_million_input_tokens: float | None = None
    online_usd_per_million_output_tokens: float | None = None
    serving_predictions_per_hour: float | None = None

    def settings(self) -> VertexSettings:
        missing = [ENV_VARIABLES[name] for name in REQUIRED if not getattr(self, name)]
        if missing:
            raise VertexConfigError(f"this runs on Vertex AI: set OBS_PLATFORM_BACKEND=vertex and {', '.join(missing)}")
        return VertexSettings(**self.model_dump(include=set(VertexSettings.__dataclass_fields__)))

    def prices(self) -> Prices:
        return Prices(**self.model_dump(include=set(Prices.__dataclass_fields__)))


def configured_vertex(settings: Settings) -> VertexResource:
    """The Vertex resource of this deployment: empty locally; validated from the environment with
    `OBS_PLATFORM_BACKEND=vertex` (every missing or malformed variable named, and the storage root must be a
    bucket), each field set by a variable configured with its `dg.EnvVar`. The prices are numbers with fractions,
    which Dagster's config does not read from the environment: their validated values."""
    if settings.backend != "vertex":
        return VertexResource(**settings.prices.to_dict())
    if not settings.home.startswith("gs://"):
        raise VertexConfigError(
            f"OBS_PLATFORM_BACKEND=vertex needs OBS_PLATFORM_HOME=gs://bucket/prefix (Vertex jobs read the training "
            f"files from it), not {settings.home!r}"
        )
    vertex = VertexSettings.from_env()
    return VertexResource(
        **{name: env_or_value(ENV_VARIABLES[name], getattr(vertex, name)) for name in ENV_VARIABLES},
        **settings.prices.to_dict(),
    )


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources={"vertex": configured_vertex(Settings.from_env())})
