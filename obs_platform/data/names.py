"""Is this word a person's name? The word lists and rules the redactor decides with.

A roster only knows the names in a data set's name fields; notes also name siblings, friends, parents and
staff that no field holds, from every culture, as nicknames, in lower case, with possessives. So a word is
taken for a name by what it is not as much as by what it is:

- a roster name (any case) or a given name of the shipped lexicon (capitalised, or in lower case when it is
  not also an English word) is a name;
- a capitalised word that is neither an English word (SCOWL's British English list) nor a word of the
  taxonomy nor a known non-person (characters, brands, places, festivals, acronyms in `not_people.txt`) is
  a name: most names of other cultures, unusual and invented names, surnames;
- a word after a title (Mrs, Dr, Nana, Auntie, ...) is a name, and so is a capitalised word straight after a
  name (a surname that is also a word: "Rose Baker");
- a given name that is also an English word (Rose, Will, Mark, Summer) is a name when capitalised inside a
  sentence, and at the start of a sentence only when a verb or a possessive follows ("Grace poured ...",
  "Will's coat", not "Will you ...", "Mark making").

Errors cost unequally: a missed name leaks a child to a cloud service, a redacted word costs a little
accuracy. The rules lean to recall.

No named-entity model: the spaCy English pipelines on PyPI are third-party re-uploads of the official models
(their provenance cannot be checked, for a privacy control), and a CPU pipeline would take about an hour per
million notes on two cores, against seconds for these rules.
"""

from __future__ import annotations

import gzip
import json
import re
from dataclasses import dataclass
from enum import Enum
from functools import cache
from importlib import resources

# Titles and the words families call relatives by, in the languages of UK settings: a name follows them
# ("Mrs Okafor", "Babcia Halina", "Auntie Funmi"), and on their own they are not names.
TITLES = frozenset(
    "mr mrs ms miss mx dr mister master madam sir nana nan nanna nanny gran granny grandma grandad grandpa "
    "grandmother grandfather auntie aunty aunt uncle cousin baba mama papa mum mummy mammy mom mommy dad daddy "
    "babcia dziadek avó avô vovó vovô avozinha dadi dada nani nanu abba abbu ammi ammu amma appa thatha paati "
    "yiayia yaya papou tita tito lola lolo tata hooyo aabo abo anneanne babaanne dede teyze amca papi mami "
    "abuela abuelo abuelita abuelito farmor farfar mormor morfar oma opa omi opi nonna nonno bibi babu "
    "jiddo teta sitti khala khalti khalu chacha chachi mamu phupho bà ông mémé mamie papy pépé "
    "halmeoni harabeoji obaachan ojiichan nainai yeye laolao popo".split()
)
_MONTH_NAMES = frozenset({"april", "may", "june", "august", "summer", "autumn", "winter", "spring"})
_MONTH_CONTEXT = re.compile(
    r"\b(?:in|on|of|since|until|till|during|last|next|this|by|early|late|mid)\s+(?:the\s+)?$", re.I
)
_ABBREVIATED_TITLES = frozenset({"mr", "mrs", "ms", "mx", "dr"})
_TITLE_WORD_BEFORE = re.compile(r"([^\W\d_]+)(\.?)[ \t]+$")
# After a sentence-initial given name that is also a word, these say it is the word ("Will you", "Hope so").
_ARTICLES = frozenset({"the", "a", "an", "this", "that", "my", "his", "her", "their", "our", "your"})
_NOT_A_SUBJECT = frozenset("you we i they it there your our this that the a an be not so to of me".split())
# The text before a sentence's first word ends so; callers put a line break before a note's first word.
_SENTENCE_END = re.compile(r"[.!?…:;\n•\-–—*(\[\"“‘'][\s\"“‘'(\[]*$")
ALL_CAPS_ACRONYM_MAX = 4


class Verdict(Enum):
    NAME = "name"
    WORD = "word"
    AMBIGUOUS = "ambiguous"  # a given name that is also an English word: context decides
    UNKNOWN_LOWER = "unknown lower case"  # a lower-case word no list knows: a name where a name stands
    ROSTER_WORD = "roster word"  # a roster name that is also a word (King, Autumn): a name but for "the King"


def _lines(name: str) -> list[str]:
    path = resources.files("obs_platform.data") / name
    if name.endswith(".gz"):
        with gzip.open(path.open("rb"), "rt", encoding="utf-8") as f:
            text = f.read()
    else:
        text = path.read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


@cache
def english_words() -> frozenset[str]:
    return frozenset(_lines("english_words.txt.gz"))


@cache
def given_names() -> frozenset[str]:
    return frozenset(w.lower() for line in _lines("given_names.txt") for w in line.split())


@cache
def _not_people() -> tuple[frozenset[str], frozenset[tuple[str, ...]]]:
    words: set[str] = set()
    phrases: set[tuple[str, ...]] = set()
    in_phrases = False
    for line in _lines("not_people.txt"):
        if line == "[phrases]":
            in_phrases = True
        elif in_phrases:
            phrases.add(tuple(line.lower().split()))
        else:
            words.update(line.lower().split())
    return frozenset(words), frozenset(phrases)


