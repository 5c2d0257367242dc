"""Checks on a composed config, run before anything is built, so a bad value fails before any model loads.

Hydra already rejects an unknown group option (listing the available ones); these checks cover values:
each failure names the key, what it got and what is allowed. ``RULES`` hold the root and hardware keys;
every ``_target_`` node is checked against its class's signature (unknown keys, values of the wrong type),
so a typo in any group fails here instead of deep inside a trainer.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue
from pydantic import PydanticSchemaGenerationError, TypeAdapter, ValidationError


class UserError(ValueError):
    """A mistake in what the user gave (a config value, a data file, a database, an adapter).

    ``python -m agentlab.run`` reports it in one paragraph with exit code 2 and no traceback; the message
    names what is wrong and what was expected.
    """


class ConfigError(UserError):
    """A config value that cannot work; the message names the key and the allowed values."""


def error_cause(exc: BaseException) -> str:
    """``Type: message``, with the exception it came from when that says more (``Connection error.`` from what)."""
    text = f"{type(exc).__name__}: {exc}"
    cause = exc.__cause__ or exc.__context__
    if cause is not None and str(cause) and str(cause) not in text:
        text += f" (from {type(cause).__name__}: {cause})"
    return text


@dataclass(frozen=True)
class Rule:
    """One key's constraint: a predicate and the words for what it allows."""

    key: str
    ok: Callable[[Any], bool]
    expected: str
    required: bool = True  # False: checked only where the key exists (a group option that has it)


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
    Rule("max_errors", _int_at_least(1), "an integer >= 1 (tool errors in one task before it ends with too_many_errors)"),
    Rule("max_tool_rounds", _int_at_least(1), "an integer >= 1"),
    Rule("window_tokens", _int_at_least(256), "an integer >= 256"),
    Rule("agent_temperature", _number_at_least(0.0), "a number >= 0"),
    Rule("user_temperature", _number_at_least(0.0), "a number >= 0"),
    Rule("concurrency", _int_at_least(1), "an integer >= 1"),
    Rule("evaluator_processes", _int_at_least(0), "an integer >= 0 (0 = score in a thread)"),
    Rule("max_task_retries", _int_at_least(0), "an integer >= 0 (0 = play each pair once)"),
    Rule("patch_env", lambda v: isinstance(v, bool), "true or false"),
    Rule("debug", lambda v: isinstance(v, bool), "true or false"),
    Rule("progress", lambda v: isinstance(v, bool), "true or false"),
    Rule("resume", lambda v: v in ("auto", "extend", "new"), "auto (resume the same settings), extend (add task or trial pairs) or new (set earlier results aside)"),
    Rule("hardware.quantization", _optional(lambda v: v in ("none", "4bit", "8bit")), "null, none, 4bit or 8bit (bitsandbytes)"),
    Rule("hardware.base_model", lambda v: isinstance(v, str) and bool(v), "a model option name, e.g. smollm2", required=False),
    Rule("hardware.lora_r", _int_at_least(1), "an integer >= 1", required=False),
    Rule("hardware.lora_alpha", _number_at_least(0.0), "a number >= 0", required=False),
    Rule("hardware.per_device_batch_size", _int_at_least(1), "an integer >= 1", required=False),
    Rule("hardware.gradient_accumulation_steps", _int_at_least(1), "an integer >= 1", required=False),
    Rule("hardware.max_length", _int_at_least(256), "an integer >= 256 (tokens)", required=False),
    *(Rule(f"hardware.{key}", lambda v: isinstance(v, bool), "true or false", required=False) for key in ("bf16", "gradient_checkpointing", "detach_prefix")),
]
PRIVATE_KEYS = ("_target_", "_partial_", "_recursive_", "_convert_", "_args_")


