"""Reading a generated answer back into a label.

A causal LM answers in text, and text can be anything: the JSON it was taught, JSON cut off at the token
limit, a near-miss spelling of an attribute, or prose. `read_answer` never raises: it returns the label
when the answer names one exactly, the nearest valid label when the answer is close (`repaired`), or
`invalid` with the reason.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

AnswerStatus = Literal["valid", "repaired", "invalid"]
# Similarity (difflib ratio of normalised names) a near-miss needs to be repaired rather than rejected.
REPAIR_CUTOFF = 0.75
_FIELD = re.compile(r'"?\b(domain|attribute|level)\b"?\s*[:=]\s*"([^"\n]*)"?', re.IGNORECASE)


def normalise(name: str) -> str:
    return " ".join(re.sub(r"[_\-]+", " ", name).casefold().split())


@dataclass(frozen=True)
class Tag:
    domain: str
    attribute: str
    level: str


@dataclass(frozen=True)
class LabelSpace:
    """The labels an answer may name: domain key → its attribute names, and the level titles."""

    domains: dict[str, tuple[str, ...]]
    levels: tuple[str, ...]

    @classmethod
    def from_tags(cls, tags: Iterable[Tag]) -> LabelSpace:
        domains: dict[str, set[str]] = {}
        levels: dict[str, None] = {}
        for tag in tags:
            domains.setdefault(tag.domain, set()).add(tag.attribute)
            levels.setdefault(tag.level)
        return cls({d: tuple(sorted(a)) for d, a in sorted(domains.items())}, tuple(levels))

    def to_dict(self) -> dict[str, Any]:
        return {"domains": {d: list(a) for d, a in self.domains.items()}, "levels": list(self.levels)}

    @classmethod
    def from_dict(cls, value: Mapping[str, Any]) -> LabelSpace:
        return cls({d: tuple(a) for d, a in value["domains"].items()}, tuple(value["levels"]))


@dataclass(frozen=True)
class ReadAnswer:
    status: AnswerStatus
    tag: Tag | None
    secondary: tuple[Tag, ...] = ()
    problem: str = ""  # why it is invalid, or what was repaired

    @property
    def usable(self) -> bool:
        return self.tag is not None


@dataclass
class _Resolver:
    space: LabelSpace
    repairs: list[str] = field(default_factory=list)

    def tag(self, fields: Mapping[str, Any]) -> Tag:
        domain, attribute, level = (fields.get(name) for name in ("domain", "attribute", "level"))
        if not isinstance(attribute, str) or not attribute.strip():
            raise ValueError("the answer names no attribute")
        if not isinstance(level, str) or not level.strip():
            raise ValueError("the answer names no level")
        domain_key, attribute_name = self._attribute(domain if isinstance(domain, str) else "", attribute)
        return Tag(domain_key, attribute_name, self._level(level))

    def _attribute(self, domain: str, attribute: str) -> tuple[str, str]:
        domain_key = self._nearest(domain, list(self.space.domains))
        if domain_key is not None:
            within = self._nearest(attribute, list(self.space.domains[domain_key]))
            if within is not None:
                self._note("domain", domain, domain_key)
                self._note("attribute", attribute, within)
                return domain_key, within
        # The attribute is the more specific name: when it belongs elsewhere, it decides the domain.
        owners = {a: d for d, names in self.space.domains.items() for a in names}
        found = self._nearest(attribute, list(owners))
        if found is None:
            raise ValueError(f"attribute {attribute!r} is not in the label space")
        self._note("attribute", attribute, found)
        self._note("domain", domain, owners[found])
        return owners[found], found

    def _level(self, level: str) -> str:
        found = self._nearest(level, list(self.space.levels))
        if found is None:
            raise ValueError(f"level {level!r} is not in the label space")
        self._note("level", level, found)
        return found

    def _note(self, what: str, given: str, chosen: str) -> None:
        if given != chosen:
            self.repairs.append(f"{what} {given!r} → {chosen!r}")

    @staticmethod
    def _nearest(name: str, choices: list[str]) -> str | None:
        """The choice equal to `name` up to case and separators, else the closest one above the cutoff."""
        by_normal = {normalise(c): c for c in choices}
        wanted = normalise(name)
        if wanted in by_normal:
            return by_normal[wanted]
        close = difflib.get_close_matches(wanted, list(by_normal), n=1, cutoff=REPAIR_CUTOFF)
        return by_normal[close[0]] if close else None


def read_answer(text: str, space: LabelSpace) -> ReadAnswer:
    """The label a generated answer names; never raises."""
    fields, secondary_fields = _fields(text)
    if fields is None:
        return ReadAnswer("invalid", None, problem=f"no label in answer {text[:80]!r}")
    resolver = _Resolver(space)
    try:
        tag = resolver.tag(fields)
    except ValueError as exc:
        return ReadAnswer("invalid", None, problem=str(exc))
    primary_repairs = list(resolver.repairs)
    secondary = []
    for candidate in secondary_fields:
        try:
            secondary.append(resolver.tag(candidate))
        except ValueError:
            continue  # a broken secondary tag is dropped; the primary label still stands
    repaired = bool(primary_repairs) or not isinstance(_json_object(text), Mapping)
    problem = "; ".join(primary_repairs) or ("answer was not one JSON object" if repaired else "")
    return ReadAnswer("repaired" if repaired else "valid", tag, tuple(secondary), problem)


def _json_object(text: str) -> Any:
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end < start:
        return None
    try:
        return json.loads(text[start : end + 1])
    except ValueError:
        return None


def _fields(text: str) -> tuple[Mapping[str, Any] | None, list[Mapping[str, Any]]]:
    """The primary tag's fields and the secondary tags' fields: from JSON when it parses, else from
    `"name": "value"` pairs anywhere in the text (a cut-off answer still names its first tag)."""
    value = _json_object(text)
    if isinstance(value, Mapping):
        secondary = value.get("secondary")
        tags = [s for s in secondary if isinstance(s, Mapping)] if isinstance(secondary, list) else []
        return value, tags
    pairs: dict[str, str] = {}
    for match in _FIELD.finditer(text):
        pairs.setdefault(match.group(1).lower(), match.group(2))
    return (pairs if "attribute" in pairs else None), []
