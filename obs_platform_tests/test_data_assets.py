"""The `data` group materialised in process against temporary storage roots."""

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import dagster as dg
import orjson
import pytest

from obs_platform.data import prepare
from obs_platform.defs.jobs import DATA_JOB
from obs_platform.taxonomy import load_taxonomy

from .conftest import SEED_SAMPLE, SEED_TAXONOMY

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DATA_ASSETS = {
    "raw_observations",
    "canonical_observations",
    "quarantined_observations",
    "redacted_observations",
    "training_splits",
    "gemini_sft_jsonl",
    "oss_sft_jsonl",
}


def load_defs(monkeypatch, home: Path, taxonomy: Path | None = None) -> dg.Definitions:
    monkeypatch.setenv("OBS_PLATFORM_HOME", str(home))
    if taxonomy is not None:
        monkeypatch.setenv("OBS_PLATFORM_TAXONOMY", str(taxonomy))
    else:
        monkeypatch.delenv("OBS_PLATFORM_TAXONOMY", raising=False)
    return dg.load_from_defs_folder(path_within_project=PROJECT_ROOT / "obs_platform" / "definitions.py")


def run_data_group(defs: dg.Definitions, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    job = defs.resolve_job_def(DATA_JOB)
    return job.execute_in_process(instance=instance, raise_on_error=False)


def metadata(instance: dg.DagsterInstance, key: str) -> dict:
    event = instance.get_latest_materialization_event(dg.AssetKey(key))
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}


def test_definitions_load_and_group(monkeypatch, tmp_path):
    defs = load_defs(monkeypatch, tmp_path)
    graph = defs.resolve_asset_graph()
    data_keys = {k.to_user_string() for k in graph.get_all_asset_keys() if graph.get(k).group_name == "data"}
    assert data_keys >= DATA_ASSETS
    checks = {(k.asset_key.to_user_string(), k.name) for k in graph.asset_check_keys}
    assert ("quarantined_observations", "raw_rows_accounted_for") in checks
    assert ("gemini_sft_jsonl", "gemini_lines_valid") in checks
    assert {("training_splits", "no_personal_data"), ("oss_sft_jsonl", "no_personal_data")} <= checks


def test_whole_data_group_on_the_sample_corpus(monkeypatch, landed_storage):
    defs = load_defs(monkeypatch, landed_storage.root)
    with dg.DagsterInstance.ephemeral() as instance:
        result = run_data_group(defs, instance)
        assert result.success
        checks = {e.asset_check_key.name: e.passed for e in result.get_asset_check_evaluations()}
        assert checks and all(checks.values()), checks

        raw, canonical = metadata(instance, "raw_observations"), metadata(instance, "canonical_observations")
        quarantined = metadata(instance, "quarantined_observations")
        assert raw["exports"] == 5 and canonical["exports_reused"] == 0
        assert canonical["raw_rows"] == canonical["dagster/row_count"] + quarantined["dagster/row_count"]
        assert canonical["dagster/row_count"] >= 600 and quarantined["dagster/row_count"] == 33
        reasons = {row.data["reason_code"] for row in quarantined["reasons"].records}
        assert len(reasons) >= 12

        splits = metadata(instance, "training_splits")
        assert splits["train_rows"] > 7 * splits["test_rows"] > 0 and splits["valid_rows"] > 0
        assert splits["attributes_missing_a_split"] == {}
        gemini = metadata(instance, "gemini_sft_jsonl")
        folder = Path(gemini["folder_uri"])
        lines = (folder / "train.jsonl").read_bytes().splitlines()
        assert len(lines) == splits["train_rows"]
        first = orjson.loads(lines[0])
        assert set(first) == {"systemInstruction", "contents"}

        # unchanged data: a second run writes no new training files and keeps every split
        ledger_before = (landed_storage.root / "splits" / "ledger.parquet").read_bytes()
        assert run_data_group(defs, instance).success
        assert metadata(instance, "gemini_sft_jsonl")["written"] is False
        assert metadata(instance, "canonical_observations")["exports_reused"] == 5
        assert metadata(instance, "redacted_observations")["notes_reused"] == canonical["dagster/row_count"]
        assert metadata(instance, "training_splits")["dataset_version"] == splits["dataset_version"]
        assert (landed_storage.root / "splits" / "ledger.parquet").read_bytes() == ledger_before
        assert len(list((landed_storage.root / "training-data" / "gemini").iterdir())) == 1


