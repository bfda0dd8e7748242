"""`classifier` mode, `hybrid` recipe: lexical and sentence-encoder features in one linear head per task.

Why this recipe: in repeated stratified cross-validation on the sample corpus (`benchmarks/recipes.py`), with
folds grouped by near-duplicates and, separately, by writer (every held-out note by someone the training notes
never saw), it ranked above TF-IDF + logistic regression and above LoRA-tuning MiniLM. The words of a note
(TF-IDF over word and character n-grams, which survive typos and abbreviations) and its meaning (MiniLM sentence
embeddings, which carry to phrasings the corpus never used) are complementary. The encoder is first tuned for a
few minutes so that notes of one ELG sit close together (supervised contrastive steps, `trainer/contrastive.py`:
SetFit's idea), which the frozen encoder's embeddings did not give the head; the heads are then linear, so they
cannot over-fit a corpus of a thousand notes. The whole note is read (the encoder averages 128-token windows;
MiniLM was trained on 128), and the age is a numeric input (one-hot half-year bands and months), so it is never
cut off; with the observation's date it places the child in a school year and a term, which the level follows
(`school_calendar`). The taxonomy's own descriptions are labelled training rows.

Outputs (in the output folder): `features.json` (vocabularies, idf weights, encoder settings: no pickle),
`heads.safetensors` (one weight matrix and bias per head over the concatenated features), `encoder/` (the tuned
encoder, a Hugging Face model folder), `label_maps.json`, `metrics.jsonl` (the tuning loss, then validation),
`manifest.json`. Everything loads with numpy, scikit-learn, safetensors and `transformers`.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.numpy import load_file, save_file
from scipy import sparse
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from transformers import AutoModel, AutoTokenizer

from trainer.config import TrainerConfig
from trainer.contrastive import ContrastiveSchedule, tune_encoder
from trainer.data import Example, LabelMaps, read_examples, read_training_examples
from trainer.inputs import ModelInput, model_input, split_model_input
from trainer.locations import OutputFolder
from trainer.pooling import TokenSums
from trainer.runs import PROGRESS_FILE, VALID_METRIC, MetricsLog, ProgressLog, seed_everything, sha256_of

RECIPE = "hybrid"
FEATURES_FILE = "features.json"
HEADS_FILE = "heads.safetensors"
TUNED_ENCODER_FOLDER = "encoder"  # the contrastively tuned encoder, a Hugging Face model folder
AGE_BANDS = (12, 18, 24, 30, 36, 42, 48, 54, 60, 66)  # months: upper edges of half-year bands
HEADS = ("domain", "attribute", "level", "tags")
AGE_COLUMNS = len(AGE_BANDS) + 2  # the bands, one beyond the last, and "unknown"
MAX_AGE_MONTHS = 72
SCHOOL_YEARS = 4  # the child's school year on the day: before the pre-school year, pre-school, reception, later
RECEPTION_YEAR = 5  # school years since the one the child was born in: reception (the pre-school year is 4)
MONTHS = 12
CALENDAR_COLUMNS = SCHOOL_YEARS + 2 * MONTHS  # the school year, the month of the school year, the month in reception


@dataclass(frozen=True)
class HybridRecipe:
    """The hyper-parameters of the hybrid; the defaults are the cross-validated choice."""

    word_ngrams: int = 2  # word 1..n-grams
    char_ngrams: bool = True  # character 2..5-grams within words
    encoder_weight: float = 0.5  # scale of the sentence-embedding block (0: lexical features only)
    window_tokens: int = 128  # tokens per encoder window
    max_windows: int = 4  # windows averaged per note (1: the note cut at window_tokens)
    age_weight: float = 1.0  # scale of the age bands (0: no age input)
    age_for_elg: bool = False  # the age also feeds the ELG (attribute) and tag heads, not only the level head
    age_by_month: bool = True  # whole months one-hot beside the half-year bands
    school_calendar: bool = True  # the level head reads the child's school year and the term (from age and date)
    lexical_reads_age: bool = False  # TF-IDF reads the model input's age and date lines (as the baseline does)
    taxonomy_weight: float = 1.0  # sample weight of a taxonomy text (0: not used)
    encoder_tuning_steps: int = 100  # supervised contrastive steps on the ELGs before the heads (0: frozen encoder)
    encoder_learning_rate: float = 2e-5
    balanced: bool = True  # class weights inversely proportional to class frequency
    inverse_regularisation: float = 10.0  # logistic regression's C, every head

    @classmethod
    def of(cls, values: dict[str, Any]) -> HybridRecipe:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})


class SentenceEncoder:
    """Frozen mean-pooled sentence embeddings of a note, L2-normalised; a note longer than one window is read
    in consecutive windows whose embeddings are averaged (weighted by their token counts). With `cache`, each text
    is embedded once (training and cross-validation; a serving process keeps no cache, which would grow forever)."""

    def __init__(
        self, model_path: str, window_tokens: int = 128, max_windows: int = 4, batch_size: int = 32, cache: bool = False
    ):
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.module = TokenSums(AutoModel.from_pretrained(model_path)).eval()
        self.forward: Callable[[torch.Tensor, torch.Tensor], dict[str, torch.Tensor]] = self.module
        self.window_tokens, self.max_windows, self.batch_size = window_tokens, max_windows, batch_size
        self.dimension = int(self.module.encoder.config.hidden_size)
        self.cache = cache
        self._cache: dict[str, np.ndarray] = {}

    def _windows(self, text: str) -> list[list[int]]:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"] or [self.tokenizer.unk_token_id]
        size = self.window_tokens - 2
        chunks = [ids[start : start + size] for start in range(0, len(ids), size)][: self.max_windows]
        first = self.tokenizer.cls_token_id if self.tokenizer.cls_token_id is not None else self.tokenizer.bos_token_id
        last = self.tokenizer.sep_token_id if self.tokenizer.sep_token_id is not None else self.tokenizer.eos_token_id
        return [[t for t in (first, *chunk, last) if t is not None] for chunk in chunks]

    @torch.inference_mode()
    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        missing = [t for t in dict.fromkeys(texts) if t not in self._cache]
        windows = [(text, window) for text in missing for window in self._windows(text)]
        windows.sort(key=lambda item: len(item[1]))  # similar lengths share a batch: less padding
        sums: dict[str, np.ndarray] = {}
        counts: dict[str, int] = {}
        for start in range(0, len(windows), self.batch_size):
            batch = windows[start : start + self.batch_size]
            width = max(len(w) for _, w in batch)
            input_ids = torch.tensor([w + [self.tokenizer.pad_token_id] * (width - len(w)) for _, w in batch])
            mask = torch.tensor([[1] * len(w) + [0] * (width - len(w)) for _, w in batch])
            summed = self.forward(input_ids, mask)["sums"].numpy()
            for (text, window), vector in zip(batch, summed):
                sums[text] = sums.get(text, 0) + vector
                counts[text] = counts.get(text, 0) + len(window)
        found = self._cache if self.cache else {}
        for text in missing:
            mean = sums[text] / counts[text]
            found[text] = (mean / max(float(np.linalg.norm(mean)), 1e-12)).astype(np.float32)
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return np.stack([found[t] for t in texts])


def age_bands(ages: Sequence[float | None]) -> np.ndarray:
    """One-hot half-year bands plus a last column for an unknown age."""
    bands = np.zeros((len(ages), AGE_COLUMNS), dtype=np.float32)
    for row, age in enumerate(ages):
        if age is None or age != age:
            bands[row, -1] = 1.0
        else:
            bands[row, int(np.searchsorted(AGE_BANDS, age, side="left"))] = 1.0
    return bands


def age_months(ages: Sequence[float | None]) -> np.ndarray:
    """One-hot whole months, 0 to MAX_AGE_MONTHS (an unknown age: all zero): a level's age range ends on a
    month, not on a band's edge."""
    months = np.zeros((len(ages), MAX_AGE_MONTHS + 1), dtype=np.float32)
    for row, age in enumerate(ages):
        if age is not None and age == age:
            months[row, min(max(round(age), 0), MAX_AGE_MONTHS)] = 1.0
    return months


