"""Dollar prices of tokens: a model config's own prices win, else litellm's offline cost map; local models are free."""

from __future__ import annotations

import pytest

from agentlab.config import ConfigError
from agentlab.models.openai_compat import OpenAIModel
from agentlab.models.oracle import OracleModel
from agentlab.models.pricing import FREE, Prices, litellm_prices, prices_from_config, role_costs


def test_cost_map_prices_a_known_model_and_not_an_unknown_one():
    prices = litellm_prices("gpt-4.1-mini")
    assert prices is not None and prices.input > 0 and prices.output > prices.input
    assert litellm_prices("openai/gpt-4.1-mini") == prices
    assert litellm_prices("my-org/qwen2.5-7b-sft-round3") is None


def test_model_config_prices_override_the_cost_map():
    assert OpenAIModel("gpt-4.1-mini").prices == litellm_prices("gpt-4.1-mini")
    assert OpenAIModel("gpt-4.1-mini", prices={"input": 1.0, "output": 3.0}).prices == Prices(1.0, 3.0)
    assert OpenAIModel("served-by-vllm", base_url="http://localhost:8000/v1").prices is None
    assert OracleModel().prices == FREE


@pytest.mark.parametrize("bad", [{"input": 1.0}, {"input": "cheap", "output": 1.0}, {"input": -1.0, "output": 1.0}])
def test_bad_prices_are_named(bad):
    with pytest.raises(ConfigError, match=r"model\.prices=.*expected|negative price"):
        prices_from_config(bad, "model")


def test_role_costs_are_per_million_tokens_and_unknown_without_a_price():
    usage = {
        "agent": {"input_token_count": 2_000_000, "output_token_count": 500_000},
        "user": {"input_token_count": 10},
    }
    assert role_costs(usage, {"agent": Prices(0.5, 2.0), "user": None}) == {"agent": 2.0, "user": None}
