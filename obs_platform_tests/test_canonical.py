import json

import pandas as pd
import pytest

from obs_platform.cli import sample_data_files
from obs_platform.data.canonical import canonicalise
from obs_platform.data.raw import parse_export

from .conftest import SEED_SAMPLE, jsonl, record


def canon(taxonomy, *records, name="landing/t.jsonl"):
    return canonicalise(parse_export(name, jsonl(*records)), taxonomy)


def test_valid_record_is_canonical(eyfs):
    result = canon(eyfs, record(secondaryTags=[{"domainId": 1, "attributeId": 2, "progressionTitle": "reception"}]))
    assert result.quarantined.empty
    row = result.canonical.iloc[0]
    assert row["domain_key"] == "mathematics" and row["attribute_name"] == "Numerical Patterns"
    assert row["level_index"] == 1
    assert row["secondary_tags"] == [{"domain_id": 1, "attribute_id": 2, "level": "Reception"}]
    assert row["observation_date"] == pd.Timestamp("2025-03-14")
    assert row["source_file"] == "landing/t.jsonl" and row["source_line"] == 1


def test_aliases_and_uk_dates(eyfs):
    result = canon(
        eyfs,
        {
            "observation_id": 7,
            "narrative": "Built a tower of six bricks.",
            "domain_key": "physical_development",
            "attribute_id": "7",
            "level": "birth to three",
            "childAgeMonths": "18",
            "observationDate": "03/02/2025",
            "photoUris": "gs://b/one.jpg; gs://b/two.jpg",
        },
    )
    row = result.canonical.iloc[0]
    assert (row["observation_id"], row["domain_id"], row["attribute_id"]) == ("7", 3, 7)
    assert row["progression_title"] == "Birth to three"
    assert row["child_age_months"] == 18
    assert row["observation_date"] == pd.Timestamp("2025-02-03")
    assert row["photo_uris"] == ["gs://b/one.jpg", "gs://b/two.jpg"]


def test_seed_canonical_records_map_against_the_seed_taxonomy(seed_taxonomy):
    if not SEED_SAMPLE.exists():
        pytest.skip("../shared is absent")
    result = canonicalise(parse_export("sample_canonical.jsonl", SEED_SAMPLE.read_bytes()), seed_taxonomy)
    assert result.quarantined.empty, result.quarantined["reasons"].tolist()
    assert result.canonical["observation_id"].tolist() == ["obs_001", "obs_002", "obs_003"]
    assert result.canonical["domain_key"].tolist() == [
        "physical_development",
        "language_literacy",
        "social_emotional_development",
    ]
    assert result.canonical["progression_title"].tolist() == ["Progressing", "Advancing", "Progressing"]


def test_eyfs_labels_are_rejected_by_the_seed_taxonomy(seed_taxonomy):
    result = canon(seed_taxonomy, record())
    assert result.canonical.empty
    assert "invalid_level" in result.quarantined.iloc[0]["reason_codes"]


# source line in malformed_observations.jsonl → the reason codes it must be quarantined with
MALFORMED_EXPECTED = {
    1: {"unknown_domain"},
    2: {"unknown_domain"},
    3: {"unknown_attribute"},
    4: {"unknown_attribute"},
    5: {"attribute_not_in_domain"},
    6: {"attribute_not_in_domain"},
    7: {"attribute_not_in_domain"},
    8: {"invalid_level"},
    9: {"invalid_level"},
    10: {"empty_notes"},
    11: {"empty_notes"},
    12: {"notes_too_long"},
    13: {"notes_too_long"},
    14: {"bad_date"},
    15: {"bad_date"},
    16: {"implausible_date"},
    17: {"age_out_of_range"},
    18: {"age_out_of_range"},
    19: {"duplicate_id_conflict"},
    20: {"duplicate_id_conflict"},
    22: {"duplicate_exact"},
    23: {"invalid_json"},
    24: {"invalid_json"},
    25: {"wrong_type"},
    26: {"wrong_type"},
    27: {"wrong_type"},
    28: {"wrong_type"},
    29: {"invalid_utf8"},
    30: {"invalid_utf8"},
    31: {"missing_field"},
    32: {"missing_field"},
    33: {"invalid_record"},
    34: {"invalid_secondary_tag"},
}


