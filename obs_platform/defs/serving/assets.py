"""The endpoint asset: the champion model served on loopback, restarted when the champion changes."""

import dagster as dg

from obs_platform.defs.data.resources import StorageResource, TaxonomyResource
from obs_platform.defs.evaluation.assets import champion_model
from obs_platform.defs.training.resources import ModelRegistryResource, TuningBackendResource
from obs_platform.serving import endpoint
from obs_platform.serving.client import ObservationClassifier
from obs_platform.storage import LocalStorage

EXAMPLE = "Amara poured water from the jug into three cups and said 'this one has the most'"


@dg.asset(
    group_name="serving", deps=[champion_model], kinds={"fastapi"}, automation_condition=dg.AutomationCondition.eager()
)
def oss_endpoint(
    context: dg.AssetExecutionContext,
    storage: StorageResource,
    registry: ModelRegistryResource,
    taxonomy: TaxonomyResource,
    tuning: TuningBackendResource,
) -> dg.MaterializeResult:
    """A FastAPI endpoint on 127.0.0.1 serving the registry's champion (a managed background process), restarted
    when the champion or its calibration changes."""
    client = storage.client()
    if not isinstance(client, LocalStorage):
        raise dg.Failure("the local endpoint needs a local OBS_PLATFORM_HOME")
    champion = registry.registry().resolve(tuning.model_name, "champion")
    running = endpoint.status(client.root)
    if (
        running is not None
        and running.model_version == champion.label
        and running.revision == endpoint.model_revision(champion.uri)
    ):
        state = running
        context.log.info(f"{champion.label} is already served at {state.url}")
    else:
        state = endpoint.start(client.root, champion.uri, champion.label, taxonomy.path)
        context.log.info(f"serving {champion.label} at {state.url} (pid {state.pid})")
    token, _ = endpoint.endpoint_token(client.root)
    example = ObservationClassifier.for_local_endpoint(state.url, token).classify(EXAMPLE, child_age_months=40)
    return dg.MaterializeResult(
        metadata={
            "url": dg.MetadataValue.url(state.url),
            "pid": state.pid,
            "model_version": state.model_version,
            "token": state.token_file,
            "log": dg.MetadataValue.path(state.log_file),
            "example": f"{EXAMPLE!r} → {example.domain_name} → {example.attribute}, {example.level} "
            f"(confidence {example.confidence:.2f}{', confident' if example.confident else ''})",
        }
    )