def school_calendar(ages: Sequence[float | None], dates: Sequence[dt.date | None]) -> np.ndarray:
    """Where the observation falls in England's school calendar, one-hot: the child's school year that day and the
    month of the school year (September first), and that month again for a child in reception.

    Why: a level is the child's stage, and the stages follow the school year, not the age alone. A child starts
    reception in the September after their fourth birthday, so two children of 52 months can be in the pre-school
    year and in reception; and the Early Learning Goals are judged at the end of reception, in the summer term.
    The date less the age gives the birth month, hence the school year. Unknown date: all zero (the level head
    then answers from the age alone); unknown age: the month only."""
    calendar = np.zeros((len(ages), CALENDAR_COLUMNS), dtype=np.float32)
    for row, (age, day) in enumerate(zip(ages, dates)):
        if day is None:
            continue
        month = (day.month - 9) % MONTHS
        calendar[row, SCHOOL_YEARS + month] = 1.0
        if age is None or age != age:
            continue
        born_months = day.year * MONTHS + day.month - 1 - round(age)
        born = dt.date(born_months // MONTHS, born_months % MONTHS + 1, 1)
        school_year = _school_year(day) - _school_year(born)
        calendar[row, min(max(school_year - (RECEPTION_YEAR - 2), 0), SCHOOL_YEARS - 1)] = 1.0
        if school_year == RECEPTION_YEAR:
            calendar[row, SCHOOL_YEARS + MONTHS + month] = 1.0
    return calendar


def _school_year(day: dt.date) -> int:
    """The calendar year its school year (September to August) began in."""
    return day.year if day.month >= 9 else day.year - 1


def level_only_width(recipe: HybridRecipe) -> int:
    """Columns at the end of the features that only the level head reads: the age, then the school calendar."""
    if recipe.age_weight <= 0:
        return 0
    ages = AGE_COLUMNS + (MAX_AGE_MONTHS + 1 if recipe.age_by_month else 0)
    return ages + (CALENDAR_COLUMNS if recipe.school_calendar else 0)


def recipe_encoder(
    base_path: str,
    rows: Sequence[Example],
    recipe: HybridRecipe,
    seed: int = 42,
    on_step: Callable[[int, float], None] | None = None,
) -> SentenceEncoder | None:
    """The recipe's sentence encoder (None without one): the base encoder, contrastively tuned on the rows' ELGs
    when the recipe asks for tuning steps (`trainer/contrastive.py`), caching its embeddings."""
    if recipe.encoder_weight <= 0:
        return None
    encoder = SentenceEncoder(base_path, recipe.window_tokens, recipe.max_windows, cache=True)
    if recipe.encoder_tuning_steps > 0:
        schedule = ContrastiveSchedule(
            steps=recipe.encoder_tuning_steps,
            learning_rate=recipe.encoder_learning_rate,
            max_tokens=recipe.window_tokens,
            seed=seed,
        )
        notes = [split_model_input(e.input)[0] for e in rows]
        tune_encoder(encoder.module.encoder, encoder.tokenizer, notes, [e.attribute for e in rows], schedule, on_step)
    return encoder


def saved_recipe(document: dict[str, Any]) -> HybridRecipe:
    """The recipe a saved `features.json` was trained with; one saved before encoder tuning existed had a frozen
    encoder, and one saved before the school calendar had none (neither is today's default)."""
    return HybridRecipe.of({"encoder_tuning_steps": 0, "school_calendar": False, **document["recipe"]})


def _vectoriser(analyzer: str, ngrams: tuple[int, int], vocabulary: dict[str, int] | None = None) -> TfidfVectorizer:
    return TfidfVectorizer(
        analyzer=analyzer,
        ngram_range=ngrams,
        sublinear_tf=True,
        min_df=1 if vocabulary else 2,
        lowercase=True,
        vocabulary=vocabulary,
        dtype=np.float32,
    )


class HybridFeatures:
    """Text → [word TF-IDF | character TF-IDF | weighted sentence embedding | weighted age bands]."""

    def __init__(self, recipe: HybridRecipe, encoder: SentenceEncoder | None):
        self.recipe = recipe
        self.encoder = encoder if recipe.encoder_weight > 0 else None
        self.vectorisers: dict[str, TfidfVectorizer] = {}

    def _specs(self) -> dict[str, tuple[str, tuple[int, int]]]:
        specs = {"word": ("word", (1, self.recipe.word_ngrams))}
        if self.recipe.char_ngrams:
            specs["char"] = ("char_wb", (2, 5))
        return specs

    def _lexical(self, inputs: Sequence[ModelInput]) -> Sequence[str]:
        if self.recipe.lexical_reads_age:
            return [model_input(*i) for i in inputs]
        return [i.note for i in inputs]

    def fit(self, inputs: Sequence[ModelInput]) -> HybridFeatures:
        lexical = self._lexical(inputs)
        self.vectorisers = {name: _vectoriser(*spec).fit(lexical) for name, spec in self._specs().items()}
        return self

    def transform(self, inputs: Sequence[ModelInput]) -> sparse.csr_matrix:
        lexical = self._lexical(inputs)
        blocks = [vectoriser.transform(lexical) for vectoriser in self.vectorisers.values()]
        if self.encoder is not None:
            blocks.append(sparse.csr_matrix(self.encoder([i.note for i in inputs]) * self.recipe.encoder_weight))
        if self.recipe.age_weight > 0:
            ages = [i.child_age_months for i in inputs]
            level_only = [age_bands(ages)] + ([age_months(ages)] if self.recipe.age_by_month else [])
            if self.recipe.school_calendar:
                level_only.append(school_calendar(ages, [i.observation_date for i in inputs]))
            blocks.append(sparse.csr_matrix(np.hstack(level_only) * self.recipe.age_weight))
        return sparse.hstack(blocks, format="csr", dtype=np.float32)

    def to_json(self) -> dict[str, Any]:
        return {
            "recipe": asdict(self.recipe),
            "vectorisers": {
                name: {"vocabulary": {k: int(v) for k, v in vec.vocabulary_.items()}, "idf": vec.idf_.tolist()}
                for name, vec in self.vectorisers.items()
            },
        }

    @classmethod
    def from_json(cls, document: dict[str, Any], encoder: SentenceEncoder | None) -> HybridFeatures:
        features = cls(saved_recipe(document), encoder)
        for name, (analyzer, ngrams) in features._specs().items():
            saved = document["vectorisers"][name]
            vectoriser = _vectoriser(analyzer, ngrams, vocabulary=saved["vocabulary"])
            vectoriser.idf_ = np.asarray(saved["idf"], dtype=np.float32)
            features.vectorisers[name] = vectoriser
        return features


@dataclass
class LinearHead:
    weight: np.ndarray  # classes × features
    bias: np.ndarray  # classes

    def __call__(self, x: sparse.csr_matrix) -> np.ndarray:
        return np.asarray(x @ self.weight.T) + self.bias


class HybridClassifier:
    """The fitted hybrid: features, then a linear head per task. `logits` answers the same heads as the LoRA
    classifier (log-probabilities for the single-label heads, so temperature scaling applies unchanged)."""

    def __init__(self, features: HybridFeatures, heads: dict[str, LinearHead], labels: LabelMaps):
        self.features, self.heads, self.labels = features, heads, labels
        self._membership = _domain_membership(labels)  # once, not per request

    def logits(self, inputs: Sequence[str]) -> dict[str, torch.Tensor]:
        x = self.features.transform([split_model_input(text) for text in inputs])
        attribute = _log_softmax(self.heads["attribute"](x))
        return {
            # The domain head follows from the ELG head: a domain's probability is the sum of its ELGs'.
            "domain": torch.from_numpy(np.log(np.clip(np.exp(attribute) @ self._membership, 1e-12, None))),
            "attribute": torch.from_numpy(attribute),
            "level": torch.from_numpy(_log_softmax(self.heads["level"](x))),
            "tags": torch.from_numpy(self.heads["tags"](x).astype(np.float32)),
        }

    def uncached(self) -> HybridClassifier:
        """The same model whose encoder keeps no cache: what a serving process runs (and latency measures)."""
        encoder = self.features.encoder
        if encoder is None or not encoder.cache:
            return self
        fresh = copy.copy(encoder)
        fresh.cache, fresh._cache = False, {}
        features = copy.copy(self.features)
        features.encoder = fresh
        return HybridClassifier(features, self.heads, self.labels)

    def save(self, folder: Path) -> None:
        (folder / FEATURES_FILE).write_text(json.dumps(self.features.to_json()))
        tensors = {}
        for name, head in self.heads.items():
            tensors[f"{name}.weight"] = np.ascontiguousarray(head.weight, dtype=np.float32)
            tensors[f"{name}.bias"] = np.ascontiguousarray(head.bias, dtype=np.float32)
        save_file(tensors, folder / HEADS_FILE)
        self.labels.save(folder / "label_maps.json")
        encoder = self.features.encoder
        if encoder is not None and self.features.recipe.encoder_tuning_steps > 0:
            encoder.module.encoder.save_pretrained(folder / TUNED_ENCODER_FOLDER)
            encoder.tokenizer.save_pretrained(folder / TUNED_ENCODER_FOLDER)

    @classmethod
    def load(cls, folder: str | Path, encoder_path: str) -> HybridClassifier:
        """The saved model; `encoder_path` is the base encoder, used unless the model carries its tuned one."""
        folder = Path(folder)
        document = json.loads((folder / FEATURES_FILE).read_text())
        recipe = saved_recipe(document)
        if recipe.encoder_tuning_steps > 0:
            encoder_path = str(folder / TUNED_ENCODER_FOLDER)
        encoder = (
            SentenceEncoder(encoder_path, recipe.window_tokens, recipe.max_windows)
            if recipe.encoder_weight > 0
            else None
        )
        tensors = load_file(folder / HEADS_FILE)
        heads = {
            name: LinearHead(tensors[f"{name}.weight"], tensors[f"{name}.bias"])
            for name in {key.split(".")[0] for key in tensors}
        }
        return cls(HybridFeatures.from_json(document, encoder), heads, LabelMaps.load(folder / "label_maps.json"))


def _log_softmax(scores: np.ndarray) -> np.ndarray:
    shifted = scores - scores.max(-1, keepdims=True)
    return (shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))).astype(np.float32)


