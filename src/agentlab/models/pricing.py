"""Dollar prices of model tokens: a model config's own ``prices``, else litellm's offline cost map.

The cost map is the JSON file litellm ships (``model_prices_and_context_window_backup.json``), read directly:
no network, and no 3 s litellm import. A model run on this machine (local weights, the oracle) costs nothing;
a served model the map does not know (a vLLM name, say) has no price, and its cost is reported as unknown.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from agentlab.config import ConfigError

COST_MAP_FILE = "model_prices_and_context_window_backup.json"


@dataclass(frozen=True)
class Prices:
    """US dollars per million input (prompt) and output (completion) tokens."""

    input: float
    output: float

    def cost(self, usage: dict[str, Any]) -> float:
        """The dollars of an agent-framework usage dict (``input_token_count``, ``output_token_count``)."""
        tokens_in, tokens_out = usage.get("input_token_count") or 0, usage.get("output_token_count") or 0
        return (tokens_in * self.input + tokens_out * self.output) / 1e6


FREE = Prices(0.0, 0.0)


def prices_from_config(prices: dict[str, Any] | None, key: str) -> Prices | None:
    """A model config's ``prices: {input: .., output: ..}`` (dollars per 1M tokens), checked; None when unset."""
    if prices is None:
        return None
    try:
        values = {side: float(prices[side]) for side in ("input", "output")}
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(
            f"{key}.prices={dict(prices) if hasattr(prices, 'keys') else prices!r} is not valid ({exc!r}); expected "
            f"{{input: <dollars per 1M input tokens>, output: <dollars per 1M output tokens>}}, both numbers >= 0"
        ) from exc
    if min(values.values()) < 0:
        raise ConfigError(f"{key}.prices={values} has a negative price; expected dollars per 1M tokens >= 0")
    return Prices(**values)


@cache
def _cost_map() -> dict[str, Any]:
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        return {}
    path = Path(next(iter(spec.submodule_search_locations))) / COST_MAP_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def litellm_prices(model: str) -> Prices | None:
    """The cost map's price of ``model`` (also tried without a ``provider/`` prefix); None when it has none."""
    costs = _cost_map()
    for name in (model, model.split("/", 1)[-1]):
        entry = costs.get(name)
        if isinstance(entry, dict) and "input_cost_per_token" in entry:
            return Prices(entry["input_cost_per_token"] * 1e6, entry.get("output_cost_per_token", 0.0) * 1e6)
    return None


def role_costs(
    usage_by_role: dict[str, dict[str, Any]], prices_by_role: dict[str, Prices | None]
) -> dict[str, float | None]:
    """Role -> the dollars of its token usage; None for a role whose model has no known price."""
    costs: dict[str, float | None] = {}
    for role, usage in usage_by_role.items():
        prices = prices_by_role.get(role)
        costs[role] = None if prices is None else prices.cost(usage)
    return costs


def total_cost(costs: dict[str, float | None]) -> float | None:
    """The dollars of several roles together; None when any of them is unknown (a partial sum would mislead)."""
    return None if any(v is None for v in costs.values()) else sum(v for v in costs.values() if v is not None)
