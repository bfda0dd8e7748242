import copy
import json

import pytest

from obs_platform.taxonomy import TaxonomyError, load_taxonomy, normalise_key
from obs_platform.taxonomy.model import parse_taxonomy


def test_shipped_eyfs_taxonomy(eyfs):
    assert [d.key for d in eyfs.domains] == [
        "communication_and_language",
        "personal_social_and_emotional_development",
        "physical_development",
        "literacy",
        "mathematics",
        "understanding_the_world",
        "expressive_arts_and_design",
    ]
    assert len(eyfs.attributes) == 17
    assert [lvl.title for lvl in eyfs.levels] == [
        "Birth to three",
        "Three and four-year-olds",
        "Reception",
        "Early Learning Goal",
    ]
    assert eyfs.attribute(12).name == "Numerical Patterns"
    assert eyfs.attribute(12).domain_id == eyfs.domain_by_key("mathematics").id
    assert all(len(a.label_levels) == 4 for a in eyfs.attributes)


def test_seed_taxonomy_loads_unchanged(seed_taxonomy):
    assert len(seed_taxonomy.domains) == 5
    assert len(seed_taxonomy.attributes) == 32
    assert sum(len(a.points) for a in seed_taxonomy.attributes) == 327
    assert [lvl.title for lvl in seed_taxonomy.levels] == [
        "Emerging",
        "Developing",
        "Progressing",
        "Advancing",
        "Refining",
    ]
    assert seed_taxonomy.domain_by_key("physical_development").id == 1
    assert seed_taxonomy.domain_by_key("language_literacy").id == 3


def test_level_lookup_forgives_spelling(eyfs):
    assert eyfs.level("three and four year olds").title == "Three and four-year-olds"
    assert eyfs.level_index("Reception") == 2
    with pytest.raises(KeyError):
        eyfs.level("Year 2")


def test_label_problems_name_each_fault(eyfs):
    assert eyfs.label_problems(5, 12, "Reception") == []
    assert eyfs.label_problems(9, 12, "Reception") == ["unknown domain id 9"]
    assert eyfs.label_problems(1, 12, "Reception") == ["attribute 12 belongs to domain 5, not 1"]
    assert eyfs.label_problems(5, 12, "Expert") == ["unknown progression level 'Expert'"]


def test_normalise_key():
    assert normalise_key("Personal, Social & Emotional Development") == "personal_social_emotional_development"


@pytest.fixture
def document(eyfs):
    return json.loads(open(eyfs.source).read())


def test_duplicate_ids_are_named(document):
    broken = copy.deepcopy(document)
    broken["domains"][1]["attributes"][0]["id"] = broken["domains"][0]["attributes"][0]["id"]
    with pytest.raises(TaxonomyError, match="duplicate attribute id 1"):
        parse_taxonomy(broken)


def test_attribute_without_points_is_named(document):
    broken = copy.deepcopy(document)
    broken["domains"][4]["attributes"][1]["progressionPoints"] = []
    with pytest.raises(TaxonomyError, match=r"Numerical Patterns.*has no progression points"):
        parse_taxonomy(broken)


def test_all_hidden_points_cannot_label(document):
    broken = copy.deepcopy(document)
    for point in broken["domains"][0]["attributes"][0]["progressionPoints"]:
        point["isProgressionHidden"] = 1
    with pytest.raises(TaxonomyError, match="every progression point is hidden"):
        parse_taxonomy(broken)


def test_hidden_level_is_not_a_valid_label(document):
    changed = copy.deepcopy(document)
    for point in changed["domains"][0]["attributes"][0]["progressionPoints"]:
        if point["progressionPointsTitle"] == "Reception":
            point["isProgressionHidden"] = 1
    taxonomy = parse_taxonomy(changed)
    assert "Reception" not in [lvl.title for lvl in taxonomy.attribute(1).label_levels]
    assert taxonomy.label_problems(1, 1, "Reception")


def test_inconsistent_level_titles_and_missing_fields(document):
    broken = copy.deepcopy(document)
    broken["domains"][0]["attributes"][0]["progressionPoints"][0]["progressionPointsTitle"] = "Toddlers"
    del broken["domains"][2]["name"]
    with pytest.raises(TaxonomyError) as caught:
        parse_taxonomy(broken)
    text = str(caught.value)
    assert "level id 1 is titled 'Toddlers'" in text
    assert "domains[2]: missing 'name'" in text


def test_unreadable_files(tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(TaxonomyError, match="not valid JSON"):
        load_taxonomy(tmp_path / "bad.json")
    with pytest.raises(TaxonomyError, match="cannot read"):
        load_taxonomy(tmp_path / "missing.json")
    (tmp_path / "empty.json").write_text('{"domains": []}')
    with pytest.raises(TaxonomyError, match="non-empty 'domains'"):
        load_taxonomy(tmp_path / "empty.json")
