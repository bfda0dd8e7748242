"""Reading generated answers back into labels: valid, repaired to the nearest label, or invalid, never a crash."""

import json
import random
import string

import pytest
from trainer.answers import LabelSpace, Tag, read_answer

SPACE = LabelSpace.from_tags(
    [
        Tag("mathematics", "Numerical Patterns", "Reception"),
        Tag("mathematics", "Number", "Three and four-year-olds"),
        Tag("communication_and_language", "Listening, Attention and Understanding", "Birth to three"),
        Tag("communication_and_language", "Speaking", "Early Learning Goal"),
        Tag("physical_development", "Gross Motor Skills", "Reception"),
    ]
)


def answer(domain="mathematics", attribute="Numerical Patterns", level="Reception", **extra) -> str:
    return json.dumps({"domain": domain, "attribute": attribute, "level": level, **extra})


def test_an_exact_answer_is_valid_with_its_secondary_tags():
    secondary = [{"domain": "communication_and_language", "attribute": "Speaking", "level": "Reception"}]
    read = read_answer(answer(secondary=secondary), SPACE)
    assert read.status == "valid" and read.problem == ""
    assert read.tag == Tag("mathematics", "Numerical Patterns", "Reception")
    assert read.secondary == (Tag("communication_and_language", "Speaking", "Reception"),)


@pytest.mark.parametrize(
    ("given", "expected", "repair"),
    [
        (answer(attribute="numerical_patterns"), Tag("mathematics", "Numerical Patterns", "Reception"), "attribute"),
        (answer(attribute="Numerical Paterns"), Tag("mathematics", "Numerical Patterns", "Reception"), "attribute"),
        (answer(level="reception"), Tag("mathematics", "Numerical Patterns", "Reception"), "level"),
        (
            answer(level="Three and four year olds"),
            Tag("mathematics", "Numerical Patterns", "Three and four-year-olds"),
            "level",
        ),
        # The attribute is the more specific name: it moves the answer to its own domain.
        (answer(attribute="Speaking"), Tag("communication_and_language", "Speaking", "Reception"), "domain"),
        (answer(domain="Mathematic"), Tag("mathematics", "Numerical Patterns", "Reception"), "domain"),
    ],
)
def test_near_misses_are_repaired_to_the_nearest_label(given, expected, repair):
    read = read_answer(given, SPACE)
    assert read.status == "repaired" and read.tag == expected
    assert repair in read.problem


def test_an_answer_cut_off_by_the_token_limit_still_names_its_label():
    cut = (
        '{"domain": "physical_development", "attribute": "Gross Motor Skills", "level": "Reception", "secondary": [{"do'
    )
    read = read_answer(cut, SPACE)
    assert read.status == "repaired" and read.tag == Tag("physical_development", "Gross Motor Skills", "Reception")
    assert "not one JSON object" in read.problem


def test_prose_around_the_json_is_ignored():
    read = read_answer("Sure! Here is the tag:\n" + answer() + "\nHope this helps.", SPACE)
    assert read.status == "valid"


@pytest.mark.parametrize(
    ("given", "reason"),
    [
        ("I think this is about maths.", "no label"),
        (answer(attribute="Juggling"), "attribute 'Juggling'"),
        (answer(level="Year 9"), "level 'Year 9'"),
        ('{"domain": "mathematics"}', "no attribute"),
        (json.dumps({"domain": "mathematics", "attribute": "Number"}), "no level"),
        ("[1, 2, 3]", "no label"),
        (json.dumps({"domain": 3, "attribute": ["x"], "level": None}), "no attribute"),
    ],
)
def test_answers_that_name_no_label_are_invalid_with_a_reason(given, reason):
    read = read_answer(given, SPACE)
    assert read.status == "invalid" and read.tag is None and not read.usable
    assert reason in read.problem


def test_a_broken_secondary_tag_is_dropped_and_the_primary_stands():
    read = read_answer(
        answer(secondary=[{"domain": "x"}, "nonsense", {"attribute": "Number", "level": "Reception"}]), SPACE
    )
    assert read.status == "valid" and read.secondary == (Tag("mathematics", "Number", "Reception"),)


def test_random_text_never_raises():
    rng = random.Random(7)
    alphabet = string.printable + '{}[]":,'
    for _ in range(2000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 120)))
        assert read_answer(text, SPACE).status in ("valid", "repaired", "invalid")


def test_the_label_space_round_trips_through_json():
    assert LabelSpace.from_dict(json.loads(json.dumps(SPACE.to_dict()))) == SPACE
