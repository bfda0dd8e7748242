"""The analytics warehouse: the archive scored in batches (a fake predictor: no model), every version's evaluation
history from its stored reports, and the `analytics` job writing both into a real DuckDB file that SQL queries."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd
import pytest

from obs_platform.data import prepare
from obs_platform.evaluation.archive import (
    HISTORY_COLUMNS,
    SCORED_COLUMNS,
    answer_archive,
    evaluation_history,
    kept_answers_jsonl,
    read_kept_answers,
    score_archive,
)
from obs_platform.predictions import Instance, Prediction, Suggestion
from obs_platform.storage import LocalStorage
from obs_platform.taxonomy import Taxonomy
from obs_platform.training.backend import ModelArtifact
from obs_platform.training.registry import OSS_MODEL, ModelRegistry

from .test_data_assets import load_defs

# The README's two example queries: the same SQL in DuckDB and BigQuery.
DISAGREEMENTS_BY_DOMAIN = """
SELECT given_domain_name AS domain,
       count(*) AS observations,
       sum(CASE WHEN agrees THEN 0 ELSE 1 END) AS disagreements,
       round(avg(CASE WHEN agrees THEN 0 ELSE 1 END), 3) AS disagreement_rate,
       round(avg(CASE WHEN given_in_top3 THEN 1 ELSE 0 END), 3) AS given_in_top3
FROM analytics.scored_observations
GROUP BY domain
ORDER BY disagreement_rate DESC, domain
"""
ELG_F1_SINCE_MARCH = """
SELECT model_version AS version, CAST(registered_at AS DATE) AS registered, round(value, 3) AS elg_macro_f1
FROM analytics.evaluation_history
WHERE is_model AND evaluated_on = 'test' AND level = 'attribute' AND metric = 'macro_f1'
  AND registered_at >= TIMESTAMP '2026-03-01'
ORDER BY registered_at
"""


def readme_queries() -> list[str]:
    """The SQL the README shows analysts: it must run on the warehouse as written."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    block = readme.split("```sql", 1)[1].split("```", 1)[0]
    return [query.strip() for query in block.split(";") if query.strip()]


def sample(split_frame: pd.DataFrame, rows: int) -> pd.DataFrame:
    return split_frame[prepare.REDACTED_COLUMNS].head(rows).reset_index(drop=True)


class FakePredictor:
    """Agrees with the educator on every other note (by position in the archive); else ranks the given ELG third.
    Records each batch's size."""

    def __init__(self, observations: pd.DataFrame, taxonomy: Taxonomy):
        self.given = dict(zip(observations["text"], observations["attribute_id"].astype(int)))
        self.order = {text: i for i, text in enumerate(observations["text"])}
        self.others = [a.id for d in taxonomy.domains for a in d.attributes]
        self.taxonomy = taxonomy
        self.batches: list[int] = []

    def predict(self, instances: list[Instance]) -> list[Prediction]:
        self.batches.append(len(instances))
        answers = []
        for instance in instances:
            given = self.given[instance.notes]
            others = [a for a in self.others if a != given][:2]
            ranked = [given, *others] if self.order[instance.notes] % 2 == 0 else [*others, given]
            suggestions = [Suggestion.of(self.taxonomy, a, p) for a, p in zip(ranked, (0.6, 0.3, 0.1))]
            answers.append(Prediction.ranked(suggestions, "Reception", 0.7))
        return answers


def test_the_archive_is_scored_in_batches_with_the_tags_side_by_side(split_frame, eyfs):
    observations = sample(split_frame, 10)
    predictor, progress = FakePredictor(observations, eyfs), []
    scored = score_archive(
        observations,
        predictor.predict,
        eyfs,
        batch_size=4,
        progress=lambda *a: progress.append(a),
        model_version="m/v1",
    )
    assert list(scored.columns) == SCORED_COLUMNS
    assert predictor.batches == [4, 4, 2]
    assert [(done, total) for done, total, _ in progress] == [(4, 10), (8, 10), (10, 10)]
    assert all(seconds >= 0 for *_, seconds in progress)
    assert scored["observation_id"].tolist() == observations["observation_id"].tolist()
    assert scored["agrees"].tolist() == [i % 2 == 0 for i in range(10)]
    assert scored["given_in_top3"].all()
    assert (scored["top3_elg_id"][~scored["agrees"]] == scored["given_elg_id"][~scored["agrees"]]).all()
    assert scored["top1_probability"].eq(0.6).all() and scored["model_version"].eq("m/v1").all()
    first = scored.iloc[0]
    attribute = eyfs.attribute(int(observations["attribute_id"][0]))
    assert first["given_elg"] == attribute.name == first["top1_elg"]
    assert first["given_domain"] == observations["domain_key"][0]
    assert first["setting"] == observations["setting"][0]
    assert first["given_level"] == observations["progression_title"][0]
    assert "child_name" not in scored.columns and "text" not in scored.columns


