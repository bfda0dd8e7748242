"""The archive scored by the champion, and every version's evaluation, as tables for analysts.

`score_archive` runs every canonical observation (its redacted note, the child's age and the date, never a name)
through a predictor in batches: one row per observation with the educator's tag beside the model's top three, where
the two disagree. `score_answers` builds the same rows from answers got elsewhere, by observation id (a Vertex batch
prediction job's), and names every observation left without one. `evaluation_history` flattens every stored
evaluation report of every version into one long table (version, set, system, level, metric, value), so "how has ELG
macro-F1 moved since March" is one query.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from obs_platform.evaluation.report import REPORT_FILE
from obs_platform.predictions import Instance, KeptAnswer, Prediction
from obs_platform.taxonomy import Taxonomy
from obs_platform.training.registry import ModelRegistry

TOP_K = 3
SCORED_COLUMNS = [
    "observation_id",
    "setting",
    "observation_date",
    "child_age_months",
    "given_domain",
    "given_domain_name",
    "given_elg_id",
    "given_elg",
    "given_level",
    "predicted_domain",
    "predicted_domain_name",
    *(f"top{rank}_{part}" for rank in range(1, TOP_K + 1) for part in ("elg_id", "elg", "probability")),
    "predicted_level",
    "level_confidence",
    "confidence",
    "confident",
    "agrees",
    "given_in_top3",
    "model_version",
]
HISTORY_COLUMNS = [
    "model_version",
    "registered_at",
    "data_key",
    "calibration",
    "evaluated_on",
    "system",
    "is_model",
    "level",
    "metric",
    "value",
]
HISTORY_LEVELS = ("domain", "attribute", "level", "tags", "calibration")

# (observations done, total, seconds since scoring started), after every batch
Progress = Callable[[int, int, float], None]


def archive_instances(observations: pd.DataFrame) -> list[Instance]:
    """What the model reads of each observation, in order: the redacted note, the child's age and the observation's
    date (never a name)."""
    ages = [None if pd.isna(age) else float(age) for age in observations["child_age_months"].tolist()]
    days = [None if pd.isna(day) else day.date() for day in pd.to_datetime(observations["observation_date"]).tolist()]
    return [
        Instance(notes=text, child_age_months=age, observation_date=day)
        for text, age, day in zip(observations["text"].tolist(), ages, days)
    ]


@dataclass(frozen=True)
class ArchiveAnswers:
    answers: dict[str, KeptAnswer]  # by observation id, for every observation
    reused: int  # how many were kept answers, not asked again


def answer_archive(
    observations: pd.DataFrame,
    predict: Callable[[list[Instance]], list[Prediction]],
    batch_size: int = 64,
    progress: Progress | None = None,
    kept: Mapping[str, KeptAnswer] | None = None,
) -> ArchiveAnswers:
    """The model's answer for every observation: an answer `kept` holds for the same instance is taken as it is,
    every other observation is asked of `predict`, `batch_size` at a time (`progress` after each batch), so a new
    drop of notes costs what it holds, not the whole archive."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, not {batch_size}")
    ids = observations["observation_id"].astype(str).tolist()
    instances = archive_instances(observations)
    fingerprints = [instance.fingerprint for instance in instances]
    held = kept or {}
    answers: dict[str, KeptAnswer] = {}
    todo = []
    for k, (observation_id, fingerprint) in enumerate(zip(ids, fingerprints)):
        answer = held.get(observation_id)
        if answer is not None and answer.fingerprint == fingerprint:
            answers[observation_id] = answer
        else:
            todo.append(k)
    started = time.monotonic()
    for start in range(0, len(todo), batch_size):
        batch = todo[start : start + batch_size]
        answered = predict([instances[k] for k in batch])
        if len(answered) != len(batch):
            raise ValueError(f"the predictor answered {len(answered)} of a batch of {len(batch)} observations")
        answers.update((ids[k], KeptAnswer(fingerprints[k], p)) for k, p in zip(batch, answered))
        if progress is not None:
            progress(start + len(batch), len(todo), time.monotonic() - started)
    return ArchiveAnswers(answers={i: answers[i] for i in ids}, reused=len(ids) - len(todo))


