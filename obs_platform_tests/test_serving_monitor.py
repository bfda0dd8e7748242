"""The served model watched: the monitor's figures and warnings from the endpoint's logs (PSI, latency, acceptance,
with their statistical guards), the evaluation report's field column, and the whole loop: predictions and
feedback through the endpoint, the export taken by the landing sensor into the training data, the monitor and
`obs-platform feedback-stats` reporting the same acceptance."""

from __future__ import annotations

import time

import dagster as dg
import orjson
import pandas as pd
import pytest
from typer.testing import CliRunner

from obs_platform.cli import app
from obs_platform.defs.jobs import MONITOR_JOB
from obs_platform.evaluation.families import FamilySummary
from obs_platform.evaluation.report import build_report, comparison_table
from obs_platform.predictions import Prediction, Suggestion
from obs_platform.serving.app import create_app
from obs_platform.serving.client import ObservationClassifier
from obs_platform.serving.feedback import Feedback, FeedbackStore
from obs_platform.serving.monitor import (
    MonitorSettings,
    drift_judgeable,
    feedback_frame,
    feedback_table,
    field_accuracy,
    monitor_report,
    population_stability_index,
    wilson_interval,
)
from obs_platform.serving.prediction_log import PREDICTION_LOG_FOLDER, LoggedPrediction, PredictionLog
from obs_platform.serving.served import SERVED_MODEL_PATH, ServedModelDecision
from obs_platform.storage import LocalStorage

from .endpoint_harness import served
from .test_automation import landing_tick
from .test_data_assets import load_defs, run_data_group
from .test_feedback import TOKEN, SuggestingPredictor

DAY = 86400.0
SETTINGS = MonitorSettings(drift_threshold=0.2, acceptance_margin=0.10, window_days=7)


def test_psi_is_zero_for_the_same_shares_and_grows_with_the_shift():
    train = pd.Series({"a": 50, "b": 30, "c": 20})
    assert population_stability_index(train, train * 3) == pytest.approx(0.0)
    slight = population_stability_index(train, pd.Series({"a": 45, "b": 33, "c": 22}))
    major = population_stability_index(train, pd.Series({"a": 5, "b": 5, "c": 90}))
    unseen = population_stability_index(train, pd.Series({"a": 50, "b": 30, "c": 10, "d": 10}))
    assert 0 < slight < 0.1 < 0.25 < major and unseen > slight  # a label never trained on counts too


def test_drift_needs_enough_predictions_and_acceptance_an_interval():
    # 17 ELGs, threshold 0.2: the no-drift 99th percentile of PSI is χ²₀.₉₉(16)/n = 32.0/n.
    assert not drift_judgeable(100, 17, 0.2) and drift_judgeable(161, 17, 0.2)
    low, high = wilson_interval(8, 10)
    assert low < 0.8 < high and high - low > 0.3
    assert wilson_interval(800, 1000)[1] - wilson_interval(800, 1000)[0] < 0.06


def log_predictions(root, eyfs, day_offsets: list[float], attribute_index, version="m/v1", latency=20.0) -> list[str]:
    """Predictions written to the endpoint's log as if answered `day_offsets` days ago; returns their ids."""
    ids = []
    for n, offset in enumerate(day_offsets):
        chosen = eyfs.attributes[attribute_index(n)]
        others = [a for a in eyfs.attributes if a.id != chosen.id][:2]
        top = [Suggestion.of(eyfs, a.id, p, confident=p > 0.5) for a, p in zip([chosen, *others], (0.7, 0.2, 0.1))]
        prediction = Prediction.ranked(top, chosen.label_levels[0].title, 0.8, prediction_id=f"p{n}")
        ids.append(f"p{n}")
        logged = LoggedPrediction(f"p{n}", version, "0" * 64, prediction)
        line = logged.line(time.time() - offset * DAY, latency + n % 10)
        folder = root / PREDICTION_LOG_FOLDER
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / f"synthetic-{n // 100}.jsonl", "ab") as handle:
            handle.write(orjson.dumps(line) + b"\n")
    return ids


def training_frame(eyfs, per_attribute: int = 20) -> pd.DataFrame:
    ids = [a.id for a in eyfs.attributes for _ in range(per_attribute)]
    return pd.DataFrame({"attribute_id": ids, "split": "train"})


def today() -> str:
    return time.strftime("%Y-%m-%d", time.gmtime())