def test_a_predictor_that_drops_answers_is_refused(split_frame, eyfs):
    with pytest.raises(ValueError, match="answered 0 of a batch of 3"):
        score_archive(sample(split_frame, 3), lambda batch: [], eyfs)


MONTHS = {
    1: datetime(2026, 2, 10, tzinfo=UTC),
    2: datetime(2026, 4, 2, tzinfo=UTC),
    3: datetime(2026, 6, 20, tzinfo=UTC),
}
F1 = {1: 0.41, 2: 0.55, 3: 0.62}


def stored_versions(storage: LocalStorage, tmp_path: Path) -> ModelRegistry:
    """Three versions (registered in February, April and June) with one stored report each: the version beside a
    baseline on the test split, and on the external set."""
    registry = ModelRegistry(storage)
    files = tmp_path / "model-files"
    files.mkdir()
    (files / "manifest.json").write_text(json.dumps({"mode": "classifier"}))
    for number, registered in MONTHS.items():
        version = registry.register(
            OSS_MODEL, ModelArtifact(uri=str(files), manifest={}), dataset_version="d", job_id=f"job-{number}"
        )
        record = json.loads(storage.read_bytes(f"{version.folder}/version.json"))
        storage.write_bytes(
            f"{version.folder}/version.json", json.dumps({**record, "registered_at": registered.timestamp()}).encode()
        )
        levels = {
            level: {"accuracy": F1[number] + 0.1, "macro_f1": F1[number], "classification_report": {}}
            for level in ("domain", "attribute", "level")
        }
        report = {
            "model": {"label": version.label, "data_key": "abc123"},
            "test": {version.label: {"count": 61, **levels}, "majority": {"count": 61, **levels}},
            "external": {"results": {version.label: {"count": 30, "accuracy": 0.5, "macro_f1": 0.4}}},
        }
        storage.write_bytes(f"{version.folder}/evaluation/abc123-uncalibrated/report.json", json.dumps(report).encode())
    registry.set_alias(OSS_MODEL, "champion", 3)
    return registry


def test_the_evaluation_history_has_every_versions_metrics(storage, tmp_path):
    registry = stored_versions(storage, tmp_path)
    history = evaluation_history(registry, [OSS_MODEL, "no-such-model"])
    assert list(history.columns) == HISTORY_COLUMNS
    assert sorted(history["model_version"].unique()) == [f"{OSS_MODEL}/v{n}" for n in (1, 2, 3)]
    own = history[history["is_model"]]
    # 3 levels × 3 metrics on test (the per-class report is no scalar; `count` is left out), 2 on external
    assert len(own) == 3 * (3 * 2 + 2) and len(history) == 3 * (2 * 3 * 2 + 2)
    f1 = own[(own["evaluated_on"] == "test") & (own["level"] == "attribute") & (own["metric"] == "macro_f1")]
    assert dict(zip(f1["model_version"], f1["value"])) == {f"{OSS_MODEL}/v{n}": F1[n] for n in F1}
    assert set(history["system"]) == {"majority", *(f"{OSS_MODEL}/v{n}" for n in F1)}
    assert set(history["calibration"]) == {"uncalibrated"} and set(history["data_key"]) == {"abc123"}
    external = own[own["evaluated_on"] == "external"]
    assert set(external["level"]) == {"domain"} and set(external["metric"]) == {"accuracy", "macro_f1"}
    assert history["registered_at"].min() == pd.Timestamp(MONTHS[1])


