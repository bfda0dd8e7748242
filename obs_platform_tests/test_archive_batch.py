"""The archive scored on Vertex AI: a batch prediction job of the champion's uploaded Model, through aiplatform's
generated job client over real HTTP to the loopback fake of Vertex (whose job answers as the serving app on its
machines would), the instances and answers in the GCS emulator. Then the bucket deployment's graph: the job
submitted by `archive_batch_job`, polled by the job-status sensor (a progress bar with an ETA in its log) until it
reports `archive_predictions`, and `scored_observations` built from the answers, equal to what scoring in process
with the same answers gives; a failed job scores nothing, and observations the job failed on are named."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from obs_platform.cloud import model_batch
from obs_platform.cloud.endpoints import VertexModelDeployer
from obs_platform.cloud.model_batch import (
    INSTANCES_FILE,
    MAX_BATCH_SIZE,
    BatchJobRequest,
    VertexModelBatchBackend,
    answered_submissions,
    instances_jsonl,
    read_batch_output,
    why_unanswered,
)
from obs_platform.cloud.vertex import VertexSettings
from obs_platform.data.schema import MAX_NOTES_CHARS
from obs_platform.data.values import frame_from_parquet
from obs_platform.defs.analytics.assets import SCORED_FROM_PREDICTIONS, SCORED_LOCALLY, deployment_assets
from obs_platform.defs.analytics.resources import AnalyticsResource
from obs_platform.evaluation.archive import SCORED_COLUMNS, archive_instances, score_archive
from obs_platform.local_run import tick_sensor
from obs_platform.predictions import Instance, Prediction, Suggestion
from obs_platform.storage import storage_from_uri
from obs_platform.training.backend import JobError, JobState, ModelArtifact
from obs_platform.training.registry import OSS_MODEL, ModelRegistry

from .fake_vertex import FakeVertex, fake_environment, fake_settings
from .test_analytics import sample
from .test_asset_graph import condition_text
from .test_data_assets import load_defs, metadata

pytest.importorskip("google.cloud.storage")
aiplatform = pytest.importorskip("google.cloud.aiplatform_v1")


def answered_as_the_fake(fake: FakeVertex):
    """A predictor answering each note as the fake's serving app does: what scoring in process would give."""

    def predict(batch: list[Instance]) -> list[Prediction]:
        written = [fake.prediction_for(instance.notes) for instance in batch]
        return [Prediction(**{**w, "top_k": [Suggestion(**s) for s in w["top_k"]]}) for w in written]

    return predict


@pytest.fixture
def settings(fake_vertex: FakeVertex, gcs_emulator: str, eyfs) -> VertexSettings:
    fake_vertex.taxonomy = eyfs
    return fake_settings(fake_vertex, gcs_emulator)


@pytest.fixture
def uploaded(settings: VertexSettings, gcs_emulator: str, tmp_path: Path) -> str:
    """A registered version's files in the bucket, uploaded as a Vertex Model served by the serving image."""
    folder = f"gs://{gcs_emulator}/{tmp_path.name}/registry/v3"
    storage_from_uri(folder).write_bytes("manifest.json", b"{}")
    return VertexModelDeployer(settings).upload("oss-classifier/v3", folder, {"dataset_version": "d1"})


def write_instances(folder: str, observations: pd.DataFrame) -> str:
    ids = observations["observation_id"].astype(str).tolist()
    storage_from_uri(folder).write_bytes(INSTANCES_FILE, instances_jsonl(ids, archive_instances(observations)))
    return f"{folder}/{INSTANCES_FILE}"