def check_config(cfg: DictConfig) -> None:
    """Raise ``ConfigError`` for the first missing mandatory key or bad value."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(f"missing mandatory value(s): {', '.join(missing)}; set them on the command line, e.g. {missing[0]}=...")
    _check_available(cfg)
    for rule in RULES:
        try:
            value = OmegaConf.select(cfg, rule.key, throw_on_missing=True, default=_ABSENT)
        except MissingMandatoryValue as exc:
            raise ConfigError(f"{rule.key} is missing; expected {rule.expected}") from exc
        if value is _ABSENT and not rule.required:
            continue
        value = None if value is _ABSENT else value
        if not rule.ok(value):
            raise ConfigError(f"{rule.key}={value!r} is not allowed; expected {rule.expected}")
    _check_split(cfg)
    check_targets(cfg)


_ABSENT = object()


def _target_nodes(node: DictConfig | ListConfig, path: str) -> Iterator[tuple[str, DictConfig]]:
    """Every ``_target_`` node with its dotted key; a node reached through an interpolation is checked at its source."""
    keys = node.keys() if isinstance(node, DictConfig) else range(len(node))
    if isinstance(node, DictConfig) and "_target_" in node:
        yield path, node
    for key in keys:
        if OmegaConf.is_interpolation(node, key):
            continue
        child = node._get_node(key)
        if isinstance(child, (DictConfig, ListConfig)):
            yield from _target_nodes(child, f"{path}.{key}" if path else str(key))


def _import(dotted: str, key: str) -> Any:
    module, _, name = dotted.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(f"{key}._target_={dotted!r} cannot be imported ({exc}); expected a dotted path to a class or function") from exc


def _signature(function: Any, skip_self: bool) -> tuple[dict[str, Any], bool]:
    """(parameter -> evaluated annotation, accepts ``**kwargs``) of one function."""
    namespace = vars(inspect.getmodule(function)) if inspect.getmodule(function) else {}
    params, var_keyword = {}, False
    for name, param in list(inspect.signature(function).parameters.items())[1 if skip_self else 0 :]:
        if param.kind is param.VAR_KEYWORD:
            var_keyword = True
        elif param.kind is not param.VAR_POSITIONAL:
            params[name] = _evaluate(param.annotation, namespace)
    return params, var_keyword


def _annotations(target: Any) -> tuple[dict[str, Any], bool]:
    """(parameter -> annotation, still open to any keyword) of a function or a class.

    A class's ``**kwargs`` are taken to go up to its bases' ``__init__`` (the usual ``super().__init__(**kwargs)``),
    and from the last one to the dataclass its ``kwargs_dataclass`` names (e.g. trl's ``SFTConfig``), if any.
    """
    if not isinstance(target, type):
        return _signature(target, skip_self=False)
    params: dict[str, Any] = {}
    for cls in target.__mro__:
        if "__init__" not in vars(cls) or cls is object:
            continue
        own, var_keyword = _signature(cls.__init__, skip_self=True)
        params = {**own, **params}
        if not var_keyword:
            return params, False
    extra = _kwargs_annotations(target)
    return ({**extra, **params}, False) if extra is not None else (params, True)


def _evaluate(annotation: Any, namespace: dict[str, Any]) -> Any:
    """A postponed (string) annotation evaluated in its module; ``Any`` when it names something not imported at run time."""
    if annotation is inspect.Parameter.empty:
        return Any
    if isinstance(annotation, str):
        try:
            return eval(annotation, namespace)  # the package's own annotations, as typing.get_type_hints evaluates them
        except Exception:  # noqa: BLE001 - a TYPE_CHECKING-only name: that parameter goes unchecked
            return Any
    return annotation


def _kwargs_annotations(target: Any) -> dict[str, Any] | None:
    """Where ``**kwargs`` go to a dataclass named by the target's ``kwargs_dataclass`` (e.g. trl's ``SFTConfig``): its fields."""
    dotted = getattr(target, "kwargs_dataclass", None)
    if not dotted:
        return None
    module, _, name = dotted.rpartition(".")
    return {f.name: f.type for f in dataclasses.fields(getattr(importlib.import_module(module), name)) if f.init}


def _fits(annotation: Any, value: Any) -> bool:
    """Whether ``value`` validates as ``annotation`` (pydantic, lax); an annotation pydantic cannot check passes."""
    if annotation is Any:
        return True
    try:
        TypeAdapter(annotation).validate_python(value)
    except ValidationError:
        return False
    except (PydanticSchemaGenerationError, TypeError, NameError):
        return True
    return True


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def check_targets(cfg: DictConfig) -> None:
    """Every ``_target_`` node's keys must be parameters of its target, with values of the annotated types."""
    for path, node in _target_nodes(cfg, ""):
        target = _import(str(node._target_), path)
        known, open_keywords = _annotations(target)
        for key in node:
            if key in PRIVATE_KEYS:
                continue
            if key not in known and not open_keywords:
                raise ConfigError(f"{path}.{key} is not a setting of {node._target_}; expected one of: {', '.join(sorted(known))}")
            child = node._get_node(key)
            resolved = node[key] if OmegaConf.is_interpolation(node, key) else child  # ``${logger}``: the node it names
            if isinstance(resolved, DictConfig) and "_target_" in resolved:
                continue  # an object of its own, checked at its own path
            value = OmegaConf.to_container(child, resolve=True) if isinstance(child, (DictConfig, ListConfig)) else node[key]
            if isinstance(value, DictConfig) and "_target_" in value:  # an interpolated object: checked at its source
                continue
            annotation = known.get(key, Any)
            if not _fits(annotation, value):
                source = f" (from {child._value()})" if OmegaConf.is_interpolation(node, key) else ""
                raise ConfigError(f"{path}.{key}={value!r}{source} is not allowed; {node._target_} expects {_type_name(annotation)}")


def _check_available(cfg: DictConfig) -> None:
    """An option that cannot run here says why in an ``unavailable`` key (e.g. ``rl_algo=ppo``)."""
    for group, node in cfg.items():
        if isinstance(node, DictConfig) and node.get("unavailable"):
            raise ConfigError(f"{group}: {node.unavailable}")


def _check_split(cfg: DictConfig) -> None:
    """The split must be one of the domain's; a domain without splits ignores it (tau2 data only, no model).

    The domain is the class ``domain._target_`` names, built here without a model, as ``check_targets`` imports
    every target: the checks never import a layer above them."""
    name = OmegaConf.select(cfg, "domain.name")
    split = cfg.get("task_split")
    settings = {k: v for k, v in OmegaConf.to_container(cfg.domain, resolve=True).items() if k != "_target_"}
    try:
        splits = _import(cfg.domain._target_, "domain")(**settings).splits()
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    except TypeError:
        return  # a key the domain class does not take: check_targets names it
    if split is not None and splits and split not in splits:
        raise ConfigError(f"task_split={split!r} is not a split of domain {name}; expected one of {splits} or null")
