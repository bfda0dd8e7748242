"""The one place that reads metadata back from the Dagster event log.

Metadata is for people; an asset that needs another asset's result takes it as an input (a value through the I/O
manager) or reads it from the model registry. What must read the event log are the places whose subject is the
event log itself: the job-status sensor (the tuning jobs requested, the outcomes already reported), the job list
(`obs-platform jobs`), the run summary `obs-platform run` prints, and a tuning-job asset asking whether the job it
submitted last time still runs. They read it through these functions, and a test keeps every other module of
`obs_platform/defs` from reading it.
"""

from collections.abc import Iterator
from typing import Any, Literal

import dagster as dg

PAGE = 1000  # events read per query


def metadata_values(event: dg.AssetMaterialization | dg.AssetObservation | None) -> dict[str, Any]:
    """An event's metadata as plain values (`{}` for no event)."""
    return {name: value.value for name, value in event.metadata.items()} if event is not None else {}


def record_metadata(record: dg.EventLogRecord) -> dict[str, Any]:
    """The metadata of a materialisation's or an observation's record, as plain values."""
    return metadata_values(record.asset_materialization or record.asset_observation)


def latest_materialization_metadata(instance: dg.DagsterInstance, key: dg.AssetKey) -> dict[str, Any] | None:
    """The metadata of the asset's latest materialisation as plain values; None when it has none."""
    event = instance.get_latest_materialization_event(key)
    if event is None or event.asset_materialization is None:
        return None
    return metadata_values(event.asset_materialization)


def own_previous_metadata(context: dg.AssetExecutionContext) -> dict[str, Any] | None:
    """What the running asset recorded when it was last materialised (None: never): for an asset whose previous
    materialisation is its own state, never another asset's result."""
    return latest_materialization_metadata(context.instance, context.asset_key)


def materializations_after(
    instance: dg.DagsterInstance, key: dg.AssetKey, after_storage_id: int, limit: int
) -> list[tuple[int, dict[str, Any]]]:
    """The asset's materialisations after a storage id (0: from the first), oldest first and at most `limit`: each
    one's storage id and metadata."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, after_storage_id=after_storage_id or None), limit=limit, ascending=True
    ).records
    return [(record.storage_id, record_metadata(record)) for record in records]


def recent_observations(instance: dg.DagsterInstance, key: dg.AssetKey, limit: int) -> list[dict[str, Any]]:
    """The metadata of the asset's newest observations, newest first, at most `limit`."""
    return [record_metadata(record) for record in instance.fetch_observations(key, limit=limit).records]


def metadata_history(
    instance: dg.DagsterInstance, key: dg.AssetKey, events: Literal["materializations", "observations"]
) -> Iterator[dict[str, Any]]:
    """The metadata of every materialisation or observation of the asset, oldest first, read a page at a time."""
    fetch = instance.fetch_materializations if events == "materializations" else instance.fetch_observations
    cursor = None
    while True:
        page = fetch(key, limit=PAGE, cursor=cursor, ascending=True)
        for record in page.records:
            if record.asset_materialization is not None or record.asset_observation is not None:
                yield record_metadata(record)
        if not page.has_more:
            return
        cursor = page.cursor