def _domain_membership(labels: LabelMaps) -> np.ndarray:
    """attributes × domains, 1 where the attribute belongs to the domain: the domain head as one matrix product."""
    if not labels.attribute_domains:
        raise ValueError("label maps lack the attribute → domain map the hybrid's domain head needs")
    return np.array(
        [[labels.attribute_domains.get(str(a)) == d for d in labels.domains] for a in labels.attributes],
        dtype=np.float32,
    )


def _logistic(recipe: HybridRecipe) -> LogisticRegression:
    balanced = "balanced" if recipe.balanced else None
    return LogisticRegression(C=recipe.inverse_regularisation, max_iter=2000, class_weight=balanced)


def _fit_head(
    x: sparse.csr_matrix, y: np.ndarray, weights: np.ndarray, recipe: HybridRecipe, classes: int
) -> LinearHead:
    """Multinomial logistic regression; classes absent from `y` get a very low bias (never predicted)."""
    model = _logistic(recipe).fit(x, y, sample_weight=weights)
    weight = np.zeros((classes, x.shape[1]), dtype=np.float32)
    bias = np.full(classes, -30.0, dtype=np.float32)
    seen = model.classes_.astype(int)
    if len(seen) == 2:  # scikit-learn keeps one row for two classes: log-odds of the second
        weight[seen[1]], bias[seen[1]] = model.coef_[0], model.intercept_[0]
        bias[seen[0]] = 0.0
    else:
        weight[seen], bias[seen] = model.coef_, model.intercept_
    return LinearHead(weight, bias)


