"""The local tuning backend (a real trainer subprocess on a tiny BERT), the registry, and the model asset."""

import contextlib
import json
import os
import shutil
import signal
import time
from dataclasses import replace
from pathlib import Path

import dagster as dg
import pytest

from obs_platform.data.redaction import Roster
from obs_platform.defs.training.job_log import job_records
from obs_platform.local_run import run_whole_graph
from obs_platform.processes import group_alive
from obs_platform.serving import endpoint
from obs_platform.storage import LocalStorage
from obs_platform.training.backend import JobError, JobState, ModelArtifact, TrainingSpec
from obs_platform.training.local import LocalSubprocessBackend
from obs_platform.training.registry import ModelRegistry, RegistryError

from .test_data_assets import load_defs, metadata


def spec_for(split_files, tiny_bert, **hyperparameters) -> TrainingSpec:
    return TrainingSpec(
        train_uri=str(split_files["train"]),
        valid_uri=str(split_files["valid"]),
        dataset_version="test-version",
        base_model=str(tiny_bert),
        hyperparameters={"recipe": "lora", "epochs": 1, "batch_size": 64, "max_length": 64, **hyperparameters},
    )


def wait(backend, job_id, timeout=180):
    deadline = time.monotonic() + timeout
    while not (status := backend.status(job_id)).state.finished:
        assert time.monotonic() < deadline, f"job {job_id} still {status.state}"
        time.sleep(0.5)
    return status


def test_the_recipe_decides_what_a_job_is_given():
    """The hybrid gets the taxonomy texts and none of LoRA's settings; LoRA gets its settings and no texts."""
    from obs_platform.defs.training.resources import TuningBackendResource

    def spec(recipe: str) -> TrainingSpec:
        resource = TuningBackendResource(vertex=None, recipe=recipe, epochs=2)
        return resource.spec("s/train.jsonl", "s/valid.jsonl", "v1", "s/taxonomy.jsonl")

    hybrid, lora = spec("hybrid"), spec("lora")
    assert hybrid.hyperparameters == {"recipe": "hybrid"}
    assert hybrid.trainer_args("out")[-4:] == ["--taxonomy-texts", "s/taxonomy.jsonl", "--recipe", "hybrid"]
    assert lora.hyperparameters["recipe"] == "lora" and lora.hyperparameters["epochs"] == 2
    assert "--taxonomy-texts" not in lora.trainer_args("out") and "--epochs" in lora.trainer_args("out")
    assert hybrid.trainer_code == lora.trainer_code  # the recipe, not the code, tells the two apart
    few_steps = TuningBackendResource(vertex=None, encoder_tuning_steps=5).spec("t", "v", "v1", "x")
    assert few_steps.hyperparameters == {"recipe": "hybrid", "encoder_tuning_steps": 5}
    assert few_steps.trainer_args("out")[-4:] == ["--encoder-tuning-steps", "5", "--recipe", "hybrid"]


@pytest.mark.slow  # a real trainer subprocess fitting the hybrid on the corpus (about 20 s)
def test_a_hybrid_job_reports_its_encoder_tuning_steps_as_progress(tmp_path, split_files, taxonomy_texts, tiny_bert):
    backend = LocalSubprocessBackend(tmp_path)
    spec = spec_for(split_files, tiny_bert, recipe="hybrid", encoder_tuning_steps=300, log_every=1)
    job_id = backend.submit(
        replace(
            spec,
            hyperparameters={
                k: v for k, v in spec.hyperparameters.items() if k not in ("epochs", "batch_size", "max_length")
            },
            taxonomy_texts_uri=str(taxonomy_texts),
        )
    )
    seen = set()
    while not (status := backend.status(job_id)).state.finished:
        seen.add(status.progress)
        time.sleep(0.05)
    assert status.state is JobState.SUCCEEDED, status.message
    assert any(0 < progress < 1 for progress in seen), sorted(seen)


def test_a_job_runs_to_success_and_is_visible_from_another_backend_object(tmp_path, split_files, tiny_bert):
    backend = LocalSubprocessBackend(tmp_path)
    job_id = backend.submit(spec_for(split_files, tiny_bert))
    assert backend.status(job_id).state in (JobState.RUNNING, JobState.SUCCEEDED)
    other = LocalSubprocessBackend(tmp_path)  # a sensor in another process reads the same records
    status = wait(other, job_id)
    assert status.state is JobState.SUCCEEDED and status.progress == 1.0
    artifact = other.result(job_id)
    assert Path(artifact.uri, "adapter", "adapter_config.json").exists()
    assert artifact.manifest["epochs_run"] == 1
    [record] = other.jobs()
    assert (
        record["id"] == job_id
        and record["state"] == "SUCCEEDED"
        and record["spec"]["dataset_version"] == "test-version"
    )


