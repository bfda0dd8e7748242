"""The endpoint assets: the champion served (on loopback, or on a Vertex endpoint), the tuned Gemini served on
Vertex AI, and which of the two families the inference client uses by default."""

import dagster as dg
import pandas as pd

from obs_platform.cloud.transports import GeminiTransport
from obs_platform.data.redaction import Roster
from obs_platform.defs.cloud.resources import VertexResource
from obs_platform.defs.data.resources import StorageResource, TaxonomyResource
from obs_platform.defs.evaluation.assets import champion_model, evaluation_set
from obs_platform.defs.evaluation.gemini import gemini_evaluation_report, newest_gemini
from obs_platform.defs.evaluation.resources import EvaluationResource
from obs_platform.defs.metadata import table
from obs_platform.defs.serving.resources import ServingResource
from obs_platform.defs.training.assets import tuned_gemini_model
from obs_platform.defs.training.resources import ModelRegistryResource, TuningBackendResource
from obs_platform.evaluation.families import FamilySummary, decide_served_model, summary_path
from obs_platform.evaluation.store import EvaluationStore
from obs_platform.serving.client import ObservationClassifier
from obs_platform.serving.served import SERVED_MODEL_PATH, ServedModelDecision
from obs_platform.settings import ROSTER_PATH
from obs_platform.training.registry import GEMINI_MODEL

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
    storage: StorageResource,
    registry: ModelRegistryResource,
    taxonomy: TaxonomyResource,
    vertex: VertexResource,
) -> dg.MaterializeResult:
    """The newest tuned Gemini (the registry's), served where its tuning job deployed it (a Vertex endpoint of its
    own, recorded as is), asked the example observation through the inference client: requests are redacted with
    the data set's roster, and the JSON answer is read against the taxonomy (an invalid one is reported, not
    raised)."""
    version = newest_gemini(registry.registry())
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


# Runs when either family's verdict may have changed (new data alone changes none); locally the Gemini family never
# reports, which must not hold the decision back (plain `eager` waits for every dependency to exist).
@dg.asset(
    group_name="serving",
    deps=[oss_endpoint, gemini_evaluation_report],
    automation_condition=(
        dg.AutomationCondition.any_deps_updated().ignore(dg.AssetSelection.groups("data")).since_last_handled()
        & ~dg.AutomationCondition.any_deps_in_progress()
        & ~dg.AutomationCondition.in_progress()
    ),
)
def served_model(
    context: dg.AssetExecutionContext,
    training_splits: pd.DataFrame,
    storage: StorageResource,
    taxonomy: TaxonomyResource,
    registry: ModelRegistryResource,
    evaluation: EvaluationResource,
    tuning: TuningBackendResource,
    serving: ServingResource,
) -> dg.MaterializeResult:
    """Which family the inference client uses by default: each family's champion compared on the same evaluation
    data (test ELG macro-F1 first, the cost per 1,000 predictions when they are within the promotion tolerance), the
    decision, its reason and where the chosen model answers written to `serving/served_model.json`, which
    `obs_platform.serving.served.served_classifier` reads."""
    home, models = storage.client(), registry.registry()
    _, data_key = evaluation_set(training_splits, evaluation, taxonomy)
    champions = []
    for name in (tuning.model_name, GEMINI_MODEL):
        champion = models.champion(name)
        path = summary_path(champion.folder, data_key) if champion else ""
        if champion is not None and home.exists(path):
            champions.append(FamilySummary.model_validate_json(home.read_bytes(path)))
    if not champions:
        raise dg.Failure(f"no family has a champion evaluated on data {data_key}: evaluate a model first")
    choice = decide_served_model(champions, evaluation.tolerance)
    chosen = models.by_label(choice.model_version)
    # A tuned Gemini answers on the endpoint its tuning job made; the open-source champion where `oss_endpoint`
    # serves it (asked again, which changes nothing when it already serves that version).
    host = serving.host(storage, taxonomy, models)
    address = chosen.uri if chosen.name == GEMINI_MODEL else host.serve(chosen).address
    decision = ServedModelDecision(choice.family, choice.model_version, choice.reason, choice.compared, address)
    EvaluationStore(home).write_json(SERVED_MODEL_PATH, decision.to_dict())
    context.log.info(f"serving {decision.family} by default: {decision.reason}")
    return dg.MaterializeResult(
        metadata={
            "served_family": decision.family,
            "model_version": decision.model_version,
            "address": decision.address,
            "reason": decision.reason,
            "families": table(pd.DataFrame(decision.compared)),
            "decision": dg.MetadataValue.path(home.uri(SERVED_MODEL_PATH)),
        }
    )
