"""Replace personal data in observation text by placeholders before anything leaves the machine.

Names come from a roster: every child and adult name in the data set's name fields (plus, at serving
time, the `child_name` of the request). E-mail addresses and phone numbers are found by pattern.

Placeholders are stable: the same input always gives the same output, the observed child is always
`[CHILD]`, and within one record each other person keeps one placeholder (`[CHILD_2]`, `[ADULT]`,
`[ADULT_2]`, numbered by first appearance). Numbering per record, not per person across the data set,
keeps the placeholders from becoming a pseudonym that could be joined back to a child.

Speed matters (a million notes must redact in seconds), so a note is first reduced to the set of its
lower-cased words and intersected with the roster in C; only names actually present are then replaced,
each by a precompiled pattern.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from importlib import resources

# A word: letters, optionally joined by an apostrophe or hyphen (O'Brien, Lily-Mae), but not the
# possessive 's (Amara's → Amara).
_WORD = re.compile(r"[^\W\d_]+(?:['’\-](?!s\b)[^\W\d_]+)*")
_EMAIL = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}")
_PHONE = re.compile(r"(?<![\w+])(?:\+\d{1,3}[\s.\-]?)?(?:\(?\d{2,5}\)?[\s.\-]?){2,4}\d{2,4}(?![\w])")
_REPEATED_PLACEHOLDER = re.compile(r"(\[[A-Z]+(?:_\d+)?\])(?:\s+\1)+")
_PLACEHOLDER = re.compile(r"\[(?:CHILD|ADULT|EMAIL|PHONE)(?:_\d+)?\]")
MIN_PHONE_DIGITS = 10
MAX_PHONE_DIGITS = 13


def _load_common_words() -> frozenset[str]:
    text = (resources.files("obs_platform.data") / "common_words.txt").read_text(encoding="utf-8")
    return frozenset(w.strip().lower() for w in text.split() if w.strip() and not w.startswith("#"))


COMMON_WORDS = _load_common_words()


def name_tokens(full_name: str) -> list[str]:
    """`"Lily-Mae O'Brien"` → `["lily-mae", "lily", "mae", "o'brien"]` (lower case)."""
    tokens: list[str] = []
    for word in _WORD.findall(full_name.lower()):
        tokens.append(word)
        if "-" in word:
            tokens.extend(part for part in word.split("-") if part)
    return tokens


@dataclass(frozen=True)
class Roster:
    """The names to redact, as lower-case tokens, each tagged child or adult."""

    children: frozenset[str] = frozenset()
    adults: frozenset[str] = frozenset()
    people: tuple[tuple[str, ...], ...] = field(default=(), compare=False)

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
        )

    @property
    def tokens(self) -> frozenset[str]:
        return self.children | self.adults

    def __len__(self) -> int:
        return len(self.people)


class Redactor:
    def __init__(self, roster: Roster):
        self.roster = roster
        self._tokens = roster.tokens
        self._patterns: dict[str, re.Pattern[str]] = {}
        self._person_of: dict[str, tuple[str, ...]] = {}
        for person in roster.people:
            for token in person:
                # A token shared by several people (two Amaras) identifies none of them: key it by itself.
                self._person_of[token] = person if token not in self._person_of else (token,)

    def _pattern(self, token: str) -> re.Pattern[str]:
        pattern = self._patterns.get(token)
        if pattern is None:
            escaped = re.escape(token)
            if token in COMMON_WORDS:
                # "Daisy" the child, not "a daisy chain": only capitalised forms are names.
                variants = {token.capitalize(), token.upper(), "-".join(p.capitalize() for p in token.split("-"))}
                body = "(?:" + "|".join(sorted(map(re.escape, variants))) + ")"
                pattern = re.compile(rf"(?<![^\W\d_]){body}(?![^\W\d_])")
            else:
                pattern = re.compile(rf"(?<![^\W\d_]){escaped}(?![^\W\d_])", re.IGNORECASE)
            self._patterns[token] = pattern
        return pattern

    def names_in(self, text: str) -> list[str]:
        """Roster tokens present in `text` as names (lower case, longest first)."""
        candidates = set(_WORD.findall(text.lower())) & self._tokens
        # Hyphenated words also contain their parts (Lily-Mae → lily, mae).
        for word in [w for w in candidates if "-" in w]:
            candidates.update(p for p in word.split("-") if p in self._tokens)
        found = [t for t in candidates if self._pattern(t).search(text)]
        return sorted(found, key=lambda t: (-len(t), t))

    def redact(self, text: str, subject_name: str | None = None) -> str:
        """Redact one note; `subject_name` is the observed child, who becomes `[CHILD]`."""
        if "@" in text:
            text = _EMAIL.sub("[EMAIL]", text)
        text = _PHONE.sub(_phone_placeholder, text)
        names = self.names_in(text)
        if not names:
            return text
        subject = set(name_tokens(subject_name)) if subject_name else set()
        placeholders = _assign_placeholders(text, names, subject, self._person_of, self.roster.children)
        for token in names:
            text = self._pattern(token).sub(placeholders[token], text)
        return _REPEATED_PLACEHOLDER.sub(r"\1", text)

    def redact_many(self, texts: Sequence[str], subject_names: Sequence[str | None]) -> list[str]:
        return [self.redact(t, s) for t, s in zip(texts, subject_names, strict=True)]

    @cached_property
    def description(self) -> str:
        return f"{len(self.roster.children)} child and {len(self.roster.adults)} adult name tokens"


def _phone_placeholder(match: re.Match[str]) -> str:
    digits = sum(ch.isdigit() for ch in match.group(0))
    return "[PHONE]" if MIN_PHONE_DIGITS <= digits <= MAX_PHONE_DIGITS else match.group(0)


def _assign_placeholders(
    text: str,
    names: list[str],
    subject: set[str],
    person_of: dict[str, tuple[str, ...]],
    children: frozenset[str],
) -> dict[str, str]:
    """Number people by where they first appear, so output is deterministic and readable."""
    lowered = text.lower()
    by_position = sorted(names, key=lambda t: (lowered.find(t), t))
    labels: dict[tuple[str, ...], str] = {}
    # With no known subject, the first child named is taken to be the one observed.
    counters = {"CHILD": 1 if subject else 0, "ADULT": 0}
    placeholders: dict[str, str] = {}
    for token in by_position:
        if token in subject:
            placeholders[token] = "[CHILD]"
            continue
        person = person_of.get(token, (token,))
        if person not in labels:
            kind = "CHILD" if token in children else "ADULT"
            counters[kind] += 1
            number = counters[kind]
            labels[person] = f"[{kind}]" if number == 1 else f"[{kind}_{number}]"
        placeholders[token] = labels[person]
    return placeholders


def surviving_names(redactor: Redactor, texts: Iterable[str]) -> dict[str, int]:
    """Roster names still present in texts (an audit: must be empty after redaction)."""
    counts: dict[str, int] = {}
    for text in texts:
        for token in redactor.names_in(_PLACEHOLDER.sub(" ", text)):
            counts[token] = counts.get(token, 0) + 1
    return counts


def contains_contact_details(text: str) -> bool:
    """True when an e-mail address or a phone number survives in `text`."""
    if _EMAIL.search(text):
        return True
    return any(MIN_PHONE_DIGITS <= sum(c.isdigit() for c in m.group(0)) <= MAX_PHONE_DIGITS for m in _PHONE.finditer(text))