def test_a_failing_job_reports_the_trainer_log(tmp_path, split_files, tiny_bert):
    backend = LocalSubprocessBackend(tmp_path)
    bad = TrainingSpec(
        train_uri=str(tmp_path / "missing.jsonl"),
        valid_uri=str(split_files["valid"]),
        dataset_version="x",
        base_model=str(tiny_bert),
    )
    status = wait(backend, backend.submit(bad))
    assert status.state is JobState.FAILED
    assert "missing.jsonl" in status.message and "exited with code" in status.message
    with pytest.raises(JobError, match="FAILED"):
        backend.result(backend.jobs()[0]["id"])


def test_cancel(tmp_path, split_files, tiny_bert):
    backend = LocalSubprocessBackend(tmp_path)
    job_id = backend.submit(spec_for(split_files, tiny_bert, epochs=50))
    backend.cancel(job_id)
    assert backend.status(job_id).state is JobState.CANCELLED
    with pytest.raises(JobError):
        backend.status("local-unknown")


def test_cancel_stops_a_trainer_deaf_to_sigterm(tmp_path, split_files, tiny_bert):
    """SIGTERM ignored where a job is started (a supervisor's setting, a shell's background job) is inherited by the
    trainer: a cancel must stop it all the same, not leave it training through its whole schedule."""
    backend = LocalSubprocessBackend(tmp_path)
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        job_id = backend.submit(spec_for(split_files, tiny_bert, epochs=50))
    finally:
        signal.signal(signal.SIGTERM, previous)
    pgid = next(job["pid"] for job in backend.jobs() if job["id"] == job_id)
    try:
        backend.cancel(job_id)
        assert not group_alive(pgid)
        assert backend.status(job_id).state is JobState.CANCELLED
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)


def test_registry_versions_and_aliases(tmp_path):
    storage = LocalStorage(tmp_path / "home")
    files = tmp_path / "out"
    (files / "adapter").mkdir(parents=True)
    (files / "adapter" / "adapter_model.safetensors").write_bytes(b"weights")
    (files / "checkpoints").mkdir()
    (files / "checkpoints" / "optimizer.pt").write_bytes(b"state")
    registry = ModelRegistry(storage)
    artifact = ModelArtifact(uri=str(files), manifest={"metrics": {}})
    first = registry.register("m", artifact, dataset_version="d1", job_id="j1")
    assert registry.register("m", artifact, dataset_version="d1", job_id="j1") == first  # idempotent
    second = registry.register("m", artifact, dataset_version="d2", job_id="j2")
    assert (first.version, second.version) == (1, 2)
    assert storage.exists("models/m/v1/files/adapter/adapter_model.safetensors")
    assert not storage.exists("models/m/v1/files/checkpoints/optimizer.pt")
    registry.set_alias("m", "champion", 1)
    registry.set_alias("m", "challenger", 2)
    assert registry.resolve("m", "champion").dataset_version == "d1"
    assert registry.aliases("m") == {"champion": 1, "challenger": 2}
    with pytest.raises(RegistryError):
        registry.set_alias("m", "champion", 7)
    with pytest.raises(RegistryError):
        ModelRegistry(storage).resolve("other", "champion")
    with pytest.raises(RegistryError, match="no model files"):  # a wrong URI is no empty version
        registry.register(
            "m", ModelArtifact(uri=str(tmp_path / "nothing"), manifest={}), dataset_version="d", job_id="j3"
        )
    # A managed model (a tuned Gemini) is registered by reference: its endpoint, no files.
    endpoint = "projects/1/locations/europe-west2/endpoints/77"
    gemini = registry.register(
        "g", ModelArtifact(uri=endpoint, manifest={}, managed=True), dataset_version="d", job_id="t1"
    )
    assert gemini.uri == endpoint and storage.list_files("models/g") == ["models/g/v1/version.json"]


