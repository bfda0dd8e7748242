"""The data assets: raw exports → canonical (+ quarantine) → redacted → splits → training JSONL."""

import io

import dagster as dg
import pandas as pd
from dagster_pandera import pandera_schema_to_dagster_type

from obs_platform.data import prepare, reports
from obs_platform.data.artifacts import TrainingFiles
from obs_platform.data.line_files import LineFiles, write_line_files
from obs_platform.data.parts import LandingSnapshot, canonical_from_parts, snapshot_landing
from obs_platform.data.redaction_cache import redact_with_cache
from obs_platform.data.schema import CanonicalObservationsSchema
from obs_platform.data.splits import empty_ledger
from obs_platform.data.values import frame_from_parquet
from obs_platform.defs.data.resources import StorageResource, TaxonomyResource
from obs_platform.defs.metadata import table
from obs_platform.settings import LANDING_PREFIX, ROSTER_PATH

GROUP = "data"
LEDGER_PATH = "splits/ledger.parquet"
CanonicalObservations = pandera_schema_to_dagster_type(CanonicalObservationsSchema)


@dg.asset(group_name=GROUP, kinds={"json"})
def raw_observations(context: dg.AssetExecutionContext, storage: StorageResource) -> LandingSnapshot:
    """What the landing area holds: every CSV/JSON/JSONL export with its size and sha256 (a changed file is a new
    file to read), the files that are not exports, and linked folders, which are never followed."""
    client = storage.client()
    snapshot = snapshot_landing(client, LANDING_PREFIX)
    if not snapshot.exports:
        context.log.warning(
            f"no exports under {client.uri(LANDING_PREFIX)}: run `obs-platform init --with-sample-data`"
        )
    context.add_output_metadata(
        {
            "exports": len(snapshot.exports),
            "bytes": sum(e.size for e in snapshot.exports),
            "landing_uri": dg.MetadataValue.path(client.uri(LANDING_PREFIX)),
            "ignored_files": dg.MetadataValue.json(snapshot.ignored_files),
            "unreadable_files": dg.MetadataValue.json({e.path: e.unreadable for e in snapshot.exports if e.unreadable}),
            "linked_folders": dg.MetadataValue.json(snapshot.linked_folders),
        }
    )
    return snapshot


@dg.multi_asset(
    group_name=GROUP,
    outs={
        "canonical_observations": dg.AssetOut(dagster_type=CanonicalObservations, kinds={"pandas"}),
        "quarantined_observations": dg.AssetOut(kinds={"pandas"}),
    },
    check_specs=[
        dg.AssetCheckSpec(
            "raw_rows_accounted_for",
            asset="quarantined_observations",
            blocking=True,
            description="Every row read from an export is either canonical or quarantined, exactly once.",
        )
    ],
)
def canonical_and_quarantined_observations(
    context: dg.AssetExecutionContext,
    raw_observations: LandingSnapshot,
    storage: StorageResource,
    taxonomy: TaxonomyResource,
):
    """Alias mapping, type coercion and the taxonomy-bound pandera schema, export by export; rejected rows go to
    quarantine with every reason, duplicates are resolved by the rule in `obs_platform.data.canonical`. An export
    canonicalised before (same content, taxonomy and code) is taken from the cache (`obs_platform.data.parts`)."""
    tax = taxonomy.load()
    built = canonical_from_parts(storage.client(), raw_observations, tax)
    canonical, quarantined = built.result.canonical, built.result.quarantined
    accounting = built.accounting()
    read = int(accounting["read"].sum())
    yield dg.Output(
        canonical,
        output_name="canonical_observations",
        metadata={
            "dagster/row_count": len(canonical),
            "raw_rows": read,
            "taxonomy": tax.source,
            "taxonomy_sha256": tax.sha256[:16],
            "exports_reused": len(built.reused),
            "exports_processed": dg.MetadataValue.json(built.processed),
            "cached_parts_pruned": built.pruned,
            "rows_per_file": table(built.rows_per_file()),
            "labels": table(reports.label_distribution(canonical)),
            "levels": table(reports.level_distribution(canonical)),
            "with_secondary_tags": int(canonical["secondary_tags"].map(len).gt(0).sum()),
            "invisible_characters_removed": dg.MetadataValue.json(built.result.invisible_characters_removed),
            "preview": dg.MetadataValue.md(
                reports.markdown_preview(canonical, ["observation_id", "notes", "attribute_name", "progression_title"])
            ),
        },
    )
    yield dg.Output(
        quarantined,
        output_name="quarantined_observations",
        metadata={
            "dagster/row_count": len(quarantined),
            "share_of_raw": round(len(quarantined) / max(read, 1), 4),
            "duplicates_across_exports": built.duplicates_across_exports,
            "reasons": table(reports.quarantine_reasons(quarantined)),
            "preview": dg.MetadataValue.md(
                reports.markdown_preview(quarantined, ["source_file", "source_line", "reasons"], rows=10, width=100)
            ),
        },
    )
    wrong = accounting[(accounting["missing"] != 0) | (accounting["held_twice"] != 0)]
    yield dg.AssetCheckResult(
        asset_key="quarantined_observations",
        check_name="raw_rows_accounted_for",
        passed=wrong.empty,
        metadata={
            "raw": read,
            "canonical": len(canonical),
            "quarantined": len(quarantined),
            "exports_not_accounted_for": table(wrong),
        },
    )