def kept_answers_jsonl(answers: Mapping[str, KeptAnswer]) -> bytes:
    """A version's answers as a file: one line per observation (its id, the instance's fingerprint, the
    prediction as the serving app writes it)."""
    return b"".join(
        (
            json.dumps({"observation_id": i, "fingerprint": a.fingerprint, "prediction": asdict(a.prediction)}) + "\n"
        ).encode()
        for i, a in answers.items()
    )


def read_kept_answers(data: bytes) -> dict[str, KeptAnswer]:
    """`kept_answers_jsonl`'s answers; a line that is not one (a file cut short) is left out, and asked again."""
    kept = {}
    for line in data.splitlines():
        try:
            record = json.loads(line)
            kept[str(record["observation_id"])] = KeptAnswer(
                str(record["fingerprint"]), Prediction.from_dict(record["prediction"])
            )
        except (ValueError, KeyError, TypeError):
            continue
    return kept


def score_archive(
    observations: pd.DataFrame,
    predict: Callable[[list[Instance]], list[Prediction]],
    taxonomy: Taxonomy,
    batch_size: int = 64,
    progress: Progress | None = None,
    model_version: str = "",
) -> pd.DataFrame:
    """Every redacted observation (`redacted_observations`' columns: `text`, `child_age_months` and
    `observation_date` are what the model reads) with the educator's primary tag, the model's top three ELGs with
    their probabilities, its level and confidence, and whether the two agree (`agrees`: the given ELG is the model's
    first; `given_in_top3`)."""
    answers = answer_archive(observations, predict, batch_size, progress).answers
    ids = observations["observation_id"].astype(str)
    return _scored(observations, [answers[i].prediction for i in ids], taxonomy, model_version)


def score_answers(
    observations: pd.DataFrame,
    answers: Mapping[str, Prediction],
    taxonomy: Taxonomy,
    model_version: str = "",
    reasons: Mapping[str, str] | None = None,
) -> tuple[pd.DataFrame, dict[str, str]]:
    """`score_archive`'s table for the observations `answers` holds a prediction for (by observation id; answers for
    ids not in `observations` are left out), and every other observation's id with why it has no row: its entry in
    `reasons` (why the model could not answer it), else that no answer was found for it."""
    ids = observations["observation_id"].astype(str)
    answered = ids.isin(list(answers)).to_numpy()
    unscored = {
        observation_id: (reasons or {}).get(observation_id) or "no answer for it was found"
        for observation_id in ids[~answered]
    }
    kept = observations[answered]
    frame = _scored(kept, [answers[i] for i in ids[answered]], taxonomy, model_version)
    return frame, unscored


def _scored(
    observations: pd.DataFrame, predictions: list[Prediction], taxonomy: Taxonomy, model_version: str
) -> pd.DataFrame:
    """The table's rows: each observation's given tag beside its prediction (in the same order)."""
    rows = [
        {**_given(row, taxonomy), **_predicted(prediction), "model_version": model_version}
        for row, prediction in zip(observations.itertuples(index=False), predictions)
    ]
    frame = pd.DataFrame(rows, columns=SCORED_COLUMNS)
    frame["agrees"] = frame["given_elg_id"] == frame["top1_elg_id"]
    top3 = frame[[f"top{rank}_elg_id" for rank in range(1, TOP_K + 1)]]
    frame["given_in_top3"] = top3.eq(frame["given_elg_id"], axis=0).any(axis=1)
    frame["observation_date"] = pd.to_datetime(frame["observation_date"])
    return frame.astype({"agrees": bool, "given_in_top3": bool, "confident": bool})


