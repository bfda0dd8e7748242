"""Classifier recipes side by side on the same folds: repeated stratified grouped k-fold over train + valid.

    python benchmarks/recipes.py                       # the newest splits under OBS_PLATFORM_HOME, cheap recipes
    python benchmarks/recipes.py --recipes tfidf_lr frozen hybrid --repeats 1   # tuning: ~5 min per fold
    python benchmarks/recipes.py --recipes hybrid lora --repeats 1   # LoRA costs minutes per fold
    python benchmarks/recipes.py --splits DIR --folds 5 --repeats 3
    python benchmarks/recipes.py --group-by writer     # no writer on both sides of a fold

The test split is never read: recipes are chosen here and the test split gives the final figure once. Folds are
stratified by ELG (attribute) and grouped by the near-duplicate groups the splits use, so the same observation
written up for three children never sits on both sides of a fold; with `--group-by writer`, by writer instead
(the sample corpus gave each writer a block of observation ids: obs-1… to obs-5… the team's five, obs-61… to
obs-68… the eight new ones), so every held-out note was written by someone the fold's training notes never
saw: the nearest thing in the corpus to notes by other people. Every recipe sees the same folds, so the
per-fold differences to the first recipe (the paired "Δ attribute F1" column) are tighter than either spread.
Frozen sentence embeddings are cached across folds (a frozen encoder gives a text the same vector every time);
"train s" includes embedding the fold's notes once, as a real run would. A tuned encoder is tuned once per fold
on that fold's training notes (and the taxonomy texts) and shared by the recipes that ask for the same tuning;
its tuning time is in the "train s" of the first recipe in the list that uses it.

Columns: macro-F1 and accuracy at the domain (the domain follows the predicted ELG, as served), attribute (ELG)
and level; attribute top-3; ECE of the attribute confidence before calibration; mean ± standard deviation over
folds × repeats; train seconds per fold; single-request latency (median of one note at a time, no cache).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, f1_score
from sklearn.model_selection import GroupKFold, StratifiedGroupKFold
from trainer.classifier import resolve_base_model
from trainer.config import DEFAULT_ENCODER
from trainer.data import Example, LabelMaps, level_order, read_examples
from trainer.hybrid import HybridRecipe, SentenceEncoder, fit_hybrid, recipe_encoder

from obs_platform.data.splits import group_keys
from obs_platform.evaluation.calibration import softmax
from obs_platform.evaluation.metrics import expected_calibration_error

Logits = Callable[[list[str]], dict]


@dataclass(frozen=True)
class Recipe:
    name: str
    hybrid: HybridRecipe | None = None  # linear heads on lexical/encoder features (trainer/hybrid.py)
    lora: bool = False  # LoRA on MiniLM with heads (trainer/classifier.py, its defaults); with `hybrid`, both
    # averaged: probabilities of the two, weighted (the LoRA model's share)
    lora_share: float = 0.5


DEFAULT = HybridRecipe()
FROZEN = replace(DEFAULT, encoder_tuning_steps=0)  # the ablations below: seconds per fold, not minutes
LEXICAL_ONLY = {
    "encoder_weight": 0.0,
    "age_weight": 0.0,
    "taxonomy_weight": 0.0,
    "char_ngrams": False,
    "balanced": False,
}
RECIPES = {
    r.name: r
    for r in [
        Recipe("tfidf_lr", HybridRecipe(**LEXICAL_ONLY)),
        Recipe("tfidf_lr+texts", HybridRecipe(**{**LEXICAL_ONLY, "taxonomy_weight": 1.0})),
        Recipe("tfidf_lr,age as text", HybridRecipe(**{**LEXICAL_ONLY, "lexical_reads_age": True})),
        Recipe("hybrid", DEFAULT),
        Recipe("hybrid-school calendar", replace(DEFAULT, school_calendar=False)),
        Recipe("hybrid,tuned encoder x1", replace(DEFAULT, encoder_weight=1.0)),
        Recipe("hybrid,tuned encoder x2", replace(DEFAULT, encoder_weight=2.0)),
        Recipe("hybrid,50 tuning steps", replace(DEFAULT, encoder_tuning_steps=50)),
        Recipe("hybrid,200 tuning steps", replace(DEFAULT, encoder_tuning_steps=200)),
        Recipe("frozen", FROZEN),
        Recipe("frozen-texts", replace(FROZEN, taxonomy_weight=0.0)),
        Recipe("frozen-char", replace(FROZEN, char_ngrams=False)),
        Recipe("frozen-age", replace(FROZEN, age_weight=0.0)),
        Recipe("frozen-school calendar", replace(FROZEN, school_calendar=False)),
        Recipe("frozen,age for ELG", replace(FROZEN, age_for_elg=True)),
        Recipe("frozen,age bands only", replace(FROZEN, age_by_month=False)),
        Recipe("frozen,age x2", replace(FROZEN, age_weight=2.0)),
        Recipe("frozen,age x4", replace(FROZEN, age_weight=4.0)),
        Recipe("frozen-encoder", replace(FROZEN, encoder_weight=0.0)),
        Recipe("frozen-balanced", replace(FROZEN, balanced=False)),
        Recipe("frozen,128 tokens", replace(FROZEN, max_windows=1)),
        Recipe("frozen,256 tokens", replace(FROZEN, window_tokens=256, max_windows=2)),
        Recipe("frozen,encoder 0.25", replace(FROZEN, encoder_weight=0.25)),
        Recipe("frozen,encoder 1", replace(FROZEN, encoder_weight=1.0)),
        Recipe("frozen,encoder 2", replace(FROZEN, encoder_weight=2.0)),
        Recipe("frozen,texts x0.5", replace(FROZEN, taxonomy_weight=0.5)),
        Recipe("frozen,texts x2", replace(FROZEN, taxonomy_weight=2.0)),
        Recipe("frozen,C=3", replace(FROZEN, inverse_regularisation=3.0)),
        Recipe("frozen,C=30", replace(FROZEN, inverse_regularisation=30.0)),
        Recipe("lora", lora=True),
        Recipe("lora+lexical", replace(FROZEN, encoder_weight=0.0), lora=True),
        Recipe("lora+hybrid", FROZEN, lora=True),
    ]
}
# Seconds per fold: no LoRA, no encoder tuning (the default `hybrid` tunes its encoder: minutes per fold).
CHEAP = [name for name, r in RECIPES.items() if not r.lora and (r.hybrid is None or not r.hybrid.encoder_tuning_steps)]


def writer_of(observation_id: str) -> str:
    """The sample corpus's writer of an observation: the block of ids the writer was given."""
    digits = observation_id.removeprefix("obs-")
    if digits[:1] in "12345":
        return digits[:1]
    return digits[:2] if digits.startswith("6") else "other"


