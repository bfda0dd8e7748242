"""Configuration read from the environment (and `.env`): one place, so every entry point agrees.

`Settings` reads every `OBS_PLATFORM_*` variable of the platform once, through pydantic-settings: the variable is
`OBS_PLATFORM_` and the field's name in capitals (or the alias a field names), each default is the field's, and a
bad value is refused when the settings are read (a command starting, the Dagster code location loading) in one
`SettingsError` that names every bad variable with its value. The Dagster resources show which variable sets what
(`obs_platform/defs/config.py`). The Vertex deployment's own variables are read by
`obs_platform.cloud.vertex.VertexSettings`, the endpoint's batching by `obs_platform.serving.batching`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dotenv import load_dotenv
from pydantic import Field, NonNegativeInt, PositiveFloat, PositiveInt, ValidationInfo, field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict
from trainer.config import MODE_DEFAULTS, Mode, Recipe

from obs_platform.cloud.costs import Prices
from obs_platform.environment import ENV_FILE, EnvironmentSettings
from obs_platform.taxonomy import default_taxonomy_path

DEFAULT_HOME = Path("~/.local/share/obs-platform/home").expanduser()
DEFAULT_WORK_DIR = Path("~/.cache/obs-platform").expanduser()
# The shared reference data beside a checkout (present in CI): evaluation only, never trained on.
DEFAULT_EXTERNAL_EVAL = Path(__file__).resolve().parents[1].parent / "shared" / "eval" / "eyfs_comment_bank.csv"
LANDING_PREFIX = "landing"
Warehouse = Literal["duckdb", "bigquery"]  # where analysts query the scored archive and the evaluation history
Backend = Literal["local", "vertex"]  # where tuning jobs run: a subprocess here, or Vertex AI
BACKENDS: tuple[Backend, ...] = get_args(Backend)
# What runs a served classifier (obs_platform.serving.runtime.RUNTIMES, which imports torch).
EndpointRuntime = Literal["onnx", "torch"]
# The baselines of obs_platform.evaluation.baselines (which imports scikit-learn), by name.
Baseline = Literal["majority", "tfidf_logistic", "frozen_minilm_logistic"]
Floor = Literal[Baseline, "none"]  # the baseline a model must reach to be served, or none
# The data set's names, kept for the endpoint to redact requests with: personal data, like the landing
# area, and never part of any training file.
ROSTER_PATH = "private/roster.json"
# The trainer's options a deployment may override: the resource's field and the setting that sets it.
TRAIN_OPTIONS = {
    "epochs": "train_epochs",
    "batch_size": "train_batch_size",
    "max_length": "train_max_length",
    "encoder_tuning_steps": "train_encoder_tuning_steps",
}
EXTERNAL_EVAL_VARIABLE = "OBS_PLATFORM_EXTERNAL_EVAL"  # its empty value means no external set, not the default


class Settings(EnvironmentSettings):
    """The platform's settings. Storage: `OBS_PLATFORM_HOME` (a folder or `gs://bucket/prefix`),
    `OBS_PLATFORM_TAXONOMY` (a file; default: the shipped EYFS one), `OBS_PLATFORM_WORK_DIR` (where a bucket-backed
    deployment keeps local model copies and endpoint state). Training: `OBS_PLATFORM_BACKEND` (where tuning jobs
    run), `OBS_PLATFORM_TRAIN_MODE` (`classifier`, the CPU default, or `sft`, a causal LM for GPUs),
    `OBS_PLATFORM_TRAIN_RECIPE` (the classifier's: `hybrid` or `lora`), `OBS_PLATFORM_BASE_MODEL` (default: the
    mode's), the `OBS_PLATFORM_TRAIN_*` overrides of the trainer's defaults, `OBS_PLATFORM_TUNING_TIMEOUT_SECONDS`
    (a job open longer is cancelled and reported EXPIRED) and the prices of `obs_platform.cloud.costs`
    (`PRICE_VARIABLES`; unset: estimates without dollars). Evaluation: `OBS_PLATFORM_PROMOTION_TOLERANCE`,
    `OBS_PLATFORM_PROMOTION_FLOOR` (a baseline that runs, or `none`), `OBS_PLATFORM_BASELINES` (comma-separated) and
    `OBS_PLATFORM_EXTERNAL_EVAL` (the external comment bank; unset: `../shared/eval/eyfs_comment_bank.csv` beside
    the checkout; empty: none). Serving: `OBS_PLATFORM_ENDPOINT_RUNTIME` (`onnx` or `torch`). Automation:
    `OBS_PLATFORM_AUTOMATION` (on: the landing sensor and the schedules start running), `OBS_PLATFORM_TIMEZONE`,
    the crons, `OBS_PLATFORM_SENSOR_INTERVAL_SECONDS`, and the serving monitor's `OBS_PLATFORM_MONITOR_*`.
    Analytics: `OBS_PLATFORM_WAREHOUSE` (`duckdb` or `bigquery`; unset: DuckDB for a local home, BigQuery for a
    bucket) and `OBS_PLATFORM_BIGQUERY_PROJECT`, `_DATASET`, `_LOCATION`, `_API_ENDPOINT`.

    An empty value is unset (the default applies), except `OBS_PLATFORM_EXTERNAL_EVAL`'s."""

    model_config = SettingsConfigDict(env_prefix="OBS_PLATFORM_", env_ignore_empty=False)

    home: str = str(DEFAULT_HOME)
    taxonomy_path: str = Field(
        default_factory=lambda: str(default_taxonomy_path()), validation_alias="OBS_PLATFORM_TAXONOMY"
    )
    work_dir: str = str(DEFAULT_WORK_DIR)  # local copies of models and endpoint state when the home is a bucket
    backend: Backend = "local"
    train_mode: Mode = "classifier"
    train_recipe: Recipe = "hybrid"  # classifier mode only
    base_model: str = ""  # "": the training mode's default, filled in when read
    # Overrides of the trainer's defaults (None: the trainer's or the mode's); see TRAIN_OPTIONS.
    train_epochs: PositiveInt | None = None
    train_batch_size: NonNegativeInt | None = None
    train_max_length: NonNegativeInt | None = None
    train_encoder_tuning_steps: NonNegativeInt | None = None
    tuning_timeout_seconds: PositiveFloat = 6 * 3600.0  # a job open longer is cancelled and reported EXPIRED
    # What cost estimates multiply by: read from their own variables (cloud/costs.py's PRICE_VARIABLES).
    prices: Prices = Field(default=None, validate_default=True)
    endpoint_runtime: EndpointRuntime = "onnx"
    promotion_tolerance: Annotated[float, Field(ge=0)] = 0.01
    baselines: Annotated[tuple[Baseline, ...], NoDecode] = ("majority", "tfidf_logistic", "frozen_minilm_logistic")
    promotion_floor: Floor = "tfidf_logistic"  # after `baselines`: checked against them
    external_eval_path: str = Field(default=str(DEFAULT_EXTERNAL_EVAL), validation_alias=EXTERNAL_EVAL_VARIABLE)
    automation: bool = False  # sensors and schedules running by default (a production deployment)
    timezone: str = "Europe/London"
    nightly_refresh_cron: str = "0 2 * * *"
    weekly_retrain_cron: str = "0 3 * * 0"
    sensor_interval_seconds: PositiveInt = 30  # how often the job-status and automation sensors tick
    monitor_cron: str = "0 6 * * *"
    monitor_drift_threshold: PositiveFloat = 0.2
    monitor_acceptance_margin: Annotated[float, Field(ge=0, le=1)] = 0.10
    monitor_window_days: PositiveInt = 7
    warehouse: Warehouse | None = None  # None: DuckDB under a local home, BigQuery for a bucket
    bigquery_project: str = ""
    bigquery_dataset: str = "analytics"
    bigquery_location: str = ""  # "": the dataset's own (BigQuery's default for a new one)
    bigquery_api_endpoint: str = ""  # "": Google's; tests point it at a loopback emulator

    @classmethod
    def from_env(cls) -> Settings:
        """The settings of this environment; `SettingsError` names every bad variable with its value.

        `.env` is also exported into the environment (a variable already set wins): the readers that take
        `os.environ` as it is (the endpoint's batching, `dg.EnvVar` when a run starts, child processes) see it too."""
        load_dotenv(ENV_FILE, override=False)
        return cls.read()

    @property
    def train_options(self) -> dict[str, int]:
        """The trainer options this deployment sets, by the tuning resource's field name."""
        values = {option: getattr(self, field) for option, field in TRAIN_OPTIONS.items()}
        return {option: value for option, value in values.items() if value is not None}

    @model_validator(mode="before")
    @classmethod
    def _empty_is_unset(cls, data: Any) -> Any:
        """An empty variable leaves the default in place (`OBS_PLATFORM_TAXONOMY=` in `.env`), except the external
        set's, whose empty value says there is none; the base model defaults to the training mode's."""
        if not isinstance(data, dict):
            return data
        data = {key: value for key, value in data.items() if value != "" or key == EXTERNAL_EVAL_VARIABLE}
        mode = data.get("train_mode", cls.model_fields["train_mode"].default)
        if not data.get("base_model") and mode in MODE_DEFAULTS:
            data["base_model"] = MODE_DEFAULTS[mode]["base_model"]
        return data

    @field_validator("prices", mode="before")
    @classmethod
    def _prices(cls, value: Prices | None) -> Prices:
        return Prices.from_env() if value is None else value

    @field_validator("baselines", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        return tuple(name.strip() for name in value.split(",") if name.strip()) if isinstance(value, str) else value

    @field_validator("promotion_floor")
    @classmethod
    def _floor_runs(cls, floor: str, info: ValidationInfo) -> str:
        baselines = info.data.get("baselines")
        if floor != "none" and baselines is not None and floor not in baselines:
            raise ValueError(f"is not among the baselines that run ({cls.variable('baselines')}={','.join(baselines)})")
        return floor

    @field_validator("bigquery_api_endpoint")
    @classmethod
    def _with_scheme(cls, endpoint: str) -> str:
        if endpoint and not endpoint.startswith(("http://", "https://")):
            raise ValueError("needs its scheme (http:// or https://): without one the client assumes https")
        return endpoint

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, timezone: str) -> str:
        try:
            ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("is not a time zone name (like Europe/London or UTC)") from None
        return timezone
