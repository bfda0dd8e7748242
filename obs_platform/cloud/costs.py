"""What Vertex AI bills, estimated: Gemini tuning (training tokens × epochs), Gemini batch prediction (input and
output tokens), custom jobs (machine-hours) and endpoints (deployed machine-hours).

Prices come from configuration (`Prices.from_env`), never from this code: they change, differ by region and
contract, and a stale price in code reads as a fact. Without a price an estimate shows its quantity (tokens,
machine-hours) and no dollars.

Counting tokens exactly needs the model's tokenizer (a network call for Gemini); about four characters of English
text make one token, which is close enough to decide whether to press the button. Where Vertex reports the tokens
it billed (a batch job's answers), those are used instead.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from datetime import datetime

from pydantic import NonNegativeFloat

from obs_platform.environment import environment_model

CHARACTERS_PER_TOKEN = 4.0
# Each price and the variable that sets it.
PRICE_VARIABLES = {
    "tuning_usd_per_million_tokens": "OBS_PLATFORM_TUNING_USD_PER_MILLION_TOKENS",
    "batch_usd_per_million_input_tokens": "OBS_PLATFORM_BATCH_USD_PER_MILLION_INPUT_TOKENS",
    "batch_usd_per_million_output_tokens": "OBS_PLATFORM_BATCH_USD_PER_MILLION_OUTPUT_TOKENS",
    "training_usd_per_machine_hour": "OBS_PLATFORM_TRAINING_USD_PER_MACHINE_HOUR",
    "serving_usd_per_machine_hour": "OBS_PLATFORM_SERVING_USD_PER_MACHINE_HOUR",
    "online_usd_per_million_input_tokens": "OBS_PLATFORM_GEMINI_USD_PER_MILLION_INPUT_TOKENS",
    "online_usd_per_million_output_tokens": "OBS_PLATFORM_GEMINI_USD_PER_MILLION_OUTPUT_TOKENS",
    "serving_predictions_per_hour": "OBS_PLATFORM_SERVING_PREDICTIONS_PER_HOUR",
}


@dataclass(frozen=True)
class Prices:
    """The configured prices in US dollars (and the expected traffic of an endpoint); None where none is set."""

    tuning_usd_per_million_tokens: float | None = None  # Gemini supervised tuning, per training token
    batch_usd_per_million_input_tokens: float | None = None  # Gemini batch prediction
    batch_usd_per_million_output_tokens: float | None = None
    training_usd_per_machine_hour: float | None = None  # a custom job's machine, accelerators included
    serving_usd_per_machine_hour: float | None = None  # one replica of an endpoint's machine
    online_usd_per_million_input_tokens: float | None = None  # a tuned Gemini asked one request at a time
    online_usd_per_million_output_tokens: float | None = None
    # Not a price: the traffic a dedicated endpoint's machine-hours are spread over to give a cost per prediction.
    serving_predictions_per_hour: float | None = None

    @classmethod
    def from_env(cls) -> Prices:
        """The prices set in the environment or `.env` (an empty value is unset); a `SettingsError` (a ValueError)
        names every variable that is not a non-negative number, with its value."""
        return cls(**_PriceVariables.read().model_dump(exclude_none=True))

    def to_dict(self) -> dict[str, float | None]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


# The reader of PRICE_VARIABLES (None where a variable is unset: the dataclass's default then applies).
_PriceVariables = environment_model("PriceVariables", PRICE_VARIABLES, dict.fromkeys(PRICE_VARIABLES, NonNegativeFloat))


def priced(quantity: float, unit_price: float | None) -> float | None:
    """`quantity × unit_price` in dollars (4 decimals), or None without a price."""
    return None if unit_price is None else round(quantity * unit_price, 4)


def token_count(text: str) -> int:
    return round(len(text) / CHARACTERS_PER_TOKEN)


def machine_hours(start: datetime | None, end: datetime | None, machines: int = 1) -> float | None:
    """Hours between a job's (or a deployment's) start and end, times its machines; None when a time is missing."""
    if start is None or end is None:
        return None
    return round(max((end - start).total_seconds(), 0.0) / 3600 * machines, 4)


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


def usd_per_1000_gemini_predictions(
    input_tokens_per_prediction: float, output_tokens_per_prediction: float, prices: Prices
) -> float | None:
    """What 1,000 online requests to a tuned Gemini cost: billed per token, whatever the traffic."""
    if prices.online_usd_per_million_input_tokens is None or prices.online_usd_per_million_output_tokens is None:
        return None
    per_prediction = (
        input_tokens_per_prediction * prices.online_usd_per_million_input_tokens
        + output_tokens_per_prediction * prices.online_usd_per_million_output_tokens
    ) / 1e6
    return round(per_prediction * 1000, 4)


def usd_per_1000_endpoint_predictions(replicas: int, prices: Prices) -> float | None:
    """What 1,000 predictions of a dedicated endpoint cost: its machines bill by the hour whether asked or not, so
    the figure is the machine-hours spread over the expected traffic."""
    if prices.serving_usd_per_machine_hour is None or not prices.serving_predictions_per_hour:
        return None
    return round(replicas * prices.serving_usd_per_machine_hour / prices.serving_predictions_per_hour * 1000, 4)
