import json
import random
import re

import pandas as pd
import pandera.pandas as pandera
import pytest

from obs_platform.cli import sample_data_files
from obs_platform.data.canonical import canonicalise
from obs_platform.data.coercion import CLEANED_TEXT_FIELDS, without_invisible_characters
from obs_platform.data.quarantine import Reasons
from obs_platform.data.raw import parse_export, read_landing
from obs_platform.data.schema import (
    INVISIBLE_CHARACTERS,
    STRING_DTYPE,
    CanonicalObservationsSchema,
    holding_invisible_characters,
)

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
    assert len(canonical) >= 1500
    assert canonical["attribute_id"].value_counts().min() >= 70
    assert set(canonical["attribute_id"]) == {a.id for a in eyfs.attributes}
    secondary_share = canonical["secondary_tags"].map(len).gt(0).mean()
    assert 0.2 <= secondary_share <= 0.3
    ages = canonical["child_age_months"].dropna()
    assert ages.min() >= 6 and ages.max() <= 66
    csv_rows = canonical[canonical["source_file"].str.endswith(".csv")]
    assert len(csv_rows) > 300 and csv_rows["notes"].str.len().gt(0).all()
    assert json.dumps(canonical["secondary_tags"].tolist())  # plain JSON-able values


# ----- control and invisible characters, huge numbers, whole files -------------------------------


def test_control_and_invisible_characters_are_removed_from_text(eyfs):
    result = canon(
        eyfs,
        record(
            observationNotes="Amara\x01 poured\u200b water\tinto\r\nthree\u202e cups\x7f.",
            childName="Am\u200dara\x00",
            educatorName="\ufeffPriya",
        ),
    )
    row = result.canonical.iloc[0]
    assert row["notes"] == "Amara poured water\tinto\r\nthree cups."  # tab and line breaks stay
    assert (row["child_name"], row["educator_name"]) == ("Amara", "Priya")
    assert result.invisible_characters_removed == {"notes": 1, "child_name": 1, "educator_name": 1}
    CanonicalObservationsSchema.validate(result.canonical)


def test_notes_of_nothing_but_invisible_characters_are_quarantined(eyfs):
    result = canon(
        eyfs,
        record(observationId="a", observationNotes="\u200b\u200b\x01"),
        record(observationId="b", observationNotes=" \u2066\u2069 "),
        record(observationId="c", observationNotes="   "),
    )
    assert result.canonical.empty
    reasons = dict(zip(result.quarantined["observation_id"], result.quarantined["reasons"]))
    assert reasons["a"] == ["invisible_notes: notes: only control or invisible characters (U+200B, U+0001)"]
    assert reasons["b"] == ["invisible_notes: notes: only control or invisible characters (U+2066, U+2069)"]
    assert reasons["c"] == ["empty_notes: notes: notes are empty or only white space (value '   ')"]


def test_every_invisible_character_is_found_past_the_byte_scan():
    """The byte scan before the pattern must flag every value the pattern matches: C0 and C1 controls, DEL, format
    characters, tag characters, each alone or among letters, tab and line breaks that stay."""
    rng = random.Random(11)
    alphabet = [*"a \t\n\r", "é", "😀", "\u2028", "\x00", "\x1f", "\x7f", "\x85", "\x9f", "\u00ad", "\u200b"]
    alphabet += ["\u2066", "\ufeff", "\U000e0041"]
    values = ["".join(rng.choices(alphabet, k=rng.randrange(5))) for _ in range(3000)] + [None]
    typed = pd.DataFrame({field: pd.array(values, dtype=STRING_DTYPE) for field in CLEANED_TEXT_FIELDS})
    cleaned, removed = without_invisible_characters(typed, Reasons())
    expected = [None if v is None else re.sub(INVISIBLE_CHARACTERS, "", v) for v in values]
    changed = sum(v is not None and re.search(INVISIBLE_CHARACTERS, v) is not None for v in values)
    for field in CLEANED_TEXT_FIELDS:
        assert cleaned[field].astype(object).where(cleaned[field].notna(), None).tolist() == expected
        assert removed[field] == changed
    mixed = pd.Series(["a\x01b", 3, None, "ok\u200b"], dtype=object)  # not all text: the pattern alone
    assert holding_invisible_characters(mixed).tolist() == [True, False, False, True]