def test_new_data_keeps_old_splits(monkeypatch, landed_storage):
    import pandas as pd

    defs = load_defs(monkeypatch, landed_storage.root)
    with dg.DagsterInstance.ephemeral() as instance:
        assert run_data_group(defs, instance).success
        before = pd.read_parquet(landed_storage.root / "assets" / "training_splits.parquet").set_index("observation_id")
        # the stored frame says where its split files are: checks and training find them without rendering again
        version = metadata(instance, "training_splits")["dataset_version"]
        taxonomy = load_taxonomy()
        assert before.attrs == {"split_bundle": {"folder": f"splits/{version}", "taxonomy_sha256": taxonomy.sha256}}
        assert prepare.recorded_split_bundle(before.attrs, taxonomy) == f"splits/{version}"
        assert prepare.recorded_split_bundle(before.attrs, SimpleNamespace(sha256="another taxonomy")) is None
        extra = b"".join(
            orjson.dumps(
                {
                    **orjson.loads(line),
                    "observationId": orjson.loads(line)["observationId"] + "-b",
                    "observationNotes": f"New drop {i}: " + orjson.loads(line)["observationNotes"][::-1],
                }
            )
            + b"\n"
            for i, line in enumerate(
                (landed_storage.root / "landing" / "setting_export_2025-26.jsonl").read_bytes().splitlines()[:60]
            )
        )
        landed_storage.write_bytes("landing/new_drop.jsonl", extra)
        result = run_data_group(defs, instance)
        assert result.success
        # the checks judged the new lines only: the others were passed by the first run, reading the same
        judged = {
            (e.asset_check_key.asset_key.to_user_string(), e.asset_check_key.name): e.metadata["lines_judged"].value
            for e in result.get_asset_check_evaluations()
            if "lines_judged" in e.metadata
        }
        gemini_new = 60 - metadata(instance, "training_splits")["test_rows"] + before["split"].eq("test").sum()
        assert judged == {
            ("training_splits", "no_personal_data"): 60,
            ("oss_sft_jsonl", "no_personal_data"): 60,
            ("gemini_sft_jsonl", "no_personal_data"): gemini_new,
            ("gemini_sft_jsonl", "gemini_lines_valid"): gemini_new,
        }
        after = pd.read_parquet(landed_storage.root / "assets" / "training_splits.parquet").set_index("observation_id")
        assert len(after) == len(before) + 60
        assert (after.loc[before.index, "split"] == before["split"]).all()
        assert metadata(instance, "gemini_sft_jsonl")["written"] is True
        # only the new export was read and redacted (the drop names no new child: the roster is the same)
        canonical = metadata(instance, "canonical_observations")
        assert canonical["exports_processed"] == ["landing/new_drop.jsonl"] and canonical["exports_reused"] == 5
        redacted = metadata(instance, "redacted_observations")
        assert (redacted["notes_redacted_new"], redacted["notes_redacted_again"]) == (60, 0)
        assert redacted["notes_reused"] == len(before)


def test_the_data_group_runs_on_gcs(monkeypatch, gcs_emulator, tmp_path):
    """The same assets against `gs://bucket/prefix` (a GCS emulator): the asset code never knows."""
    from obs_platform.cli import sample_data_files
    from obs_platform.storage import storage_from_uri

    root = f"gs://{gcs_emulator}/{tmp_path.name}"
    bucket_storage = storage_from_uri(root)
    for file in sample_data_files():
        bucket_storage.write_bytes(f"landing/{file.name}", file.read_bytes())
    defs = load_defs(monkeypatch, root)
    with dg.DagsterInstance.ephemeral() as instance:
        result = run_data_group(defs, instance)
        assert result.success
        assert all(e.passed for e in result.get_asset_check_evaluations())
        gemini = metadata(instance, "gemini_sft_jsonl")
        assert gemini["folder_uri"].startswith(f"{root}/training-data/gemini/")
        folder = gemini["folder_uri"].removeprefix(root + "/")
        assert bucket_storage.exists(f"{folder}/train.jsonl") and bucket_storage.exists(f"{folder}/_manifest.json")
        assert bucket_storage.exists("assets/canonical_observations.parquet")
        assert bucket_storage.exists("splits/ledger.parquet")