def newest_splits(home: Path) -> Path:
    folders = [p for p in (home / "splits").iterdir() if (p / "train.jsonl").exists()]
    if not folders:
        sys.exit(f"no splits under {home}/splits: run `make run` (or materialise training_splits) first")
    return max(folders, key=lambda p: (p / "train.jsonl").stat().st_mtime)


class Encoders:
    """Sentence encoders shared by every fold and recipe: one cached frozen encoder per window setting, and the
    tuned encoders of the current fold (tuning depends on the fold's training notes, so it is redone per fold)."""

    def __init__(self) -> None:
        self.path = resolve_base_model(DEFAULT_ENCODER)
        self._frozen: dict[tuple[int, int], SentenceEncoder] = {}
        self._tuned: dict[tuple, SentenceEncoder] = {}

    def get(self, recipe: HybridRecipe, rows: list[Example]) -> SentenceEncoder | None:
        if recipe.encoder_weight <= 0:
            return None
        window = (recipe.window_tokens, recipe.max_windows)
        if recipe.encoder_tuning_steps <= 0:
            if window not in self._frozen:
                self._frozen[window] = SentenceEncoder(self.path, *window, cache=True)
            return self._frozen[window]
        key = (
            hash(tuple(e.observation_id for e in rows)),
            window,
            recipe.encoder_tuning_steps,
            recipe.encoder_learning_rate,
        )
        if key not in self._tuned:
            if self._tuned and next(iter(self._tuned))[0] != key[0]:
                self._tuned.clear()  # a new fold: the previous fold's encoders are done with
            self._tuned[key] = recipe_encoder(self.path, rows, recipe)
        return self._tuned[key]


