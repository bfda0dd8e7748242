"""Costs from configured prices, and the decision which model family the inference client uses by default."""

import pytest

from obs_platform.cloud.costs import (
    Prices,
    usd_per_1000_endpoint_predictions,
    usd_per_1000_gemini_predictions,
)
from obs_platform.evaluation.families import FamilySummary, decide_served_model


def summary(family: str, f1: float, usd: float | None) -> FamilySummary:
    return FamilySummary(
        family=family,
        model_version=f"{family}/v1",
        data_key="k",
        test_examples=100,
        attribute_macro_f1=f1,
        attribute_accuracy=f1,
        domain_macro_f1=f1,
        invalid_rate=0.0,
        usd_per_1000_predictions=usd,
        cost_basis="test",
    )


def test_prices_come_from_the_environment_and_bad_ones_are_named(monkeypatch):
    assert Prices.from_env() == Prices()
    monkeypatch.setenv("OBS_PLATFORM_SERVING_USD_PER_MACHINE_HOUR", "0.75")
    assert Prices.from_env().serving_usd_per_machine_hour == 0.75
    monkeypatch.setenv("OBS_PLATFORM_BATCH_USD_PER_MILLION_INPUT_TOKENS", "cheap")
    monkeypatch.setenv("OBS_PLATFORM_TRAINING_USD_PER_MACHINE_HOUR", "-1")
    with pytest.raises(ValueError) as refused:
        Prices.from_env()
    assert "OBS_PLATFORM_BATCH_USD_PER_MILLION_INPUT_TOKENS='cheap' is not a number" in str(refused.value)
    assert "OBS_PLATFORM_TRAINING_USD_PER_MACHINE_HOUR='-1' is negative" in str(refused.value)


def test_cost_per_1000_predictions_of_each_family():
    prices = Prices(
        online_usd_per_million_input_tokens=0.5,
        online_usd_per_million_output_tokens=2.0,
        serving_usd_per_machine_hour=0.8,
        serving_predictions_per_hour=400,
    )
    assert usd_per_1000_gemini_predictions(300, 40, prices) == pytest.approx((300 * 0.5 + 40 * 2.0) / 1e3)
    assert usd_per_1000_endpoint_predictions(1, prices) == 2.0  # $0.80 an hour over 400 predictions an hour
    assert usd_per_1000_endpoint_predictions(1, Prices(serving_usd_per_machine_hour=0.8)) is None  # no traffic
    assert usd_per_1000_gemini_predictions(300, 40, Prices()) is None


def test_the_better_family_is_served_and_price_decides_only_within_the_tolerance():
    oss, gemini = summary("open-source", 0.87, 2.0), summary("gemini", 0.80, 0.2)
    decision = decide_served_model([gemini, oss], tolerance=0.01)
    assert decision.family == "open-source" and "tags better" in decision.reason and "+0.070" in decision.reason
    close = summary("gemini", 0.865, 0.2)
    decision = decide_served_model([oss, close], tolerance=0.01)
    assert decision.family == "gemini" and "cheaper" in decision.reason and "$0.2000 vs $2.0000" in decision.reason
    unpriced = summary("gemini", 0.865, None)
    assert decide_served_model([oss, unpriced], tolerance=0.01).family == "open-source"
    alone = decide_served_model([oss], tolerance=0.01)
    assert alone.family == "open-source" and "only family" in alone.reason
    with pytest.raises(ValueError):
        decide_served_model([], tolerance=0.01)
