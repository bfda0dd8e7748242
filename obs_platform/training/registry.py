"""A versioned model registry under the storage root.

`models/<name>/v<N>/` holds a trained model's files (none for a managed model, such as a tuned Gemini, which is
registered by its endpoint) and `version.json` (training manifest, dataset version, job id, registration time);
`models/<name>/aliases.json` maps aliases (`champion`, `challenger`, and `tuned`: the version the newest tuning job
gave) to versions. A version's calibration is one of its files (`calibration_path`), added after registration.
Versions are never overwritten: registering the same job twice returns the version it already has.

`version.json` names the version's files relative to the storage root, and a version's `uri` is resolved against
the root it is read from, so a storage root copied or moved elsewhere serves its own files, never the original's
(records written with absolute paths before are resolved the same way).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from obs_platform.storage import LocalStorage, Storage, storage_from_uri
from obs_platform.training.backend import ModelArtifact

TUNED = "tuned"  # the newest finished tuning job's version: a new one, or one reused for the same data and recipe
ALIASES = ("champion", "challenger", TUNED)
CALIBRATION_FILE = "calibration.json"  # a classifier version's calibration, among its files
OSS_MODEL = "oss-classifier"  # the registry name of the LoRA-tuned open-source classifier
OSS_SFT_MODEL = "oss-sft"  # a LoRA-tuned causal LM (the trainer's `sft` mode)
GEMINI_MODEL = "gemini-tuned"  # Gemini tuned on Vertex AI, registered by its endpoint


def oss_model_name(mode: str) -> str:
    """The registry name of the open-source models a training mode produces."""
    return OSS_SFT_MODEL if mode == "sft" else OSS_MODEL


@dataclass(frozen=True)
class ModelVersion:
    name: str
    version: int
    folder: str  # storage path of the version
    uri: str  # where its files are (a path or `gs://` URI under the registry's root), or a managed model's reference
    dataset_version: str
    job_id: str
    registered_at: float
    manifest: dict[str, Any]
    spec: dict[str, Any] = field(default_factory=dict)  # what the job was asked to train

    @property
    def label(self) -> str:
        return f"{self.name}/v{self.version}"


def _files_path(folder: str) -> str:
    """Where a version's files are, relative to the storage root."""
    return f"{folder}/files"


class RegistryError(KeyError):
    """Unknown model, version or alias."""