def test_a_batch_job_of_an_uploaded_model_answers_as_its_endpoint_would(
    settings, fake_vertex, uploaded, gcs_emulator, tmp_path, split_frame, eyfs
):
    observations = sample(split_frame, 10)
    folder = f"gs://{gcs_emulator}/{tmp_path.name}/archive/1"
    backend = VertexModelBatchBackend(settings)
    job = backend.submit(
        BatchJobRequest(
            uploaded, write_instances(folder, observations), f"{folder}/output", "obs-archive", {"d": "1"}, 10, 4
        )
    )

    [created] = fake_vertex.created("batchPredictionJobs")
    assert created["model"] == uploaded and created["instanceConfig"] == {"keyField": "observation_id"}
    assert created["inputConfig"] == {"instancesFormat": "jsonl", "gcsSource": {"uris": [f"{folder}/instances.jsonl"]}}
    assert created["outputConfig"] == {
        "predictionsFormat": "jsonl",
        "gcsDestination": {"outputUriPrefix": f"{folder}/output"},
    }
    assert created["dedicatedResources"]["machineSpec"] == {"machineType": settings.serving_machine_type}
    assert created["manualBatchTuningParameters"] == {"batchSize": 4}
    assert created["labels"] == {"d": "1", "instances": "10"}
    lines = [json.loads(line) for line in storage_from_uri(folder).read_bytes(INSTANCES_FILE).splitlines()]
    keys = {"observation_id", "notes", "child_age_months", "observation_date"}
    assert {key for line in lines for key in line} == keys  # no name

    pending, running, succeeded = (backend.status(job) for _ in range(3))
    assert (pending.state, running.state, succeeded.state) == (JobState.PENDING, JobState.RUNNING, JobState.SUCCEEDED)
    assert (running.detail.step, running.detail.total_steps, running.detail.unit) == (5, 10, "instances")
    assert running.progress == 0.5 and succeeded.progress == 1.0 and succeeded.detail.step == 10

    result = backend.result(job)
    assert result.uri.startswith(f"{folder}/output/prediction-oss-classifier_v3-") and result.managed
    assert result.manifest["metrics"] == {
        "instances": 10,
        "successful_count": 10,
        "failed_count": 0,
        "incomplete_count": 0,
    }
    names = sorted(path.rsplit("/", 1)[-1] for path in storage_from_uri(result.uri).list_files(""))
    assert names == ["prediction.results-00000-of-00002", "prediction.results-00001-of-00002"]

    [submission] = answered_submissions(storage_from_uri(f"gs://{gcs_emulator}/{tmp_path.name}"), "archive")
    assert list(submission.submitted) == observations["observation_id"].tolist() and not submission.output.failed
    fingerprints = [instance.fingerprint for instance in archive_instances(observations)]
    assert list(submission.submitted.values()) == fingerprints  # the instances sent, read back
    for observation_id, notes in zip(observations["observation_id"], observations["text"]):
        written = fake_vertex.prediction_for(notes)  # what the endpoint's predict answers for the same note
        answer = submission.output.answers[observation_id]
        assert answer == answered_as_the_fake(fake_vertex)([Instance(notes)])[0]
        assert answer.attribute_id == written["attribute_id"] and type(answer.attribute_id) is int


def test_a_request_the_app_refuses_fails_the_instances_it_carried(
    settings, fake_vertex, uploaded, gcs_emulator, tmp_path, split_frame
):
    observations = sample(split_frame, 10)
    # A note at the limit lengthened past it by redaction (names become placeholders): the app refuses it.
    observations.loc[5, "text"] = "x" * (MAX_NOTES_CHARS + 1)
    folder = f"gs://{gcs_emulator}/{tmp_path.name}/archive/1"
    backend = VertexModelBatchBackend(settings)
    job = backend.submit(
        BatchJobRequest(uploaded, write_instances(folder, observations), f"{folder}/output", "obs", {}, 10, 4)
    )
    while not backend.status(job).state.finished:
        pass
    assert backend.result(job).manifest["metrics"]["failed_count"] == 4  # the request of instances 4 to 7

    [submission] = answered_submissions(storage_from_uri(f"gs://{gcs_emulator}/{tmp_path.name}"), "archive")
    refused = observations["observation_id"][4:8].tolist()
    assert sorted(submission.output.failed) == sorted(refused) and len(submission.output.answers) == 6
    unanswered = {**{i: submission.submitted[i] for i in refused}, "obs-new": "a fingerprint no job was sent"}
    reasons = why_unanswered([submission], unanswered)
    assert set(reasons) == {*refused, "obs-new"}
    assert all("failed on it" in reasons[i] and "422" in reasons[i] and "notes" in reasons[i] for i in refused)
    assert "in no batch job's instances" in reasons["obs-new"]
    assert "x" * 50 not in json.dumps(reasons)  # the app names the field, never the note


