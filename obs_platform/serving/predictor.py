"""Predictions from a registry version: redact like the training data, answer a batch, return typed results.

Requests pass through the same redaction as training data (a request's `child_name` joins the roster), so
the model sees at serving time the text shape it was trained on. Two kinds of model answer behind one
protocol: the LoRA classifier (one forward pass, top-k from its heads) and a LoRA-tuned causal LM (`sft`
mode: greedy generation, the answer read back into a taxonomy label, repaired or reported invalid).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import torch
from trainer.data import LabelMaps

from obs_platform.data.formats import OSS_SYSTEM_PROMPT, RequestTexts
from obs_platform.data.redaction import Roster
from obs_platform.predictions import Calibration, Instance, Prediction, Suggestion
from obs_platform.serving.answers import read_prediction
from obs_platform.serving.runtime import RUNTIMES, OnnxForward, Runtime
from obs_platform.taxonomy import Taxonomy
from obs_platform.training.registry import CALIBRATION_FILE

DEFAULT_MAX_TOKENS = 512  # a model without an encoder reads the whole note; the queue's token estimate caps here


class Predictor(Protocol):
    runtime: str
    texts: RequestTexts  # what the model reads of each instance: redacted notes and the age

    def predict(self, instances: list[Instance]) -> list[Prediction]: ...


def model_mode(model_dir: str | Path) -> str:
    return json.loads(Path(model_dir, "manifest.json").read_text()).get("mode", "classifier")


def load_predictor(
    model_dir: str | Path, taxonomy: Taxonomy, roster: Roster | None = None, runtime: Runtime = "torch"
) -> Predictor:
    """The predictor for a trained model folder, by the mode its manifest records (`runtime`: classifiers)."""
    if model_mode(model_dir) == "sft":
        return GenerativePredictor(model_dir, taxonomy, roster)
    return ClassifierPredictor(model_dir, taxonomy, roster, runtime=runtime)


class ClassifierPredictor:
    """A registry version's classifier, ready to answer batches, whichever recipe trained it: the hybrid
    (TF-IDF and sentence-embedding features, linear heads; its encoder on PyTorch or ONNX Runtime) or LoRA (the
    adapter merged into the encoder, one matrix product per layer instead of three; the whole forward pass on
    PyTorch or ONNX Runtime). When the version carries a calibration (`calibration.json`), probabilities are
    temperature-scaled and each suggestion says whether it reaches its domain's confidence threshold."""

    def __init__(
        self,
        model_dir: str | Path,
        taxonomy: Taxonomy,
        roster: Roster | None = None,
        top_k: int = 3,
        max_length: int = 128,
        base_model: str | None = None,
        runtime: Runtime = "torch",
    ):
        if runtime not in RUNTIMES:
            raise ValueError(f"unknown runtime {runtime!r}: expected one of {RUNTIMES}")
        manifest = json.loads(Path(model_dir, "manifest.json").read_text())
        if manifest.get("recipe") == "hybrid":
            self.forward, self.labels, self.max_length = _hybrid_forward(model_dir, manifest, base_model, runtime)
        else:
            self.forward = _LoraForward(model_dir, base_model, runtime, max_length)
            self.labels, self.max_length = self.forward.labels, max_length
        self.runtime = runtime
        self.taxonomy = taxonomy
        self.texts = RequestTexts(roster)
        self.top_k = top_k
        calibration_file = Path(model_dir, CALIBRATION_FILE)
        self.calibration = Calibration.from_json(calibration_file.read_bytes()) if calibration_file.exists() else None

    @torch.inference_mode()  # per call: the endpoint answers on worker threads
    def logits(self, instances: list[Instance]) -> dict[str, torch.Tensor]:
        """Raw head outputs of one batch."""
        return self.forward(self.texts(instances))

    @torch.inference_mode()
    def predict(self, instances: list[Instance]) -> list[Prediction]:
        if not instances:
            return []
        logits = self.logits(instances)
        attribute_t = self.calibration.attribute_temperature if self.calibration else 1.0
        level_t = self.calibration.level_temperature if self.calibration else 1.0
        attribute_p = (logits["attribute"] / attribute_t).softmax(-1)
        level_p = (logits["level"] / level_t).softmax(-1)
        tagged = logits["tags"].sigmoid() >= 0.5
        predictions = []
        for row in range(len(instances)):
            ranked = attribute_p[row].topk(min(self.top_k, attribute_p.shape[-1]))
            suggestions = [
                self._suggestion(self.labels.attributes[int(i)], float(p))
                for p, i in zip(ranked.values, ranked.indices)
            ]
            level_index = int(level_p[row].argmax())
            primary = suggestions[0].attribute_id
            secondary = [self.labels.attributes[int(i)] for i in tagged[row].nonzero().flatten()]
            predictions.append(
                Prediction.ranked(
                    suggestions,
                    self.labels.levels[level_index],
                    float(level_p[row, level_index]),
                    tags=[primary, *(a for a in secondary if a != primary)],
                )
            )
        return predictions

    def _suggestion(self, attribute_id: int, probability: float) -> Suggestion:
        """A suggestion, `confident` when its calibrated probability reaches its domain's threshold."""
        domain = self.taxonomy.domain(self.taxonomy.attribute(attribute_id).domain_id).key
        confident = self.calibration is not None and probability >= self.calibration.threshold(domain)
        return Suggestion.of(self.taxonomy, attribute_id, probability, confident)