class ModelRegistry:
    def __init__(self, storage: Storage, prefix: str = "models"):
        self.storage = storage
        self.prefix = prefix

    def _aliases_path(self, name: str) -> str:
        return f"{self.prefix}/{name}/aliases.json"

    def versions(self, name: str) -> list[ModelVersion]:
        found = []
        for path in self.storage.list_files(f"{self.prefix}/{name}"):
            if path.endswith("/version.json"):
                found.append(self._from_record(json.loads(self.storage.read_bytes(path))))
        return sorted(found, key=lambda v: v.version)

    def _from_record(self, record: dict[str, Any]) -> ModelVersion:
        """A stored version with its files' URI under this registry's root: stored relative to the root, or (older
        records) as the absolute path or URI of the root it was registered in."""
        files = _files_path(record["folder"])
        if record["uri"] == files or record["uri"].endswith(f"/{files}"):
            record = {**record, "uri": self.storage.uri(files)}
        return ModelVersion(**record)

    def register(
        self,
        name: str,
        artifact: ModelArtifact,
        *,
        dataset_version: str,
        job_id: str,
        spec: dict[str, Any] | None = None,
    ) -> ModelVersion:
        """A finished job's model as the next version (or the job's existing one): its files copied in from a
        local folder or `gs://`, or, for a managed model, its reference kept as the version's URI."""
        existing = self.versions(name)
        for version in existing:
            if version.job_id == job_id:
                return version
        number = existing[-1].version + 1 if existing else 1
        folder = f"{self.prefix}/{name}/v{number}"
        if artifact.managed:
            stored_uri = artifact.uri
        else:
            source = storage_from_uri(artifact.uri)
            files = [path for path in source.list_files("") if not path.startswith(("checkpoints/", "best/"))]
            if not files:  # a wrong URI would otherwise register an empty version
                raise RegistryError(f"{artifact.uri} holds no model files to register")
            for path in files:  # training state (checkpoints, the best epoch's copy) is not part of the model
                self.storage.write_bytes(f"{_files_path(folder)}/{path}", source.read_bytes(path))
            stored_uri = _files_path(folder)
        stored = ModelVersion(
            name=name,
            version=number,
            folder=folder,
            uri=stored_uri,
            dataset_version=dataset_version,
            job_id=job_id,
            registered_at=time.time(),
            manifest=artifact.manifest,
            spec=spec or {},
        )
        # version.json last: a half-copied version has none and is not listed.
        self.storage.write_bytes(f"{folder}/version.json", json.dumps(asdict(stored), indent=2).encode())
        return self._from_record(asdict(stored))

    def local_files(self, version: ModelVersion, cache: Path) -> Path:
        """A local folder holding the version's files, to load the model from: the registry's own folder on a local
        root, else a copy under `cache` refreshed on every call (files such as the calibration are added to a
        version after it is registered)."""
        if isinstance(self.storage, LocalStorage):
            return Path(version.uri)
        target = cache / version.name / f"v{version.version}"
        prefix = f"{_files_path(version.folder)}/"
        for path in self.storage.list_files(_files_path(version.folder)):
            local = target / path.removeprefix(prefix)
            local.parent.mkdir(parents=True, exist_ok=True)
            local.write_bytes(self.storage.read_bytes(path))
        return target

    def calibration_path(self, version: ModelVersion) -> str:
        """Where the version's calibration is (or goes), relative to the storage root: among its files, so a copy of
        them (`local_files`, a Vertex upload) carries it."""
        return f"{_files_path(version.folder)}/{CALIBRATION_FILE}"

    def find(self, name: str, *, dataset_version: str, spec: dict[str, Any]) -> ModelVersion | None:
        """The latest version trained on this dataset version with this exact spec, if any."""
        matching = [v for v in self.versions(name) if v.dataset_version == dataset_version and v.spec == spec]
        return matching[-1] if matching else None

    def by_label(self, label: str) -> ModelVersion:
        """A version by its label, `<name>/v<N>`."""
        name, _, number = label.rpartition("/v")
        if not name or not number.isdigit():
            raise RegistryError(f"{label!r} is not a model version label (<name>/v<N>)")
        return self.get(name, int(number))

    def get(self, name: str, version: int) -> ModelVersion:
        for candidate in self.versions(name):
            if candidate.version == version:
                return candidate
        raise RegistryError(f"no version {version} of model {name!r}")

    def aliases(self, name: str) -> dict[str, int]:
        path = self._aliases_path(name)
        return json.loads(self.storage.read_bytes(path)) if self.storage.exists(path) else {}

    def set_alias(self, name: str, alias: str, version: int) -> None:
        self.get(name, version)  # must exist
        aliases = {**self.aliases(name), alias: version}
        self.storage.write_bytes(self._aliases_path(name), json.dumps(aliases, indent=2, sort_keys=True).encode())

    def champion(self, name: str) -> ModelVersion | None:
        aliases = self.aliases(name)
        return self.get(name, aliases["champion"]) if "champion" in aliases else None

    def tuned(self, name: str) -> ModelVersion | None:
        """The version the newest tuning job gave (the `tuned` alias, which the job-status sensor moves when it
        reports a model, back to an older version when a job's data and recipe were trained before); on a registry
        from before that alias, the newest version."""
        aliases = self.aliases(name)
        if TUNED in aliases:
            return self.get(name, aliases[TUNED])
        versions = self.versions(name)
        return versions[-1] if versions else None

    def resolve(self, name: str, alias: str) -> ModelVersion:
        aliases = self.aliases(name)
        if alias not in aliases:
            raise RegistryError(f"model {name!r} has no {alias!r} alias")
        return self.get(name, aliases[alias])
