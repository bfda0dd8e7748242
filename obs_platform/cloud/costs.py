"""What a tuning job will cost, estimated before it is submitted, from the training file itself.

Vertex bills supervised tuning by training tokens: the tokens of every example, times the epochs. Counting them
exactly needs the model's tokenizer (a network call for Gemini); about four characters of English text make one
token, which is close enough to decide whether to press the button.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

CHARACTERS_PER_TOKEN = 4.0


@dataclass(frozen=True)
class CostEstimate:
    examples: int
    tokens_per_epoch: int
    epochs: int
    usd_per_million_tokens: float | None  # None: no price configured, tokens only

    @property
    def training_tokens(self) -> int:
        return self.tokens_per_epoch * self.epochs

    @property
    def usd(self) -> float | None:
        if self.usd_per_million_tokens is None:
            return None
        return round(self.training_tokens / 1e6 * self.usd_per_million_tokens, 2)

    def to_dict(self) -> dict:
        return {**asdict(self), "training_tokens": self.training_tokens, "usd": self.usd}


def estimate_tuning_cost(jsonl: bytes, epochs: int, usd_per_million_tokens: float | None) -> CostEstimate:
    """The training tokens of a JSONL file (every string in each line counted, roles and instructions included,
    as the service bills them) times the epochs, and their price when one is configured."""
    examples, characters = 0, 0
    for line in jsonl.splitlines():
        if not line.strip():
            continue
        examples += 1
        characters += sum(len(text) for text in _strings(json.loads(line)))
    return CostEstimate(
        examples=examples,
        tokens_per_epoch=round(characters / CHARACTERS_PER_TOKEN),
        epochs=epochs,
        usd_per_million_tokens=usd_per_million_tokens,
    )


def _strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [text for item in value.values() for text in _strings(item)]
    if isinstance(value, list):
        return [text for item in value for text in _strings(item)]
    return []
