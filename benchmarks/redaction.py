"""Benchmark name redaction on the labelled name-mention set (`benchmarks/data/name_mentions.jsonl`).

Each note marks its name mentions with `[[...]]`; the roster is every `child_name` and `educator_name` of the
set, as the data assets build it. A mention counts as removed when every word it touches is replaced; a
non-name capitalised word (sentence starts, characters, brands, places, curriculum terms) counts as
over-redacted when it is replaced. Prints recall and over-redaction by half (odd lines: development, even:
held out), by style and by tag, then the misses.

    python benchmarks/redaction.py [--misses 40]
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from obs_platform.data.redaction import Redactor, Roster

SET = Path(__file__).resolve().parent / "data" / "name_mentions.jsonl"
_MENTION = re.compile(r"\[\[(.+?)\]\]")
_WORD = re.compile(r"\[[A-Z]+(?:_\d+)?\]|[^\W\d_]+(?:['’][^\W\d_]+)*(?:-[^\W\d_]+)*|\S")


@dataclass
class Tally:
    mentions: int = 0
    removed: int = 0
    capitalised: int = 0
    over_redacted: int = 0
    misses: list[str] = field(default_factory=list)
    over: list[str] = field(default_factory=list)

    def add(self, other: Tally) -> None:
        self.mentions += other.mentions
        self.removed += other.removed
        self.capitalised += other.capitalised
        self.over_redacted += other.over_redacted
        self.misses += other.misses
        self.over += other.over

    def row(self) -> dict[str, object]:
        return {
            "mentions": self.mentions,
            "recall": round(self.removed / self.mentions, 4) if self.mentions else None,
            "non-name capitalised": self.capitalised,
            "over-redaction": round(self.over_redacted / self.capitalised, 4) if self.capitalised else None,
        }


def plain_and_spans(note: str) -> tuple[str, list[tuple[int, int]]]:
    """The note without markup, and the character span of each mention in it."""
    plain, spans, last = [], [], 0
    length = 0
    for match in _MENTION.finditer(note):
        plain.append(note[last : match.start()])
        length += match.start() - last
        spans.append((length, length + len(match.group(1))))
        plain.append(match.group(1))
        length += len(match.group(1))
        last = match.end()
    plain.append(note[last:])
    return "".join(plain), spans


def score(plain: str, spans: list[tuple[int, int]], redacted: str, note_id: str) -> Tally:
    words = [(m.group(0), m.start(), m.end()) for m in _WORD.finditer(plain)]
    after = [m.group(0) for m in _WORD.finditer(redacted)]
    kept = [False] * len(words)
    matcher = difflib.SequenceMatcher(a=[w for w, _, _ in words], b=after, autojunk=False)
    for block in matcher.get_matching_blocks():
        for k in range(block.size):
            kept[block.a + k] = True
    tally = Tally()
    in_mention = [any(s < end and start < e for s, e in spans) for _, start, end in words]
    for s, e in spans:
        tally.mentions += 1
        touched = [i for i, (_, start, end) in enumerate(words) if s < end and start < e]
        if touched and not any(kept[i] for i in touched):
            tally.removed += 1
        else:
            tally.misses.append(f"{note_id}: {plain[s:e]!r} in …{plain[max(0, s - 40) : e + 40]!r}…")
    for i, (word, start, _) in enumerate(words):
        if in_mention[i] or not word[:1].isupper() or not word[:1].isalpha() or word in ("I",):
            continue
        tally.capitalised += 1
        if not kept[i]:
            tally.over_redacted += 1
            tally.over.append(f"{note_id}: {word!r} in …{plain[max(0, start - 30) : start + 40]!r}…")
    return tally


def score_groups() -> dict[str, Tally]:
    """Redact the whole set with the data set's roster and tally it overall, by half, style and tag."""
    records = [json.loads(line) for line in SET.read_text(encoding="utf-8").splitlines() if line.strip()]
    roster = Roster.from_names([r["child_name"] for r in records], [r.get("educator_name") for r in records])
    plains = [plain_and_spans(r["note"]) for r in records]
    redacted = Redactor(roster).redact_many([p for p, _ in plains], [r["child_name"] for r in records])
    groups: dict[str, Tally] = defaultdict(Tally)
    for index, (record, (plain, spans), out) in enumerate(zip(records, plains, redacted)):
        tally = score(plain, spans, out, record["id"])
        half = "development (odd)" if index % 2 else "held out (even)"
        for key in ["all", half, f"style: {record['style']}", *[f"tag: {t}" for t in record.get("tags", [])]]:
            groups[key].add(tally)
    return groups


def score_set() -> Tally:
    return score_groups()["all"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--misses", type=int, default=40, help="how many misses and over-redactions to list")
    args = parser.parse_args()
    groups = score_groups()
    table = pd.DataFrame({k: v.row() for k, v in groups.items()}).T
    print(table.to_markdown())
    everything = groups["all"]
    print(f"\nmissed mentions ({len(everything.misses)}):")
    print("\n".join(everything.misses[: args.misses]))
    print(f"\nover-redacted words ({len(everything.over)}):")
    print("\n".join(everything.over[: args.misses]))


if __name__ == "__main__":
    main()
