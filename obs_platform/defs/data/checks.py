"""Asset checks of the data layer: nothing lost, no names leaked, every training line valid."""

import dagster as dg
import orjson
import pandas as pd

from obs_platform.data import prepare
from obs_platform.data.artifacts import TrainingFiles
from obs_platform.data.formats import gemini_line_problems
from obs_platform.data.redaction import Redactor, contains_contact_details, surviving_names
from obs_platform.defs.data.assets import (
    gemini_sft_jsonl,
    oss_sft_jsonl,
    training_splits,
)
from obs_platform.defs.data.resources import StorageResource, TaxonomyResource
from obs_platform.defs.metadata import table


@dg.asset_check(
    asset=dg.AssetKey("quarantined_observations"),
    additional_ins={
        "raw_observations": dg.AssetIn("raw_observations"),
        "canonical_observations": dg.AssetIn("canonical_observations"),
    },
    blocking=True,
    description="Every raw row is either canonical or quarantined, exactly once.",
)
def raw_rows_accounted_for(
    quarantined_observations: pd.DataFrame, raw_observations: pd.DataFrame, canonical_observations: pd.DataFrame
) -> dg.AssetCheckResult:
    def places(frame: pd.DataFrame) -> pd.Series:
        return frame["source_file"].astype(str) + ":" + frame["source_line"].astype(str)

    raw, canonical, quarantined = (
        places(raw_observations),
        places(canonical_observations),
        places(quarantined_observations),
    )
    both = set(canonical) & set(quarantined)
    unaccounted = set(raw) - set(canonical) - set(quarantined)
    passed = len(raw) == len(canonical) + len(quarantined) and not both and not unaccounted
    return dg.AssetCheckResult(
        passed=passed,
        metadata={
            "raw": len(raw),
            "canonical": len(canonical),
            "quarantined": len(quarantined),
            "in_both": dg.MetadataValue.json(sorted(both)[:20]),
            "unaccounted": dg.MetadataValue.json(sorted(unaccounted)[:20]),
        },
    )


def _jsonl_texts(storage: StorageResource, files: TrainingFiles) -> dict[str, list[str]]:
    client = storage.client()
    return {name: client.read_bytes(f"{files.folder}/{name}").decode().splitlines() for name in files.files}


def _no_personal_data_check(asset: dg.AssetsDefinition | dg.AssetKey, name: str):
    """One blocking check per JSONL asset: no roster name, e-mail address or phone number survives."""

    @dg.asset_check(
        asset=asset,
        name=name,
        additional_ins={
            "canonical_observations": dg.AssetIn("canonical_observations"),
            "quarantined_observations": dg.AssetIn("quarantined_observations"),
        },
        blocking=True,
        description="No roster name, e-mail address or phone number survives in any JSONL line.",
    )
    def _check(
        context: dg.AssetCheckExecutionContext,
        storage: StorageResource,
        canonical_observations: pd.DataFrame,
        quarantined_observations: pd.DataFrame,
    ) -> dg.AssetCheckResult:
        redactor = Redactor(prepare.build_roster(canonical_observations, quarantined_observations))
        written = context.instance.get_latest_materialization_event(context.check_specs[0].asset_key)
        recorded = written.asset_materialization.metadata if written else {}
        files = _files_from_metadata(storage, recorded)
        expected_lines = recorded["dagster/row_count"].value if "dagster/row_count" in recorded else None
        leaks: dict[str, dict[str, int]] = {}
        contacts: dict[str, int] = {}
        lines = 0
        for file_name, texts in files.items():
            lines += len(texts)
            found = surviving_names(redactor, texts)
            if found:
                leaks[file_name] = found
            contact_lines = sum(contains_contact_details(t) for t in texts)
            if contact_lines:
                contacts[file_name] = contact_lines
        return dg.AssetCheckResult(
            # Every line must have been read: a check that found no files proves nothing.
            passed=not leaks and not contacts and lines == expected_lines,
            metadata={
                "lines_scanned": lines,
                "lines_expected": expected_lines,
                "roster_people": len(redactor.roster),
                "names_found": dg.MetadataValue.json({f: sorted(n) for f, n in leaks.items()}),
                "lines_with_contact_details": dg.MetadataValue.json(contacts),
            },
        )

    return _check


def _files_from_metadata(storage: StorageResource, metadata: dict) -> dict[str, list[str]]:
    """The JSONL files of the asset's latest materialisation, from its recorded folder."""
    client = storage.client()
    folder_value = metadata.get("folder_uri") or metadata.get("splits_uri")
    if folder_value is None:
        return {}
    root = client.root_uri.rstrip("/") + "/"
    folder = str(folder_value.value).removeprefix(root)
    return {
        path.rsplit("/", 1)[-1]: client.read_bytes(path).decode().splitlines()
        for path in client.list_files(folder)
        if path.endswith(".jsonl")
    }


splits_have_no_personal_data = _no_personal_data_check(training_splits, "no_personal_data")
gemini_jsonl_has_no_personal_data = _no_personal_data_check(gemini_sft_jsonl, "no_personal_data")
oss_jsonl_has_no_personal_data = _no_personal_data_check(oss_sft_jsonl, "no_personal_data")


@dg.asset_check(
    asset=gemini_sft_jsonl,
    blocking=True,
    description="Every line parses, follows the Gemini tuning format and answers with a valid taxonomy label.",
)
def gemini_lines_valid(
    gemini_sft_jsonl: TrainingFiles, storage: StorageResource, taxonomy: TaxonomyResource
) -> dg.AssetCheckResult:
    tax = taxonomy.load()
    problems: list[dict[str, object]] = []
    lines = 0
    for file_name, texts in _jsonl_texts(storage, gemini_sft_jsonl).items():
        for number, text in enumerate(texts, start=1):
            lines += 1
            try:
                found = gemini_line_problems(orjson.loads(text), tax)
            except orjson.JSONDecodeError as exc:
                found = [f"not JSON: {exc}"]
            problems.extend({"file": file_name, "line": number, "problem": p} for p in found)
    return dg.AssetCheckResult(
        passed=not problems and lines == sum(gemini_sft_jsonl.rows.values()),
        metadata={
            "lines_checked": lines,
            "problems": table(pd.DataFrame(problems, columns=["file", "line", "problem"])),
        },
    )
