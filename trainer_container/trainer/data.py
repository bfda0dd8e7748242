"""Reading the split files and the label maps the heads are built on."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from trainer.inputs import model_input
from trainer.locations import fetch_file


@dataclass(frozen=True)
class Example:
    observation_id: str
    input: str
    domain: str
    attribute: int
    level: str
    tags: tuple[int, ...]  # every attribute the observation carries, primary first


def read_examples(uri: str) -> list[Example]:
    examples = []
    for number, line in enumerate(fetch_file(uri).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            examples.append(_example(record))
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{uri}:{number}: not a split record ({exc})") from exc
    return examples


def _example(record: dict[str, Any]) -> Example:
    secondary = tuple(int(t["attribute_id"]) for t in record.get("secondary_tags") or [])
    return Example(
        observation_id=str(record["observation_id"]),
        input=model_input(record["text"], record.get("child_age_months"), record.get("observation_date")),
        domain=str(record["domain_key"]),
        attribute=int(record["attribute_id"]),
        level=str(record.get("progression_title") or ""),  # a taxonomy text may describe no level
        tags=(int(record["attribute_id"]), *secondary),
    )


@dataclass(frozen=True)
class LabelMaps:
    """Class index ↔ label for each head; levels keep their order on the progression scale."""

    domains: list[str]
    attributes: list[int]
    levels: list[str]
    attribute_domains: dict[str, str] = field(default_factory=dict)  # attribute id (as text) → its domain

    @classmethod
    def from_examples(cls, examples: list[Example], level_order: dict[str, int]) -> LabelMaps:
        return cls(
            domains=sorted({e.domain for e in examples}),
            attributes=sorted({a for e in examples for a in e.tags}),
            levels=sorted({e.level for e in examples if e.level}, key=lambda lvl: (level_order.get(lvl, 0), lvl)),
            attribute_domains={str(e.attribute): e.domain for e in examples},
        )

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, path: Path) -> LabelMaps:
        return cls(**json.loads(path.read_text()))


def level_order(uri: str) -> dict[str, int]:
    """Level title → its index on the scale, as the split files record it (`level_index`)."""
    order: dict[str, int] = {}
    for line in fetch_file(uri).read_text(encoding="utf-8").splitlines():
        if line.strip():
            record = json.loads(line)
            if record.get("progression_title"):
                order.setdefault(record["progression_title"], int(record.get("level_index", 0)))
    return order


def read_training_examples(
    train_uri: str, valid_uri: str, extra: list[Example] | None = None
) -> tuple[list[Example], list[Example], LabelMaps]:
    """The train and validation examples and the label maps over them (and any extra training rows)."""
    train, valid = read_examples(train_uri), read_examples(valid_uri)
    if not train:
        raise ValueError(f"{train_uri} holds no training examples")
    order = level_order(train_uri) | level_order(valid_uri)
    return train, valid, LabelMaps.from_examples([*train, *valid, *(extra or [])], order)