@dg.asset(group_name=GROUP, kinds={"pandas"})
def redacted_observations(
    context: dg.AssetExecutionContext,
    canonical_observations: pd.DataFrame,
    quarantined_observations: pd.DataFrame,
    storage: StorageResource,
) -> pd.DataFrame:
    """Names (from the roster of every name in the data set), e-mail addresses and phone numbers replaced
    by placeholders; the name fields are dropped. Nothing downstream of this asset sees personal data. Notes
    redacted before are reused, and redacted again only where the roster's change could alter them
    (`obs_platform.data.redaction_cache`)."""
    client = storage.client()
    roster = prepare.build_roster(canonical_observations, quarantined_observations)
    cached = redact_with_cache(client, canonical_observations, roster)
    redacted = prepare.with_redacted_text(canonical_observations, cached.texts, cached.group_keys)
    client.write_bytes(ROSTER_PATH, roster.to_json())  # the endpoint redacts requests with it
    changed = int((redacted["text"] != canonical_observations["notes"].reset_index(drop=True)).sum())
    context.add_output_metadata(
        {
            "dagster/row_count": len(redacted),
            "roster_people": len(roster),
            "notes_reused": cached.reuse.reused,
            "notes_redacted_again": cached.reuse.redone,
            "notes_redacted_new": cached.reuse.new,
            "cache_entries_pruned": cached.reuse.pruned,
            "notes_changed": changed,
            "preview": dg.MetadataValue.md(reports.markdown_preview(redacted, ["observation_id", "text"], width=120)),
        }
    )
    return redacted


@dg.asset(group_name=GROUP, kinds={"pandas"})
def training_splits(
    context: dg.AssetExecutionContext,
    redacted_observations: pd.DataFrame,
    storage: StorageResource,
    taxonomy: TaxonomyResource,
) -> dg.Output[pd.DataFrame]:
    """Stable train/valid/test assignment (a ledger keeps every observation in its first split; near-duplicate
    notes share a split), written as redacted JSONL under `splits/<version>/`, with the taxonomy's own labelled
    texts beside them (`taxonomy.jsonl`, training rows of the hybrid classifier)."""
    client = storage.client()
    ledger = frame_from_parquet(client.read_bytes(LEDGER_PATH)) if client.exists(LEDGER_PATH) else empty_ledger()
    outcome = prepare.split_observations(redacted_observations, ledger)
    lines = prepare.write_split_bundle(client, outcome.frame, taxonomy.load())
    written = lines.written
    if outcome.result.added_to_ledger:  # unchanged data leaves the ledger file as it is
        buffer = io.BytesIO()
        outcome.result.ledger.to_parquet(buffer, index=False)
        client.write_bytes(LEDGER_PATH, buffer.getvalue())

    counts = outcome.frame["split"].value_counts().to_dict()
    # the value says where its files are
    outcome.frame.attrs[prepare.SPLIT_BUNDLE_ATTR] = prepare.split_bundle_record(written.folder, taxonomy.load())
    return dg.Output(
        outcome.frame,
        data_version=dg.DataVersion(written.version),
        metadata={
            "dagster/row_count": len(outcome.frame),
            "dataset_version": written.version,
            "splits_uri": dg.MetadataValue.path(written.folder_uri),
            "written": written.written,
            "lines_reused": lines.rows_reused,
            "lines_rendered": lines.rows_rendered,
            **{f"{name}_rows": int(counts.get(name, 0)) for name in ("train", "valid", "test")},
            "label_distribution": table(reports.label_distribution(outcome.frame)),
            "attributes_missing_a_split": dg.MetadataValue.json(outcome.result.uncovered),
            "groups_moved_for_coverage": outcome.result.moved_for_coverage,
            "near_duplicate_groups": int(outcome.frame["group_key"].duplicated().sum()),
            "ledger_size": len(outcome.result.ledger),
            "added_to_ledger": outcome.result.added_to_ledger,
        },
    )


def _training_files_output(
    fmt: str, lines: LineFiles, storage: StorageResource, extra: dict
) -> dg.Output[TrainingFiles]:
    client = storage.client()
    counted = {name: lines.rows_in(name) for name in lines.names}
    write = write_line_files(client, f"training-data/{fmt}", lines)
    written = write.written
    artefact = TrainingFiles.from_write(fmt, written, client, counted)
    return dg.Output(
        artefact,
        data_version=dg.DataVersion(written.version),
        metadata={
            "dagster/row_count": sum(counted.values()),
            "dataset_version": written.version,
            "folder_uri": dg.MetadataValue.path(written.folder_uri),
            "written": written.written,
            "lines_reused": write.rows_reused,
            "lines_rendered": write.rows_rendered,
            "bytes": dg.MetadataValue.json(dict(written.sizes)),
            **{f"{name} rows": rows for name, rows in counted.items()},
            **extra,
        },
    )


@dg.asset(group_name=GROUP, kinds={"json", "gemini"})
def gemini_sft_jsonl(
    training_splits: pd.DataFrame, storage: StorageResource, taxonomy: TaxonomyResource
) -> dg.Output[TrainingFiles]:
    """`train.jsonl` and `valid.jsonl` in Vertex AI's Gemini supervised-tuning format."""
    lines = prepare.gemini_lines(training_splits, taxonomy.load())
    photos = prepare.photo_counts(training_splits[training_splits["split"].isin(["train", "valid"])])
    return _training_files_output("gemini", lines, storage, photos)


@dg.asset(group_name=GROUP, kinds={"json", "huggingface"})
def oss_sft_jsonl(
    training_splits: pd.DataFrame, storage: StorageResource, taxonomy: TaxonomyResource
) -> dg.Output[TrainingFiles]:
    """The same examples as chat `messages` for TRL's SFTTrainer (train, valid and test)."""
    return _training_files_output("oss-chat", prepare.chat_lines(training_splits, taxonomy.load()), storage, {})