class _LoraForward:
    """The LoRA classifier's forward pass over model inputs: one padded batch through the merged encoder."""

    def __init__(self, model_dir: str | Path, base_model: str | None, runtime: Runtime, max_length: int):
        from trainer.classifier import load_trained_classifier

        self.model, self.tokenizer, self.labels = load_trained_classifier(model_dir, base_model=base_model)
        self.model.encoder = self.model.encoder.merge_and_unload()
        if runtime == "onnx":
            self.model = OnnxForward(self.model, self.tokenizer)
        self.max_length = max_length

    def __call__(self, texts: list[str]) -> dict[str, torch.Tensor]:
        encoded = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        return self.model(encoded["input_ids"], encoded["attention_mask"])


def _hybrid_forward(
    model_dir: str | Path, manifest: dict, base_model: str | None, runtime: Runtime
) -> tuple[Callable[[list[str]], dict[str, torch.Tensor]], LabelMaps, int]:
    """The hybrid classifier's logits, its labels and the most tokens it reads of one note."""
    from trainer.classifier import resolve_base_model
    from trainer.hybrid import HybridClassifier

    model = HybridClassifier.load(model_dir, resolve_base_model(base_model or manifest["base_model"]))
    encoder = model.features.encoder
    if encoder is None:
        return model.logits, model.labels, DEFAULT_MAX_TOKENS
    if runtime == "onnx":
        encoder.forward = OnnxForward(encoder.module, encoder.tokenizer, outputs=("sums",))
    return model.logits, model.labels, encoder.window_tokens * encoder.max_windows


class GenerativePredictor:
    """A LoRA-tuned causal LM (`sft` mode): greedy answers read back into labels of the taxonomy.

    The confidence is the probability of the generated answer under the model (the product of its token
    probabilities); top-k holds the primary tag and the secondary tags the answer named.
    """

    runtime = "torch"

    def __init__(
        self,
        model_dir: str | Path,
        taxonomy: Taxonomy,
        roster: Roster | None = None,
        max_length: int = 512,
        max_new_tokens: int = 96,
    ):
        from trainer.sft import load_trained_generator

        self.model, self.tokenizer, self.space = load_trained_generator(model_dir)
        self.tokenizer.padding_side = "left"
        self.taxonomy = taxonomy
        self.texts = RequestTexts(roster)
        self.max_length, self.max_new_tokens = max_length, max_new_tokens

    @torch.inference_mode()
    def predict(self, instances: list[Instance]) -> list[Prediction]:
        if not instances:
            return []
        prompts = [
            self.tokenizer.apply_chat_template(
                [{"role": "system", "content": OSS_SYSTEM_PROMPT}, {"role": "user", "content": text}],
                tokenize=False,
                add_generation_prompt=True,
            )
            for text in self.texts(instances)
        ]
        encoded = self.tokenizer(
            prompts,
            return_tensors="pt",
            padding=True,
            truncation=True,
            max_length=self.max_length,
            add_special_tokens=False,
        )
        generated = self.model.generate(
            **encoded,
            max_new_tokens=self.max_new_tokens,
            do_sample=False,
            pad_token_id=self.tokenizer.pad_token_id,
            output_scores=True,
            return_dict_in_generate=True,
        )
        answer_ids = generated.sequences[:, encoded["input_ids"].shape[1] :]
        token_logp = self.model.compute_transition_scores(generated.sequences, generated.scores, normalize_logits=True)
        counted = answer_ids != self.tokenizer.pad_token_id
        probabilities = (token_logp.masked_fill(~counted, 0).sum(-1)).exp()
        texts = self.tokenizer.batch_decode(answer_ids, skip_special_tokens=True)
        return [read_prediction(t, self.space, self.taxonomy, float(p)) for t, p in zip(texts, probabilities)]