def not_people() -> frozenset[str]:
    return _not_people()[0]


def non_name_phrases() -> frozenset[tuple[str, ...]]:
    return _not_people()[1]


@cache
def taxonomy_words() -> frozenset[str]:
    """Words of the shipped taxonomy's texts: curriculum vocabulary is never a name."""
    body = json.loads((resources.files("obs_platform.taxonomy") / "learningdomains.json").read_text("utf-8"))
    words: set[str] = set()

    def walk(value: object) -> None:
        if isinstance(value, str):
            words.update(w.lower() for w in re.findall(r"[^\W\d_]+", value))
        elif isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)

    walk(body)
    return frozenset(words) - given_names()


@cache
def lower_case_given_names() -> frozenset[str]:
    """Lexicon names matched in lower case too: those that are not also English words ("amara", not "rose")."""
    return frozenset(n for n in given_names() - not_people() if n not in english_words() and len(n) > 2)


def core(token: str) -> str:
    """The word without a possessive ending, in lower case: "Kwame's" → "kwame", "Idris'" → "idris"."""
    low = token.lower().replace("’", "'")
    if low.endswith("'s"):
        return low[:-2]
    return low.rstrip("'")


@dataclass(frozen=True)
class NameRules:
    """The decision for one data set: `roster` holds its name tokens (lower case), `any_case` those matched
    whatever their case (roster names that are not everyday words)."""

    roster: frozenset[str]
    any_case: frozenset[str]

    def verdict(self, token: str) -> Verdict:
        """What the word is on its own, before context (cached by the caller: words repeat)."""
        low = core(token)
        if low in self.roster and (low in self.any_case or not token[:1].islower()):
            return Verdict.NAME if low in self.any_case else Verdict.ROSTER_WORD
        first = token[:1]
        if low in TITLES or low.startswith("i'"):
            return Verdict.WORD
        if first.islower():
            if low in lower_case_given_names() or low in self.any_case:
                return Verdict.NAME
            if low in given_names():
                return Verdict.UNKNOWN_LOWER  # "hope", "river": in a hurried note, a name where a name stands
            # "kofis coat": a possessive written without its apostrophe.
            stem = low[:-1] if low.endswith("s") else ""
            if stem and low not in english_words() and (stem in self.any_case or stem in lower_case_given_names()):
                return Verdict.NAME
            return Verdict.UNKNOWN_LOWER if is_unknown_lower(low) else Verdict.WORD
        if not first.isupper():
            return Verdict.NAME  # a script without case (Arabic, Han, Devanagari): no dictionary here knows it
        if low in not_people():
            return Verdict.WORD
        if low in given_names():
            return Verdict.AMBIGUOUS if low in english_words() else Verdict.NAME
        if all(_is_word(part) for part in low.split("-")):  # "Dual-language" too
            return Verdict.WORD
        if token.isupper() and len(low) <= ALL_CAPS_ACRONYM_MAX:
            return Verdict.WORD  # PSED, SEN, TV: acronyms; ALL-CAPS names of the lexicon were caught above
        return Verdict.NAME

    def in_any_phrase(self, token: str) -> bool:
        """Whether a non-name phrase holds the word (else a NAME verdict needs no context)."""
        return bool(_phrases_with(core(token)))

    @staticmethod
    def never_a_name(verdict: Verdict, token: str) -> bool:
        """Whether no context can make the word a name: a title ("Mrs": the name is the next word) or an everyday
        word in lower case."""
        return verdict is Verdict.WORD and (token[:1].islower() or core(token) in TITLES)

    def is_name(self, verdict: Verdict, token: str, before: str, after: str, after_name: bool) -> bool:
        """Context: `before`/`after` are the text around the word, `after_name` says a name precedes it with
        only a space between (a surname). Cheap checks first: this runs for a few words of most notes."""
        low = core(token)
        if self.never_a_name(verdict, token) or (verdict is Verdict.WORD and not before[-1:].isspace()):
            return False  # a word no title or name can precede
        phrases = _phrases_with(low)
        if phrases and _in_phrase(phrases, _words(before[-40:])[-3:], low, _words(after[:40])[:3]):
            return False
        last = _TITLE_WORD_BEFORE.search(before[-24:])
        previous = last.group(1).lower() if last else ""
        # "Mrs. Okafor" and "Mrs Okafor", but not "her nonna. She".
        titled = previous in TITLES and (not last.group(2) or previous in _ABBREVIATED_TITLES)
        if titled and verdict is not Verdict.UNKNOWN_LOWER:
            return True
        if verdict is Verdict.NAME:
            return True
        if verdict is Verdict.UNKNOWN_LOWER:
            return titled or after_name or _name_position(low, before, after)
        if not token[:1].isupper():
            return False
        if after_name and verdict in (Verdict.AMBIGUOUS, Verdict.ROSTER_WORD):
            return True
        if after_name and verdict is Verdict.WORD and low in english_words() and len(low) > 1 and not token.isupper():
            return low not in _FUNCTION_WORDS and low not in not_people()
        if verdict not in (Verdict.AMBIGUOUS, Verdict.ROSTER_WORD):
            return False
        if previous in _ARTICLES:
            return False  # "the Star", "a King": a thing, not a person
        if low in _MONTH_NAMES and _MONTH_CONTEXT.search(before[-20:]):
            return False
        if verdict is Verdict.ROSTER_WORD or not _sentence_start(before):
            return True
        # Sentence-initial: "Grace poured", "Will's coat" are names; "Will you", "Hope so" are not.
        following = _first_word(after)
        return following not in _NOT_A_SUBJECT


