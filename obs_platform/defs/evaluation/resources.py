"""Resources of the evaluation layer: the promotion rule, the baselines, the external set."""

from pathlib import Path

import dagster as dg

from obs_platform.defs.config import default, from_env
from obs_platform.evaluation.baselines import BaselineModel, MiniLMEmbeddings, all_baselines
from obs_platform.evaluation.external import ExternalSetError, load_comment_bank
from obs_platform.evaluation.frames import LabelledObservation
from obs_platform.settings import Settings
from obs_platform.taxonomy import Taxonomy


class EvaluationResource(dg.ConfigurableResource):
    """How models are judged: promotion `tolerance` (macro-F1 a challenger may lose against the champion,
    `OBS_PLATFORM_PROMOTION_TOLERANCE`), the baseline it must never fall below (`floor`: a baseline's name, or
    `none`; `OBS_PLATFORM_PROMOTION_FLOOR`), which `baselines` run (`OBS_PLATFORM_BASELINES`), the precision a
    `confident` tag must reach on validation, and the external set (evaluation only; `OBS_PLATFORM_EXTERNAL_EVAL`).
    Its defaults are the settings' (`obs_platform.settings.Settings`), which the definitions configure it from."""

    tolerance: float = default("promotion_tolerance")
    floor: str = default("promotion_floor")
    baselines: list[str] = list(default("baselines"))
    target_precision: float = 0.8
    external_path: str = default("external_eval_path")  # "": none
    work_dir: str = default("work_dir")  # a bucket-backed deployment's local folder: model copies, evaluation endpoint

    def baseline_models(self, taxonomy: Taxonomy) -> list[BaselineModel]:
        embed = MiniLMEmbeddings() if "frozen_minilm_logistic" in self.baselines else None
        return [b for b in all_baselines(taxonomy, embed) if b.name in self.baselines]

    def external_set(self, taxonomy: Taxonomy) -> tuple[list[LabelledObservation] | None, str | None]:
        """The external observations, or None and why not (absent file, a taxonomy without its areas)."""
        if not self.external_path:
            return None, "no external evaluation set configured"
        path = Path(self.external_path)
        if not path.exists():
            return None, f"{path} does not exist"
        try:
            return load_comment_bank(path, taxonomy), None
        except ExternalSetError as exc:
            return None, str(exc)


@dg.definitions
def resources() -> dg.Definitions:
    settings = Settings.from_env()
    return dg.Definitions(
        resources={
            "evaluation": EvaluationResource(
                tolerance=settings.promotion_tolerance,
                floor=from_env(settings, "promotion_floor"),
                baselines=list(settings.baselines),
                external_path=from_env(settings, "external_eval_path"),
                work_dir=from_env(settings, "work_dir"),
            )
        }
    )
