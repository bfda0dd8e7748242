"""Configuration: `Settings` (pydantic-settings) read from the environment and `.env`, bad values refused at once with
their variables named, and the Dagster resources configured with `dg.EnvVar` where a variable is set."""

import os
import random
import re
from collections.abc import Iterator
from pathlib import Path
from typing import get_args

import dagster as dg
import numpy as np
import pytest
import torch
from trainer.config import MODE_DEFAULTS, TrainerConfig
from trainer.runs import seed_everything

from obs_platform.cloud.costs import PRICE_VARIABLES, Prices
from obs_platform.cloud.vertex import ENV_VARIABLES, VertexConfigError, VertexSettings
from obs_platform.defs.cloud import resources as cloud_resources
from obs_platform.defs.data import resources as data_resources
from obs_platform.defs.evaluation import resources as evaluation_resources
from obs_platform.defs.serving import resources as serving_resources
from obs_platform.defs.training import resources as training_resources
from obs_platform.defs.training.resources import TuningBackendResource
from obs_platform.environment import SettingsError
from obs_platform.settings import DEFAULT_EXTERNAL_EVAL, Baseline, EndpointRuntime, Settings
from obs_platform.taxonomy import default_taxonomy_path

ROOT = Path(__file__).resolve().parent.parent
VERTEX = {
    "OBS_PLATFORM_VERTEX_PROJECT": "obs-proj",
    "OBS_PLATFORM_VERTEX_REGION": "europe-west2",
    "OBS_PLATFORM_VERTEX_BUCKET": "gs://obs-bucket/vertex",
    "OBS_PLATFORM_VERTEX_TRAINER_IMAGE": "europe-west2-docker.pkg.dev/p/r/obs-trainer:1",
}


