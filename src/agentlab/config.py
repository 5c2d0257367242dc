"""Checks on a composed config, run before anything is built, so a bad value fails before any model loads.

Hydra already rejects an unknown group option (listing the available ones); these checks cover values:
each failure names the key, what it got and what is allowed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue


class ConfigError(ValueError):
    """A config value that cannot work; the message names the key and the allowed values."""


@dataclass(frozen=True)
class Rule:
    """One key's constraint: a predicate and the words for what it allows."""

    key: str
    ok: Callable[[Any], bool]
    expected: str


def _int_at_least(low: int) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= low


def _optional(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: v is None or check(v)


def _number_at_least(low: float) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and v >= low


RULES = [
    Rule("num_trials", _int_at_least(1), "an integer >= 1"),
    Rule("num_tasks", _optional(_int_at_least(1)), "null or an integer >= 1"),
    Rule("task_ids", _optional(lambda v: isinstance(v, Sequence) and not isinstance(v, str) and len(v) > 0), "null or a non-empty list of task ids"),
    Rule("task_split", _optional(lambda v: isinstance(v, str)), "null or a split name"),
    Rule("max_steps", _int_at_least(2), "an integer >= 2 (one agent and one user turn)"),
    Rule("max_tool_rounds", _int_at_least(1), "an integer >= 1"),
    Rule("window_tokens", _int_at_least(256), "an integer >= 256"),
    Rule("agent_temperature", _number_at_least(0.0), "a number >= 0"),
    Rule("user_temperature", _number_at_least(0.0), "a number >= 0"),
    Rule("concurrency", _int_at_least(1), "an integer >= 1"),
    Rule("evaluator_processes", _int_at_least(0), "an integer >= 0 (0 = score in a thread)"),
    Rule("patch_env", lambda v: isinstance(v, bool), "true or false"),
    Rule("debug", lambda v: isinstance(v, bool), "true or false"),
    Rule("progress", lambda v: isinstance(v, bool), "true or false"),
    Rule("hardware.quantization", _optional(lambda v: v in ("none", "4bit", "8bit")), "null, none, 4bit or 8bit (bitsandbytes)"),
]


def check_config(cfg: DictConfig) -> None:
    """Raise ``ConfigError`` for the first missing mandatory key or bad value."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(f"missing mandatory value(s): {', '.join(missing)}; set them on the command line, e.g. {missing[0]}=...")
    _check_available(cfg)
    for rule in RULES:
        try:
            value = OmegaConf.select(cfg, rule.key, throw_on_missing=True)
        except MissingMandatoryValue as exc:
            raise ConfigError(f"{rule.key} is missing; expected {rule.expected}") from exc
        if not rule.ok(value):
            raise ConfigError(f"{rule.key}={value!r} is not allowed; expected {rule.expected}")
    _check_split(cfg)


def _check_available(cfg: DictConfig) -> None:
    """An option that cannot run here says why in an ``unavailable`` key (e.g. ``rl_algo=ppo``)."""
    for group, node in cfg.items():
        if isinstance(node, DictConfig) and node.get("unavailable"):
            raise ConfigError(f"{group}: {node.unavailable}")


def _check_split(cfg: DictConfig) -> None:
    """The split must be one of the domain's; a domain without splits ignores it (tau2 data only, no model)."""
    from agentlab.eval.domains import Tau2Domain

    name = OmegaConf.select(cfg, "domain.name")
    split = cfg.get("task_split")
    try:
        splits = Tau2Domain(name).splits()
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    if split is not None and splits and split not in splits:
        raise ConfigError(f"task_split={split!r} is not a split of domain {name}; expected one of {splits} or null")
