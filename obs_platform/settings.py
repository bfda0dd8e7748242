"""Configuration read from the environment (and `.env`): one place, so every entry point agrees."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from dotenv import load_dotenv
from trainer.config import MODE_DEFAULTS, RECIPES

from obs_platform.cloud.costs import Prices
from obs_platform.taxonomy import default_taxonomy_path

DEFAULT_HOME = Path("~/.local/share/obs-platform/home").expanduser()
DEFAULT_WORK_DIR = Path("~/.cache/obs-platform").expanduser()
# The shared reference data beside a checkout (present in CI): evaluation only, never trained on.
DEFAULT_EXTERNAL_EVAL = Path(__file__).resolve().parents[1].parent / "shared" / "eval" / "eyfs_comment_bank.csv"
LANDING_PREFIX = "landing"
BACKENDS = ("local", "vertex")  # where tuning jobs run: a subprocess here, or Vertex AI
# The data set's names, kept for the endpoint to redact requests with: personal data, like the landing
# area, and never part of any training file.
ROSTER_PATH = "private/roster.json"
TRAIN_OPTION_VARIABLES = {
    "epochs": "OBS_PLATFORM_TRAIN_EPOCHS",
    "batch_size": "OBS_PLATFORM_TRAIN_BATCH_SIZE",
    "max_length": "OBS_PLATFORM_TRAIN_MAX_LENGTH",
    "encoder_tuning_steps": "OBS_PLATFORM_TRAIN_ENCODER_TUNING_STEPS",
}


@dataclass(frozen=True)
class Settings:
    home: str
    taxonomy_path: str
    backend: str = "local"
    train_mode: str = "classifier"
    train_recipe: str = "hybrid"  # classifier mode: `hybrid` or `lora`
    base_model: str = ""  # "": the training mode's default
    endpoint_runtime: str = "onnx"
    promotion_tolerance: float = 0.01
    promotion_floor: str = "tfidf_logistic"
    baselines: tuple[str, ...] = ("majority", "tfidf_logistic", "frozen_minilm_logistic")
    external_eval_path: str = ""
    automation: bool = False  # sensors and schedules running by default (a production deployment)
    timezone: str = "Europe/London"
    nightly_refresh_cron: str = "0 2 * * *"
    weekly_retrain_cron: str = "0 3 * * 0"
    tuning_timeout_seconds: float = 6 * 3600.0  # a job open longer is cancelled and reported EXPIRED
    prices: Prices = field(default_factory=Prices)  # what cost estimates multiply by (cloud/costs.py)
    sensor_interval_seconds: int = 30  # how often the job-status and automation sensors tick
    monitor_cron: str = "0 6 * * *"
    monitor_drift_threshold: float = 0.2
    monitor_acceptance_margin: float = 0.10
    monitor_window_days: int = 7
    work_dir: str = str(DEFAULT_WORK_DIR)  # local copies of models and endpoint state when the home is a bucket
    train_options: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_env(cls) -> Settings:
        """`OBS_PLATFORM_HOME` (folder or `gs://bucket/prefix`), `OBS_PLATFORM_TAXONOMY` (a file) and
        `OBS_PLATFORM_BACKEND` (where tuning jobs run: `local`), `OBS_PLATFORM_TRAIN_MODE` (`classifier`, the
        CPU default, or `sft`, a causal LM for GPUs), `OBS_PLATFORM_TRAIN_RECIPE` (the classifier's: `hybrid`, the
        default, or `lora`), `OBS_PLATFORM_BASE_MODEL` (the model to tune; default:
        the mode's), `OBS_PLATFORM_TRAIN_*` overrides of the trainer's defaults and
        `OBS_PLATFORM_ENDPOINT_RUNTIME` (what runs a served classifier: `onnx`, ONNX Runtime, or `torch`);
        for evaluation `OBS_PLATFORM_PROMOTION_TOLERANCE`, `OBS_PLATFORM_PROMOTION_FLOOR` (the baseline a model
        must reach, or `none`), `OBS_PLATFORM_BASELINES` (comma-separated) and `OBS_PLATFORM_EXTERNAL_EVAL`
        (the external comment bank; default `../shared/eval/eyfs_comment_bank.csv` beside the checkout);
        `OBS_PLATFORM_AUTOMATION` (`on`: the landing sensor and the schedules start running; off locally),
        `OBS_PLATFORM_TIMEZONE`, `OBS_PLATFORM_NIGHTLY_REFRESH_CRON`, `OBS_PLATFORM_WEEKLY_RETRAIN_CRON`;
        `OBS_PLATFORM_TUNING_TIMEOUT_SECONDS` (a tuning job open longer is cancelled and reported EXPIRED),
        the prices of `obs_platform.cloud.costs.PRICE_VARIABLES` (unset: estimates without dollars),
        `OBS_PLATFORM_WORK_DIR` (where a bucket-backed deployment keeps local model copies and endpoint state),
        `OBS_PLATFORM_SENSOR_INTERVAL_SECONDS` (how often the job-status and automation sensors tick);
        the serving monitor's `OBS_PLATFORM_MONITOR_CRON`, `OBS_PLATFORM_MONITOR_DRIFT_THRESHOLD` (PSI),
        `OBS_PLATFORM_MONITOR_ACCEPTANCE_MARGIN` and `OBS_PLATFORM_MONITOR_WINDOW_DAYS`. The
        Vertex deployment's own variables are read by `obs_platform.cloud.vertex.VertexSettings`."""
        load_dotenv(override=False)
        home = os.environ.get("OBS_PLATFORM_HOME") or str(DEFAULT_HOME)
        taxonomy = os.environ.get("OBS_PLATFORM_TAXONOMY") or str(default_taxonomy_path())
        backend = os.environ.get("OBS_PLATFORM_BACKEND") or "local"
        if backend not in BACKENDS:
            raise ValueError(f"OBS_PLATFORM_BACKEND={backend!r}: expected one of {list(BACKENDS)}")
        mode = os.environ.get("OBS_PLATFORM_TRAIN_MODE") or "classifier"
        if mode not in MODE_DEFAULTS:
            raise ValueError(f"OBS_PLATFORM_TRAIN_MODE={mode!r}: expected one of {sorted(MODE_DEFAULTS)}")
        base_model = os.environ.get("OBS_PLATFORM_BASE_MODEL") or MODE_DEFAULTS[mode]["base_model"]
        recipe = os.environ.get("OBS_PLATFORM_TRAIN_RECIPE") or "hybrid"
        if recipe not in RECIPES:
            raise ValueError(f"OBS_PLATFORM_TRAIN_RECIPE={recipe!r}: expected one of {list(RECIPES)}")
        options = {
            name: int(os.environ[variable])
            for name, variable in TRAIN_OPTION_VARIABLES.items()
            if os.environ.get(variable)
        }
        return cls(
            home=home,
            taxonomy_path=taxonomy,
            backend=backend,
            train_mode=mode,
            train_recipe=recipe,
            base_model=base_model,
            train_options=options,
            endpoint_runtime=os.environ.get("OBS_PLATFORM_ENDPOINT_RUNTIME") or "onnx",
            promotion_tolerance=float(os.environ.get("OBS_PLATFORM_PROMOTION_TOLERANCE") or 0.01),
            promotion_floor=os.environ.get("OBS_PLATFORM_PROMOTION_FLOOR") or "tfidf_logistic",
            baselines=tuple(
                b.strip()
                for b in (os.environ.get("OBS_PLATFORM_BASELINES") or ",".join(cls.baselines)).split(",")
                if b.strip()
            ),
            external_eval_path=os.environ.get("OBS_PLATFORM_EXTERNAL_EVAL", str(DEFAULT_EXTERNAL_EVAL)),
            automation=(os.environ.get("OBS_PLATFORM_AUTOMATION") or "off").lower() in ("on", "1", "true", "yes"),
            timezone=os.environ.get("OBS_PLATFORM_TIMEZONE") or cls.timezone,
            nightly_refresh_cron=os.environ.get("OBS_PLATFORM_NIGHTLY_REFRESH_CRON") or cls.nightly_refresh_cron,
            weekly_retrain_cron=os.environ.get("OBS_PLATFORM_WEEKLY_RETRAIN_CRON") or cls.weekly_retrain_cron,
            prices=Prices.from_env(),
            work_dir=os.environ.get("OBS_PLATFORM_WORK_DIR") or cls.work_dir,
            sensor_interval_seconds=int(os.environ.get("OBS_PLATFORM_SENSOR_INTERVAL_SECONDS") or 30),
            monitor_cron=os.environ.get("OBS_PLATFORM_MONITOR_CRON") or cls.monitor_cron,
            monitor_drift_threshold=float(
                os.environ.get("OBS_PLATFORM_MONITOR_DRIFT_THRESHOLD") or cls.monitor_drift_threshold
            ),
            monitor_acceptance_margin=float(
                os.environ.get("OBS_PLATFORM_MONITOR_ACCEPTANCE_MARGIN") or cls.monitor_acceptance_margin
            ),
            monitor_window_days=int(os.environ.get("OBS_PLATFORM_MONITOR_WINDOW_DAYS") or cls.monitor_window_days),
            tuning_timeout_seconds=float(
                os.environ.get("OBS_PLATFORM_TUNING_TIMEOUT_SECONDS") or cls.tuning_timeout_seconds
            ),
        )
