"""The Vertex AI deployment of the asset graph, against the loopback fake of Vertex and the GCS emulator: the data
assets write to the bucket, a Gemini tuning job and a custom job are submitted through the real SDKs, the
job-status sensor sees both succeed, and both models are registered."""

import os
import subprocess
import sys
import time

import dagster as dg
import httpx
import pytest

from obs_platform.cli import sample_data_files
from obs_platform.cloud.vertex import VertexConfigError, VertexSettings
from obs_platform.local_run import tick_sensor
from obs_platform.serving.served import served_classifier, served_model
from obs_platform.storage import storage_from_uri
from obs_platform.training.backend import ModelArtifact
from obs_platform.training.registry import ModelRegistry

from .conftest import free_port
from .fake_vertex import fake_environment
from .test_data_assets import load_defs, metadata

pytest.importorskip("google.genai")


@pytest.fixture
def vertex_env(monkeypatch, fake_vertex, gcs_emulator, tmp_path, eyfs, trained):
    """A bucket-backed storage root with the sample corpus landed, and the Vertex variables set to the fake (whose
    models answer with the shipped taxonomy's labels, and whose custom jobs leave a real trained tiny model)."""
    fake_vertex.taxonomy = eyfs
    fake_vertex.trainer_output = trained
    home = f"gs://{gcs_emulator}/{tmp_path.name}/home"
    storage = storage_from_uri(home)
    for file in sample_data_files():
        storage.write_bytes(f"landing/{file.name}", file.read_bytes())
    for name, value in {
        **fake_environment(fake_vertex, f"gs://{gcs_emulator}/{tmp_path.name}/vertex"),
        "OBS_PLATFORM_TUNING_USD_PER_MILLION_TOKENS": "5",
        "OBS_PLATFORM_BASELINES": "majority,tfidf_logistic",
        "OBS_PLATFORM_EXTERNAL_EVAL": "",
        "OBS_PLATFORM_PROMOTION_FLOOR": "none",
        "OBS_PLATFORM_ENDPOINT_RUNTIME": "torch",
        "OBS_PLATFORM_WORK_DIR": str(tmp_path / "work"),
    }.items():
        monkeypatch.setenv(name, value)
    return home


def test_missing_vertex_settings_are_named_when_the_definitions_load(monkeypatch, gcs_emulator, tmp_path):
    monkeypatch.setenv("OBS_PLATFORM_BACKEND", "vertex")
    for name in ("PROJECT", "REGION", "BUCKET", "TRAINER_IMAGE"):
        monkeypatch.delenv(f"OBS_PLATFORM_VERTEX_{name}", raising=False)
    with pytest.raises(Exception) as raised:
        load_defs(monkeypatch, tmp_path)
    assert "needs OBS_PLATFORM_HOME=gs://" in str(root_cause(raised.value))
    with pytest.raises(Exception) as raised:
        load_defs(monkeypatch, f"gs://{gcs_emulator}/x")
    cause = root_cause(raised.value)
    assert isinstance(cause, VertexConfigError)
    for name in ("PROJECT", "REGION", "BUCKET", "TRAINER_IMAGE"):  # every one missing, in one message
        assert f"OBS_PLATFORM_VERTEX_{name} is not set" in str(cause)


def root_cause(error: BaseException) -> BaseException:
    """Dagster wraps an error raised while definitions load; the user sees the cause at the end of the trace."""
    while error.__cause__ is not None:
        error = error.__cause__
    return error


def test_gemini_tuning_locally_fails_and_names_what_to_set(monkeypatch, landed_storage):
    defs = load_defs(monkeypatch, landed_storage.root)
    with dg.DagsterInstance.ephemeral() as instance:
        assert defs.resolve_job_def("data").execute_in_process(instance=instance).success
        result = defs.resolve_implicit_global_asset_job_def().execute_in_process(
            instance=instance, asset_selection=[dg.AssetKey("gemini_tuning_job")], raise_on_error=False
        )
        assert not result.success
        [failure] = [e for e in result.all_events if e.is_step_failure]
        message = failure.step_failure_data.error.message
        assert "OBS_PLATFORM_BACKEND=vertex" in message and "OBS_PLATFORM_VERTEX_PROJECT" in message


