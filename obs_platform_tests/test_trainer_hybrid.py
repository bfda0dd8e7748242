"""The trainer's hybrid recipe (TF-IDF + frozen encoder features, linear heads) on the tiny BERT: seconds."""

import datetime as dt
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file
from trainer.data import read_examples
from trainer.hybrid import (
    AGE_COLUMNS,
    CALENDAR_COLUMNS,
    SCHOOL_YEARS,
    TUNED_ENCODER_FOLDER,
    HybridClassifier,
    HybridRecipe,
    SentenceEncoder,
    age_bands,
    age_months,
    level_only_width,
    school_calendar,
)
from trainer.inputs import model_input, split_model_input
from trainer.runs import MetricsLog
from transformers import AutoModel, AutoTokenizer

from obs_platform.data.prepare import taxonomy_text_records
from obs_platform.predictions import Instance
from obs_platform.serving.predictor import ClassifierPredictor


def test_the_age_and_the_date_come_back_out_of_the_model_input():
    for note, age in [("Counted five ducks", 40.0), ("no age here", None), ("Child's age: 3 months in a note", 7.0)]:
        assert split_model_input(model_input(note, age)) == (note, age, None)
        assert split_model_input(model_input(note, age, "2025-06-12")) == (note, age, dt.date(2025, 6, 12))
    assert split_model_input("Observation: a note\nChild's age: lots months") == (
        "a note\nChild's age: lots months",
        None,
        None,
    )
    assert split_model_input("Observation: a note\nObserved on: soon") == ("a note\nObserved on: soon", None, None)


def test_age_bands_are_one_hot_with_an_unknown_column():
    bands = age_bands([6.0, 36.0, 37.0, 70.0, None, float("nan")])
    assert bands.shape == (6, AGE_COLUMNS) and (bands.sum(1) == 1).all()
    assert bands[0, 0] == 1 and bands[1].argmax() != bands[2].argmax()  # 36 and 37 months are in different bands
    assert bands[4, -1] == 1 and bands[5, -1] == 1 and bands[3, -2] == 1


def test_whole_months_are_one_hot_and_an_unknown_age_is_none_of_them():
    months = age_months([0.0, 35.6, 72.0, None])
    assert months.shape == (4, 73) and months[0, 0] == 1 and months[1, 36] == 1 and months[2, 72] == 1
    assert not months[3].any()
    assert level_only_width(HybridRecipe()) == AGE_COLUMNS + 73 + CALENDAR_COLUMNS
    assert level_only_width(HybridRecipe(school_calendar=False)) == AGE_COLUMNS + 73
    assert level_only_width(HybridRecipe(age_weight=0)) == 0


def test_the_school_calendar_places_the_child_in_a_school_year_and_a_month():
    ages = [52.0, 52.0, 30.0, 64.0, None, 52.0]
    days = [dt.date(2025, 6, 15), dt.date(2025, 10, 15), dt.date(2025, 10, 15), dt.date(2026, 7, 1)]
    calendar = school_calendar(ages, [*days, dt.date(2025, 9, 2), None])
    year, month, reception = (
        calendar[:, :SCHOOL_YEARS],
        calendar[:, SCHOOL_YEARS : SCHOOL_YEARS + 12],
        calendar[:, SCHOOL_YEARS + 12 :],
    )
    # 52 months in June 2025: born February 2021, the pre-school year; in October 2025: born June 2021, reception.
    assert year[0].argmax() == 1 and not reception[0].any() and month[0].argmax() == 9  # June: the 10th month
    assert year[1].argmax() == 2 and month[1].argmax() == 1 and reception[1].argmax() == 1
    assert year[2].argmax() == 0 and year[3].argmax() == 2 and reception[3].argmax() == 10  # summer of reception
    assert not year[4].any() and month[4].argmax() == 0  # no age: the month only
    assert not calendar[5].any()  # no date: nothing


def test_the_taxonomy_texts_are_labelled_training_rows(eyfs):
    records = taxonomy_text_records(eyfs)
    points = [r for r in records if r["progression_title"]]
    described = [r for r in records if not r["progression_title"]]
    assert len(described) == len(eyfs.attributes) and len(points) > 150
    assert {r["attribute_id"] for r in points} == {a.id for a in eyfs.attributes}
    assert all(r["text"] and r["child_age_months"] is None and r["level_index"] is not None for r in points)


def test_trains_and_saves_without_pickles(trained_hybrid, split_files):
    for produced in ("features.json", "heads.safetensors", "label_maps.json", "metrics.jsonl", "manifest.json"):
        assert (trained_hybrid / produced).exists(), produced
    assert not list(trained_hybrid.glob("*.pkl")) and not list(trained_hybrid.glob("*.joblib"))
    manifest = json.loads((trained_hybrid / "manifest.json").read_text())
    assert manifest["mode"] == "classifier" and manifest["recipe"] == "hybrid"
    assert manifest["examples"]["taxonomy_texts"] > 150 and manifest["examples"]["train"] > 400
    assert {"attribute_accuracy", "level_accuracy", "attribute_top3_accuracy"} <= set(manifest["metrics"])
    assert len(manifest["labels"]["attributes"]) == 17 and len(manifest["labels"]["attribute_domains"]) == 17


def test_the_tuned_encoder_is_saved_as_a_model_folder_the_standard_libraries_load(trained_hybrid, tiny_bert):
    tuned = AutoModel.from_pretrained(trained_hybrid / TUNED_ENCODER_FOLDER)
    base = AutoModel.from_pretrained(tiny_bert)
    AutoTokenizer.from_pretrained(trained_hybrid / TUNED_ENCODER_FOLDER)
    assert (trained_hybrid / TUNED_ENCODER_FOLDER / "model.safetensors").exists()
    changed = [k for k, v in tuned.state_dict().items() if not torch.equal(v, base.state_dict()[k])]
    assert changed  # tuned, not a copy of the base encoder
    losses = [e["loss"] for e in MetricsLog(trained_hybrid / "metrics.jsonl").events() if e["event"] == "train"]
    assert losses and all(loss > 0 for loss in losses)