def fit_recipe(
    recipe: Recipe,
    train: list[Example],
    texts: list[Example],
    labels: LabelMaps,
    encoders: Encoders,
    records: dict[str, dict],
) -> tuple[Logits, Callable[[], Logits]]:
    """The fitted model's logits, and a maker of an uncached copy (for latency)."""
    if not recipe.lora:
        model = fit_hybrid(train, texts, labels, recipe.hybrid, encoders.get(recipe.hybrid, [*train, *texts]))
        return model.logits, lambda: model.uncached().logits
    fold = hash(tuple(e.observation_id for e in train))
    if fold not in _LORA_FITS:  # one LoRA run per fold, shared by every recipe that averages it
        _LORA_FITS.clear()
        _LORA_FITS[fold] = _fit_lora(train, labels, records)
    lora = _LORA_FITS[fold]
    if recipe.hybrid is None:
        return lora, lambda: lora
    model = fit_hybrid(train, texts, labels, recipe.hybrid, encoders.get(recipe.hybrid, [*train, *texts]))

    def averaged(logits: Logits) -> Logits:
        def combined(inputs: list[str]) -> dict:
            first, second = lora(inputs), logits(inputs)
            return {
                head: np.log(
                    recipe.lora_share * softmax(np.asarray(first[head], dtype=float))
                    + (1 - recipe.lora_share) * softmax(np.asarray(second[head], dtype=float))
                )
                for head in ("attribute", "level")
            }

        return combined

    return averaged(model.logits), lambda: averaged(model.uncached().logits)


_LORA_FITS: dict[int, Logits] = {}


def _fit_lora(train: list[Example], labels: LabelMaps, records: dict[str, dict]) -> Logits:
    """LoRA as the trainer runs it: a tenth of the fold's training notes held out for its early stopping."""
    import torch
    from trainer.classifier import load_trained_classifier, train_classifier
    from trainer.config import TrainerConfig

    folder = Path(tempfile.mkdtemp(prefix="recipe-lora-"))
    for name, rows in (("train", [e for i, e in enumerate(train) if i % 10]), ("valid", train[::10])):
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(records[e.observation_id]) + "\n" for e in rows))
    train_classifier(
        TrainerConfig(
            recipe="lora",
            train=str(folder / "train.jsonl"),
            valid=str(folder / "valid.jsonl"),
            output=str(folder / "run"),
        )
    )
    model, tokenizer, trained_labels = load_trained_classifier(folder / "run")
    order = [trained_labels.attributes.index(a) for a in labels.attributes if a in trained_labels.attributes]

    @torch.inference_mode()
    def logits(inputs: list[str]) -> dict:
        encoded = tokenizer(inputs, padding=True, truncation=True, max_length=128, return_tensors="pt")
        out = model(encoded["input_ids"], encoded["attention_mask"])
        return {"attribute": out["attribute"][:, order], "level": out["level"]}

    return logits


def scores(logits: dict, examples: list[Example], labels: LabelMaps) -> dict[str, float]:
    attribute_p = softmax(np.asarray(logits["attribute"], dtype=float))
    predicted = [labels.attributes[i] for i in attribute_p.argmax(-1)]
    truth = [e.attribute for e in examples]
    domain_of = labels.attribute_domains
    true_domain, pred_domain = [e.domain for e in examples], [domain_of[str(a)] for a in predicted]
    level_true = [e.level for e in examples]
    level_pred = [labels.levels[i] for i in np.asarray(logits["level"]).argmax(-1)]
    top3 = np.argsort(-attribute_p, axis=-1)[:, :3]
    truth_index = np.array([labels.attributes.index(a) for a in truth])
    correct = np.array(predicted) == np.array(truth)
    return {
        "domain F1": f1_score(true_domain, pred_domain, average="macro", zero_division=0),
        "domain acc": accuracy_score(true_domain, pred_domain),
        "attribute F1": f1_score(truth, predicted, average="macro", zero_division=0),
        "attribute acc": accuracy_score(truth, predicted),
        "attribute top-3": float((top3 == truth_index[:, None]).any(-1).mean()),
        "level F1": f1_score(level_true, level_pred, average="macro", zero_division=0),
        "level acc": accuracy_score(level_true, level_pred),
        "ECE": expected_calibration_error(attribute_p.max(-1), correct),
    }


