"""Replace personal data in observation text by placeholders before anything leaves the machine.

Names: the roster (every child and adult name in the data set's name fields, plus at serving time the
request's `child_name`), a lexicon of given names, and the rules in `names` for names no list knows
(capitalised words no dictionary knows, words after titles, names by position in hurried notes). E-mail
addresses and phone numbers are found by pattern.

Placeholders are stable: the same input always gives the same output, the observed child is always
`[CHILD]`, and within one record each other person keeps one placeholder (`[CHILD_2]`, `[ADULT]`,
`[ADULT_2]`, numbered by first appearance; a surname after a given name shares it). Numbering per record,
not per person across the data set, keeps placeholders from becoming a pseudonym that could be joined back.

Speed: a million notes must redact in seconds. RE2 passes over whole columns (pyarrow compute) wrap every
candidate word in markers; Python decides which candidates are names for many notes at once (cached verdicts,
list comprehensions; only words whose context matters go through the rules) and numbers them, in forked processes,
one per core, while this one marks the next block.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from itertools import accumulate, repeat

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from obs_platform.data.names import (
    AFTER_A_NAME,
    BEFORE_A_NAME,
    STAND_IN,
    STAND_IN_WORD,
    TITLES,
    NameRules,
    Verdict,
    core,
    english_words,
    lower_case_given_names,
)
from obs_platform.data.string_bytes import rows_holding, rows_matching
from obs_platform.parallel import map_slices

# A name token: letters, optionally joined by an apostrophe or hyphen (O'Brien, Lily-Mae).
_TOKEN = re.compile(r"[^\W\d_]+(?:['’\-][^\W\d_]+)*")
_MARK = "\x01"
_SEPARATOR = "\x03"  # between notes decided together; a control character, so never in a note
_EMAIL = r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}"
_EMAIL_PY = re.compile(_EMAIL)
# The words of the request-sized (Python) path: what the RE2 passes mark, with Unicode-aware boundaries.
_PY_WORD = re.compile(r"(?<!\w)[^\W\d_]+(?:['’][^\W\d_]+)*(?:-[^\W\d_]+)*(?!\w)")
# Letters outside ASCII (Zoë, Łukasz, 明): RE2's ASCII \b cannot bound them, so such notes are marked again with
# Unicode classes. Typographic punctuation (quotes, dashes, ellipsis, no-break space, £, €, bullets) is not a letter.
_OUTSIDE_ASCII_LETTERS = r"[^\x00-\x7F\x{A0}\x{A3}\x{B7}\x{2010}-\x{2027}\x{20AC}]"
# A note whose first word is in lower case (or shouted) is written in a hurry: names in it may be in lower case
# too, so its lower-case words where a name stands ("w kofi", "kofi n amara") are candidates.
_HURRIED = r"^[^A-Za-z]*(?:[a-z]|[A-Z]{2,}\b)"
_HURRIED_PY = re.compile(_HURRIED)
_BEFORE_NAME = "|".join(sorted(map(re.escape, BEFORE_A_NAME)))
_AFTER_NAME = "|".join(sorted(map(re.escape, AFTER_A_NAME | TITLES)))  # a title after: "kofis mum"
_NAME_POSITION_BEFORE = rf"(^|[.!?]\s+|\b(?:{_BEFORE_NAME})\s+|[+&,]\s*)([a-z]{{2,}}(?:['’]s)?)\b"
_NAME_POSITION_AFTER = rf"\b([a-z]+(?:['’]s)?)((?:\s+(?:{_AFTER_NAME})\b|\s*[+&]|\s+[a-z]{{2,}}ed\b))"
# A lower-case word straight after a candidate: a surname ("thao nguyen").
_NAME_POSITION_NEXT = rf"({_MARK}[A-Za-z'’\-]+{_MARK} )([a-z]{{2,}}(?:['’]s)?)\b"
_NAME_POSITIONS = (
    (_NAME_POSITION_BEFORE, f"\\1{_MARK}\\2{_MARK}"),
    (_NAME_POSITION_AFTER, f"{_MARK}\\1{_MARK}\\2"),
    (_NAME_POSITION_NEXT, f"\\1{_MARK}\\2{_MARK}"),
)
_PY_NAME_POSITIONS = tuple((re.compile(pattern), replacement) for pattern, replacement in _NAME_POSITIONS)
_TITLE_FORMS = frozenset(f for t in TITLES for f in (t, t.capitalize(), t.upper()))
_CONTROL = r"[\x00-\x08\x0B\x0C\x0E-\x1F\x7F]"
_PHONE = re.compile(r"(?<![\w+])(?:\+\d{1,3}[\s.\-]?)?(?:\(?\d{2,5}\)?[\s.\-]?){2,4}\d{2,4}(?!\w)")
_MAYBE_PHONE = r"\d{3}[\s.\-)]?\d{3}"
_WORD_BEFORE = re.compile(r"([^\W\d_]+)\.?\s+$")
_ADULT_TITLES = TITLES - {"cousin", "baby"}
_REPEATED_PLACEHOLDER = re.compile(r"(\[[A-Z]+(?:_\d+)?\])(?:\s+\1)+")
PLACEHOLDER = re.compile(r"\[(?:CHILD|ADULT|EMAIL|PHONE)(?:_\d+)?\]")
BULK_ROWS = 2000  # from here on, Arrow's RE2 in threads beats Python's engine despite compiling per call
CHUNK_NOTES = 20_000  # notes decided in one Python loop: one join and split instead of a call per note
BLOCK_NOTES = 200_000  # notes marked at once (Arrow, two threads), then decided in chunks
FIRST_BLOCK_CHUNKS = 2  # the first block is small: no core waits long for the first notes to decide
MIN_PHONE_DIGITS = 10
MAX_PHONE_DIGITS = 13


def _word_list(name: str) -> frozenset[str]:
    text = (resources.files("obs_platform.data") / name).read_text(encoding="utf-8")
    return frozenset(w.lower() for line in text.splitlines() if not line.startswith("#") for w in line.split())


COMMON_WORDS = _word_list("common_words.txt")


def name_tokens(full_name: str) -> list[str]:
    """`"Lily-Mae O'Brien"` → `["lily-mae", "lily", "mae", "o'brien", "obrien"]` (lower case)."""
    tokens: list[str] = []
    for word in _TOKEN.findall(full_name.lower().replace("’", "'")):
        tokens.append(word)
        if "-" in word:
            tokens.extend(part for part in word.split("-") if part)
        if "'" in word:
            tokens.append(word.replace("'", ""))  # "OBrien", "obrien": the name written without its apostrophe
    return tokens


@dataclass(frozen=True)
class Roster:
    """The data set's names to redact, as lower-case tokens: children and adults (the lexicon and the rules for
    names no list knows are in `names`)."""

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

    def __len__(self) -> int:
        return len(self.people)

    def person_of(self) -> dict[str, tuple[str, ...]]:
        """Each token → the person it names; a token shared by several people (two Amaras) identifies none of
        them and is keyed by itself."""
        found: dict[str, tuple[str, ...]] = {}
        for person in self.people:
            for token in person:
                found[token] = person if token not in found else (token,)
        return found

    def changed_tokens(self, other: Roster) -> frozenset[str]:
        """Tokens the two rosters treat differently (in one only, a child in one and an adult in the other, or
        another person's): a note's redaction depends on the roster only through the tokens it contains, so a
        note holding none of these is redacted the same with either roster."""
        mine, theirs = self.person_of(), other.person_of()
        tokens = mine.keys() | theirs.keys() | self.children | other.children | self.adults | other.adults
        return frozenset(
            t
            for t in tokens
            if (t in self.children, t in self.adults, mine.get(t))
            != (t in other.children, t in other.adults, theirs.get(t))
        )

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.to_json()).hexdigest()

    def to_json(self) -> bytes:
        """The data set's names, for the endpoint to load."""
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


class Redactor:
    def __init__(self, roster: Roster):
        self.roster = roster
        known = roster.children | roster.adults
        everyday = COMMON_WORDS | english_words()
        any_case = frozenset(t for t in known if t not in everyday)
        self.rules = NameRules(roster=known, any_case=any_case)
        # Candidates: capitalised words, lower-case words a list knows, and in a hurried note lower-case words
        # where a name stands; the rules in `names` then tell names from words.
        self._lower = any_case | lower_case_given_names()
        # Separate RE2 passes: one pattern for all makes RE2's automaton too large to stay fast. RE2's \\b is
        # ASCII, so notes with other letters (Zoë, Łukasz, 明) are marked again with Unicode classes (slower).
        ascii_lower = _alternation(t for t in self._lower if t.isascii())
        self._ascii_passes = (
            ("(^|[^A-Za-z0-9_\\-])([A-Z][A-Za-z]*(?:['’\\-][A-Za-z]+)*)\\b", f"\\1{_MARK}\\2{_MARK}"),
            # Not after a hyphen or an apostrophe inside a word ("T-rex", "O'Brien" are one word, capitalised
            # candidates already), but after an opening quote ("'mira!'"), as the request path reads it.
            (
                f"(^|[^{_MARK}A-Za-z0-9_'’\\-]|(?:^|[^{_MARK}A-Za-z0-9_])['’])((?:{ascii_lower})(?:['’]?s)?)\\b",
                f"\\1{_MARK}\\2{_MARK}",
            ),
        )
        letter, not_letter = r"\p{L}\p{M}", r"\p{L}\p{M}\p{N}_"
        unicode_lower = (
            f"(^|[^{_MARK}{not_letter}'’\\-]|(?:^|[^{_MARK}{not_letter}])['’])"
            f"((?:{_alternation(self._lower)})(?:['’]?s)?)($|[^{not_letter}])",
            f"\\1{_MARK}\\2{_MARK}\\3",
        )
        self._unicode_passes = (
            (
                f"(^|[^{not_letter}\\-])(\\p{{Lu}}[{letter}]*(?:['’\\-][{letter}]+)*|\\p{{Lo}}[\\p{{Lo}}\\p{{M}}]*)",
                f"\\1{_MARK}\\2{_MARK}",
            ),
            unicode_lower,
            unicode_lower,  # twice: a match takes the character after it, which the next name needs before it
        )
        self._marked_form: dict[str, str] = {}
        self._states: dict[str, Verdict | bool] = {}
        self._endings: dict[str, tuple[str, str]] = {}
        self._person_of = roster.person_of()

    @property
    def known_tokens(self) -> frozenset[str]:
        """Roster tokens: a request's child among them needs no new roster."""
        return self.roster.children | self.roster.adults

    # ----- batch redaction -----------------------------------------------------------------------
    def redact_many(self, texts: Sequence[str] | pd.Series, subject_names: Sequence[str | None]) -> list[str]:
        """Redact notes; `subject_names[i]` is the child observed in note i (becomes `[CHILD]`)."""
        return self.redact_column(texts, subject_names).to_pylist()

    def redact_column(self, texts: Sequence[str] | pd.Series, subject_names: Sequence[str | None]) -> pa.ChunkedArray:
        """`redact_many` as Arrow strings, a chunk per chunk of notes decided: a million redacted notes never become
        a million Python strings in this process."""
        if len(texts) != len(subject_names):
            raise ValueError("one subject name per text")
        chunks: list[pa.Array] = []
        if len(texts):
            array = _as_array(texts)
            subjects = list(subject_names)
            # Block by block, so that only two blocks' intermediate copies are alive at a time. The first block is
            # small: the processes deciding names wait for it alone.
            first = FIRST_BLOCK_CHUNKS * CHUNK_NOTES
            bounds = [0, *range(first, len(array), BLOCK_NOTES), len(array)]
            blocks = [array.slice(start, end - start) for start, end in zip(bounds, bounds[1:]) if end > start]
            with _forked_deciders(self, len(array)) as deciders:
                for start, block, marked in zip(bounds, blocks, self._marked_blocks(blocks)):
                    chunks += self._replace_block(marked, subjects[start : start + len(block)], deciders)
        return pa.chunked_array(chunks, type=pa.large_string())

    def _marked_blocks(self, blocks: list[pa.ChunkedArray]) -> Iterator[list[str]]:
        """Each block marked; from the second block on, the next one is marked (Arrow, which releases the GIL) in
        a thread while Python decides the names of the one given."""
        if len(blocks) == 1:
            yield self._mark_block(blocks[0])
            return
        with ThreadPoolExecutor(1) as marker:
            pending = marker.submit(self._mark_block, blocks[0])
            for block in blocks[1:]:
                marked = pending.result()
                pending = marker.submit(self._mark_block, block)
                yield marked
            yield pending.result()

    def _mark_block(self, block: pa.ChunkedArray) -> list[str]:
        maybe_phone = pc.match_substring_regex(block, _MAYBE_PHONE).to_pylist()
        marked = self._mark_names(block)
        for i in [i for i, flag in enumerate(maybe_phone) if flag]:
            marked[i] = _PHONE.sub(_phone_placeholder, marked[i])
        return marked

    def _replace_block(
        self, marked: list[str], subjects: list[str | None], deciders: ProcessPoolExecutor | None
    ) -> list[pa.Array]:
        starts = range(0, len(marked), CHUNK_NOTES)
        if deciders is None:
            return [pa.array(self._replace_names(*_chunk(marked, subjects, s)), pa.large_string()) for s in starts]
        # Python's share of the work holds the GIL: the forked processes decide every chunk, this one collects them
        # in order while its thread marks the next block. (Deciding here as well left this process the slowest,
        # its decisions contending with the marking, and the other process idle nearly half the time.)
        decided = [deciders.submit(_replace_in_forked_process, *_chunk(marked, subjects, start)) for start in starts]
        return [_split_joined(chunk.result()) for chunk in decided]

    def redact(self, text: str, subject_name: str | None = None) -> str:
        return self.redact_many([text], [subject_name])[0]

    def _mark_names(self, array: pa.ChunkedArray) -> list[str]:
        """The notes with every candidate word and e-mail address wrapped in markers."""
        if len(array) < BULK_ROWS:
            # Arrow compiles its RE2 pattern on every call: a request's few notes take Python's engine.
            return [self._mark_python(v) for v in array.to_pylist()]
        marked = map_slices(array, lambda part: _mark_candidates(part, self._ascii_passes))
        # Only notes with bytes outside ASCII can hold letters outside it (most such bytes are typographic quotes).
        outside = rows_matching(array, _outside_ascii, _OUTSIDE_ASCII_LETTERS)
        if outside.any():
            redone = _mark_candidates(array.filter(outside), self._unicode_passes)
            marked = pc.replace_with_mask(marked, pa.array(outside), redone.combine_chunks())
        hurried = pc.match_substring_regex(array, _HURRIED).combine_chunks()
        if pc.any(hurried).as_py():
            positions = _apply(marked.filter(hurried), _NAME_POSITIONS)
            marked = pc.replace_with_mask(marked, hurried, positions.combine_chunks())
        return marked.to_pylist()

    def _mark_python(self, text: str) -> str:
        """The request-sized path: Python's Unicode-aware words, the candidates the RE2 passes mark."""
        marked = _PY_WORD.sub(self._marked_word, _EMAIL_PY.sub("[EMAIL]", text) if "@" in text else text)
        if _HURRIED_PY.search(text):
            for pattern, replacement in _PY_NAME_POSITIONS:
                marked = pattern.sub(replacement, marked)
        return marked

    def _marked_word(self, match: re.Match[str]) -> str:
        word = match.group(0)
        form = self._marked_form.get(word)
        if form is None:
            if not word[0].islower():
                form = f"{_MARK}{word}{_MARK}"
            else:
                # Lower case: the whole word if a list knows it, else its first part ("kofi-jones"), as RE2 does.
                first, dash, rest = word.partition("-")
                if self._is_lower_candidate(word):
                    form = f"{_MARK}{word}{_MARK}"
                elif dash and self._is_lower_candidate(first):
                    form = f"{_MARK}{first}{_MARK}-{rest}"
                else:
                    form = word
            self._marked_form[word] = form
        return form

    def _is_lower_candidate(self, word: str) -> bool:
        low = word.replace("’", "'")
        return any(low.endswith(ending) and low[: len(low) - len(ending)] in self._lower for ending in ("'s", "s", ""))

    def _word_state(self, word: str) -> Verdict | bool:
        """`True`: a name whatever surrounds it; `False`: a word whatever surrounds it; `Verdict.WORD`: a word
        unless a title or a name precedes it; another verdict: the rules look at the context. Cached: words repeat
        across notes."""
        state = self._states.get(word)
        if state is None:
            verdict = self.rules.verdict(word)
            if verdict is Verdict.NAME and not self.rules.in_any_phrase(word):
                state = True
            else:
                state = False if self.rules.never_a_name(verdict, word) else verdict
            self._states[word] = state
        return state

    def _decide(self, parts: list[str]) -> list[bool]:
        """For `_SEPARATOR.join(notes).split(_MARK)`, which odd parts (the marked words) are names.

        Many notes are decided at once, and most words by their cached state alone (list comprehensions, no
        Python loop per word): only words whose context could change the answer go through the rules."""
        words = parts[1::2]
        known = list(map(self._states.get, words))
        for j in [j for j, state in enumerate(known) if state is None]:
            known[j] = self._word_state(words[j])
        names = [state is True for state in known]
        word_verdict, title_forms, words_alone = Verdict.WORD, _TITLE_FORMS, (Verdict.WORD, False)  # read per word
        # A word needs its context unless it is a name or a word whatever surrounds it, or an everyday word with
        # neither a possible name (for a surname) nor a title straight before it.
        undecided = [
            j
            for j, state in enumerate(known)
            if state is not True
            and state is not False
            and (
                state is not word_verdict
                or (j and (words[j - 1] in title_forms or (known[j - 1] not in words_alone and parts[2 * j] == " ")))
            )
        ]
        for j in undecided:
            i = 2 * j + 1
            after_name = j > 0 and names[j - 1] and parts[i - 1] == " "
            before = "".join(parts[max(0, i - 3) : i])
            if _SEPARATOR in before or i <= 3:
                before = "\n" + before.rsplit(_SEPARATOR, 1)[-1]  # a note's start counts as a sentence's
            after = "".join(parts[i + 1 : i + 4]).split(_SEPARATOR, 1)[0]
            names[j] = self.rules.is_name(known[j], words[j], before, after, after_name)
        return names

    def _replace_names(self, notes: list[str], subjects: list[str | None]) -> list[str]:
        """Each marked name becomes its placeholder, numbered per note; other marked words are given back."""
        parts, note_of = _split_marked(notes)
        is_name = self._decide(parts)
        note = -1
        subject: frozenset[str] = frozenset()
        labels: dict[tuple[str, ...], str] = {}
        counters: dict[str, int] = {}
        previous_label: str | None = None
        # Locals: this loop runs for every name of a million notes.
        endings, person_of, adults, children = self._endings, self._person_of, self.roster.adults, self.roster.children
        for j in [j for j, name in enumerate(is_name) if name]:
            i = 2 * j + 1
            if note_of[j] != note:
                note = note_of[j]
                subject = _subject_tokens(subjects[note])
                # With no known subject, the first child named is taken to be the one observed.
                labels, counters, previous_label = {}, {"CHILD": 1 if subject else 0, "ADULT": 0}, None
            word = parts[i]
            ending = endings.get(word)
            if ending is None:
                ending = endings[word] = self._name_and_ending(word)
            token, suffix = ending
            if token in subject:
                parts[i] = "[CHILD]" + suffix
                previous_label = "[CHILD]"
                continue
            person = person_of.get(token) or (token,)
            label = labels.get(person)
            surname = j > 0 and is_name[j - 1] and parts[i - 1] == " " and token not in person_of
            if label is None and surname and previous_label is not None:
                label = labels[person] = previous_label  # a surname after a given name: one person
            if label is None:
                titled = self._after_adult_title(parts, i)
                kind = "ADULT" if token in adults or (titled and token not in children) else "CHILD"
                counters[kind] += 1
                label = labels[person] = f"[{kind}]" if counters[kind] == 1 else f"[{kind}_{counters[kind]}]"
            previous_label = label
            parts[i] = label + suffix
        redacted = "".join(parts).split(_SEPARATOR)
        # A placeholder repeated ("[CHILD] [CHILD]", a name and its surname) is written once: note by note, since a
        # regex over the chunk's whole text costs far more than a look for "] [" in each note.
        return [_REPEATED_PLACEHOLDER.sub(r"\1", text) if "] [" in text else text for text in redacted]

    @staticmethod
    def _after_adult_title(parts: list[str], i: int) -> bool:
        """Whether a title or a relative's word comes straight before the word: "Mrs Shah", "mum sharon"."""
        gap = parts[i - 1].rsplit(_SEPARATOR, 1)[-1]
        if gap in (" ", ". "):
            return i >= 3 and _SEPARATOR not in parts[i - 1] and parts[i - 2].lower() in _ADULT_TITLES
        if not gap[-1:].isspace():
            return False
        title = _WORD_BEFORE.search(gap[-20:])
        return title is not None and title.group(1).lower() in _ADULT_TITLES

    def _name_and_ending(self, word: str) -> tuple[str, str]:
        """`"Kwame's"` → `("kwame", "'s")`, `"kofis"` → `("kofi", "s")`: the ending stays outside the placeholder."""
        low = word.lower().replace("’", "'")
        if low.endswith("'s"):
            return low[:-2], word[-2:]
        if low.endswith("'"):
            return low[:-1], word[-1:]
        if word[:1].islower() and low not in self._lower and low.endswith("s") and low[:-1] in self._lower:
            return low[:-1], "s"
        return low, ""

    # ----- audit ---------------------------------------------------------------------------------
    def names_in(self, texts: Sequence[str]) -> dict[str, int]:
        """Names the detector finds in `texts` (roster or not), with how many texts hold each; placeholders
        are ignored. After redaction this must be empty."""
        counts: dict[str, int] = {}
        for found in self.names_per_text(texts):
            for token in found:
                counts[token] = counts.get(token, 0) + 1
        return counts

    def names_per_text(self, texts: Sequence[str]) -> list[frozenset[str]]:
        """The names the detector finds in each text, placeholders ignored."""
        if not texts:
            return []
        # A placeholder stands where a name stood: a name-like stand-in keeps the context the redactor saw.
        array = pc.replace_substring_regex(_as_array(texts), PLACEHOLDER.pattern, STAND_IN)
        stand_in = STAND_IN_WORD
        found: list[set[str]] = [set() for _ in range(len(array))]
        for start in range(0, len(array), CHUNK_NOTES):
            parts, note_of = _split_marked(self._mark_names(array.slice(start, CHUNK_NOTES)))
            for j, name in enumerate(self._decide(parts)):
                if name and stand_in not in core(parts[2 * j + 1]):  # "[CHILD]s", "[CHILD]-led" too
                    found[start + note_of[j]].add(core(parts[2 * j + 1]))
        return [frozenset(names) for names in found]


def _split_marked(notes: list[str]) -> tuple[list[str], list[int]]:
    """Marked notes as one list of parts (the marked words at odd positions), and the note of each word: the
    separators counted in the text before it."""
    parts = _SEPARATOR.join(notes).split(_MARK)
    return parts, list(accumulate(map(str.count, parts[0::2], repeat(_SEPARATOR))))


def _chunk(marked: list[str], subjects: list[str | None], start: int) -> tuple[list[str], list[str | None]]:
    return marked[start : start + CHUNK_NOTES], subjects[start : start + CHUNK_NOTES]


_FORKED_REDACTOR: Redactor | None = None


def _replace_in_forked_process(notes: list[str], subjects: list[str | None]) -> bytes:
    """The chunk's redacted notes joined by the separator, as UTF-8: one object crosses back, not thousands."""
    assert _FORKED_REDACTOR is not None
    return _SEPARATOR.join(_FORKED_REDACTOR._replace_names(notes, subjects)).encode()


def _split_joined(joined: bytes) -> pa.LargeStringArray:
    """A chunk's notes from `_replace_in_forked_process`, as Arrow strings."""
    parts = pc.split_pattern(pa.array([joined], pa.large_binary()), _SEPARATOR.encode())
    return parts.flatten().cast(pa.large_string())


@contextmanager
def _forked_deciders(redactor: Redactor, rows: int) -> Iterator[ProcessPoolExecutor | None]:
    """A pool of processes forked from this one, one per core, for batches worth it on a machine with more than one
    core. Forked, they hold this redactor without a copy being sent; they run only Python (no Arrow, whose threads
    may hold locks at the fork), and they are forked before this call starts Arrow's work."""
    global _FORKED_REDACTOR  # noqa: PLW0603 (the forked processes inherit it: nothing is pickled and sent)
    cores = os.cpu_count() or 1
    if rows < 2 * CHUNK_NOTES or cores < 2 or "fork" not in multiprocessing.get_all_start_methods():
        yield None
        return
    _FORKED_REDACTOR = redactor
    try:
        with ProcessPoolExecutor(cores, mp_context=multiprocessing.get_context("fork")) as pool:
            pool.submit(int).result()  # a pool forks all its processes at its first task
            yield pool
    finally:
        _FORKED_REDACTOR = None


def _mark_candidates(part: pa.ChunkedArray, passes: Sequence[tuple[str, str]]) -> pa.ChunkedArray:
    """E-mail addresses become `[EMAIL]` (in the notes that have an @ only: a replace costs far more than a
    match), then the marking passes."""
    at = rows_holding(part, _at_sign)
    if at.any():
        emails = pc.replace_substring_regex(part.filter(at), pattern=_EMAIL, replacement="[EMAIL]")
        part = pc.replace_with_mask(part, pa.array(at), emails.combine_chunks())
    return _apply(part, passes)


def _apply(part: pa.ChunkedArray, passes: Sequence[tuple[str, str]]) -> pa.ChunkedArray:
    for pattern, replacement in passes:
        part = pc.replace_substring_regex(part, pattern=pattern, replacement=replacement)
    return part


def _as_array(texts: Sequence[str] | pd.Series) -> pa.ChunkedArray:
    """The notes as Arrow strings, in the chunks they come in (putting a million notes into one array is a copy),
    with control characters removed: the marker is one of them, and a note carrying it would otherwise split names
    from their markers."""
    array = pa.array(texts, type=pa.large_string())
    if isinstance(array, pa.Array):
        array = pa.chunked_array([array])
    if rows_matching(array, _control_or_line_break, _CONTROL).any():
        array = pc.replace_substring_regex(array, _CONTROL, "")
    return array


def _control_or_line_break(utf8: np.ndarray) -> np.ndarray:
    return (utf8 < 0x20) | (utf8 == 0x7F)


def _outside_ascii(utf8: np.ndarray) -> np.ndarray:
    return utf8 >= 0x80


def _at_sign(utf8: np.ndarray) -> np.ndarray:
    return utf8 == ord("@")


@lru_cache(maxsize=4096)
def _subject_tokens(subject_name: str | None) -> frozenset[str]:
    return frozenset(name_tokens(subject_name)) if isinstance(subject_name, str) else frozenset()


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
