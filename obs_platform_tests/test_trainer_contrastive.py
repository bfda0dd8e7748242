"""Supervised contrastive tuning of the sentence encoder (the hybrid recipe's first step) on the tiny BERT."""

import math

import torch
from trainer.contrastive import ContrastiveSchedule, supervised_contrastive_loss, tune_encoder
from trainer.data import read_examples
from trainer.inputs import split_model_input
from transformers import AutoModel, AutoTokenizer


def test_the_loss_by_hand_and_an_anchor_without_a_positive_adds_nothing():
    embeddings = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    # Anchors 0 and 1 each see their positive at similarity 1 and the third note at 0; note 2 has no positive.
    loss = supervised_contrastive_loss(embeddings, torch.tensor([0, 0, 1]), temperature=1.0)
    assert math.isclose(float(loss), math.log(math.e + 1) - 1, rel_tol=1e-6)


def test_the_loss_is_lower_when_notes_of_one_label_sit_together():
    together = torch.tensor([[1.0, 0.0], [0.99, 0.14], [0.0, 1.0], [0.14, 0.99]])
    together = torch.nn.functional.normalize(together, dim=-1)
    labels = torch.tensor([0, 0, 1, 1])
    apart = labels[[0, 2, 1, 3]]  # the same points, labels crossed
    assert supervised_contrastive_loss(together, labels, 0.1) < supervised_contrastive_loss(together, apart, 0.1)


def _separation(encoder, tokenizer, texts, labels) -> float:
    """Mean cosine similarity of same-label pairs minus that of different-label pairs."""
    with torch.inference_mode():
        batch = tokenizer(texts, padding=True, truncation=True, max_length=64, return_tensors="pt")
        hidden = encoder(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        vectors = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
    similarity = vectors @ vectors.T
    labels = torch.tensor(labels)
    same = (labels[:, None] == labels[None, :]) & ~torch.eye(len(labels), dtype=torch.bool)
    different = labels[:, None] != labels[None, :]
    return float(similarity[same].mean() - similarity[different].mean())


def test_tuning_pulls_notes_of_one_elg_together(split_files, tiny_bert):
    examples = read_examples(str(split_files["train"]))[:160]
    texts = [split_model_input(e.input)[0] for e in examples]
    labels = [e.attribute for e in examples]
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    encoder = AutoModel.from_pretrained(tiny_bert)
    before = _separation(encoder, tokenizer, texts, labels)
    losses: list[float] = []
    schedule = ContrastiveSchedule(steps=40, learning_rate=1e-3, max_tokens=64)
    tuned = tune_encoder(encoder, tokenizer, texts, labels, schedule, on_step=lambda step, loss: losses.append(loss))
    assert tuned is encoder and not encoder.training and len(losses) == 40
    assert _separation(encoder, tokenizer, texts, labels) > before + 0.05


def test_no_steps_or_too_few_labelled_texts_leave_the_encoder_as_it_was(tiny_bert):
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    encoder = AutoModel.from_pretrained(tiny_bert)
    weights = {k: v.clone() for k, v in encoder.state_dict().items()}
    tune_encoder(encoder, tokenizer, ["a note", "another"], [1, 2], ContrastiveSchedule(steps=5))  # no pairs
    tune_encoder(encoder, tokenizer, ["a note", "another"], [1, 1], ContrastiveSchedule(steps=0))
    assert all(torch.equal(weights[k], v) for k, v in encoder.state_dict().items())
