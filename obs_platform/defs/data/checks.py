"""Asset checks of the data layer: nothing lost, no names leaked, every training line valid. A check reads the
checked asset's value (and the files it names), never its materialisation's metadata."""

from collections.abc import Callable
from typing import Any

import dagster as dg
import numpy as np
import orjson
import pandas as pd

from obs_platform.data import formats, prepare, redaction_cache
from obs_platform.data.artifacts import TrainingFiles
from obs_platform.data.checked_lines import line_hashes, read_passed, write_passed
from obs_platform.data.formats import gemini_line_problems, written_texts
from obs_platform.data.parts import source_digest
from obs_platform.data.redaction import Redactor, contains_contact_details
from obs_platform.defs.data.assets import (
    gemini_sft_jsonl,
    oss_sft_jsonl,
    training_splits,
)
from obs_platform.defs.data.resources import FrameSummary, StorageResource, TaxonomyResource
from obs_platform.defs.metadata import table
from obs_platform.storage.base import MANIFEST

# What a personal-data verdict on a line depends on, the roster aside: the detector (its code and word lists) and
# how a line's written texts are read. A line passed before under the same is not judged again.
PERSONAL_DATA_VERDICTS = f"{redaction_cache.CODE_VERSION}-{source_digest([formats])}"
GEMINI_LINES_CACHE = "gemini_sft_jsonl-gemini_lines_valid"
ROSTER_COLUMNS = ["child_name", "educator_name"]  # what `prepare.build_roster` reads of a frame


def _no_personal_data_check(
    asset: dg.AssetsDefinition,
    name: str,
    value_type: type,
    written: Callable[[Any, TaxonomyResource], tuple[str, int]],
):
    """One blocking check per JSONL asset: no name, e-mail address or phone number survives in any line.

    It reads the files themselves with the redactor's whole detector (the roster, the lexicon and the rules
    for names no list knows), not only the roster; on failure the bundle is removed, manifest first, so that
    neither the next asset nor a person picks up the files (the next materialisation writes them anew). Where the
    files are and how many lines they hold come from the asset's value (`value_type`, through `written`). A line it
    passed last time, reading the same, is not judged again unless it mentions a word the roster now treats
    differently (`obs_platform.data.checked_lines`): after a drop, the new lines are what is judged."""
    cache_name = f"{asset.key.to_python_identifier()}-{name}"  # where its passed lines are kept

    @dg.asset_check(
        asset=asset,
        name=name,
        additional_ins={  # the roster is built from the name columns alone
            "canonical_observations": dg.AssetIn("canonical_observations", metadata={"columns": ROSTER_COLUMNS}),
            "quarantined_observations": dg.AssetIn("quarantined_observations", metadata={"columns": ROSTER_COLUMNS}),
        },
        blocking=True,
        description="No name (roster or not), e-mail address or phone number survives in any JSONL line; "
        "files that fail are removed.",
    )
    def _check(
        storage: StorageResource,
        taxonomy: TaxonomyResource,
        canonical_observations: pd.DataFrame,
        quarantined_observations: pd.DataFrame,
        checked: value_type,  # the checked asset's value
    ) -> dg.AssetCheckResult:
        roster = prepare.build_roster(canonical_observations, quarantined_observations)
        redactor = Redactor(roster)
        client = storage.client()
        folder, expected_lines = written(checked, taxonomy)
        files = _files_in(storage, folder)
        before = read_passed(client, cache_name)
        leaks: dict[str, dict[str, object]] = {}
        contacts: dict[str, int] = {}
        clean: list[np.ndarray] = []
        lines = judged = 0
        for file_name, file_lines in files.items():
            lines += len(file_lines)
            hashes = line_hashes(file_lines)
            todo = np.flatnonzero(before.to_judge(client, file_lines, hashes, PERSONAL_DATA_VERDICTS, roster))
            judged += len(todo)
            texts = [written_texts(file_lines[k]) for k in todo]
            line_of = [int(todo[n]) + 1 for n, line_texts in enumerate(texts) for _ in line_texts]
            found = redactor.names_per_text([t for line_texts in texts for t in line_texts])
            named = sorted({line_of[k] for k, names in enumerate(found) if names})
            if named:
                # Line numbers and counts only: the names themselves would leak into the event log.
                leaks[file_name] = {"lines": named[:20], "lines_with_names": len(named)}
            with_contacts = [
                int(todo[n]) + 1 for n, line_texts in enumerate(texts) if any(map(contains_contact_details, line_texts))
            ]
            if with_contacts:
                contacts[file_name] = len(with_contacts)
            line_passed = np.ones(len(file_lines), dtype=bool)
            line_passed[[number - 1 for number in {*named, *with_contacts}]] = False
            clean.append(hashes[line_passed])
        write_passed(client, cache_name, _joined(clean), PERSONAL_DATA_VERDICTS, roster)
        # Every line must have been read: a check that found no files proves nothing.
        passed = not leaks and not contacts and lines == expected_lines
        removed = _remove_bundle(storage, folder) if files and (leaks or contacts) else []
        return dg.AssetCheckResult(
            passed=passed,
            metadata={
                "lines_scanned": lines,
                "lines_judged": judged,  # the others were passed before, reading the same
                "lines_expected": expected_lines,
                "roster_people": len(redactor.roster),
                "lines_with_names": dg.MetadataValue.json(leaks),
                "lines_with_contact_details": dg.MetadataValue.json(contacts),
                "removed_files": dg.MetadataValue.json(removed),
            },
        )

    return _check