def _words(text: str) -> tuple[str, ...]:
    return tuple(w.lower() for w in _WORDS.findall(text))


def _first_word(text: str) -> str:
    match = _FIRST_WORD.match(text)
    return match.group(1).lower() if match else ""


_WORDS = re.compile(r"[^\W\d_]+(?:['’\-][^\W\d_]+)*|[+&]")
_WORD_OR_DIGIT = re.compile(r"[^\W_]+|[+&]")  # "2" and "4" stand for words in hurried notes
_FIRST_WORD = re.compile(r"[^\w+&]*([^\W\d_]+(?:['’\-][^\W\d_]+)*|[+&])")
# Words around a lower-case name in a hurried note: "w kofi", "kofi n amara", "kofis mum", "told kofi".
# Words around a lower-case name in a hurried note: "w kofi", "kofi n amara", "kofis mum", "told kofi", and
# "2"/"4" for "to"/"for" ("waved 2 bohdan"). The redactor marks the words in these places; the rules decide.
BEFORE_A_NAME = (
    frozenset(
        "w with n and told to helped showed asked gave for from by sister brother sis bro friend friends cousin baby "
        "2 4 + &".split()
    )
    | TITLES
)
AFTER_A_NAME = frozenset("n and said says was is has had did wanted wants".split())


def _is_word(low: str) -> bool:
    return low in english_words() or low in taxonomy_words()


def is_unknown_lower(low: str) -> bool:
    """A lower-case word of letters that no list knows and that is not a hurried spelling of a word
    ("playin", "diggin", "wout")."""
    if len(low) < 3 or not low.isalpha() or low in not_people() or _is_word(low):
        return False
    hurried_spellings = (
        low + "g",  # playin
        low + "e",
        low.rstrip("s"),
        low.replace("z", "s"),
        low[:-1] + "ed",  # playd
        low[:-1] + "'" + low[-1:],  # didnt, im
        low[:-2] + "'" + low[-2:],  # ive, youre
    )
    return not any(_is_word(w) for w in hurried_spellings)


# Where a hurried note's sentence starts: lower-case words after a bracket or a quote are not taken for names.
_LOWER_SENTENCE_END = re.compile(r"(?:[.!?…\n]|\s-)\s*$")


def _sentence_start(before: str) -> bool:
    return _SENTENCE_END.search(before[-12:]) is not None


def _name_position(low: str, before: str, after: str) -> bool:
    previous = _WORD_OR_DIGIT.findall(before[-24:])[-1:]
    if previous and previous[0] in BEFORE_A_NAME:
        return True
    following = _first_word(after)
    if following in AFTER_A_NAME or following in ("+", "&") or (following.endswith("ed") and len(following) > 3):
        return True
    if low.endswith("s") and following in TITLES:
        return True  # "bjorns mum"
    return _LOWER_SENTENCE_END.search(before[-12:]) is not None


@cache
def _phrase_index() -> dict[str, tuple[tuple[str, ...], ...]]:
    index: dict[str, list[tuple[str, ...]]] = {}
    for phrase in non_name_phrases():
        for word in set(phrase):
            index.setdefault(word, []).append(phrase)
    return {word: tuple(phrases) for word, phrases in index.items()}


STAND_IN = "Placeholdername"  # what a placeholder reads as when redacted text is scanned again: a name-like word
STAND_IN_WORD = STAND_IN.lower()


def _phrases_with(low: str) -> tuple[tuple[str, ...], ...]:
    return _phrase_index().get(low, ())


def _in_phrase(
    phrases: tuple[tuple[str, ...], ...], previous: tuple[str, ...], low: str, following: tuple[str, ...]
) -> bool:
    """Whether the word is part of one of `phrases` ("Mark making", "Baby Bear", "Mr Tickle"). A placeholder's
    stand-in matches any word: re-read after redaction, "[CHILD_2] Goats Gruff" (a child called Billy on the
    roster) is still the story."""
    window = (*previous, low, *following)
    at = len(previous)
    for phrase in phrases:
        n = len(phrase)
        for start in range(max(0, at - n + 1), at + 1):
            part = window[start : start + n]
            if len(part) == n and all(w in (p, STAND_IN_WORD) for w, p in zip(part, phrase)):
                return True
    return False


_FUNCTION_WORDS = frozenset(
    "a an the and or but then so he she they we i you it is was are were this that these those there here "
    "today yesterday tomorrow now next later after before when while then also very good well yes no please "
    "thank thanks look more".split()
)