def test_the_age_and_the_calendar_feed_the_level_head_only(trained_hybrid):
    heads = load_file(trained_hybrid / "heads.safetensors")
    width = level_only_width(HybridRecipe())
    assert not heads["attribute.weight"][:, -width:].any() and not heads["tags.weight"][:, -width:].any()
    assert heads["level.weight"][:, -width:].any() and heads["attribute.weight"][:, :-width].any()
    assert heads["level.weight"][:, -CALENDAR_COLUMNS:].any()  # the split records carry dates: the calendar is read


def test_a_reloaded_model_answers_as_the_trained_one(trained_hybrid, split_files, tiny_bert):
    model = HybridClassifier.load(trained_hybrid, str(tiny_bert))
    examples = read_examples(str(split_files["test"]))[:20]
    logits = model.logits([e.input for e in examples])
    assert logits["attribute"].shape == (20, 17) and logits["level"].shape[1] == 4
    assert torch.allclose(logits["attribute"].exp().sum(-1), torch.ones(20), atol=1e-4)
    assert torch.allclose(logits["domain"].exp().sum(-1), torch.ones(20), atol=1e-4)
    # The domain head is the attribute head summed per domain.
    labels = model.labels
    for column, domain in enumerate(labels.domains):
        members = [i for i, a in enumerate(labels.attributes) if labels.attribute_domains[str(a)] == domain]
        summed = logits["attribute"][:, members].exp().sum(-1)
        assert torch.allclose(logits["domain"][:, column].exp(), summed, atol=1e-4)
    # The reloaded vectorisers give the training ones' features: the same answer twice.
    again = HybridClassifier.load(trained_hybrid, str(tiny_bert)).logits([e.input for e in examples])
    assert torch.equal(again["attribute"], logits["attribute"])


def test_a_model_saved_before_encoder_tuning_loads_with_its_frozen_base_encoder(trained_hybrid, tmp_path, tiny_bert):
    old = tmp_path / "old"
    shutil.copytree(trained_hybrid, old, ignore=shutil.ignore_patterns(TUNED_ENCODER_FOLDER))
    document = json.loads((old / "features.json").read_text())
    for key in ("encoder_tuning_steps", "encoder_learning_rate", "school_calendar"):
        del document["recipe"][key]
    (old / "features.json").write_text(json.dumps(document))
    heads = load_file(old / "heads.safetensors")  # nor did it have the school calendar's columns
    save_file({k: v[:, :-CALENDAR_COLUMNS] if v.ndim == 2 else v for k, v in heads.items()}, old / "heads.safetensors")
    model = HybridClassifier.load(old, str(tiny_bert))
    assert model.features.recipe.encoder_tuning_steps == 0 and not model.features.recipe.school_calendar
    assert model.logits(["Counted five ducks\nObserved on: 2025-06-12"])["level"].shape == (1, 4)
    assert model.logits(["Counted five ducks"])["attribute"].shape == (1, 17)


def test_long_notes_are_read_in_windows(tiny_bert):
    encoder = SentenceEncoder(str(tiny_bert), window_tokens=16, max_windows=4)
    short, long = "counted the ducks", " ".join(["counted the ducks in the water tray"] * 10)
    assert len(encoder._windows(short)) == 1 and len(encoder._windows(long)) == 4
    vectors = encoder([short, long])
    assert vectors.shape == (2, encoder.dimension)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert not encoder._cache  # a serving encoder keeps nothing between requests


def test_the_predictor_serves_the_hybrid_on_both_runtimes(trained_hybrid, eyfs, tiny_bert):
    notes = [
        Instance(notes="Counted five ducks and said 'five!'", child_age_months=40),
        Instance(notes="Climbed the A-frame and jumped off with two feet"),
    ]
    on_torch = ClassifierPredictor(trained_hybrid, eyfs, base_model=str(tiny_bert))
    on_onnx = ClassifierPredictor(trained_hybrid, eyfs, base_model=str(tiny_bert), runtime="onnx")
    first, second = on_torch.predict(notes), on_onnx.predict(notes)
    assert [p.attribute_id for p in first] == [p.attribute_id for p in second]
    assert all(abs(a.confidence - b.confidence) < 1e-3 for a, b in zip(first, second))
    assert len(first[0].top_k) == 3 and first[0].tags[0] == first[0].attribute_id
    assert on_torch.max_length == 512
    assert set(on_torch.logits(notes)) == {"domain", "attribute", "level", "tags"}


@pytest.mark.slow
def test_the_command_line_trains_the_hybrid_by_default(tmp_path, split_files, taxonomy_texts, tiny_bert):
    run = tmp_path / "run"
    args = [
        "--train",
        str(split_files["train"]),
        "--valid",
        str(split_files["valid"]),
        "--output",
        str(run),
        "--base-model",
        str(tiny_bert),
        "--taxonomy-texts",
        str(taxonomy_texts),
        "--char-ngrams",
        "false",
        "--encoder-tuning-steps",
        "3",
    ]
    done = subprocess.run(
        [sys.executable, "-m", "trainer", *args], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["recipe"] == "hybrid" and manifest["hyperparameters"]["char_ngrams"] is False
    assert manifest["hyperparameters"]["encoder_tuning_steps"] == 3 and (run / TUNED_ENCODER_FOLDER).is_dir()
    assert "char" not in json.loads((run / "features.json").read_text())["vectorisers"]