@pytest.fixture(scope="module")
def malformed(eyfs):
    path = next(p for p in sample_data_files() if p.name == "malformed_observations.jsonl")
    raw = parse_export(path.name, path.read_bytes())
    return raw, canonicalise(raw, eyfs)


def test_every_malformed_kind_has_its_reason(malformed):
    raw, result = malformed
    found = {
        line: set(codes) for line, codes in zip(result.quarantined["source_line"], result.quarantined["reason_codes"])
    }
    assert found == MALFORMED_EXPECTED
    assert len({code for codes in MALFORMED_EXPECTED.values() for code in codes}) >= 10
    # the one survivor is the first of the exact duplicates
    assert result.canonical["source_line"].tolist() == [21]
    assert len(raw) == len(result.canonical) + len(result.quarantined)


def test_quarantine_keeps_the_original_text(malformed):
    _, result = malformed
    by_line = result.quarantined.set_index("source_line")
    assert "three and a half" in by_line.loc[25, "raw_text"]
    assert by_line.loc[29, "raw_text"].count("caf\\xe9") == 1
    assert all(len(r) >= 1 and all(":" in x for x in r) for r in result.quarantined["reasons"])


def test_unknown_domain_is_not_reported_twice(eyfs):
    result = canon(eyfs, record(domainId=9, attributeId=12))
    assert result.quarantined.iloc[0]["reason_codes"] == ["unknown_domain"]


def test_several_reasons_are_all_kept(eyfs):
    result = canon(eyfs, record(observationNotes="", childAgeMonths=300, progressionTitle="Expert"))
    assert set(result.quarantined.iloc[0]["reason_codes"]) == {"empty_notes", "age_out_of_range", "invalid_level"}


def test_duplicates_across_files(eyfs):
    first = parse_export("landing/a.jsonl", jsonl(record(observationId="x"), record(observationId="y")))
    second = parse_export(
        "landing/b.jsonl", jsonl(record(observationId="x"), record(observationId="y", attributeId=11))
    )
    result = canonicalise(pd.concat([first, second], ignore_index=True), eyfs)
    assert result.canonical["observation_id"].tolist() == ["x"]
    assert result.canonical["source_file"].tolist() == ["landing/a.jsonl"]
    reasons = dict(
        zip(
            result.quarantined["source_file"] + ":" + result.quarantined["source_line"].astype(str),
            result.quarantined["reason_codes"],
        )
    )
    assert reasons == {
        "landing/b.jsonl:1": ["duplicate_exact"],
        "landing/a.jsonl:2": ["duplicate_id_conflict"],
        "landing/b.jsonl:2": ["duplicate_id_conflict"],
    }


def test_sample_corpus_shape(eyfs):
    frames = [parse_export(p.name, p.read_bytes()) for p in sample_data_files() if "malformed" not in p.name]
    result = canonicalise(pd.concat(frames, ignore_index=True), eyfs)
    assert result.quarantined.empty, result.quarantined["reasons"].tolist()[:3]
    canonical = result.canonical
    assert len(canonical) >= 600
    assert canonical["attribute_id"].value_counts().min() >= 25
    assert set(canonical["attribute_id"]) == {a.id for a in eyfs.attributes}
    secondary_share = canonical["secondary_tags"].map(len).gt(0).mean()
    assert 0.2 <= secondary_share <= 0.3
    ages = canonical["child_age_months"].dropna()
    assert ages.min() >= 6 and ages.max() <= 60
    csv_rows = canonical[canonical["source_file"].str.endswith(".csv")]
    assert len(csv_rows) > 300 and csv_rows["notes"].str.len().gt(0).all()
    assert json.dumps(canonical["secondary_tags"].tolist())  # plain JSON-able values