def test_refusals_and_cancel(settings, fake_vertex, uploaded, gcs_emulator, tmp_path, split_frame):
    from obs_platform.serving.app import MAX_BATCH

    assert MAX_BATCH_SIZE == MAX_BATCH  # the largest request the app takes is the largest batch a job sends
    backend = VertexModelBatchBackend(settings)
    folder = f"gs://{gcs_emulator}/{tmp_path.name}/archive/1"
    with pytest.raises(JobError, match="batch_size must be 1 to 64"):
        backend.submit(
            BatchJobRequest(uploaded, f"{folder}/instances.jsonl", f"{folder}/output", "obs", {}, 1, MAX_BATCH_SIZE + 1)
        )
    assert fake_vertex.created("batchPredictionJobs") == []  # refused before any (billed) request
    with pytest.raises(JobError, match="does not exist"):
        backend.submit(BatchJobRequest(uploaded, f"{folder}/none.jsonl", f"{folder}/output", "obs", {}, 1))
    with pytest.raises(JobError, match="not a Vertex AI batchPredictionJobs name"):
        backend.status("projects/p/locations/l/customJobs/1")
    instances = write_instances(folder, sample(split_frame, 3))
    job = backend.submit(BatchJobRequest(uploaded, instances, f"{folder}/output", "obs", {}, 3))
    backend.cancel(job)
    assert [backend.status(job).state for _ in range(2)] == [JobState.RUNNING, JobState.CANCELLED]
    with pytest.raises(JobError, match="CANCELLED"):
        backend.result(job)


def test_a_job_that_answered_some_instances_is_a_success_with_its_failures_counted():
    """Vertex may end a job PARTIALLY_SUCCEEDED: its answers are written, and the instances it failed on are named
    when they are read, so it is no failed job here."""
    job = aiplatform.BatchPredictionJob(
        state=aiplatform.JobState.JOB_STATE_PARTIALLY_SUCCEEDED,
        labels={"instances": "10"},
        completion_stats={"successful_count": 8, "failed_count": 2},
    )
    status = model_batch._status(job, datetime.now(UTC))
    assert status.state is JobState.SUCCEEDED and status.progress == 1.0
    assert (status.detail.step, status.detail.total_steps) == (10, 10)
    running = model_batch._status(
        aiplatform.BatchPredictionJob(state=aiplatform.JobState.JOB_STATE_RUNNING, labels={"instances": "x"}),
        datetime.now(UTC),
    )
    assert running.state is JobState.RUNNING and running.detail.total_steps == 0  # a label not of this project


def test_output_lines_are_read_without_raising():
    prediction = {
        "domain": "cl",
        "domain_name": "Communication",
        "attribute": "Speaking",
        "attribute_id": 3.0,  # through a protobuf Value every number is a double
        "level": "Reception",
        "confidence": 0.7,
        "level_confidence": 0.9,
        "top_k": [
            {
                "domain": "cl",
                "domain_name": "Communication",
                "attribute": "Speaking",
                "attribute_id": 3.0,
                "probability": 0.7,
            }
        ],
        "tags": [3.0],
    }
    output = read_batch_output(
        [
            json.dumps({"key": "a", "prediction": prediction}),
            json.dumps({"key": "b", "error": {"status": "INVALID_ARGUMENT", "message": "bad notes"}}),
            json.dumps({"key": "c", "error": {"code": 13, "message": "Internal error"}}),
            json.dumps({"key": "d", "prediction": {"label": "not the app's shape"}}),
            b"{not json",
            json.dumps({"prediction": prediction}),  # no key: no observation to name
            "",
        ]
    )
    assert set(output.answers) == {"a"} and output.answers["a"].top_k[0].attribute_id == 3
    assert output.answers["a"].attribute_id == 3 and output.answers["a"].tags == [3]
    assert output.failed["b"] == "INVALID_ARGUMENT: bad notes" and output.failed["c"] == "13: Internal error"
    assert "not a prediction of the serving app" in output.failed["d"] and output.unreadable == 2


# ----- the bucket deployment's graph ---------------------------------------------------------------------------------