def test_a_copied_storage_root_serves_its_own_model_files(tmp_path):
    original = LocalStorage(tmp_path / "original")
    trained = tmp_path / "out"
    (trained / "adapter").mkdir(parents=True)
    (trained / "adapter" / "adapter_model.safetensors").write_bytes(b"weights")
    registry = ModelRegistry(original)
    for job in ("j1", "j2"):
        registry.register("m", ModelArtifact(uri=str(trained), manifest={}), dataset_version="d", job_id=job)
    registry.set_alias("m", "champion", 1)
    assert json.loads(original.read_bytes("models/m/v1/version.json"))["uri"] == "models/m/v1/files"
    # v2 as registries wrote it before: the absolute path of the root it was registered in.
    legacy = json.loads(original.read_bytes("models/m/v2/version.json"))
    original.write_bytes(
        "models/m/v2/version.json", json.dumps({**legacy, "uri": original.uri("models/m/v2/files")}).encode()
    )

    shutil.copytree(original.root, tmp_path / "copy")
    shutil.rmtree(original.root)
    copy = ModelRegistry(LocalStorage(tmp_path / "copy"))
    champion = copy.resolve("m", "champion")
    assert champion.uri == str(tmp_path / "copy" / "models" / "m" / "v1" / "files")
    assert copy.local_files(champion, tmp_path / "cache") == Path(champion.uri)
    assert Path(champion.uri, "adapter", "adapter_model.safetensors").read_bytes() == b"weights"
    assert copy.get("m", 2).uri == str(tmp_path / "copy" / "models" / "m" / "v2" / "files")


def whole_graph(defs, instance):
    """What `obs-platform run` does: train → wait for the tuning job (sensor ticks) → deploy → analytics."""
    return run_whole_graph(defs, instance, echo=lambda line: None)


