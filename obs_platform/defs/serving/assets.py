"""The endpoint assets: the champion served (on loopback, or on a Vertex endpoint), and the tuned Gemini served on
Vertex AI."""

import dagster as dg

from obs_platform.cloud.transports import GeminiTransport
from obs_platform.data.redaction import Roster
from obs_platform.defs.cloud.resources import VertexResource
from obs_platform.defs.data.resources import StorageResource, TaxonomyResource
from obs_platform.defs.evaluation.assets import champion_model
from obs_platform.defs.serving.resources import ServingResource
from obs_platform.defs.training.assets import latest_metadata, tuned_gemini_model
from obs_platform.defs.training.resources import ModelRegistryResource, TuningBackendResource
from obs_platform.serving.client import ObservationClassifier
from obs_platform.settings import ROSTER_PATH

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
    serving: ServingResource,
) -> dg.MaterializeResult:
    """The registry's champion, served: locally a FastAPI app on 127.0.0.1 (a managed background process), on
    Vertex AI an endpoint (the version uploaded as a Model and deployed with all the traffic). Redeployed when the
    champion or its calibration changes, left alone otherwise; asked the example observation through the client."""
    models = registry.registry()
    champion = models.resolve(tuning.model_name, "champion")
    served = serving.host(storage, taxonomy, models).serve(champion)
    context.log.info(f"{'serving' if served.restarted else 'already serving'} {champion.label} at {served.address}")
    example = served.client.classify(EXAMPLE, child_age_months=40)
    return dg.MaterializeResult(
        metadata={
            "url": dg.MetadataValue.url(served.address) if served.address.startswith("http") else served.address,
            "model_version": served.model_version,
            "redeployed": served.restarted,
            **served.details,
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