def test_seed_taxonomy_drives_the_whole_graph(monkeypatch, storage):
    if not SEED_SAMPLE.exists():
        pytest.skip("../shared is absent")
    storage.write_bytes("landing/sample_canonical.jsonl", SEED_SAMPLE.read_bytes())
    defs = load_defs(monkeypatch, storage.root, SEED_TAXONOMY)
    with dg.DagsterInstance.ephemeral() as instance:
        result = run_data_group(defs, instance)
        assert result.success
        assert metadata(instance, "canonical_observations")["dagster/row_count"] == 3
        assert metadata(instance, "canonical_observations")["taxonomy"] == str(SEED_TAXONOMY)
        assert all(e.passed for e in result.get_asset_check_evaluations())
        chat = Path(metadata(instance, "oss_sft_jsonl")["folder_uri"])
        text = b"".join((chat / n).read_bytes() for n in ("train.jsonl", "valid.jsonl", "test.jsonl"))
        assert b"Progressing" in text and b"Advancing" in text
        assert b"Emma" not in text and b"Maya" not in text  # no name fields: the given-name lexicon catches them


def test_leak_check_fails_when_a_name_survives(monkeypatch, landed_storage):
    """The personal-data check reads the files themselves: a name slipped into a file is caught."""
    defs = load_defs(monkeypatch, landed_storage.root)
    with dg.DagsterInstance.ephemeral() as instance:
        assert run_data_group(defs, instance).success
        folder = Path(metadata(instance, "oss_sft_jsonl")["folder_uri"])
        (folder / "test.jsonl").write_bytes(
            (folder / "test.jsonl").read_bytes() + b'{"messages": "Amara Okafor, 07700 900412"}\n'
        )
        check_key = dg.AssetCheckKey(dg.AssetKey("oss_sft_jsonl"), "no_personal_data")
        only_check = dg.define_asset_job("only_check", selection=dg.AssetSelection.checks(check_key))
        job = dg.Definitions.merge(defs, dg.Definitions(jobs=[only_check])).resolve_job_def("only_check")
        result = job.execute_in_process(instance=instance, raise_on_error=False)
        (evaluation,) = result.get_asset_check_evaluations()
        assert not evaluation.passed
        lines = len((folder / "test.jsonl").read_bytes().splitlines()) if (folder / "test.jsonl").exists() else None
        assert lines is None, "the leaking bundle is removed"
        found = evaluation.metadata["lines_with_names"].value["test.jsonl"]
        assert found["lines_with_names"] == 1 and "Amara" not in str(evaluation.metadata)
        assert evaluation.metadata["lines_with_contact_details"].value == {"test.jsonl": 1}
        assert not list(folder.iterdir()), evaluation.metadata["removed_files"].value


def test_empty_landing_area_runs_the_whole_graph(monkeypatch, storage):
    defs = load_defs(monkeypatch, storage.root)
    with dg.DagsterInstance.ephemeral() as instance:
        result = run_data_group(defs, instance)
        assert result.success
        assert all(e.passed for e in result.get_asset_check_evaluations())
        assert metadata(instance, "raw_observations")["exports"] == 0
        assert metadata(instance, "gemini_sft_jsonl")["dagster/row_count"] == 0


def test_dagster_definitions_validate(tmp_path):
    env = {"OBS_PLATFORM_HOME": str(tmp_path), "DAGSTER_HOME": str(tmp_path), "PATH": str(Path(sys.executable).parent)}
    done = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-w", str(PROJECT_ROOT / "workspace.yaml")],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("where", ["local", "gcs"])
def test_a_stored_frame_loads_whole_as_named_columns_or_as_its_summary(where, request, tmp_path):
    import pandas as pd

    from obs_platform.defs.data.resources import FrameSummary, StorageIOManager, StorageResource
    from obs_platform.storage import storage_from_uri

    root = str(tmp_path) if where == "local" else f"gs://{request.getfixturevalue('gcs_emulator')}/{tmp_path.name}"
    frame = pd.DataFrame({"child_name": ["Amara Okafor", None], "notes": ["a note", "another"], "n": [1, 2]})
    frame.attrs["split_bundle"] = {"folder": "splits/x"}
    storage = storage_from_uri(root)
    storage.write_bytes("assets/frame.parquet", frame.to_parquet(index=False))
    manager = StorageIOManager(storage=StorageResource(root_uri=root))

    def load(typing_type=pd.DataFrame, **context):
        kind = dg.DagsterType(lambda _, value: True, name=typing_type.__name__, typing_type=typing_type)
        return manager.load_input(dg.build_input_context(asset_key="frame", dagster_type=kind, **context))

    pd.testing.assert_frame_equal(load().astype(object), frame.astype(object))
    names = load(definition_metadata={"columns": ["child_name", "educator_name"]})  # one is not stored: left out
    assert list(names.columns) == ["child_name"] and names["child_name"].tolist()[0] == "Amara Okafor"
    summary = load(FrameSummary)
    assert summary == FrameSummary(rows=2, attrs={"split_bundle": {"folder": "splits/x"}})
