"""Every job the job-status sensor knows of, read from the Dagster event log the way the sensor reads it, so that
`obs-platform jobs` lists local and Vertex jobs alike without asking any backend: a submission is a
materialisation of a job asset in `TRACKS` naming its job, an ending an observation of that asset naming the job
and its state, and a success's cost is on the materialisation of what the job produced.
"""

from dataclasses import dataclass

import dagster as dg

from obs_platform.defs.event_log import metadata_history
from obs_platform.defs.training.sensors import TRACKS

SUBMITTED = "SUBMITTED"  # the state of a job whose ending is not recorded yet


@dataclass(frozen=True)
class JobRecord:
    """A submitted job as the event log tells it."""

    job_id: str
    asset: str  # the job asset that submitted it
    backend: str
    state: str  # the ending's state, or SUBMITTED
    dataset_version: str
    submitted_at: float  # seconds since the epoch
    model_version: str | None  # what a success registered, or the model a batch job asked
    estimated_usd: float | None  # the reckoned cost of what ran, else the estimate made at submission

    @property
    def open(self) -> bool:
        return self.state == SUBMITTED


def job_records(instance: dg.DagsterInstance) -> list[JobRecord]:
    """Every job submitted through a job asset, oldest first (a job asked for again while it ran is one job)."""
    records = []
    for job_key, result_key in TRACKS.items():
        endings = {str(m["job_id"]): m for m in metadata_history(instance, job_key, "observations") if "job_id" in m}
        costs = {
            str(m["job_id"]): m["estimated_usd"]
            for m in metadata_history(instance, result_key, "materializations")
            if "job_id" in m and m.get("estimated_usd") is not None
        }
        submissions: dict[str, dict] = {}
        for metadata in metadata_history(instance, job_key, "materializations"):
            if "job_id" in metadata:
                submissions.setdefault(str(metadata["job_id"]), metadata)
        for job_id, submitted in submissions.items():
            ending = endings.get(job_id, {})
            records.append(
                JobRecord(
                    job_id=job_id,
                    asset=job_key.to_user_string(),
                    backend=str(submitted["backend"]),
                    state=str(ending.get("state", SUBMITTED)),
                    dataset_version=str(submitted["dataset_version"]),
                    submitted_at=float(submitted["submitted_at"]),
                    model_version=ending.get("model_version", submitted.get("model_version")),
                    estimated_usd=costs.get(job_id, submitted.get("estimated_usd")),
                )
            )
    return sorted(records, key=lambda record: record.submitted_at)
