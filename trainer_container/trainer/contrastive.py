"""Supervised contrastive tuning of the sentence encoder: SetFit's idea (tune the encoder so notes of one ELG sit
close together, then fit a linear head on its embeddings) with the supervised contrastive loss of Khosla et al.
(2020) instead of SetFit's sampled pairs.

Why this loss: on two CPU cores every forward pass counts. A batch of 32 notes drawn as 8 ELGs × 4 notes gives
every note 3 positives and 28 negatives in one pass (992 pairs), where SetFit's cosine loss would need a pass
per pair batch; balanced sampling also gives a rare ELG as many steps as a common one. In cross-validation on
the sample corpus (`benchmarks/recipes.py`), 100 such steps lifted the hybrid's ELG macro-F1 over the frozen
encoder's by 1.7 points on writers the model never saw (4 folds of 5) and by 0.9 ± 1.6 on the team's own; the
encoder's mean pooling (`trainer/pooling.py`), normalisation and window reading stay as they were.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from trainer.pooling import TokenSums


@dataclass(frozen=True)
class ContrastiveSchedule:
    steps: int = 100
    classes_per_batch: int = 8
    notes_per_class: int = 4
    learning_rate: float = 2e-5
    temperature: float = 0.1
    max_tokens: int = 128  # a note's first window: where its point is made
    seed: int = 42


def supervised_contrastive_loss(embeddings: torch.Tensor, labels: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean over anchors of −log of the softmax mass their positives (same label, not themselves) take among all
    other notes of the batch; `embeddings` are L2-normalised. Anchors without a positive add nothing."""
    similarity = embeddings @ embeddings.T / temperature
    itself = torch.eye(len(labels), dtype=torch.bool, device=embeddings.device)
    similarity = similarity.masked_fill(itself, float("-inf"))
    log_share = similarity - torch.logsumexp(similarity, dim=1, keepdim=True)
    positive = (labels[:, None] == labels[None, :]) & ~itself
    counts = positive.sum(1)
    per_anchor = -log_share.masked_fill(~positive, 0.0).sum(1) / counts.clamp(min=1)
    return per_anchor[counts > 0].mean()


def _mean_pooled(sums: TokenSums, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    mask = batch["attention_mask"]
    total = sums(batch["input_ids"], mask)["sums"]
    return nn.functional.normalize(total / mask.sum(1, keepdim=True).to(total.dtype), dim=-1)


def tune_encoder(
    encoder: nn.Module,
    tokenizer: Callable[..., dict[str, torch.Tensor]],
    texts: Sequence[str],
    labels: Sequence[int],
    schedule: ContrastiveSchedule,
    on_step: Callable[[int, float], None] | None = None,
) -> nn.Module:
    """Tune `encoder` (a Hugging Face encoder: `last_hidden_state`) in place and return it in eval mode. Each step
    draws `classes_per_batch` labels that have at least two texts, then up to `notes_per_class` texts of each."""
    by_label: dict[int, list[str]] = {}
    for text, label in zip(texts, labels):
        by_label.setdefault(int(label), []).append(text)
    usable = sorted(label for label, members in by_label.items() if len(members) >= 2)
    if len(usable) < 2 or schedule.steps <= 0:
        return encoder.eval()
    sampler = random.Random(schedule.seed)
    optimiser = torch.optim.AdamW(encoder.parameters(), lr=schedule.learning_rate, weight_decay=0.01)
    pooled = TokenSums(encoder)
    encoder.train()
    for step in range(schedule.steps):
        chosen = sampler.sample(usable, min(schedule.classes_per_batch, len(usable)))
        batch_texts, batch_labels = [], []
        for label in chosen:
            members = by_label[label]
            for text in sampler.sample(members, min(schedule.notes_per_class, len(members))):
                batch_texts.append(text)
                batch_labels.append(label)
        batch = tokenizer(
            batch_texts, padding=True, truncation=True, max_length=schedule.max_tokens, return_tensors="pt"
        )
        loss = supervised_contrastive_loss(
            _mean_pooled(pooled, batch), torch.tensor(batch_labels), schedule.temperature
        )
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if on_step is not None:
            on_step(step + 1, float(loss.detach()))
    return encoder.eval()