@pytest.mark.slow  # two whole-graph runs, two recipes (about 80 s): `make test` runs it, `make test-fast` does not
def test_the_whole_graph_trains_evaluates_gates_and_serves(monkeypatch, landed_storage, tiny_bert):
    monkeypatch.setenv("OBS_PLATFORM_BASE_MODEL", str(tiny_bert))
    monkeypatch.setenv("OBS_PLATFORM_TRAIN_EPOCHS", "1")
    monkeypatch.setenv("OBS_PLATFORM_TRAIN_BATCH_SIZE", "64")
    monkeypatch.setenv("OBS_PLATFORM_TRAIN_MAX_LENGTH", "64")
    monkeypatch.setenv("OBS_PLATFORM_BASELINES", "majority,tfidf_logistic")  # frozen MiniLM: the slow test
    monkeypatch.setenv("OBS_PLATFORM_EXTERNAL_EVAL", "")
    monkeypatch.setenv("OBS_PLATFORM_TRAIN_RECIPE", "lora")
    with dg.DagsterInstance.ephemeral() as instance:
        try:
            # A one-epoch LoRA on the tiny BERT is below the TF-IDF baseline: the blocking gate keeps it from serving.
            rejected = whole_graph(load_defs(monkeypatch, landed_storage.root), instance)
            assert not rejected.success and "deploy run" in rejected.failure
            report = metadata(instance, "evaluation_report")
            assert report["promotion"] == "reject" and "below the baseline" in report["promotion_reason"]
            check = instance.event_log_storage.get_latest_asset_check_execution_by_key(
                [dg.AssetCheckKey(dg.AssetKey("evaluation_report"), "promotion_gate")]
            )
            [execution] = check.values()
            evaluation = execution.event.dagster_event.event_specific_data
            assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR
            assert instance.get_latest_materialization_event(dg.AssetKey("champion_model")) is None
            assert "champion" not in ModelRegistry(LocalStorage(landed_storage.root)).aliases("oss-classifier")

            # The default recipe (the hybrid, here on the tiny BERT's embeddings) is another recipe: a new job, a
            # new version, above the baseline, promoted (there is no champion yet) and served.
            monkeypatch.delenv("OBS_PLATFORM_TRAIN_RECIPE")
            defs = load_defs(monkeypatch, landed_storage.root)
            assert whole_graph(defs, instance).success
            served = metadata(instance, "oss_endpoint")
            promoted = metadata(instance, "champion_model")
            evaluated = metadata(instance, "evaluation_report")
            # Asked again with the same data and recipe: no job, the same version; the endpoint is left alone.
            again = defs.resolve_implicit_global_asset_job_def().execute_in_process(
                instance=instance, asset_selection=[dg.AssetKey("oss_tuning_job"), dg.AssetKey("oss_endpoint")]
            )
            assert again.success
            request = metadata(instance, "oss_tuning_job")
            assert request["outcome"] == "reused" and request["model_version"] == "oss-classifier/v2"
            assert len(LocalSubprocessBackend(landed_storage.root).jobs()) == 2  # once per recipe
            assert metadata(instance, "oss_endpoint")["pid"] == served["pid"]  # same champion: not restarted
        finally:
            endpoint.stop(landed_storage.root)
        assert promoted["outcome"] == "promote" and promoted["champion"] == "oss-classifier/v2"
        assert evaluated["promotion"] == "promote" and 0 <= evaluated["test_attribute_macro_f1"] <= 1
        assert "tfidf_logistic" in evaluated["summary"] and "majority" in evaluated["summary"]
        assert Path(evaluated["report"]).exists() and Path(evaluated["confusion_attribute"]).exists()
        calibration = metadata(instance, "model_calibration")
        assert calibration["calibrated"] is True and calibration["attribute_temperature"] > 0
        assert served["model_version"] == "oss-classifier/v2" and served["url"].startswith("http://127.0.0.1:")
        assert "Amara poured water" in served["example"]
        roster = Roster.from_json((landed_storage.root / "private" / "roster.json").read_bytes())
        assert len(roster) == 983 and "okafor" in roster.children  # children and educators of the sample corpus
        model = metadata(instance, "tuned_oss_model")
        splits = metadata(instance, "training_splits")
        assert model["model_version"] == "oss-classifier/v2"
        assert model["dataset_version"] == splits["dataset_version"]
        assert 0 <= model["valid_attribute_accuracy"] <= 1
        assert Path(model["model_uri"], "features.json").exists()
        assert Path(model["model_uri"], "calibration.json").exists()
        listed = job_records(instance)  # what `obs-platform jobs` prints
        assert len(listed) == 2 and all(record.state == "SUCCEEDED" for record in listed)
        assert {record.model_version for record in listed} == {"oss-classifier/v1", "oss-classifier/v2"}
        assert metadata(instance, "served_model")["served_family"] == "open-source"  # locally the only family
        # `obs-platform run` builds the warehouse after the champion, as `analytics_automation` would.
        import duckdb

        with duckdb.connect(str(landed_storage.root / "warehouse.duckdb"), read_only=True) as warehouse:
            scored = warehouse.execute("SELECT count(*), any_value(model_version) FROM analytics.scored_observations")
            assert scored.fetchone() == (splits["dagster/row_count"], "oss-classifier/v2")
            versions = warehouse.execute("SELECT count(DISTINCT model_version) FROM analytics.evaluation_history")
            assert versions.fetchone() == (2,)  # the rejected version's evaluation is history too


@pytest.mark.slow  # a whole-graph run (about 45 s): `make test` runs it, `make test-fast` does not
def test_sft_mode_trains_on_the_chat_files_and_serves_a_generative_model(monkeypatch, landed_storage, tiny_causal_lm):
    monkeypatch.setenv("OBS_PLATFORM_TRAIN_MODE", "sft")
    monkeypatch.setenv("OBS_PLATFORM_BASE_MODEL", str(tiny_causal_lm))
    monkeypatch.setenv("OBS_PLATFORM_TRAIN_EPOCHS", "1")
    monkeypatch.setenv("OBS_PLATFORM_BASELINES", "majority,tfidf_logistic")
    monkeypatch.setenv("OBS_PLATFORM_PROMOTION_FLOOR", "none")
    monkeypatch.setenv("OBS_PLATFORM_EXTERNAL_EVAL", "")
    defs = load_defs(monkeypatch, landed_storage.root)
    with dg.DagsterInstance.ephemeral() as instance:
        try:
            assert whole_graph(defs, instance).success
            served = metadata(instance, "oss_endpoint")
        finally:
            endpoint.stop(landed_storage.root)
        model = metadata(instance, "tuned_oss_model")
        chat = metadata(instance, "oss_sft_jsonl")
        assert model["model_version"] == "oss-sft/v1" and model["mode"] == "sft"
        assert model["dataset_version"] == chat["dataset_version"]  # trained on the chat files, not the splits
        assert served["model_version"] == "oss-sft/v1"
        assert Path(model["model_uri"], "label_space.json").exists()
        assert 0 <= model["valid_invalid_rate"] <= 1