def test_the_monitor_warns_on_drift_only_with_enough_predictions(tmp_path, eyfs):
    storage, settings = LocalStorage(tmp_path), SETTINGS
    # Yesterday and today: every prediction the same ELG (a drift), but first only 40 of them.
    log_predictions(tmp_path, eyfs, [0.0] * 20 + [1.0] * 20, lambda n: 0)
    few = monitor_report(storage, eyfs, training_frame(eyfs), settings, None, None, today())
    assert few.drift.passed and "too few to judge drift" in few.drift.description
    assert few.window["predictions"] == 40 and few.window["attribute_psi"] > 1
    assert list(few.daily["predictions"]) == [20, 20] and few.daily["day"].is_monotonic_increasing
    assert few.window["latency_p50_ms"] == pytest.approx(24.5) and few.window["confident_share"] == 1.0
    log_predictions(tmp_path, eyfs, [0.5] * 200, lambda n: 0)
    many = monitor_report(storage, eyfs, training_frame(eyfs), settings, None, None, today())
    assert not many.drift.passed and "drifted from the training split" in many.drift.description
    shares = many.distribution.set_index("domain")
    first_domain = eyfs.domain(eyfs.attributes[0].domain_id).key
    assert shares.loc[first_domain, "served_share"] == 1.0 and shares.loc[first_domain, "train_share"] < 0.5
    # Predictions spread like the training split: no warning, however many.
    for path in (tmp_path / PREDICTION_LOG_FOLDER).glob("*.jsonl"):
        path.unlink()
    log_predictions(tmp_path, eyfs, [0.2] * 17 * 20, lambda n: n % 17)
    spread = monitor_report(storage, eyfs, training_frame(eyfs), settings, None, None, today())
    assert spread.drift.passed and spread.window["attribute_psi"] < 0.01


def test_predictions_older_than_the_window_are_in_the_days_but_not_judged(tmp_path, eyfs):
    log_predictions(tmp_path, eyfs, [30.0] * 300, lambda n: 0)
    report = monitor_report(LocalStorage(tmp_path), eyfs, training_frame(eyfs), SETTINGS, None, None, today())
    assert report.window["predictions"] == 0 and report.drift.passed
    assert list(report.daily["predictions"]) == [300]


def record_feedback(root, eyfs, ids: list[str], accepted: int, version: str = "m/v1") -> None:
    """`accepted` of `ids` accepted at top-1, the rest corrected to another ELG."""
    store = FeedbackStore(root, eyfs, records_per_file=10_000)
    other = eyfs.attributes[-1]
    for n, prediction_id in enumerate(ids):
        if n < accepted:
            choice, attribute = "accepted", eyfs.attributes[0]
        else:
            choice, attribute = "corrected", other
        store.record(
            Feedback(
                prediction_id,
                version,
                "note",
                40.0,
                None,
                choice,
                attribute.id,
                attribute.label_levels[0].title,
                time.time(),
            )
        )
    store.close()


def test_acceptance_warns_only_when_clearly_below_the_test_accuracy(tmp_path, eyfs):
    storage = LocalStorage(tmp_path)
    ids = log_predictions(tmp_path, eyfs, [0.0] * 120, lambda n: 0)
    record_feedback(tmp_path, eyfs, ids[:6], accepted=3)  # 50 % of 6: could be chance
    report = monitor_report(storage, eyfs, training_frame(eyfs), SETTINGS, "m/v1", 0.8, today())
    assert report.acceptance.passed and report.acceptance.figures["top1_acceptance"] == 0.5
    record_feedback(tmp_path, eyfs, ids[6:120], accepted=54)  # 57 of 120 in all: 47.5 %, interval to ~57 %
    report = monitor_report(storage, eyfs, training_frame(eyfs), SETTINGS, "m/v1", 0.8, today())
    assert not report.acceptance.passed and "below its test accuracy 80.0%" in report.acceptance.description
    # The same feedback judged against a version tested at 60 %: within the margin, no warning.
    assert monitor_report(storage, eyfs, training_frame(eyfs), SETTINGS, "m/v1", 0.6, today()).acceptance.passed
    # No decision yet, or feedback only on another version: not judged.
    assert monitor_report(storage, eyfs, training_frame(eyfs), SETTINGS, None, None, today()).acceptance.passed
    other = monitor_report(storage, eyfs, training_frame(eyfs), SETTINGS, "m/v2", 0.8, today())
    assert other.acceptance.passed and "no feedback on m/v2" in other.acceptance.description
    domain = eyfs.domain(eyfs.attributes[0].domain_id).key
    [row] = report.acceptance_by_domain.to_dict("records")
    assert (row["domain"], row["feedback"], row["accepted_top1"], row["corrected"]) == (domain, 120, 57, 63)
    feedback = feedback_frame(storage, eyfs)
    assert field_accuracy(feedback, "m/v1") == (pytest.approx(57 / 120), 120)
    assert field_accuracy(feedback, "m/v2") == (None, 0)


def test_the_report_has_a_field_column_for_served_versions():
    metrics = {
        "domain": {"macro_f1": 0.8},
        "attribute": {"accuracy": 0.7, "macro_f1": 0.6, "top3_accuracy": 0.9},
        "level": {"accuracy": 0.5, "within_one_accuracy": 0.8},
        "tags": {"micro_f1": 0.6},
    }
    report = build_report(
        {"label": "m/v2"},
        {"m/v2": metrics, "m/v1 (champion)": metrics, "majority": metrics},
        None,
        None,
        field={"m/v1 (champion)": {"accuracy": 0.65, "feedback": 40}},
    )
    table = comparison_table(report).set_index("system")
    assert (
        table.loc["m/v1 (champion)", "field_accuracy"] == 0.65 and table.loc["m/v1 (champion)", "field_feedback"] == 40
    )
    assert pd.isna(table.loc["m/v2", "field_accuracy"]) and table.loc["majority", "field_feedback"] == 0


