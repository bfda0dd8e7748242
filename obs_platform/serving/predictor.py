"""Predictions from a trained classifier: redact like the training data, one batched forward pass, top-k.

Requests pass through the same redaction as training data (a request's `child_name` joins the roster), so
the model sees at serving time the text shape it was trained on.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import torch
from trainer.classifier import load_trained_classifier

from obs_platform.data.formats import user_text
from obs_platform.data.redaction import Redactor, Roster, name_tokens
from obs_platform.serving.results import Instance, Prediction, Suggestion
from obs_platform.taxonomy import Taxonomy


class ClassifierPredictor:
    """A registry version's classifier, ready to answer batches."""

    def __init__(self, model_dir: str | Path, taxonomy: Taxonomy, roster: Roster | None = None, top_k: int = 3,
                 max_length: int = 128, base_model: str | None = None):  # fmt: skip
        self.model, self.tokenizer, self.labels = load_trained_classifier(model_dir, base_model=base_model)
        self.taxonomy = taxonomy
        self.roster = roster or Roster()
        self._redactor = Redactor(self.roster)  # building one compiles the roster's pattern: once, not per request
        self._extended = lru_cache(maxsize=256)(lambda name: Redactor(self.roster.with_child(name)))
        self.top_k = top_k
        self.max_length = max_length

    def _redactor_for(self, child_name: str | None) -> Redactor:
        """The shared redactor, or (cached) one whose roster also holds a child it does not know yet."""
        if not child_name or set(name_tokens(child_name)) <= self._redactor.known_tokens:
            return self._redactor
        return self._extended(child_name)

    def _inputs(self, instances: list[Instance]) -> list[str]:
        texts = []
        for instance in instances:
            redacted = self._redactor_for(instance.child_name).redact(instance.notes, instance.child_name)
            texts.append(user_text(redacted, instance.child_age_months))
        return texts

    @torch.inference_mode()  # per call: the endpoint answers on worker threads
    def predict(self, instances: list[Instance]) -> list[Prediction]:
        if not instances:
            return []
        # One forward pass for the whole batch, padded to its longest input.
        encoded = self.tokenizer(
            self._inputs(instances), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        logits = self.model(encoded["input_ids"], encoded["attention_mask"])
        attribute_p = logits["attribute"].softmax(-1)
        level_p = logits["level"].softmax(-1)
        predictions = []
        for row in range(len(instances)):
            ranked = attribute_p[row].topk(min(self.top_k, attribute_p.shape[-1]))
            suggestions = [self._suggestion(int(i), float(p)) for p, i in zip(ranked.values, ranked.indices)]
            best, level_index = suggestions[0], int(level_p[row].argmax())
            predictions.append(
                Prediction(
                    domain=best.domain,
                    domain_name=best.domain_name,
                    attribute=best.attribute,
                    attribute_id=best.attribute_id,
                    level=self.labels.levels[level_index],
                    confidence=round(best.probability, 4),
                    level_confidence=round(float(level_p[row, level_index]), 4),
                    top_k=suggestions,
                )
            )
        return predictions

    def _suggestion(self, index: int, probability: float) -> Suggestion:
        # The attribute decides the domain: an attribute belongs to exactly one domain of the taxonomy.
        attribute = self.taxonomy.attribute(self.labels.attributes[index])
        domain = self.taxonomy.domain(attribute.domain_id)
        return Suggestion(domain.key, domain.name, attribute.name, attribute.id, round(probability, 4))