@pytest.fixture
def bucket_home(monkeypatch, fake_vertex, gcs_emulator, tmp_path, eyfs, split_frame):
    """A bucket-backed storage root with 40 redacted observations stored as the data assets store them, a champion
    registered, and the Vertex variables set to the fake."""
    fake_vertex.taxonomy = eyfs
    home = f"gs://{gcs_emulator}/{tmp_path.name}/home"
    storage = storage_from_uri(home)
    buffer = io.BytesIO()
    sample(split_frame, 40).to_parquet(buffer, index=False)
    storage.write_bytes("assets/redacted_observations.parquet", buffer.getvalue())
    files = tmp_path / "model-files"
    files.mkdir()
    (files / "manifest.json").write_text(json.dumps({"mode": "classifier"}))
    registry = ModelRegistry(storage)
    champion = registry.register(OSS_MODEL, ModelArtifact(str(files), {}), dataset_version="d1", job_id="job-1")
    registry.set_alias(OSS_MODEL, "champion", champion.version)
    for name, value in {
        **fake_environment(fake_vertex, f"gs://{gcs_emulator}/{tmp_path.name}/vertex"),
        "OBS_PLATFORM_WORK_DIR": str(tmp_path / "work"),
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("OBS_PLATFORM_WAREHOUSE", raising=False)
    monkeypatch.delenv("OBS_PLATFORM_BIGQUERY_PROJECT", raising=False)
    return home


def materialize(defs: dg.Definitions, instance: dg.DagsterInstance, key: str, **resources) -> dg.ExecuteInProcessResult:
    """One analytics asset as the bucket deployment defines it, with the deployment's resources, its input read from
    the bucket as a run reads it; the warehouse kept in memory (a bucket's is BigQuery, tested against its emulator
    in test_bigquery_warehouse.py)."""
    [asset] = [a for a in deployment_assets(bucket=True) if a.key == dg.AssetKey(key)]
    return dg.materialize(
        [dg.AssetSpec("redacted_observations").with_io_manager_key("io_manager"), asset],
        instance=instance,
        resources={**defs.resources, "warehouse_io_manager": dg.InMemoryIOManager(), **resources},
        selection=[key],
        raise_on_error=False,
    )


def sensor_until_reported(defs, instance, ticks: int = 6) -> list[dg.AssetMaterialization | dg.AssetObservation]:
    """Ticks of the job-status sensor until it reports how a job ended."""
    cursor, events = None, []
    for _ in range(ticks):
        result = tick_sensor(defs, instance, "tuning_job_sensor", cursor)
        cursor, events = result.cursor, [*events, *result.asset_events]
        if any(isinstance(event, dg.AssetObservation) for event in events):
            break
    return events


def test_the_bucket_deployment_scores_the_archive_with_a_batch_job(monkeypatch, bucket_home, fake_vertex, capfd, eyfs):
    defs = load_defs(monkeypatch, bucket_home)
    # On a bucket the `analytics` run submits the job (the table follows its predictions); with no warehouse
    # configured (no BigQuery project) no sensor requests either.
    analytics_run = defs.resolve_job_def("analytics").asset_layer.executable_asset_keys
    assert {key.to_user_string() for key in analytics_run} == {"archive_batch_job", "evaluation_history"}
    assert not any(sensor.name == "analytics_automation" for sensor in defs.sensors)
    with dg.DagsterInstance.ephemeral() as instance:
        before = dg.evaluate_automation_conditions(defs=defs, instance=instance)
        assert materialize(defs, instance, "archive_batch_job").success
        submitted = metadata(instance, "archive_batch_job")
        assert "/batchPredictionJobs/" in submitted["job_id"] and submitted["backend"] == "vertex-model-batch"
        assert submitted["instances"] == 40 and submitted["model_version"] == f"{OSS_MODEL}/v1"
        [upload] = fake_vertex.requests("models:upload")  # the champion uploaded as its endpoint would serve it
        [created] = fake_vertex.created("batchPredictionJobs")
        assert created["model"] == submitted["vertex_model"] and submitted["uploaded"] is True
        assert upload["model"]["displayName"] == f"{OSS_MODEL}/v1"

        events = sensor_until_reported(defs, instance)
        # The sensor's log (Dagster's logger writes to the process's stderr)
        progress = [line for line in capfd.readouterr().err.splitlines() if submitted["job_id"] in line]
        running = [line for line in progress if "instances 20/40" in line]
        assert running and "[##########----------] 50%" in running[0] and "ETA" in running[0], progress
        observation, reported = events
        assert observation.metadata["state"].value == "SUCCEEDED"
        assert reported.asset_key == dg.AssetKey("archive_predictions")
        assert reported.metadata["job_metrics"].value["successful_count"] == 40
        assert reported.metadata["instances"].value == "40" and "/prediction-" in reported.metadata["output_uri"].value

        after = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=before.cursor)
        requested = {r.key.to_user_string() for r in after.results if after.get_num_requested(r.key)}
        assert "scored_observations" in requested and "archive_batch_job" not in requested

        scored = materialize(defs, instance, "scored_observations")
        assert scored.success
        table = scored.output_for_node("scored_observations")
        shown = metadata(instance, "scored_observations")
    observations = frame_from_parquet(storage_from_uri(bucket_home).read_bytes("assets/redacted_observations.parquet"))
    expected = score_archive(observations, answered_as_the_fake(fake_vertex), eyfs, model_version=f"{OSS_MODEL}/v1")
    assert list(table.columns) == SCORED_COLUMNS
    pd.testing.assert_frame_equal(table.reset_index(drop=True), expected)
    assert shown["dagster/row_count"] == 40 and shown["unscored"] == 0 and shown["failed_instances"] == 0
    assert shown["scored_by"] == "Vertex AI batch prediction job" and shown["agreement"] is not None