def _fit_tags(
    x: sparse.csr_matrix, examples: Sequence[Example], labels: LabelMaps, weights: np.ndarray, recipe: HybridRecipe
) -> LinearHead:
    """One binary logistic regression per attribute: does the observation carry it (primary or secondary)?"""
    weight = np.zeros((len(labels.attributes), x.shape[1]), dtype=np.float32)
    bias = np.full(len(labels.attributes), -30.0, dtype=np.float32)
    for row, attribute in enumerate(labels.attributes):
        carried = np.array([attribute in e.tags for e in examples])
        if carried.all() or not carried.any():
            bias[row] = 30.0 if carried.all() else -30.0
            continue
        model = _logistic(recipe).fit(x, carried, sample_weight=weights)
        weight[row], bias[row] = model.coef_[0], model.intercept_[0]
    return LinearHead(weight, bias)


def fit_hybrid(
    train: Sequence[Example],
    taxonomy_texts: Sequence[Example],
    labels: LabelMaps,
    recipe: HybridRecipe,
    encoder: SentenceEncoder | None,
) -> HybridClassifier:
    """Fit every head on the training notes plus (weighted) the taxonomy's own texts; a taxonomy text without
    a level (an attribute's description) trains the attribute and tag heads only."""
    rows = list(train) + (list(taxonomy_texts) if recipe.taxonomy_weight > 0 else [])
    weights = np.array([1.0] * len(train) + [recipe.taxonomy_weight] * (len(rows) - len(train)))
    inputs = [split_model_input(e.input) for e in rows]
    features = HybridFeatures(recipe, encoder).fit(inputs)
    x = features.transform(inputs)
    # The age says how far along a child is, not what a note is evidence of: unless the recipe says otherwise,
    # the ELG and tag heads are fitted without the age and calendar columns (their weights there stay zero).
    ages_width = 0 if recipe.age_for_elg else level_only_width(recipe)
    x_elg = x[:, : x.shape[1] - ages_width]
    attribute_index = {a: i for i, a in enumerate(labels.attributes)}
    heads = {
        "attribute": _fit_head(
            x_elg, np.array([attribute_index[e.attribute] for e in rows]), weights, recipe, len(labels.attributes)
        )
    }
    levelled = np.array([e.level in labels.levels for e in rows])
    x_level, y_level = x[levelled], np.array([labels.levels.index(e.level) for e in rows if e.level in labels.levels])
    level_weights = weights[levelled]
    dated = np.array([i.observation_date is not None for i in inputs])[levelled]
    if recipe.school_calendar and recipe.age_weight > 0 and dated.any():
        # Each dated note again without its date, so that a request without one (the date is optional) meets a
        # head that learnt to answer from the age alone instead of reading "no date" as evidence.
        keep = np.ones(x.shape[1], dtype=np.float32)
        keep[x.shape[1] - CALENDAR_COLUMNS :] = 0.0
        x_level = sparse.vstack([x_level, x_level[dated] @ sparse.diags(keep)], format="csr")
        y_level, level_weights = np.r_[y_level, y_level[dated]], np.r_[level_weights, level_weights[dated]]
    heads["level"] = _fit_head(x_level, y_level, level_weights, recipe, len(labels.levels))
    heads["tags"] = _fit_tags(x_elg, rows, labels, weights, recipe)
    for name in ("attribute", "tags"):
        heads[name] = LinearHead(np.pad(heads[name].weight, ((0, 0), (0, ages_width))), heads[name].bias)
    return HybridClassifier(features, heads, labels)