def latency_ms(make: Callable[[], Logits], inputs: Sequence[str]) -> float:
    logits = make()
    logits([inputs[0]])  # warm-up
    times = []
    for text in inputs:
        start = time.perf_counter()
        logits([text])
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--splits", type=Path, help="a splits folder (default: the newest under OBS_PLATFORM_HOME)")
    parser.add_argument("--recipes", nargs="*", default=CHEAP, help=f"any of: {', '.join(RECIPES)}")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--latency-notes", type=int, default=30)
    parser.add_argument("--group-by", choices=("duplicates", "writer"), default="duplicates")
    args = parser.parse_args(argv)
    unknown = [r for r in args.recipes if r not in RECIPES]
    if unknown:
        parser.error(f"unknown recipes {unknown}; known: {list(RECIPES)}")
    home = Path(os.environ.get("OBS_PLATFORM_HOME", Path.home() / ".local/share/obs-platform/home"))
    folder = args.splits or newest_splits(home)
    uris = [str(folder / name) for name in ("train.jsonl", "valid.jsonl")]
    examples = [e for uri in uris for e in read_examples(uri)]
    records = {
        json.loads(line)["observation_id"]: json.loads(line)
        for uri in uris
        for line in Path(uri).read_text(encoding="utf-8").splitlines()
        if line.strip()
    }
    texts_file = folder / "taxonomy.jsonl"
    texts = read_examples(str(texts_file)) if texts_file.exists() else []
    order = level_order(uris[0]) | level_order(uris[1])
    labels = LabelMaps.from_examples([*examples, *texts], order)
    if args.group_by == "writer":
        groups = np.array([writer_of(e.observation_id) for e in examples])
    else:
        groups = group_keys(pd.Series([records[e.observation_id]["text"] for e in examples])).to_numpy()
    strata = np.array([e.attribute for e in examples])
    print(
        f"{folder}: {len(examples)} train+valid observations, {len(set(groups))} groups, "
        f"{len(texts)} taxonomy texts; {args.folds} folds x {args.repeats} repeats, "
        f"grouped by {args.group_by}\n"
    )

    encoders = Encoders()
    results: dict[str, list[dict[str, float]]] = {name: [] for name in args.recipes}
    latency: dict[str, float] = {}
    for repeat in range(args.repeats):
        # A dozen writers are too few groups to stratify: each repeat deals them into folds at random.
        folds = (
            GroupKFold(n_splits=args.folds, shuffle=True, random_state=repeat)
            if args.group_by == "writer"
            else StratifiedGroupKFold(n_splits=args.folds, shuffle=True, random_state=repeat)
        )
        for fold, (train_rows, test_rows) in enumerate(folds.split(examples, strata, groups)):
            train = [examples[i] for i in train_rows]
            held = [examples[i] for i in test_rows]
            for name in args.recipes:
                started = time.perf_counter()
                logits, uncached = fit_recipe(RECIPES[name], train, texts, labels, encoders, records)
                seconds = time.perf_counter() - started
                results[name].append({**scores(logits([e.input for e in held]), held, labels), "train s": seconds})
                if name not in latency:
                    latency[name] = latency_ms(uncached, [e.input for e in held[: args.latency_notes]])
            print(
                f"repeat {repeat + 1} fold {fold + 1}: "
                + ", ".join(f"{n} {results[n][-1]['attribute F1']:.3f}" for n in args.recipes),
                flush=True,
            )
    print()
    print(table(results, latency, args.recipes[0]))


def table(results: dict[str, list[dict[str, float]]], latency: dict[str, float], reference: str) -> str:
    metrics = list(next(iter(results.values()))[0])
    header = ["recipe", *metrics, f"Δ attribute F1 vs {reference}", "latency ms"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, runs in results.items():
        cells = [name]
        for metric in metrics:
            values = [r[metric] for r in runs]
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(
                f"{statistics.mean(values):.1f} ± {spread:.1f}"
                if metric == "train s"
                else f"{statistics.mean(values):.3f} ± {spread:.3f}"
            )
        paired = [r["attribute F1"] - b["attribute F1"] for r, b in zip(runs, results[reference])]
        spread = statistics.stdev(paired) if len(paired) > 1 else 0.0
        cells += [f"{statistics.mean(paired):+.3f} ± {spread:.3f}", f"{latency[name]:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