def test_only_what_the_champion_has_not_answered_is_sent_again(
    monkeypatch, bucket_home, fake_vertex, eyfs, split_frame
):
    defs = load_defs(monkeypatch, bucket_home)
    storage = storage_from_uri(bucket_home)
    with dg.DagsterInstance.ephemeral() as instance:
        assert materialize(defs, instance, "archive_batch_job").success
        sensor_until_reported(defs, instance)
        # New data: two new notes, and one note corrected since the job answered it
        observations = frame_from_parquet(storage.read_bytes("assets/redacted_observations.parquet"))
        observations.loc[7, "text"] = observations.loc[7, "text"] + " Then she did it again."
        grown = pd.concat([observations, sample(split_frame, 42).tail(2)], ignore_index=True)
        buffer = io.BytesIO()
        grown.to_parquet(buffer, index=False)
        storage.write_bytes("assets/redacted_observations.parquet", buffer.getvalue())

        assert materialize(defs, instance, "archive_batch_job").success
        submitted = metadata(instance, "archive_batch_job")
        assert (submitted["instances"], submitted["answers_held"], submitted["observations"]) == (3, 39, 42)
        first, second = fake_vertex.created("batchPredictionJobs")
        sent = submitted_ids(second)
        assert sent == [observations["observation_id"][7], *grown["observation_id"][40:]]
        assert len(fake_vertex.requests("models:upload")) == 1  # the champion's Model, uploaded once
        sensor_until_reported(defs, instance)
        scored = materialize(defs, instance, "scored_observations")
        table = scored.output_for_node("scored_observations")
        shown = metadata(instance, "scored_observations")

        # Nothing new: no (billed) job
        assert materialize(defs, instance, "archive_batch_job").success
        nothing = metadata(instance, "archive_batch_job")
        assert nothing["outcome"] == "answered" and nothing["instances"] == 0 and "job_id" not in nothing
        assert len(fake_vertex.created("batchPredictionJobs")) == 2
        assert sensor_until_reported(defs, instance, ticks=2) == []
    expected = score_archive(grown, answered_as_the_fake(fake_vertex), eyfs, model_version=f"{OSS_MODEL}/v1")
    pd.testing.assert_frame_equal(table.reset_index(drop=True), expected)
    assert shown["unscored"] == 0 and shown["batch_jobs_read"] == 2 and shown["dagster/row_count"] == 42


def submitted_ids(created: dict) -> list[str]:
    """The observation ids a created job's instances file holds."""
    [uri] = created["inputConfig"]["gcsSource"]["uris"]
    folder, name = uri.rsplit("/", 1)
    return [json.loads(line)["observation_id"] for line in storage_from_uri(folder).read_bytes(name).splitlines()]