@pytest.mark.slow  # the whole Vertex graph (about 45 s): `make test` runs it, `make test-fast` does not
def test_both_vertex_tuning_paths_run_to_registered_models(monkeypatch, vertex_env, fake_vertex, eyfs):
    defs = load_defs(monkeypatch, vertex_env)
    with dg.DagsterInstance.ephemeral() as instance:
        assert defs.resolve_job_def("train").execute_in_process(instance=instance).success
        custom, gemini = metadata(instance, "oss_tuning_job"), metadata(instance, "gemini_tuning_job")
        assert custom["backend"] == "vertex-custom-job" and "/customJobs/" in custom["job_id"]
        assert gemini["backend"] == "vertex-gemini" and "/tuningJobs/" in gemini["job_id"]
        # The custom job trains the splits the data assets wrote to the bucket; Gemini its JSONL, priced first.
        [job] = fake_vertex.created("customJobs")
        args = job["jobSpec"]["workerPoolSpecs"][0]["containerSpec"]["args"]
        assert args[args.index("--train") + 1] == f"{metadata(instance, 'training_splits')['splits_uri']}/train.jsonl"
        [tuning] = fake_vertex.created("tuningJobs")
        assert tuning["supervisedTuningSpec"]["trainingDatasetUri"].startswith(vertex_env)
        estimate = gemini["cost_estimate"]
        assert 0 < estimate["examples"] < metadata(instance, "gemini_sft_jsonl")["dagster/row_count"]  # train only
        assert estimate["training_tokens"] > 0 and gemini["estimated_usd"] == estimate["usd"] > 0

        before = dg.evaluate_automation_conditions(defs=defs, instance=instance)  # a daemon that was already up
        cursor, reported = None, {}
        for _ in range(10):  # the fake moves each job on a step per GET: PENDING → RUNNING → SUCCEEDED
            result = tick_sensor(defs, instance, "tuning_job_sensor", cursor)
            cursor = result.cursor
            events = [e for e in result.asset_events if isinstance(e, dg.AssetMaterialization)]
            reported |= {event.asset_key.to_user_string(): event for event in events}
            if len(reported) == 2:
                break
        assert set(reported) == {"tuned_oss_model", "tuned_gemini_model"}
        tuned_gemini = metadata(instance, "tuned_gemini_model")
        tuned_oss = metadata(instance, "tuned_oss_model")
        assert tuned_gemini["model_version"] == "gemini-tuned/v1" and tuned_gemini["job_id"] == gemini["job_id"]
        assert tuned_oss["model_version"] == "oss-classifier/v1" and tuned_oss["backend"] == "vertex-custom-job"
        assert tuned_oss["machine_hours"] == 1.5 and tuned_oss["cost"]["machine_type"]  # the fake job's 90 minutes
        # Automation follows both models: the custom job's model is calibrated, evaluated (copied to a local work
        # folder, served on a local evaluation endpoint) and promoted; the tuned Gemini is recorded and asked.
        automation = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=before.cursor)
        # No sensor targets the warehouse's assets here (a bucket without its BigQuery project has no warehouse);
        # their conditions still ask for the archive's batch job and the evaluation history after the champion.
        assert defs.resolve_sensor_def("model_automation") and not any(
            sensor.name == "analytics_automation" for sensor in defs.sensors or []
        )
        analytics = {"archive_batch_job", "evaluation_history"}
        wanted = {
            "model_calibration",
            "evaluation_report",
            "champion_model",
            "oss_endpoint",
            "gemini_endpoint",
            "gemini_batch_job",
            "served_model",
        }
        requested = {r.key.to_user_string() for r in automation.results if automation.get_num_requested(r.key)}
        assert requested - analytics == wanted
        served = defs.resolve_implicit_global_asset_job_def().execute_in_process(
            instance=instance, asset_selection=[dg.AssetKey(k) for k in wanted]
        )
        assert served.success
        # The champion on a Vertex endpoint: uploaded with its calibration, deployed, asked through the client.
        endpoint = metadata(instance, "oss_endpoint")
        assert "/endpoints/" in endpoint["url"] and endpoint["model_version"] == "oss-classifier/v1"
        assert endpoint["redeployed"] is True and "Amara poured water" in endpoint["example"]
        [upload] = fake_vertex.requests("models:upload")
        assert upload["model"]["artifactUri"] == tuned_oss["model_uri"]
        assert {"name": "OBS_PLATFORM_HOME", "value": vertex_env} in upload["model"]["containerSpec"]["env"]
        assert storage_from_uri(tuned_oss["model_uri"]).exists("calibration.json")  # uploaded after calibration
        again = defs.resolve_implicit_global_asset_job_def().execute_in_process(
            instance=instance, asset_selection=[dg.AssetKey("oss_endpoint")]
        )
        assert again.success and metadata(instance, "oss_endpoint")["redeployed"] is False
        assert len(fake_vertex.requests("models:upload")) == 1 and len(fake_vertex.requests(":deployModel")) == 1
        assert metadata(instance, "model_calibration")["calibrated"] is True
        assert metadata(instance, "evaluation_report")["promotion"] == "promote"
        assert metadata(instance, "champion_model")["champion"] == "oss-classifier/v1"
        report_uri = metadata(instance, "evaluation_report")["report"]
        assert report_uri.startswith(vertex_env) and storage_from_uri(vertex_env).exists(
            report_uri.removeprefix(vertex_env + "/")
        )
        gemini_served = metadata(instance, "gemini_endpoint")
        assert gemini_served["endpoint"] == tuned_gemini["model_uri"] and "/endpoints/" in gemini_served["endpoint"]
        assert "Amara poured water" in gemini_served["example"] and "invalid" not in gemini_served["example"]
        [asked] = fake_vertex.requests(":generateContent")
        assert "Amara" not in str(asked)  # redacted before it left
        registry = ModelRegistry(storage_from_uri(vertex_env))
        assert "/endpoints/" in registry.get("gemini-tuned", 1).uri  # by reference
        copied = registry.get("oss-classifier", 1)
        assert copied.uri.startswith(vertex_env) and storage_from_uri(copied.uri).exists("manifest.json")
        assert metadata(instance, "served_model")["served_family"] == "open-source"  # Gemini not evaluated yet

        # The tuned Gemini is evaluated by a batch job (the test split and no external set here), polled by the same
        # sensor, its answers read back (the fake malforms some and fails others), scored beside the open-source
        # champion and the baselines, and gated; then the served-model decision compares the two families.
        batch = metadata(instance, "gemini_batch_job")
        assert "/batchPredictionJobs/" in batch["job_id"] and batch["cost_estimate"]["input_tokens"] > 0
        [created] = fake_vertex.created("batchPredictionJobs")
        assert created["model"] == registry.get("gemini-tuned", 1).manifest["tuned_model"]
        assert (
            "Amara"
            not in storage_from_uri(batch["requests_uri"].rpartition("/")[0]).read_bytes("requests.jsonl").decode()
        )
        before = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=automation.cursor)
        for _ in range(5):
            cursor = tick_sensor(defs, instance, "tuning_job_sensor", cursor).cursor
            if instance.get_latest_materialization_event(dg.AssetKey("gemini_predictions")):
                break
        predictions = metadata(instance, "gemini_predictions")
        assert predictions["job_id"] == batch["job_id"] and "/prediction-model-" in predictions["output_uri"]
        automation = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=before.cursor)
        requested = {r.key.to_user_string() for r in automation.results if automation.get_num_requested(r.key)}
        assert requested == {"gemini_evaluation_report", "served_model"}
        evaluated = defs.resolve_implicit_global_asset_job_def().execute_in_process(
            instance=instance, asset_selection=[dg.AssetKey(k) for k in requested]
        )
        assert evaluated.success
        report = metadata(instance, "gemini_evaluation_report")
        assert report["invalid_rate"] > 0 and report["repaired_rate"] > 0  # malformed and failed answers counted
        systems = {row.data["system"] for row in report["comparison"].records}
        assert {"gemini-tuned/v1", "oss-classifier/v1 (open-source champion)", "tfidf_logistic"} <= systems
        assert report["promotion"] == "promote"  # the first Gemini, and the floor is off here
        [check] = evaluated.get_asset_check_evaluations()
        assert check.check_name == "gemini_promotion_gate" and check.passed
        assert registry.champion("gemini-tuned").label == "gemini-tuned/v1"
        decided = metadata(instance, "served_model")
        families = {row.data["family"]: row.data for row in decided["families"].records}
        assert set(families) == {"open-source", "gemini"}
        best = max(families.values(), key=lambda row: row["attribute_macro_f1"])
        assert decided["served_family"] == best["family"] and "tags better" in decided["reason"]
        # An app's client follows the recorded decision alone, whichever family it names.
        decision = served_model(storage_from_uri(vertex_env))
        assert (decision.family, decision.address) == (decided["served_family"], decided["address"])
        expected = tuned_gemini["model_uri"] if decision.family == "gemini" else endpoint["url"]
        assert decision.address == expected
        client = served_classifier(storage_from_uri(vertex_env), eyfs, vertex=VertexSettings.from_env())
        assert client.classify("Counted the ducks on the pond", child_age_months=40).attribute

        # A new champion deployed: the model it replaces is undeployed once the new one serves.
        second = registry.register(
            "oss-classifier", ModelArtifact(copied.uri, copied.manifest), dataset_version="d2", job_id="manual", spec={}
        )
        registry.set_alias("oss-classifier", "champion", second.version)
        assert (
            defs.resolve_implicit_global_asset_job_def()
            .execute_in_process(instance=instance, asset_selection=[dg.AssetKey("oss_endpoint")])
            .success
        )
        [undeployed] = fake_vertex.requests(":undeployModel")
        [endpoint_state] = [e for e in fake_vertex.endpoints.values() if e["displayName"] == "obs-platform-oss"]
        assert [m["id"] for m in endpoint_state["deployedModels"]] != [undeployed["deployedModelId"]]
        assert len(endpoint_state["deployedModels"]) == 1