def _given(row: Any, taxonomy: Taxonomy) -> dict[str, Any]:
    attribute_id = int(row.attribute_id)
    domain = taxonomy.domain(taxonomy.attribute(attribute_id).domain_id)
    return {
        "observation_id": str(row.observation_id),
        "setting": None if pd.isna(row.setting) else str(row.setting),
        "observation_date": row.observation_date,
        "child_age_months": None if pd.isna(row.child_age_months) else float(row.child_age_months),
        "given_domain": domain.key,
        "given_domain_name": domain.name,
        "given_elg_id": attribute_id,
        "given_elg": taxonomy.attribute(attribute_id).name,
        "given_level": None if pd.isna(row.progression_title) else str(row.progression_title),
    }


def _predicted(prediction: Prediction) -> dict[str, Any]:
    ranked = list(prediction.top_k)
    row: dict[str, Any] = {
        "predicted_domain": prediction.domain or None,
        "predicted_domain_name": prediction.domain_name or None,
        "predicted_level": prediction.level or None,
        "level_confidence": float(prediction.level_confidence),
        "confidence": float(prediction.confidence),
        "confident": bool(prediction.confident),
    }
    if not ranked and prediction.attribute_id:  # a generative answer names one label
        row.update(top1_elg_id=prediction.attribute_id, top1_elg=prediction.attribute, top1_probability=None)
    for rank, suggestion in enumerate(ranked[:TOP_K], start=1):
        row[f"top{rank}_elg_id"] = suggestion.attribute_id
        row[f"top{rank}_elg"] = suggestion.attribute
        row[f"top{rank}_probability"] = float(suggestion.probability)
    return row


def evaluation_history(registry: ModelRegistry, names: Iterable[str]) -> pd.DataFrame:
    """Every stored evaluation report (`{version folder}/evaluation/<data key>-<calibration>/report.json`) of every
    version of the models `names`, one row per set evaluated on (`evaluated_on`: `test`, `external`), system, level
    and scalar metric. `system` is the report's row: the version itself (`is_model`), a baseline, or the champion it
    was compared with; filter on `is_model` for the version's own figures."""
    rows: list[dict[str, Any]] = []
    storage = registry.storage
    for name in names:
        for version in registry.versions(name):
            prefix = f"{version.folder}/evaluation/"
            for path in sorted(storage.list_files(f"{version.folder}/evaluation")):
                if not path.endswith(f"/{REPORT_FILE}") or path.count("/") != prefix.count("/") + 1:
                    continue
                report = json.loads(storage.read_bytes(path))
                folder = path.removeprefix(prefix).removesuffix(f"/{REPORT_FILE}")
                data_key, _, calibration = folder.partition("-")
                base = {
                    "model_version": version.label,
                    "registered_at": _timestamp(version.registered_at),
                    "data_key": report.get("model", {}).get("data_key") or data_key,
                    "calibration": calibration,
                }
                rows.extend(_report_rows(report, version.label, base))
    frame = pd.DataFrame(rows, columns=HISTORY_COLUMNS)
    return frame.astype({"registered_at": "datetime64[ns, UTC]", "is_model": bool, "value": float})


def _timestamp(seconds: float) -> datetime:
    return datetime.fromtimestamp(float(seconds), tz=UTC)


def _report_rows(report: dict[str, Any], label: str, base: dict[str, Any]) -> Iterable[dict[str, Any]]:
    def row(evaluated_on: str, system: str, level: str, metric: str, value: float) -> dict[str, Any]:
        return {
            **base,
            "evaluated_on": evaluated_on,
            "system": system,
            "is_model": system == label,
            "level": level,
            "metric": metric,
            "value": value,
        }

    for system, metrics in report.get("test", {}).items():
        for level in HISTORY_LEVELS:
            for metric, value in _scalars(metrics.get(level)):
                yield row("test", system, level, metric, value)
    for system, metrics in (report.get("external", {}).get("results") or {}).items():
        for metric, value in _scalars(metrics):  # the external set is scored at the domain level only
            yield row("external", system, "domain", metric, value)


def _scalars(metrics: Any) -> Iterable[tuple[str, float]]:
    if not isinstance(metrics, dict):
        return
    for metric, value in metrics.items():
        if isinstance(value, int | float) and not isinstance(value, bool) and metric != "count":
            yield metric, float(value)
