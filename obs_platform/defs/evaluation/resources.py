"""Resources of the evaluation layer: the promotion rule, the baselines, the external set."""

from pathlib import Path

import dagster as dg

from obs_platform.evaluation.baselines import BaselineModel, MiniLMEmbeddings, all_baselines
from obs_platform.evaluation.external import ExternalSetError, load_comment_bank
from obs_platform.evaluation.frames import LabelledObservation
from obs_platform.settings import Settings
from obs_platform.taxonomy import Taxonomy


class EvaluationResource(dg.ConfigurableResource):
    """How models are judged: promotion `tolerance` (macro-F1 a challenger may lose against the champion),
    the baseline it must never fall below (`floor`: a baseline's name, or `none`), which `baselines` run,
    the precision a `confident` tag must reach on validation, and the external set (evaluation only)."""

    tolerance: float = 0.01
    floor: str = "tfidf_logistic"
    baselines: list[str] = ["majority", "tfidf_logistic", "frozen_minilm_logistic"]
    target_precision: float = 0.8
    external_path: str = ""
    work_dir: str = ""  # a bucket-backed deployment's local folder for model copies and the evaluation endpoint

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
                floor=settings.promotion_floor,
                baselines=list(settings.baselines),
                external_path=settings.external_eval_path,
                work_dir=settings.work_dir,
            )
        }
    )