def test_a_failed_batch_job_is_reported_and_scores_nothing(monkeypatch, bucket_home, fake_vertex, capfd):
    defs = load_defs(monkeypatch, bucket_home)
    fake_vertex.next_failure = "Post request fails. Cannot get predictions: the model server did not start."
    with dg.DagsterInstance.ephemeral() as instance:
        assert materialize(defs, instance, "archive_batch_job").success
        [observation] = sensor_until_reported(defs, instance)
        assert observation.asset_key == dg.AssetKey("archive_batch_job")
        assert observation.metadata["state"].value == "FAILED"
        assert "model server did not start" in observation.metadata["message"].value
        assert instance.get_latest_materialization_event(dg.AssetKey("archive_predictions")) is None
        scored = materialize(defs, instance, "scored_observations")
    assert not scored.success
    [failure] = [event for event in scored.all_events if event.is_step_failure]
    assert "has answered the archive yet" in failure.step_failure_data.error.message


def test_observations_the_job_failed_on_are_named_not_dropped(monkeypatch, bucket_home, fake_vertex, capfd, eyfs):
    storage = storage_from_uri(bucket_home)
    observations = frame_from_parquet(storage.read_bytes("assets/redacted_observations.parquet"))
    observations.loc[9, "text"] = "y" * (MAX_NOTES_CHARS + 5)  # refused by the app: its request of 4 fails
    buffer = io.BytesIO()
    observations.to_parquet(buffer, index=False)
    storage.write_bytes("assets/redacted_observations.parquet", buffer.getvalue())
    defs = load_defs(monkeypatch, bucket_home)
    small_batches = {"analytics": AnalyticsResource(runtime="torch", batch_size=4)}
    with dg.DagsterInstance.ephemeral() as instance:
        assert materialize(defs, instance, "archive_batch_job", **small_batches).success
        *_, reported = sensor_until_reported(defs, instance)
        assert reported.metadata["job_metrics"].value["failed_count"] == 4
        capfd.readouterr()
        scored = materialize(defs, instance, "scored_observations")
        assert scored.success
        table = scored.output_for_node("scored_observations")
        shown = metadata(instance, "scored_observations")
    refused = observations["observation_id"][8:12].tolist()
    assert len(table) == 36 and not set(refused) & set(table["observation_id"])
    assert shown["unscored"] == 4 and shown["failed_instances"] == 4 and shown["dagster/row_count"] == 36
    for observation_id in refused:
        assert observation_id in shown["unscored_observations"]
    assert "422" in shown["unscored_observations"] and "notes" in shown["unscored_observations"]
    assert "4 of 40 observations have no row" in capfd.readouterr().err
    kept = observations[~observations["observation_id"].isin(refused)].reset_index(drop=True)
    expected = score_archive(kept, answered_as_the_fake(fake_vertex), eyfs, model_version=f"{OSS_MODEL}/v1")
    pd.testing.assert_frame_equal(table.reset_index(drop=True), expected)


def conditions(bucket: bool) -> dict[str, str | None]:
    specs = {spec.key.to_user_string(): spec for asset in deployment_assets(bucket) for spec in _specs(asset)}
    return {key: condition_text(specs[key].automation_condition) for key in ARCHIVE_ASSETS}


def _specs(asset: dg.AssetsDefinition | dg.AssetSpec) -> list[dg.AssetSpec]:
    return [asset] if isinstance(asset, dg.AssetSpec) else list(asset.specs)


ARCHIVE_ASSETS = ("archive_batch_job", "scored_observations")


def test_each_deployment_follows_what_it_scores_from(monkeypatch, bucket_home):
    # Locally the batch job is never requested, and the table follows the champion; on a bucket the job follows
    # the champion, and the table the job's predictions.
    assert conditions(bucket=False) == {
        "archive_batch_job": None,
        "scored_observations": condition_text(SCORED_LOCALLY),
    }
    assert conditions(bucket=True) == {
        "archive_batch_job": 'eager ignoring group:"data"',
        "scored_observations": condition_text(SCORED_FROM_PREDICTIONS),
    }
    assert "champion_model" in condition_text(SCORED_FROM_PREDICTIONS)
    monkeypatch.setenv("OBS_PLATFORM_BIGQUERY_PROJECT", "obs-test")  # a bucket with its warehouse: automated
    defs = load_defs(monkeypatch, bucket_home)
    assert defs.resolve_sensor_def("analytics_automation")