def test_the_analytics_job_fills_the_duckdb_warehouse(monkeypatch, storage, tmp_path, split_frame, eyfs):
    registry = stored_versions(storage, tmp_path)
    observations = sample(split_frame, 40)
    (storage.root / "assets").mkdir()
    observations.to_parquet(storage.root / "assets" / "redacted_observations.parquet")  # as the I/O manager stores it
    fake = FakePredictor(observations, eyfs)
    loaded = []

    def load_predictor(model_dir, taxonomy, roster=None, runtime="torch"):
        loaded.append((Path(model_dir), runtime))
        return fake

    import obs_platform.serving.predictor

    monkeypatch.setattr(obs_platform.serving.predictor, "load_predictor", load_predictor)
    monkeypatch.setenv("OBS_PLATFORM_ENDPOINT_RUNTIME", "torch")
    defs = load_defs(monkeypatch, storage.root)
    with dg.instance_for_test() as instance:
        for _ in range(2):  # a second run replaces the tables' rows
            assert defs.resolve_job_def("analytics").execute_in_process(instance=instance).success
        records = instance.fetch_materializations(dg.AssetKey("scored_observations"), limit=2, ascending=True).records
        first, shown = ({k: v.value for k, v in r.asset_materialization.metadata.items()} for r in records)
    # The second run takes the champion's answers kept by the first: the model is not even loaded
    assert loaded == [(Path(registry.champion(OSS_MODEL).uri), "torch")] and sum(fake.batches) == 40
    assert (first["answers_reused"], first["observations_scored"], shown["answers_reused"]) == (0, 40, 40)
    assert first["observations_per_second"] > 0 and shown["observations_per_second"] is None
    assert shown["model_version"] == f"{OSS_MODEL}/v3" and shown["dagster/row_count"] == 40
    assert shown["agreement"] == 0.5 and shown["top3_agreement"] == 1.0
    assert shown["confident_disagreements"].count("\n") == 2 + 10 - 1  # header, rule, ten rows

    with duckdb.connect(str(storage.root / "warehouse.duckdb"), read_only=True) as warehouse:
        by_domain = warehouse.sql(DISAGREEMENTS_BY_DOMAIN).df()
        f1 = warehouse.sql(ELG_F1_SINCE_MARCH).df()
        answers = [warehouse.sql(query).df() for query in readme_queries()]
    assert [len(answer) for answer in answers] == [len(by_domain), len(f1)]
    print(by_domain.to_markdown(index=False), f1.to_markdown(index=False), sep="\n\n")
    assert by_domain["observations"].sum() == 40 and by_domain["disagreements"].sum() == 20
    assert f1["version"].tolist() == [f"{OSS_MODEL}/v2", f"{OSS_MODEL}/v3"]
    assert f1["elg_macro_f1"].tolist() == [F1[2], F1[3]]


def test_the_whole_archive_through_a_real_predictor(trained, split_frame, eyfs):
    """The sample archive through the tiny trained classifier, as the asset loads it: every row scored, the pace
    reported (the tiny model's pace says nothing of a real one's)."""
    from obs_platform.serving.predictor import load_predictor

    observations = sample(split_frame, len(split_frame))
    progress = []
    scored = score_archive(
        observations,
        load_predictor(trained, eyfs, runtime="torch").predict,
        eyfs,
        progress=lambda *a: progress.append(a),
    )
    done, total, seconds = progress[-1]
    print(f"{total} observations in {seconds:.1f} s: {total / seconds:.0f} observations/s")
    assert done == total == len(scored) == len(observations)
    assert scored["top1_elg_id"].notna().all() and scored["top3_probability"].notna().all()
    assert (scored["top1_probability"] >= scored["top2_probability"]).all()
    assert (scored["agrees"] <= scored["given_in_top3"]).all()


def test_kept_answers_are_asked_again_only_for_observations_that_changed(split_frame, eyfs):
    observations = sample(split_frame, 10)
    predictor = FakePredictor(observations, eyfs)
    first = answer_archive(observations, predictor.predict, batch_size=4)
    assert first.reused == 0 and predictor.batches == [4, 4, 2]

    kept = read_kept_answers(kept_answers_jsonl(first.answers))  # as the file keeps them
    assert kept == first.answers
    changed = observations.copy()
    changed.loc[3, "text"] = changed.loc[3, "text"] + " She counted to ten."  # another note: asked again
    changed.loc[5, "child_age_months"] = 50.0  # another age: the model reads it, asked again
    predictor.given[changed.loc[3, "text"]] = int(changed.loc[3, "attribute_id"])
    predictor.order[changed.loc[3, "text"]] = 3
    progress = []
    again = answer_archive(changed, predictor.predict, batch_size=4, kept=kept, progress=lambda *a: progress.append(a))
    assert again.reused == 8 and predictor.batches[3:] == [2] and [p[:2] for p in progress] == [(2, 2)]
    assert list(again.answers) == changed["observation_id"].tolist()
    assert again.answers[changed["observation_id"][0]] == first.answers[changed["observation_id"][0]]
    assert (
        again.answers[changed["observation_id"][3]].fingerprint
        != first.answers[changed["observation_id"][3]].fingerprint
    )
    assert read_kept_answers(b"{not json\n" + kept_answers_jsonl(again.answers)) == again.answers  # a torn line: asked