@pytest.mark.slow  # the data assets twice on the sample corpus (about 10 s): `make test` runs it
def test_the_loop_from_suggestion_to_training_data_and_the_monitor(monkeypatch, landed_storage, eyfs):
    """Predictions and feedback through the endpoint (accepted, corrected, none of these); the export is seen by
    the landing sensor and the next training data holds the corrected note with the educator's label, redacted;
    the monitor and `obs-platform feedback-stats` report the same acceptance."""
    root = landed_storage.root
    defs = load_defs(monkeypatch, root)
    version = "oss-classifier/v1"
    summary = FamilySummary(
        family="open-source",
        model_version=version,
        data_key="k",
        test_examples=100,
        attribute_macro_f1=0.7,
        attribute_accuracy=0.75,
        domain_macro_f1=0.8,
        invalid_rate=0.0,
        usd_per_1000_predictions=None,
        cost_basis="",
    )
    decision = ServedModelDecision("open-source", version, "the only family", (summary.model_dump(),))
    landed_storage.write_bytes(SERVED_MODEL_PATH, orjson.dumps(decision.to_dict()))
    with dg.DagsterInstance.ephemeral() as instance:
        assert run_data_group(defs, instance).success
        before = landing_tick(landed_storage, None)

        store = FeedbackStore(root, eyfs, records_per_file=100)
        log = PredictionLog(root / PREDICTION_LOG_FOLDER)
        endpoint = create_app(
            SuggestingPredictor(eyfs), {"model_version": version}, TOKEN, prediction_log=log, feedback_store=store
        )
        notes = [
            "Zephyrine built a tower of nine bricks and counted them as she went, pointing at each one.",
            "Sang the whole of Twinkle Twinkle with actions.",
            "Played outside.",
        ]
        corrected_to = eyfs.attributes[5]
        with served(endpoint) as url:  # stopping the app publishes what is waiting
            client = ObservationClassifier.for_local_endpoint(url, TOKEN)
            results = [client.classify(note, child_age_months=44, child_name="Zephyrine Quill") for note in notes]
            client.feedback(
                results[0],
                notes[0],
                "corrected",
                attribute_id=corrected_to.id,
                level=corrected_to.label_levels[-1].title,
                child_age_months=44,
                child_name="Zephyrine Quill",
            )
            client.feedback(results[1], notes[1], "accepted", child_age_months=44)
            client.feedback(results[2], notes[2], "none_of_these", child_age_months=44)

        after = landing_tick(landed_storage, before.cursor)
        [request] = after.run_requests
        assert "1 added" in request.tags["obs-platform/changes"]  # one export of the two notes that train
        assert run_data_group(defs, instance).success
        splits = pd.read_parquet(root / "assets" / "training_splits.parquet")

        monitored = defs.resolve_job_def(MONITOR_JOB).execute_in_process(instance=instance)
        assert monitored.success
        checks = {c.check_name: c for c in monitored.get_asset_check_evaluations()}
        daily = pd.read_parquet(root / "assets" / "serving_monitor.parquet")

    [row] = splits[splits["observation_id"] == f"fb-{results[0].prediction_id}"].to_dict("records")
    assert row["attribute_id"] == corrected_to.id and row["progression_title"] == corrected_to.label_levels[-1].title
    assert "Zephyrine" not in row["text"] and "Quill" not in row["text"]  # redacted like every export
    accepted = splits[splits["observation_id"] == f"fb-{results[1].prediction_id}"]
    assert list(accepted["attribute_id"]) == [results[1].attribute_id]
    assert not splits["observation_id"].eq(f"fb-{results[2].prediction_id}").any()

    [today_row] = daily.to_dict("records")
    assert (today_row["predictions"], today_row["feedback"], today_row["accepted_top1"]) == (3, 3, 1)
    assert (today_row["corrected"], today_row["none_of_these"]) == (1, 1)
    assert today_row["top1_acceptance"] == pytest.approx(0.333)
    assert checks["prediction_drift"].passed and "too few to judge" in checks["prediction_drift"].description
    acceptance = checks["field_acceptance"]
    assert acceptance.passed and "1/3 accepted at top-1" in acceptance.description
    assert "test accuracy 75.0%" in acceptance.description
    monkeypatch.setenv("OBS_PLATFORM_HOME", str(root))
    printed = CliRunner().invoke(app, ["feedback-stats"]).output
    assert version in printed and "0.333" in printed
    [stats] = feedback_table(landed_storage, eyfs).to_dict("records")
    assert (stats["feedback"], stats["accepted_top1"], stats["corrected"], stats["none_of_these"]) == (3, 1, 1, 1)
