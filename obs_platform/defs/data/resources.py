"""Resources of the data layer: the storage root, the taxonomy in use, and an IO manager on storage."""

import io
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel

from obs_platform.data.values import frame_from_arrow, frame_from_parquet
from obs_platform.defs.config import from_env
from obs_platform.settings import Settings
from obs_platform.storage import LocalStorage, Storage, storage_from_uri
from obs_platform.taxonomy import Taxonomy, load_taxonomy

PANDAS_ATTRS = b"PANDAS_ATTRS"  # where pandas keeps a frame's `attrs` in a parquet file's metadata


class StorageResource(dg.ConfigurableResource):
    """The storage root (`OBS_PLATFORM_HOME`): a local folder or `gs://bucket/prefix`."""

    root_uri: str

    def client(self) -> Storage:
        return _storage(self.root_uri)


class TaxonomyResource(dg.ConfigurableResource):
    """The curriculum taxonomy file in use (`OBS_PLATFORM_TAXONOMY`)."""

    path: str

    def load(self) -> Taxonomy:
        file = Path(self.path)
        return _taxonomy(str(file), file.stat().st_mtime_ns)


@lru_cache(maxsize=8)
def _storage(root_uri: str) -> Storage:
    return storage_from_uri(root_uri)


@lru_cache(maxsize=8)
def _taxonomy(path: str, _mtime_ns: int) -> Taxonomy:
    return load_taxonomy(path)


@dataclass(frozen=True)
class FrameSummary:
    """A stored frame without its rows: how many it has and its `attrs`, read from the parquet footer. An input
    annotated with it is loaded so, for an asset or a check that needs no row (where a split frame's files are)."""

    rows: int
    attrs: dict[str, Any]


class StorageIOManager(dg.ConfigurableIOManager):
    """Asset values live under the storage root (`assets/<key>.parquet` or `.json`), beside the data files,
    so the local and the GCS deployment keep everything in one place.

    Tables are parquet, readable by any analyst's tool; pydantic models are JSON. A table is loaded as a
    `FrameSummary` where the input is annotated with one, and only the columns an input names in its `columns`
    metadata where it names some.
    """

    storage: dg.ResourceDependency[StorageResource]

    def _base(self, key: dg.AssetKey) -> str:
        return "assets/" + "/".join(key.path)

    def handle_output(self, context: dg.OutputContext, obj: object) -> None:
        if obj is None:
            return
        storage, base = self.storage.client(), self._base(context.asset_key)
        if isinstance(obj, pd.DataFrame):
            buffer = io.BytesIO()
            obj.to_parquet(buffer, index=False)
            storage.write_bytes(f"{base}.parquet", buffer.getvalue())
            context.add_output_metadata({"stored_at": dg.MetadataValue.path(storage.uri(f"{base}.parquet"))})
        elif isinstance(obj, BaseModel):
            storage.write_bytes(f"{base}.json", obj.model_dump_json(indent=2).encode())
        else:
            raise TypeError(f"{context.asset_key.to_user_string()}: cannot store a {type(obj).__name__}")

    def load_input(self, context: dg.InputContext) -> object:
        storage, base = self.storage.client(), self._base(context.asset_key)
        if storage.exists(f"{base}.parquet"):
            if context.dagster_type.typing_type is FrameSummary:
                return _frame_summary(storage, f"{base}.parquet")
            columns = (context.definition_metadata or {}).get("columns")
            if columns is not None:
                return _frame_columns(storage, f"{base}.parquet", list(columns))
            return frame_from_parquet(storage.read_bytes(f"{base}.parquet"))
        if storage.exists(f"{base}.json"):
            model = context.dagster_type.typing_type
            if isinstance(model, type) and issubclass(model, BaseModel):
                return model.model_validate_json(storage.read_bytes(f"{base}.json"))
            raise TypeError(f"{context.asset_key.to_user_string()}: annotate the input with its model type")
        raise FileNotFoundError(
            f"{context.asset_key.to_user_string()} has not been materialised under {storage.root_uri} yet"
        )


def _frame_summary(storage: Storage, path: str) -> FrameSummary:
    """From the footer alone on a local disk; a bucket's file is fetched whole (the storage protocol reads whole
    files) but not decoded."""
    source = (
        str(storage.local_path(path))
        if isinstance(storage, LocalStorage)
        else pa.BufferReader(storage.read_bytes(path))
    )
    footer = pq.read_metadata(source)
    return FrameSummary(footer.num_rows, json.loads((footer.metadata or {}).get(PANDAS_ATTRS, b"{}")))


def _frame_columns(storage: Storage, path: str, columns: list[str]) -> pd.DataFrame:
    """Only the named columns a stored frame has (`AssetIn(metadata={"columns": [...]})`, as Dagster's warehouse I/O
    managers take it): on a local disk only their column chunks are read."""
    local = isinstance(storage, LocalStorage)
    parquet = pq.ParquetFile(str(storage.local_path(path)) if local else pa.BufferReader(storage.read_bytes(path)))
    present = set(parquet.schema_arrow.names)
    return frame_from_arrow(parquet.read(columns=[c for c in columns if c in present]))


def configured_storage(settings: Settings | None = None) -> StorageResource:
    """The storage root (`OBS_PLATFORM_HOME`, as a `dg.EnvVar` where set); every concern's resources share it."""
    return StorageResource(root_uri=from_env(settings or Settings.from_env(), "home"))


@dg.definitions
def resources() -> dg.Definitions:
    settings = Settings.from_env()
    storage = configured_storage(settings)
    return dg.Definitions(
        resources={
            "storage": storage,
            "taxonomy": TaxonomyResource(path=from_env(settings, "taxonomy_path")),
            "io_manager": StorageIOManager(storage=storage),
        }
    )