def test_the_canonical_contract_refuses_invisible_characters(eyfs):
    canonical = canon(eyfs, record()).canonical
    canonical.loc[0, "notes"] = "hidden\x01marker"
    with pytest.raises(pandera.errors.SchemaError, match="control or invisible characters"):
        CanonicalObservationsSchema.validate(canonical)


@pytest.mark.parametrize(
    "value, shown",
    [
        (99999999999999999999999, "1e+23"),
        (2**63, "9.223372036854776e+18"),
        ("99999999999999999999999", "'99999999999999999999999'"),
    ],
)
def test_a_huge_id_is_reported_as_written_not_wrapped(eyfs, value, shown):
    for name, data in [
        ("t.jsonl", jsonl(record(attributeId=value))),
        ("t.jsonl", jsonl(record(attributeId=value)) + b"{broken\n"),  # the line-by-line path
    ]:
        quarantined = canonicalise(parse_export(name, data), eyfs).quarantined
        assert quarantined.iloc[0]["reasons"] == [f"out_of_range: attribute_id: {shown} is too large to be an id"]


def test_huge_id_in_a_csv(eyfs):
    data = b"observationId,narrative,domainId,attributeId,progressionTitle\n"
    data += b"obs-1,note,5,99999999999999999999999,Reception\n"
    quarantined = canonicalise(parse_export("t.csv", data), eyfs).quarantined
    assert quarantined.iloc[0]["reasons"] == [
        "out_of_range: attribute_id: '99999999999999999999999' is too large to be an id"
    ]


def test_every_file_is_processed_and_an_unreadable_one_is_quarantined_whole(eyfs, storage):
    cp1252 = "\n".join(
        json.dumps(record(observationId=f"w-{i}", childName="Zoë Brontë"), ensure_ascii=False) for i in range(3)
    )
    storage.write_bytes("landing/windows.jsonl", cp1252.encode("cp1252"))
    storage.write_bytes(
        "landing/excel.csv",
        (
            "observationId,narrative,domainId,attributeId,progressionTitle\nx-1,Zoë counted to five,5,12,Reception\n"
        ).encode("utf-16"),
    )
    storage.write_bytes("landing/photo.jsonl", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x01\x00")
    raw = read_landing(storage, "landing").table
    result = canonicalise(raw, eyfs)
    assert sorted(result.canonical["observation_id"]) == ["w-0", "w-1", "w-2", "x-1"]
    assert set(result.canonical["child_name"].dropna()) == {"Zoë Brontë"}
    whole = result.quarantined.iloc[0]
    assert (whole["source_file"], whole["reason_codes"]) == ("landing/photo.jsonl", ["binary_file"])
    assert whole["reasons"][0].startswith("binary_file: holds NUL bytes")
    assert len(raw) == len(result.canonical) + len(result.quarantined)


def test_a_secondary_tag_accepts_the_spellings_of_the_observations_own_label(eyfs):
    """One alias table: every spelling of a label field is accepted in a secondary tag too."""
    tags = [
        {"domain_id": 1, "attribute_id": 2, "progressionLevel": "reception"},
        {"attributeId": 2, "level": "Reception"},
    ]
    row = canon(eyfs, record(secondaryTags=tags)).canonical.iloc[0]
    levels = [tag["level"] for tag in row["secondary_tags"]]
    assert levels == ["Reception", "Reception"] and [tag["domain_id"] for tag in row["secondary_tags"]] == [1, 1]
