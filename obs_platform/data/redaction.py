"""Replace personal data in observation text by placeholders before anything leaves the machine.

Names come from a roster: every child and adult name in the data set's name fields (plus, at serving
time, the `child_name` of the request), and a built-in lexicon of common given names, so a child named in
a note is caught even when no record carries their name in a field. E-mail addresses and phone numbers
are found by pattern.

Placeholders are stable: the same input always gives the same output, the observed child is always
`[CHILD]`, and within one record each other person keeps one placeholder (`[CHILD_2]`, `[ADULT]`,
`[ADULT_2]`, numbered by first appearance). Numbering per record, not per person across the data set,
keeps placeholders from becoming a pseudonym that could be joined back to a child.

Case: a roster name from the data is matched whatever its case ("amara"); a lexicon name, or a roster name
that is also an everyday word ("Daisy", "Max", "Hall"), only when capitalised, so "a daisy chain" and
"max 5 mins" survive.

Speed: a million notes must redact in seconds, and a per-note Python scan costs tens of microseconds
here. So names are found for all notes at once by one RE2 pattern (pyarrow compute, linear time however
many names), which wraps each name in markers; Python then only numbers the marked names.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from importlib import resources

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from obs_platform.parallel import map_slices

# A name token: letters, optionally joined by an apostrophe or hyphen (O'Brien, Lily-Mae).
_TOKEN = re.compile(r"[^\W\d_]+(?:['’\-][^\W\d_]+)*")
_EMAIL = r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}"
_PHONE = re.compile(r"(?<![\w+])(?:\+\d{1,3}[\s.\-]?)?(?:\(?\d{2,5}\)?[\s.\-]?){2,4}\d{2,4}(?!\w)")
_MAYBE_PHONE = r"\d{3}[\s.\-)]?\d{3}"
_MARK = "\x01"
_MARKED = re.compile(f"{_MARK}([^{_MARK}]*){_MARK}")
_TITLE_BEFORE = re.compile(r"\b(?:mrs|mr|ms|miss|mx|dr|mister)\.?\s+$", re.IGNORECASE)
_REPEATED_PLACEHOLDER = re.compile(r"(\[[A-Z]+(?:_\d+)?\])(?:\s+\1)+")
PLACEHOLDER = re.compile(r"\[(?:CHILD|ADULT|EMAIL|PHONE)(?:_\d+)?\]")
BULK_ROWS = 2000  # from here on, Arrow's RE2 in threads beats Python's engine despite compiling per call
MIN_PHONE_DIGITS = 10
MAX_PHONE_DIGITS = 13


def _word_list(name: str) -> frozenset[str]:
    text = (resources.files("obs_platform.data") / name).read_text(encoding="utf-8")
    return frozenset(w.lower() for line in text.splitlines() if not line.startswith("#") for w in line.split())


COMMON_WORDS = _word_list("common_words.txt")
GIVEN_NAMES = _word_list("given_names.txt")


def name_tokens(full_name: str) -> list[str]:
    """`"Lily-Mae O'Brien"` → `["lily-mae", "lily", "mae", "o'brien"]` (lower case)."""
    tokens: list[str] = []
    for word in _TOKEN.findall(full_name.lower().replace("’", "'")):
        tokens.append(word)
        if "-" in word:
            tokens.extend(part for part in word.split("-") if part)
    return tokens


@dataclass(frozen=True)
class Roster:
    """The names to redact, as lower-case tokens: children and adults from the data, and the lexicon."""

    children: frozenset[str] = frozenset()
    adults: frozenset[str] = frozenset()
    people: tuple[tuple[str, ...], ...] = field(default=(), compare=False)
    lexicon: frozenset[str] = GIVEN_NAMES

    @classmethod
    def from_names(cls, child_names: Iterable[str | None], adult_names: Iterable[str | None] = ()) -> Roster:
        child_people = {tuple(name_tokens(n)) for n in child_names if isinstance(n, str) and n.strip()}
        adult_people = {tuple(name_tokens(n)) for n in adult_names if isinstance(n, str) and n.strip()}
        children = frozenset(t for p in child_people for t in p)
        adults = frozenset(t for p in adult_people for t in p) - children
        return cls(children=children, adults=adults, people=tuple(sorted(child_people | adult_people)))

    def with_child(self, child_name: str | None) -> Roster:
        """The roster plus one more child (a serving request's `child_name`)."""
        if not child_name or not child_name.strip():
            return self
        tokens = tuple(name_tokens(child_name))
        return Roster(
            children=self.children | frozenset(tokens),
            adults=self.adults - frozenset(tokens),
            people=self.people + (tokens,),
            lexicon=self.lexicon,
        )

    def __len__(self) -> int:
        return len(self.people)

    def to_json(self) -> bytes:
        """The data set's names (not the lexicon, which ships with the code), for the endpoint to load."""
        body = {
            "children": sorted(self.children),
            "adults": sorted(self.adults),
            "people": [list(p) for p in self.people],
        }
        return json.dumps(body).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Roster:
        body = json.loads(data)
        return cls(
            children=frozenset(body["children"]),
            adults=frozenset(body["adults"]),
            people=tuple(tuple(p) for p in body["people"]),
        )


def _alternation(tokens: Iterable[str]) -> str:
    # RE2 takes the first alternative that matches: longest first, so "lily-mae" wins over "lily".
    return "|".join(re.escape(t).replace("'", "['’]") for t in sorted(tokens, key=lambda t: (-len(t), t)))


def _capitalised_forms(token: str) -> set[str]:
    parts = re.split(r"(['’\-])", token)
    title = "".join(p.capitalize() if p not in ("'", "’", "-") else p for p in parts)
    return {token.capitalize(), title, token.upper()}


class Redactor:
    def __init__(self, roster: Roster):
        self.roster = roster
        any_case = (roster.children | roster.adults) - COMMON_WORDS
        capitalised = ((roster.children | roster.adults) & COMMON_WORDS) | (roster.lexicon - any_case)
        alternatives = []
        if any_case:
            alternatives.append(f"(?i:{_alternation(any_case)})")
        if capitalised:
            alternatives.append(_alternation({form for t in capitalised for form in _capitalised_forms(t)}))
        # \b is ASCII in RE2: names that start or end with another letter (Zoë) use the slow exact path.
        # One RE2 pass marks e-mail addresses and names alike; an address comes first so that "amara.o@..."
        # is marked whole, not as a name.
        names = rf"\b(?:{'|'.join(alternatives)})\b" if alternatives else None
        self._pattern: str = f"{_EMAIL}|{names}" if names else _EMAIL
        self._outside_ascii = sorted(t for t in any_case | capitalised if not (t[0].isascii() and t[-1].isascii()))
        self._exact = {t: _exact_pattern(t, t not in any_case) for t in self._outside_ascii}
        self._exact_candidates = f"(?i)({_alternation(self._outside_ascii)})" if self._outside_ascii else None
        self._person_of: dict[str, tuple[str, ...]] = {}
        for person in roster.people:
            for token in person:
                # A token shared by several people (two Amaras) identifies none of them: key it by itself.
                self._person_of[token] = person if token not in self._person_of else (token,)

    @property
    def known_tokens(self) -> frozenset[str]:
        """Roster tokens found whatever their case: a request's child among them needs no new roster
        (a lexicon name is only found capitalised, so it does not count)."""
        return self.roster.children | self.roster.adults

    # ----- batch redaction -----------------------------------------------------------------------
    def redact_many(self, texts: Sequence[str] | pd.Series, subject_names: Sequence[str | None]) -> list[str]:
        """Redact notes; `subject_names[i]` is the child observed in note i (becomes `[CHILD]`)."""
        if len(texts) != len(subject_names):
            raise ValueError("one subject name per text")
        if len(texts) == 0:
            return []
        array = pa.array(texts, type=pa.large_string())
        if isinstance(array, pa.ChunkedArray):
            array = array.combine_chunks()
        array = self._mark_names(array)
        marked = pc.match_substring(array, _MARK).to_pylist()
        maybe_phone = pc.match_substring_regex(array, _MAYBE_PHONE).to_pylist()
        out = array.to_pylist()
        for i, text in enumerate(out):
            if maybe_phone[i]:
                text = _PHONE.sub(_phone_placeholder, text)
            if marked[i]:
                text = self._number_names(text, subject_names[i])
            out[i] = text
        return out

    def redact(self, text: str, subject_name: str | None = None) -> str:
        return self.redact_many([text], [subject_name])[0]

    @cached_property
    def _compiled(self) -> re.Pattern[str]:
        # Python's \b knows Unicode letters, so names like Zoë need no separate pass on this path.
        return re.compile(self._pattern)

    def _mark_names(self, array: pa.Array) -> pa.Array:
        if len(array) < BULK_ROWS:
            # Arrow compiles its RE2 pattern on every call (~20 ms for a full roster): a request's few notes
            # go through Python's engine with the pattern compiled once per redactor instead.
            marked = [self._compiled.sub(lambda m: f"{_MARK}{m.group(0)}{_MARK}", v) for v in array.to_pylist()]
            return pa.array(marked, type=pa.large_string())
        pattern, replacement = self._pattern, rf"{_MARK}\0{_MARK}"
        array = map_slices(
            array, lambda part: pc.replace_substring_regex(part, pattern=pattern, replacement=replacement)
        )
        if self._exact_candidates is None:
            return array
        where = pc.match_substring_regex(array, self._exact_candidates)
        if not pc.any(where).as_py():
            return array
        values = array.to_pylist()
        for i in [i for i, hit in enumerate(where.to_pylist()) if hit]:
            for pattern in self._exact.values():
                values[i] = pattern.sub(rf"{_MARK}\g<0>{_MARK}", values[i])
        return pa.array(values, type=pa.large_string())

    def _number_names(self, text: str, subject_name: str | None) -> str:
        """Replace each marked name by its placeholder; `text.split(MARK)` puts the names at odd positions."""
        subject = _subject_tokens(subject_name) if isinstance(subject_name, str) else frozenset()
        parts = text.split(_MARK)
        labels: dict[tuple[str, ...], str] = {}
        # With no known subject, the first child named is taken to be the one observed.
        counters = {"CHILD": 1 if subject else 0, "ADULT": 0}
        for i in range(1, len(parts), 2):
            if "@" in parts[i]:
                parts[i] = "[EMAIL]"
                continue
            token = parts[i].lower().replace("’", "'")
            if token in subject:
                parts[i] = "[CHILD]"
                continue
            person = self._person_of.get(token, (token,))
            if person not in labels:
                titled = _TITLE_BEFORE.search(parts[i - 1][-12:]) is not None
                kind = (
                    "ADULT"
                    if token in self.roster.adults or (titled and token not in self.roster.children)
                    else "CHILD"
                )
                counters[kind] += 1
                labels[person] = f"[{kind}]" if counters[kind] == 1 else f"[{kind}_{counters[kind]}]"
            parts[i] = labels[person]
        text = "".join(parts)
        return _REPEATED_PLACEHOLDER.sub(r"\1", text) if "] [" in text else text

    # ----- audit ---------------------------------------------------------------------------------
    def names_in(self, texts: Sequence[str]) -> dict[str, int]:
        """Roster names present in `texts` as names, with how many texts hold each (placeholders ignored)."""
        if not texts:
            return {}
        array = pc.replace_substring_regex(pa.array(texts, type=pa.large_string()), PLACEHOLDER.pattern, " ")
        array = self._mark_names(array)
        counts: dict[str, int] = {}
        hits = pc.match_substring(array, _MARK).to_pylist()
        for text, hit in zip(array.to_pylist(), hits):
            if hit:
                for token in {m.lower() for m in _MARKED.findall(text) if "@" not in m}:
                    counts[token] = counts.get(token, 0) + 1
        return counts


@lru_cache(maxsize=4096)
def _subject_tokens(subject_name: str) -> frozenset[str]:
    return frozenset(name_tokens(subject_name))


def _exact_pattern(token: str, capitalised_only: bool) -> re.Pattern[str]:
    if capitalised_only:
        body = "|".join(sorted(map(re.escape, _capitalised_forms(token))))
        return re.compile(rf"(?<![^\W\d_])(?:{body})(?![^\W\d_])")
    return re.compile(rf"(?<![^\W\d_]){re.escape(token)}(?![^\W\d_])", re.IGNORECASE)


def _phone_placeholder(match: re.Match[str]) -> str:
    digits = sum(ch.isdigit() for ch in match.group(0))
    return "[PHONE]" if MIN_PHONE_DIGITS <= digits <= MAX_PHONE_DIGITS else match.group(0)


def surviving_names(redactor: Redactor, texts: Iterable[str]) -> dict[str, int]:
    """Roster names still present in texts (an audit: must be empty after redaction)."""
    return redactor.names_in(list(texts))


def contains_contact_details(text: str) -> bool:
    """True when an e-mail address or a phone number survives in `text`."""
    if re.search(_EMAIL, text):
        return True
    return any(
        MIN_PHONE_DIGITS <= sum(c.isdigit() for c in m.group(0)) <= MAX_PHONE_DIGITS for m in _PHONE.finditer(text)
    )