def test_the_serving_entrypoint_runs_as_vertex_starts_a_container(gcs_emulator, trained, tmp_path):
    """No arguments: the model from AIP_STORAGE_URI (a bucket folder), the port from AIP_HTTP_PORT, no bearer token
    (Vertex authenticates callers), the version and the storage root from the Model's container environment."""
    folder = f"gs://{gcs_emulator}/{tmp_path.name}/model"
    storage = storage_from_uri(folder)
    for file in sorted(p for p in trained.rglob("*") if p.is_file()):
        storage.write_bytes(file.relative_to(trained).as_posix(), file.read_bytes())
    port = free_port()
    environment = {
        **os.environ,
        "AIP_STORAGE_URI": folder,
        "AIP_HTTP_PORT": str(port),
        "OBS_PLATFORM_MODEL_VERSION": "m/v7",
        "OBS_PLATFORM_HOME": f"gs://{gcs_emulator}/{tmp_path.name}/home",
        "OBS_PLATFORM_ENDPOINT_RUNTIME": "torch",
    }
    environment.pop("OBS_PLATFORM_ENDPOINT_TOKEN", None)
    log = tmp_path / "serving.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "obs_platform.serving"], env=environment, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        answer = httpx.post(f"{url}/v1/predict", json={"instances": [{"notes": "Counted five ducks"}]}, timeout=30)
        assert answer.status_code == 200, answer.text
        assert answer.json()["model_version"] == "m/v7" and len(answer.json()["predictions"]) == 1
    finally:
        process.terminate()
        process.wait(timeout=30)