def _split_files_written(splits: FrameSummary, taxonomy: TaxonomyResource) -> tuple[str, int]:
    """The split bundle the frame records and its rows (each row is one line of a split file)."""
    folder = prepare.recorded_split_bundle(splits.attrs, taxonomy.load())
    if folder is None:
        raise dg.Failure(
            "training_splits records no split files written with the taxonomy in use (stored before it did, or the "
            "taxonomy changed since): materialise `training_splits` again"
        )
    return folder, splits.rows


def _training_files_written(files: TrainingFiles, _taxonomy: TaxonomyResource) -> tuple[str, int]:
    return files.folder, sum(files.rows.values())


def _joined(hashes: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(hashes) if hashes else np.empty(0, dtype=np.uint64)


def _remove_bundle(storage: StorageResource, folder: str) -> list[str]:
    """Delete a leaking bundle: the manifest first, so that an interrupted removal leaves an incomplete
    bundle (never trusted, rewritten next time), then every file."""
    client = storage.client()
    paths = client.list_files(folder)
    for path in sorted(paths, key=lambda p: not p.endswith(MANIFEST)):
        client.delete(path)
    return paths


def _files_in(storage: StorageResource, folder: str) -> dict[str, list[bytes]]:
    """The JSONL files of observations in the folder, line by line (not the taxonomy's own texts beside the splits:
    written from the taxonomy file, they hold no observation)."""
    client = storage.client()
    return {
        path.rsplit("/", 1)[-1]: client.read_bytes(path).splitlines()
        for path in client.list_files(folder)
        if path.endswith(".jsonl") and not path.endswith(f"/{prepare.TAXONOMY_TEXTS_FILE}")
    }


splits_have_no_personal_data = _no_personal_data_check(
    training_splits, "no_personal_data", FrameSummary, _split_files_written
)
gemini_jsonl_has_no_personal_data = _no_personal_data_check(
    gemini_sft_jsonl, "no_personal_data", TrainingFiles, _training_files_written
)
oss_jsonl_has_no_personal_data = _no_personal_data_check(
    oss_sft_jsonl, "no_personal_data", TrainingFiles, _training_files_written
)


@dg.asset_check(
    asset=gemini_sft_jsonl,
    blocking=True,
    description="Every line parses, follows the Gemini tuning format and answers with a valid taxonomy label.",
)
def gemini_lines_valid(
    gemini_sft_jsonl: TrainingFiles, storage: StorageResource, taxonomy: TaxonomyResource
) -> dg.AssetCheckResult:
    tax, client = taxonomy.load(), storage.client()
    verdicts = f"{source_digest([formats])}-{tax.sha256}"
    before = read_passed(client, GEMINI_LINES_CACHE)
    problems: list[dict[str, object]] = []
    clean: list[np.ndarray] = []
    lines = judged = 0
    for file_name in gemini_sft_jsonl.files:
        file_lines = client.read_bytes(f"{gemini_sft_jsonl.folder}/{file_name}").splitlines()
        lines += len(file_lines)
        hashes = line_hashes(file_lines)
        todo = np.flatnonzero(before.to_judge(client, file_lines, hashes, verdicts, None))
        judged += len(todo)
        passed = np.ones(len(file_lines), dtype=bool)
        for k in todo.tolist():
            try:
                found = gemini_line_problems(orjson.loads(file_lines[k]), tax)
            except orjson.JSONDecodeError as exc:
                found = [f"not JSON: {exc}"]
            problems.extend({"file": file_name, "line": k + 1, "problem": p} for p in found)
            passed[k] = not found
        clean.append(hashes[passed])
    write_passed(client, GEMINI_LINES_CACHE, _joined(clean), verdicts, None)
    return dg.AssetCheckResult(
        passed=not problems and lines == sum(gemini_sft_jsonl.rows.values()),
        metadata={
            "lines_checked": lines,
            "lines_judged": judged,  # the others were valid before, reading the same
            "problems": table(pd.DataFrame(problems, columns=["file", "line", "problem"])),
        },
    )
