"""The endpoint assets: the champion served on loopback (restarted when the champion changes), and the tuned Gemini
served on Vertex AI."""

import dagster as dg

from obs_platform.cloud.transports import GeminiTransport
from obs_platform.data.redaction import Roster
from obs_platform.defs.cloud.resources import VertexResource
from obs_platform.defs.data.resources import StorageResource, TaxonomyResource
from obs_platform.defs.evaluation.assets import champion_model
from obs_platform.defs.training.assets import latest_metadata, tuned_gemini_model
from obs_platform.defs.training.resources import ModelRegistryResource, TuningBackendResource
from obs_platform.serving import endpoint
from obs_platform.serving.client import ObservationClassifier
from obs_platform.settings import ROSTER_PATH
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


@dg.asset(
    group_name="serving",
    deps=[tuned_gemini_model],
    kinds={"gemini", "googlecloud"},
    automation_condition=dg.AutomationCondition.eager(),
)
def gemini_endpoint(
    context: dg.AssetExecutionContext,
    storage: StorageResource,
    registry: ModelRegistryResource,
    taxonomy: TaxonomyResource,
    vertex: VertexResource,
) -> dg.MaterializeResult:
    """The newest tuned Gemini, served where its tuning job deployed it (a Vertex endpoint of its own, recorded as
    is), asked the example observation through the inference client: requests are redacted with the data set's
    roster, and the JSON answer is read against the taxonomy (an invalid one is reported, not raised)."""
    version = registry.registry().by_label(str(latest_metadata(context, tuned_gemini_model.key)["model_version"]))
    home = storage.client()
    roster_bytes = home.read_bytes(ROSTER_PATH) if home.exists(ROSTER_PATH) else None
    transport = GeminiTransport(
        vertex.settings(), version.uri, taxonomy.load(), Roster.from_json(roster_bytes) if roster_bytes else None
    )
    example = ObservationClassifier(transport).classify(EXAMPLE, child_age_months=40)
    answer = (
        f"{example.domain_name} → {example.attribute}, {example.level}"
        if example.status != "invalid"
        else f"invalid answer: {example.problem}"
    )
    return dg.MaterializeResult(
        metadata={
            "model_version": version.label,
            "endpoint": version.uri,
            "base_model": version.manifest.get("base_model"),
            "tuned_model": version.manifest.get("tuned_model"),
            "example": f"{EXAMPLE!r} → {answer}",
        }
    )