def evaluate_hybrid(model: HybridClassifier, examples: Sequence[Example]) -> dict[str, float]:
    """Validation accuracy of each head and attribute top-3, as the LoRA trainer reports them."""
    if not examples:
        return {}
    logits = model.logits([e.input for e in examples])
    labels = model.labels
    attribute = np.array([labels.attributes.index(e.attribute) for e in examples])
    top3 = np.argsort(-logits["attribute"].numpy(), axis=-1)[:, :3]
    return {
        "domain_accuracy": round(
            float(
                np.mean([labels.domains[i] == e.domain for i, e in zip(logits["domain"].argmax(-1).tolist(), examples)])
            ),
            4,
        ),
        "attribute_accuracy": round(float((logits["attribute"].argmax(-1).numpy() == attribute).mean()), 4),
        "level_accuracy": round(
            float(
                np.mean([labels.levels[i] == e.level for i, e in zip(logits["level"].argmax(-1).tolist(), examples)])
            ),
            4,
        ),
        "attribute_top3_accuracy": round(float((top3 == attribute[:, None]).any(-1).mean()), 4),
    }


def train_hybrid(config: TrainerConfig) -> dict[str, Any]:
    """The trainer's `hybrid` recipe: fit on train (+ taxonomy texts), report validation metrics, publish."""
    from trainer.classifier import resolve_base_model

    started = time.monotonic()
    output = OutputFolder(config.output)
    work = output.path
    seed_everything(config.seed)
    taxonomy_texts = read_examples(config.taxonomy_texts) if config.taxonomy_texts else []
    train, valid, labels = read_training_examples(config.train, config.valid, taxonomy_texts)
    recipe = HybridRecipe.of(config.to_dict())
    metrics = MetricsLog(work / "metrics.jsonl")
    progress_log = ProgressLog(work / PROGRESS_FILE)
    # The encoder's tuning steps are what can be counted; fitting the heads after them is not.
    total_steps = recipe.encoder_tuning_steps if recipe.encoder_weight > 0 else 0
    progress_log.write(0, total_steps, start=True)

    def log_step(step: int, loss: float) -> None:
        if step % config.log_every == 0 or step == recipe.encoder_tuning_steps:
            metrics.write(
                "train",
                step=step,
                steps=recipe.encoder_tuning_steps,
                loss=round(loss, 4),
                seconds=round(time.monotonic() - started, 1),
            )
            progress_log.write(step, total_steps)

    encoder = recipe_encoder(
        resolve_base_model(config.base_model), [*train, *taxonomy_texts], recipe, config.seed, log_step
    )
    model = fit_hybrid(train, taxonomy_texts, labels, recipe, encoder)
    evaluation = evaluate_hybrid(model, valid)
    metrics.write("eval", epoch=0, **evaluation)
    progress_log.write(total_steps, total_steps, metric=VALID_METRIC, value=evaluation.get(VALID_METRIC))
    model.save(work)
    summary = {
        "mode": "classifier",
        "recipe": RECIPE,
        "base_model": config.base_model,
        "hyperparameters": config.to_dict(),
        "data": {name: sha256_of(getattr(config, name)) for name in ("train", "valid")},
        "examples": {"train": len(train), "valid": len(valid), "taxonomy_texts": len(taxonomy_texts)},
        "labels": asdict(labels),
        "features": sum(len(v.vocabulary_) for v in model.features.vectorisers.values()),
        "metrics": evaluation,
        "train_seconds": round(time.monotonic() - started, 1),
        "git_commit": os.environ.get("GIT_COMMIT"),
    }
    (work / "manifest.json").write_text(json.dumps(summary, indent=2))
    metrics.write("done", **summary["metrics"], train_seconds=summary["train_seconds"])
    output.publish()
    return summary
