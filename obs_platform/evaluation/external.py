"""The external comment bank: report comments nobody on the team wrote, labelled with an EYFS area.

EVALUATION ONLY: nothing here is ever trained or tuned on. Placeholders such as `[child]` stay as written.
The areas are matched to the taxonomy's domains by name; a taxonomy without those areas cannot be scored.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from obs_platform.evaluation.frames import LabelledObservation
from obs_platform.taxonomy import Taxonomy
from obs_platform.taxonomy.model import normalise_key


class ExternalSetError(ValueError):
    """The comment bank does not fit this taxonomy, or is not the expected CSV."""


def load_comment_bank(path: Path, taxonomy: Taxonomy) -> list[LabelledObservation]:
    """The comments as observations whose truth is a domain only (attribute -1, no level)."""
    domains = {normalise_key(d.name): d for d in taxonomy.domains}
    observations, unknown = [], set()
    rows = csv.DictReader(io.StringIO(path.read_text(encoding="utf-8")))
    if not {"area", "text"} <= set(rows.fieldnames or []):
        raise ExternalSetError(f"{path} needs 'area' and 'text' columns, has {rows.fieldnames}")
    for number, row in enumerate(rows, start=2):
        domain = domains.get(normalise_key(row["area"] or ""))
        if domain is None:
            unknown.add(row["area"])
            continue
        observations.append(LabelledObservation(f"{path.stem}:{number}", row["text"], None, domain.key, -1, None, ()))
    if unknown:
        raise ExternalSetError(f"areas {sorted(unknown)} of {path.name} are not domains of this taxonomy")
    return observations