@pytest.fixture
def environment(monkeypatch, tmp_path) -> Iterator[Path]:
    """No OBS_PLATFORM_* variable set and an empty working directory (no `.env`); what a test's `.env` exported
    into the environment (`Settings.from_env` does) is removed afterwards."""
    before = set(os.environ)
    for name in list(os.environ):
        if name.startswith("OBS_PLATFORM_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    for name in set(os.environ) - before:
        del os.environ[name]


def refusal(**variables: str) -> str:
    """The message of the settings refused with these variables set."""
    for name, value in variables.items():
        os.environ[name] = value
    with pytest.raises(SettingsError) as refused:
        Settings.from_env()
    return str(refused.value)


def test_the_defaults(environment):
    settings = Settings.from_env()
    assert settings.home.endswith("obs-platform/home") and settings.taxonomy_path == str(default_taxonomy_path())
    assert (settings.backend, settings.train_mode, settings.train_recipe) == ("local", "classifier", "hybrid")
    assert settings.base_model == MODE_DEFAULTS["classifier"]["base_model"]  # the mode's, filled in
    assert settings.train_options == {} and settings.prices == Prices()
    assert settings.baselines == get_args(Baseline) and settings.promotion_floor == "tfidf_logistic"
    assert settings.external_eval_path == str(DEFAULT_EXTERNAL_EVAL)
    assert settings.automation is False and settings.endpoint_runtime == "onnx"
    assert settings.tuning_timeout_seconds == 6 * 3600 and settings.sensor_interval_seconds == 30


def test_the_resources_defaults_are_the_settings(environment):
    """One place for each default: a resource built without configuration has the settings' defaults."""
    settings = Settings.from_env()
    tuning = TuningBackendResource(vertex=None)
    assert (tuning.kind, tuning.mode, tuning.recipe) == (settings.backend, settings.train_mode, settings.train_recipe)
    assert tuning.timeout_seconds == settings.tuning_timeout_seconds and tuning.epochs == TrainerConfig.epochs
    evaluation = evaluation_resources.EvaluationResource()
    assert (evaluation.tolerance, evaluation.floor) == (settings.promotion_tolerance, settings.promotion_floor)
    assert tuple(evaluation.baselines) == settings.baselines and evaluation.work_dir == settings.work_dir
    monitor = serving_resources.MonitorResource()
    assert monitor.window_days == settings.monitor_window_days
    assert monitor.drift_threshold == settings.monitor_drift_threshold


def test_dotenv_is_read_and_the_environment_wins(environment, monkeypatch):
    (environment / ".env").write_text(
        "# a comment\n"
        "OBS_PLATFORM_TRAIN_MODE=sft\n"
        "OBS_PLATFORM_AUTOMATION=on\n"
        "OBS_PLATFORM_TIMEZONE=Europe/Paris\n"
        "OBS_PLATFORM_SERVING_USD_PER_MACHINE_HOUR=0.75\n"
        "OBS_PLATFORM_TAXONOMY=\n"
        "DAGSTER_HOME=/elsewhere\n"  # another program's variable: ignored
    )
    monkeypatch.setenv("OBS_PLATFORM_TIMEZONE", "UTC")
    settings = Settings.from_env()
    assert settings.train_mode == "sft" and settings.base_model == MODE_DEFAULTS["sft"]["base_model"]
    assert settings.automation is True and settings.timezone == "UTC"
    assert settings.prices.serving_usd_per_machine_hour == 0.75
    assert settings.taxonomy_path == str(default_taxonomy_path())  # empty: the default
    assert os.environ["OBS_PLATFORM_TRAIN_MODE"] == "sft"  # exported for the readers of os.environ


def test_a_value_outside_a_literal_is_refused_with_its_variable_and_value(environment):
    assert "OBS_PLATFORM_BACKEND='cloud' is not 'local' or 'vertex'" in refusal(OBS_PLATFORM_BACKEND="cloud")


def test_every_bad_variable_is_named_in_one_error(environment):
    message = refusal(
        OBS_PLATFORM_TRAIN_MODE="gpt",
        OBS_PLATFORM_TRAIN_RECIPE="boosted",
        OBS_PLATFORM_ENDPOINT_RUNTIME="tensorrt",
        OBS_PLATFORM_TRAIN_EPOCHS="four",
        OBS_PLATFORM_PROMOTION_TOLERANCE="-0.1",
        OBS_PLATFORM_BASELINES="majority,random_forest",
        OBS_PLATFORM_AUTOMATION="sometimes",
        OBS_PLATFORM_TIMEZONE="Mars/Olympus",
        OBS_PLATFORM_SENSOR_INTERVAL_SECONDS="0",
        OBS_PLATFORM_BATCH_USD_PER_MILLION_INPUT_TOKENS="cheap",
    )
    for expected in (
        "OBS_PLATFORM_TRAIN_MODE='gpt' is not 'classifier' or 'sft'",
        "OBS_PLATFORM_TRAIN_RECIPE='boosted'",
        "OBS_PLATFORM_ENDPOINT_RUNTIME='tensorrt'",
        "OBS_PLATFORM_TRAIN_EPOCHS='four' is not a whole number",
        "OBS_PLATFORM_PROMOTION_TOLERANCE='-0.1' is negative",
        "OBS_PLATFORM_BASELINES item 'random_forest' is not",
        "OBS_PLATFORM_AUTOMATION='sometimes' is not on or off",
        "OBS_PLATFORM_TIMEZONE='Mars/Olympus' is not a time zone",
        "OBS_PLATFORM_SENSOR_INTERVAL_SECONDS='0' is not positive",
        "OBS_PLATFORM_BATCH_USD_PER_MILLION_INPUT_TOKENS='cheap' is not a number",
    ):
        assert expected in message
    assert len(message.split("; ")) == 10


def test_an_empty_value_is_unset(environment, monkeypatch):
    for name in (
        "HOME",
        "TAXONOMY",
        "BACKEND",
        "TRAIN_EPOCHS",
        "BASELINES",
        "AUTOMATION",
        "SERVING_USD_PER_MACHINE_HOUR",
    ):
        monkeypatch.setenv(f"OBS_PLATFORM_{name}", "")
    assert Settings.from_env() == Settings()  # as if none were set
    settings = Settings.from_env()
    assert settings.backend == "local" and settings.train_options == {} and settings.baselines == get_args(Baseline)
    assert settings.prices == Prices() and settings.taxonomy_path == str(default_taxonomy_path())


def test_an_empty_external_set_means_none_and_unset_means_the_shared_one(environment, monkeypatch):
    assert Settings.from_env().external_eval_path == str(DEFAULT_EXTERNAL_EVAL)
    monkeypatch.setenv("OBS_PLATFORM_EXTERNAL_EVAL", "")
    assert Settings.from_env().external_eval_path == ""
    monkeypatch.setenv("OBS_PLATFORM_EXTERNAL_EVAL", "/data/bank.csv")
    assert Settings.from_env().external_eval_path == "/data/bank.csv"
    monkeypatch.delenv("OBS_PLATFORM_EXTERNAL_EVAL")
    (environment / ".env").write_text("OBS_PLATFORM_EXTERNAL_EVAL=\n")
    assert Settings.from_env().external_eval_path == ""  # the same from `.env`
    assert evaluation_resources.resources().resources["evaluation"].external_path == ""


def test_baselines_the_floor_and_automation_parse(environment, monkeypatch):
    monkeypatch.setenv("OBS_PLATFORM_BASELINES", " majority , tfidf_logistic,")
    assert Settings.from_env().baselines == ("majority", "tfidf_logistic")
    monkeypatch.setenv("OBS_PLATFORM_PROMOTION_FLOOR", "none")
    assert Settings.from_env().promotion_floor == "none"
    monkeypatch.setenv("OBS_PLATFORM_PROMOTION_FLOOR", "frozen_minilm_logistic")
    assert (
        "OBS_PLATFORM_PROMOTION_FLOOR='frozen_minilm_logistic' is not among the baselines that run "
        "(OBS_PLATFORM_BASELINES=majority,tfidf_logistic)"
    ) in refusal()
    monkeypatch.setenv("OBS_PLATFORM_PROMOTION_FLOOR", "best")
    floors = "'majority', 'tfidf_logistic', 'frozen_minilm_logistic' or 'none'"
    assert f"OBS_PLATFORM_PROMOTION_FLOOR='best' is not {floors}" in refusal()
    monkeypatch.delenv("OBS_PLATFORM_PROMOTION_FLOOR")
    for given in ("on", "ON", "1", "true", "yes", "off", "0", "false", "no"):
        monkeypatch.setenv("OBS_PLATFORM_AUTOMATION", given)
        assert Settings.from_env().automation is (given.lower() in ("on", "1", "true", "yes"))


def test_the_trainer_options(environment, monkeypatch):
    monkeypatch.setenv("OBS_PLATFORM_TRAIN_EPOCHS", "2")
    monkeypatch.setenv("OBS_PLATFORM_TRAIN_ENCODER_TUNING_STEPS", "0")
    assert Settings.from_env().train_options == {"epochs": 2, "encoder_tuning_steps": 0}
    # 0 steps is a frozen encoder, passed to the trainer (not its default).
    with dg.build_resources(training_resources.resources().resources) as resources:
        spec = resources.tuning.spec("t", "v", "v1", "x")
    assert spec.hyperparameters == {"recipe": "hybrid", "encoder_tuning_steps": 0}
    assert TuningBackendResource(vertex=None).spec("t", "v", "v1", "x").hyperparameters == {"recipe": "hybrid"}


def test_a_resource_shows_the_variable_that_sets_it(environment, monkeypatch):
    """Set: a `dg.EnvVar` (the UI's resource page shows `{"env": …}`), resolved to the validated value in a run.
    Unset: the settings' value. A number with a fraction: its value, as Dagster's config takes no float variable."""
    monkeypatch.setenv("OBS_PLATFORM_HOME", str(environment / "home"))
    monkeypatch.setenv("OBS_PLATFORM_TRAIN_RECIPE", "lora")
    monkeypatch.setenv("OBS_PLATFORM_TRAIN_EPOCHS", "2")
    monkeypatch.setenv("OBS_PLATFORM_PROMOTION_TOLERANCE", "0.05")
    tuning = training_resources.resources().resources["tuning"]
    assert isinstance(tuning.recipe, dg.EnvVar) and tuning.recipe.env_var_name == "OBS_PLATFORM_TRAIN_RECIPE"
    assert tuning.mode == "classifier" and not isinstance(tuning.mode, dg.EnvVar)  # unset: the default
    shown = tuning.get_resource_definition().config_schema.as_field().default_value
    assert shown["recipe"] == {"env": "OBS_PLATFORM_TRAIN_RECIPE"} and shown["epochs"] == {
        "env": "OBS_PLATFORM_TRAIN_EPOCHS"
    }
    assert shown["kind"] == "local" and shown["timeout_seconds"] == 6 * 3600
    data = data_resources.resources().resources
    assert data["storage"].root_uri.env_var_name == "OBS_PLATFORM_HOME"
    evaluation = evaluation_resources.resources().resources["evaluation"]
    assert evaluation.tolerance == 0.05  # a float: the validated value
    with dg.build_resources({"tuning": tuning, "storage": data["storage"]}) as resources:
        assert (resources.tuning.recipe, resources.tuning.epochs) == ("lora", 2)
        assert resources.storage.root_uri == str(environment / "home")


def test_a_bad_value_fails_when_the_definitions_load(environment, monkeypatch):
    monkeypatch.setenv("OBS_PLATFORM_TRAIN_EPOCHS", "two")
    for module in (training_resources, data_resources, evaluation_resources, serving_resources):
        with pytest.raises(SettingsError, match=re.escape("OBS_PLATFORM_TRAIN_EPOCHS='two' is not a whole number")):
            module.resources()


def test_the_vertex_resource_shows_its_variables(environment, monkeypatch):
    for name, value in {**VERTEX, "OBS_PLATFORM_VERTEX_ACCELERATOR_COUNT": "0"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("OBS_PLATFORM_BACKEND", "vertex")
    monkeypatch.setenv("OBS_PLATFORM_HOME", "gs://obs-bucket/home")
    vertex = cloud_resources.resources().resources["vertex"]
    assert vertex.project.env_var_name == "OBS_PLATFORM_VERTEX_PROJECT"
    assert vertex.accelerator_count.name == "OBS_PLATFORM_VERTEX_ACCELERATOR_COUNT"  # dg.EnvVar.int
    assert vertex.machine_type == VertexSettings.machine_type  # unset: the default
    with dg.build_resources({"vertex": vertex}) as resources:
        assert resources.vertex.settings() == VertexSettings(
            project="obs-proj",
            region="europe-west2",
            staging_bucket="gs://obs-bucket/vertex",
            trainer_image_uri=VERTEX["OBS_PLATFORM_VERTEX_TRAINER_IMAGE"],
            accelerator_count=0,
        )


def test_vertex_settings_name_every_missing_and_bad_variable_at_once(environment, monkeypatch):
    monkeypatch.setenv("OBS_PLATFORM_VERTEX_REGION", "europe-west2")
    monkeypatch.setenv("OBS_PLATFORM_VERTEX_BUCKET", "  ")  # blank: missing
    monkeypatch.setenv("OBS_PLATFORM_VERTEX_KEEP_DEPLOYED", "-1")
    with pytest.raises(VertexConfigError) as refused:
        VertexSettings.from_env()
    message = str(refused.value)
    for name in ("OBS_PLATFORM_VERTEX_PROJECT", "OBS_PLATFORM_VERTEX_TRAINER_IMAGE"):
        assert f"{name} is not set" in message
    assert "OBS_PLATFORM_VERTEX_BUCKET" in message and "OBS_PLATFORM_VERTEX_KEEP_DEPLOYED='-1' is negative" in message
    assert "OBS_PLATFORM_VERTEX_REGION" not in message


def test_the_env_example_lists_every_setting():
    """The names are built from the fields (prefix and name), so test_cli's scan of the code cannot see them all."""
    example = (ROOT / ".env.example").read_text()
    variables = [Settings.variable(field) for field in Settings.model_fields if field != "prices"]
    variables += [*PRICE_VARIABLES.values(), *ENV_VARIABLES.values()]
    assert [name for name in variables if not re.search(rf"^# {name}=", example, re.MULTILINE)] == []


def test_the_literals_match_what_they_name(eyfs):
    from obs_platform.evaluation.baselines import all_baselines
    from obs_platform.serving.runtime import RUNTIMES

    assert set(get_args(EndpointRuntime)) == set(RUNTIMES)
    assert [model.name for model in all_baselines(eyfs, embed=lambda texts: np.zeros((len(texts), 2)))] == list(
        get_args(Baseline)
    )


def test_the_trainer_parses_the_command_line_the_platform_writes():
    """`HfArgumentParser` over `TrainerConfig`: the flags of `TrainingSpec.trainer_args` (dashes, lists, bools)."""
    lora = TuningBackendResource(vertex=None, recipe="lora", epochs=2).spec("s/train.jsonl", "s/valid.jsonl", "v1")
    config = TrainerConfig.from_args(lora.trainer_args("out") + ["--target-modules", "query", "key"])
    assert (config.recipe, config.epochs, config.train, config.output) == ("lora", 2, "s/train.jsonl", "out")
    assert config.target_modules == ["query", "key"] and config.batch_size == MODE_DEFAULTS["classifier"]["batch_size"]
    flags = ["--train", "t", "--valid", "v", "--output", "o", "--char-ngrams", "false", "--balanced", "True"]
    config = TrainerConfig.from_args([*flags, "--encoder-tuning-steps", "0", "--mode", "sft"])
    assert (config.char_ngrams, config.balanced, config.encoder_tuning_steps, config.mode) == (False, True, 0, "sft")
    assert config.base_model == MODE_DEFAULTS["sft"]["base_model"]
    for wrong in (["--recipe", "boosted"], ["--epochs", "two"], ["--char-ngrams", "maybe"]):
        with pytest.raises(SystemExit):
            TrainerConfig.from_args([*flags, *wrong])
    with pytest.raises(SystemExit):
        TrainerConfig.from_args(["--train", "t"])  # --valid and --output are required


def test_one_seed_sets_every_generator():
    def draws() -> tuple[float, float, float]:
        return random.random(), float(np.random.rand()), float(torch.rand(1))

    seed_everything(7)
    first = draws()
    seed_everything(7)
    assert draws() == first
