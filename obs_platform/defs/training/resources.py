"""Resources of the training layer: the tuning backend and the model registry."""

from typing import TYPE_CHECKING

import dagster as dg
from trainer import source_fingerprint
from trainer.config import MODE_DEFAULTS, TrainerConfig

from obs_platform.defs.cloud.resources import VertexResource, configured_vertex
from obs_platform.defs.config import default, from_env
from obs_platform.defs.data.resources import StorageResource, configured_storage
from obs_platform.settings import TRAIN_OPTIONS, Settings
from obs_platform.storage import LocalStorage
from obs_platform.training.backend import TrainingSpec, TuningBackend
from obs_platform.training.local import LocalSubprocessBackend
from obs_platform.training.registry import ModelRegistry, oss_model_name

if TYPE_CHECKING:
    from obs_platform.cloud.gemini_batch import GeminiBatchBackend
    from obs_platform.cloud.model_batch import VertexModelBatchBackend


class TuningBackendResource(dg.ConfigurableResource):
    """Where tuning jobs run (`OBS_PLATFORM_BACKEND`: `local`, the trainer as a subprocess; `vertex`, a Vertex AI
    custom job, and managed Gemini tuning beside it), what they train
    (`mode`: the `classifier` on CPU, or `sft`, a causal LM for GPUs) and with what hyper-parameters (the seed
    system's defaults, the trainer's; an empty base model, batch size or length means the mode's default;
    `OBS_PLATFORM_BASE_MODEL` and the `OBS_PLATFORM_TRAIN_*` variables set them). In `classifier`
    mode `recipe` picks `hybrid` (TF-IDF and contrastively tuned MiniLM features, linear heads: the
    cross-validated default; `encoder_tuning_steps` applies to it, None for the trainer's default) or `lora` (LoRA on
    MiniLM; epochs, rank, batch size, length and learning rate apply to it)."""

    vertex: dg.ResourceDependency[VertexResource]
    kind: str = default("backend")
    mode: str = default("train_mode")
    recipe: str = default("train_recipe")
    base_model: str = ""
    epochs: int = TrainerConfig.epochs
    lora_rank: int = TrainerConfig.lora_rank
    lora_alpha: int = TrainerConfig.lora_alpha
    lora_dropout: float = TrainerConfig.lora_dropout
    batch_size: int = 0
    max_length: int = 0
    learning_rate: float = 0.0
    encoder_tuning_steps: int | None = None  # None: the trainer's default; 0: a frozen encoder
    poll_seconds: float = 5.0  # how often `obs-platform run`, waiting without a daemon, asks about its job
    timeout_seconds: float = default("tuning_timeout_seconds")

    def backend(self, storage: StorageResource) -> TuningBackend:
        """Where the open-source trainer runs: a local subprocess, or a Vertex AI custom job."""
        if self.kind == "vertex":
            from obs_platform.cloud.custom_job import VertexCustomJobBackend

            return VertexCustomJobBackend(self.vertex.settings(), prices=self.vertex.prices())
        client = storage.client()
        if not isinstance(client, LocalStorage):
            raise ValueError("the local tuning backend needs a local OBS_PLATFORM_HOME, not " + client.root_uri)
        return LocalSubprocessBackend(client.root)

    def gemini_backend(self) -> TuningBackend:
        """Managed Gemini tuning: on Vertex AI only (the error names what to set elsewhere)."""
        from obs_platform.cloud.gemini_tuning import GeminiTuningBackend

        return GeminiTuningBackend(self.vertex.settings())

    def batch_backend(self) -> "GeminiBatchBackend":
        """Batch prediction jobs of a tuned Gemini (its evaluation): on Vertex AI only."""
        from obs_platform.cloud.gemini_batch import GeminiBatchBackend

        return GeminiBatchBackend(self.vertex.settings())

    def archive_backend(self) -> "VertexModelBatchBackend":
        """Batch prediction jobs of an uploaded open-source model (the archive scored): on Vertex AI only."""
        from obs_platform.cloud.model_batch import VertexModelBatchBackend

        return VertexModelBatchBackend(self.vertex.settings())

    def backends(self, storage: StorageResource) -> dict[str, TuningBackend]:
        """Every backend this deployment's jobs may run on, by name: what the job-status sensor polls."""
        found = [self.backend(storage)]
        if self.kind == "vertex":
            found += [self.gemini_backend(), self.batch_backend(), self.archive_backend()]
        return {backend.name: backend for backend in found}

    @property
    def model_name(self) -> str:
        return oss_model_name(self.mode)

    def spec(self, train_uri: str, valid_uri: str, dataset_version: str, taxonomy_texts_uri: str = "") -> TrainingSpec:
        defaults = MODE_DEFAULTS[self.mode]
        hybrid = self.mode == "classifier" and self.recipe == "hybrid"
        hyperparameters: dict[str, object] = {"recipe": self.recipe} if self.mode == "classifier" else {}
        if hybrid and self.encoder_tuning_steps is not None:
            hyperparameters["encoder_tuning_steps"] = self.encoder_tuning_steps
        if not hybrid:  # the hybrid has no epochs, adapter, batches or learning rate
            hyperparameters |= {
                "epochs": self.epochs,
                "lora_rank": self.lora_rank,
                "lora_alpha": self.lora_alpha,
                "lora_dropout": self.lora_dropout,
                "batch_size": self.batch_size or defaults["batch_size"],
                "max_length": self.max_length or defaults["max_length"],
                "learning_rate": self.learning_rate or defaults["learning_rate"],
            }
        return TrainingSpec(
            train_uri=train_uri,
            valid_uri=valid_uri,
            dataset_version=dataset_version,
            mode=self.mode,
            base_model=self.base_model or defaults["base_model"],
            hyperparameters=hyperparameters,
            display_name=f"obs-platform-{dataset_version}",
            trainer_code=source_fingerprint(),
            taxonomy_texts_uri=taxonomy_texts_uri if hybrid else "",
        )

    def gemini_spec(self, train_uri: str, valid_uri: str, dataset_version: str) -> TrainingSpec:
        """A Gemini tuning job's spec: the configured base model, the epochs and Gemini's adapter size (rank)."""
        return TrainingSpec(
            train_uri=train_uri,
            valid_uri=valid_uri,
            dataset_version=dataset_version,
            mode="gemini",
            base_model=self.vertex.gemini_base_model,
            hyperparameters={"epochs": self.epochs, "lora_rank": self.lora_rank, "learning_rate_multiplier": 1.0},
            display_name=f"obs-platform-gemini-{dataset_version}",
        )


class ModelRegistryResource(dg.ConfigurableResource):
    storage: dg.ResourceDependency[StorageResource]

    def registry(self) -> ModelRegistry:
        return ModelRegistry(self.storage.client())


@dg.definitions
def resources() -> dg.Definitions:
    settings = Settings.from_env()
    return dg.Definitions(
        resources={
            "tuning": TuningBackendResource(
                vertex=configured_vertex(settings),
                kind=from_env(settings, "backend"),
                mode=from_env(settings, "train_mode"),
                recipe=from_env(settings, "train_recipe"),
                base_model=from_env(settings, "base_model"),
                timeout_seconds=settings.tuning_timeout_seconds,
                **{option: from_env(settings, TRAIN_OPTIONS[option]) for option in settings.train_options},
            ),
            "registry": ModelRegistryResource(storage=configured_storage(settings)),
        }
    )
