"""tau2 environments over a database parsed once per process, and tau2's evaluator over them.

tau2 builds every environment from its domain's JSON database: the live one, then two more inside
``evaluate_simulation`` (the trajectory replayed, and the gold actions), and it hashes both of the latter whole
(airline: a 7 MB file, ~0.25 s to parse and ~0.1 s to hash, in pure Python). Here each domain's database is
parsed once per process into a template that nothing writes:

- A new environment is tau2's own (its constructor, tools, policy and ``Environment`` class), given a copy of the
  template: each record collection (a top-level ``dict`` field such as airline's ``flights``) is a
  ``CopyOnRead`` dict that shares the template's records and copies a record the first time the tools reach it
  through the dict, so the tools only ever change copies; every other field is copied whole.
- The toolkit's ``get_db_hash`` is tau2's hash (the sha256 of ``json.dumps(db.model_dump(), sort_keys=True,
  default=str)``), assembled from each record's JSON: cached for the records still shared with the template,
  computed for the others. A database whose records differ from the template in the same way as one already
  hashed gets that hash back from a memo, without joining the 7 MB string again.
- ``evaluate`` is tau2's unmodified ``evaluate_simulation``; the only thing that changes is the environment
  constructor, registered in tau2's registry under ``<domain>+shared`` the first time a domain is scored.

The differential test (``tests/eval/test_scoring_differential.py``) checks rewards, every ``RewardInfo`` field and
the hashes against tau2's own path.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import json
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, TypeAdapter
from tau2.data_model.simulation import RewardInfo, SimulationRun
from tau2.data_model.tasks import Task
from tau2.environment.environment import Environment
from tau2.environment.toolkit import ToolKitBase, ToolType
from tau2.evaluator.evaluator import EvaluationType, evaluate_simulation
from tau2.registry import registry

SHARED_SUFFIX = "+shared"
_ATOMIC = frozenset({str, int, float, bool, type(None)})
_MEMO_SIZE = 4096


def clone(value: Any) -> Any:
    """A deep copy of a parsed database value, several times faster than ``copy.deepcopy`` on pydantic models
    (no memo: parsed JSON has no shared or cyclic references)."""
    kind = type(value)
    if kind in _ATOMIC:
        return value
    if kind is list:
        return [clone(item) for item in value]
    if kind is dict:
        return {key: clone(item) for key, item in value.items()}
    if isinstance(value, BaseModel):
        new = kind.__new__(kind)
        object.__setattr__(new, "__dict__", {key: clone(item) for key, item in value.__dict__.items()})
        object.__setattr__(new, "__pydantic_fields_set__", set(value.__pydantic_fields_set__))
        object.__setattr__(new, "__pydantic_extra__", clone(value.__pydantic_extra__))
        object.__setattr__(new, "__pydantic_private__", clone(value.__pydantic_private__))
        return new
    return copy.deepcopy(value)


class CopyOnRead(dict):
    """A record collection that shares the template's records until one is reached through it.

    Every read that hands out a record (``[]``, ``get``, ``values``, ``items``, ``pop``...) first replaces a shared
    record with its own copy; keys, ``in`` and ``len`` need no copy. While ``lending`` (a tool tau2 marks
    ``ToolType.READ`` is running) shared records are handed out uncopied: a search over all of airline's flights
    or retail's users copies nothing. Code that reads the dict through C (pydantic's serializer, ``json``) sees the
    current records, shared or copied, and only reads them.
    """

    __slots__ = ("lending", "shared")

    def __init__(self, template: dict[str, Any]) -> None:
        super().__init__(template)
        self.shared: set[str] = set(template)
        self.lending = False  # True while a read-only tool runs: shared records are handed out as they are

    def _own(self, key: Any) -> None:
        if key in self.shared and not self.lending:
            self.shared.discard(key)
            dict.__setitem__(self, key, clone(dict.__getitem__(self, key)))

    def _own_all(self) -> None:
        for key in list(self.shared):
            self._own(key)

    def __getitem__(self, key: Any) -> Any:
        self._own(key)
        return dict.__getitem__(self, key)

    def get(self, key: Any, default: Any = None) -> Any:
        return self[key] if key in self else default  # noqa: SIM401 (self.get is this method)

    def __setitem__(self, key: Any, value: Any) -> None:
        self.shared.discard(key)
        dict.__setitem__(self, key, value)

    def __delitem__(self, key: Any) -> None:
        self.shared.discard(key)
        dict.__delitem__(self, key)

    def pop(self, key: Any, *default: Any) -> Any:
        self._own(key)
        return dict.pop(self, key, *default)

    def popitem(self) -> tuple[Any, Any]:
        self._own_all()
        return dict.popitem(self)

    def setdefault(self, key: Any, default: Any = None) -> Any:
        self._own(key)
        self.shared.discard(key)
        return dict.setdefault(self, key, default)

    def update(self, *args: Any, **kwargs: Any) -> None:
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def clear(self) -> None:
        self.shared.clear()
        dict.clear(self)

    def values(self) -> Any:
        self._own_all()
        return dict.values(self)

    def items(self) -> Any:
        self._own_all()
        return dict.items(self)

    def copy(self) -> dict[str, Any]:
        self._own_all()
        return dict(dict.items(self))

    def __deepcopy__(self, memo: dict[int, Any]) -> dict[str, Any]:
        return {key: copy.deepcopy(value, memo) for key, value in dict.items(self)}

    def __reduce__(self) -> tuple[Any, ...]:
        return (dict, (dict(dict.items(self)),))


def _json(value: Any) -> str:
    """tau2's JSON text for a dumped value (``get_dict_hash``'s arguments), for one part of the database."""
    return json.dumps(value, sort_keys=True, default=str)


@dataclass
class Template:
    """One domain database as parsed from its file, with the JSON of each record (computed when first needed)."""

    db: BaseModel
    collections: tuple[str, ...]  # the top-level dict fields shared record by record
    adapters: dict[str, TypeAdapter] = field(default_factory=dict)
    _fragments: dict[str, dict[str, str]] | None = None
    _memo: OrderedDict[str, str] = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def of(cls, db: BaseModel) -> Template:
        model = type(db)
        collections = tuple(name for name in model.model_fields if type(getattr(db, name)) is dict)
        return cls(db, collections, {name: TypeAdapter(model.model_fields[name].annotation) for name in collections})

    def copy(self) -> BaseModel:
        """A database equal to the template that shares its records until the tools reach them."""
        model = type(self.db)
        values = {
            name: CopyOnRead(value) if name in self.collections else clone(value) for name, value in self.db.__dict__.items()
        }
        new = model.__new__(model)
        object.__setattr__(new, "__dict__", values)
        object.__setattr__(new, "__pydantic_fields_set__", set(self.db.__pydantic_fields_set__))
        object.__setattr__(new, "__pydantic_extra__", clone(self.db.__pydantic_extra__))
        object.__setattr__(new, "__pydantic_private__", clone(self.db.__pydantic_private__))
        return new

    @property
    def fragments(self) -> dict[str, dict[str, str]]:
        """Each collection's records as JSON text, keyed by record id (one full dump, once per process)."""
        with self._lock:
            if self._fragments is None:
                dumped = self.db.model_dump(include=set(self.collections))
                self._fragments = {name: {key: _json(value) for key, value in dumped[name].items()} for name in self.collections}
            return self._fragments

    def record_json(self, name: str, key: str, record: Any) -> str:
        """A record's JSON as it appears inside the whole database's dump (serialized by the field's own type)."""
        return _json(self.adapters[name].dump_python({key: record})[key])

    def hash(self, db: BaseModel) -> str:
        """tau2's ``get_dict_hash(db.model_dump())`` for a database made by ``copy`` (possibly changed since)."""
        cow = [name for name in self.collections if isinstance(getattr(db, name), CopyOnRead)]
        if not cow:
            return hashlib.sha256(_json(db.model_dump()).encode()).hexdigest()
        rest = db.model_dump(exclude=set(cow))
        changed = {name: self._changed(name, getattr(db, name)) for name in cow}
        key = _json([rest, sorted((name, sorted(diff.items())) for name, diff in changed.items())])
        with self._lock:
            if key in self._memo:
                self._memo.move_to_end(key)
                return self._memo[key]
        text = self._text(rest, changed, {name: getattr(db, name) for name in cow})
        digest = hashlib.sha256(text.encode()).hexdigest()
        with self._lock:
            self._memo[key] = digest
            if len(self._memo) > _MEMO_SIZE:
                self._memo.popitem(last=False)
        return digest

    def _changed(self, name: str, records: CopyOnRead) -> dict[str, str | None]:
        """The records of collection ``name`` whose JSON differs from the template's (None: removed)."""
        template = self.fragments[name]
        changed: dict[str, str | None] = {key: None for key in template if key not in records}
        for key in records.keys() - records.shared:
            text = self.record_json(name, key, dict.__getitem__(records, key))
            if template.get(key) != text:
                changed[key] = text
        return changed

    def _text(self, rest: dict[str, Any], changed: dict[str, dict[str, str | None]], cow: dict[str, CopyOnRead]) -> str:
        """The whole database's JSON, as ``json.dumps(..., sort_keys=True)`` writes it, from the records' JSON."""
        parts = {name: _json(value) for name, value in rest.items()}
        for name, records in cow.items():
            template, diff = self.fragments[name], changed[name]
            entries = (f"{json.dumps(key)}: {diff[key] if key in diff else template[key]}" for key in sorted(records.keys()))
            parts[name] = "{" + ", ".join(entries) + "}"
        return "{" + ", ".join(f"{json.dumps(name)}: {parts[name]}" for name in sorted(parts)) + "}"


class SharedDomain:
    """One tau2 domain's environment constructor over templates of its databases (agent's and user's)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.base = registry.get_env_constructor(name)
        parameters = inspect.signature(self.base).parameters
        if "db" not in parameters:
            raise ValueError(f"tau2 domain {name!r}: its environment constructor takes no `db`, so it cannot share one")
        env = self.base()
        self.templates = {"db": Template.of(env.tools.db)}
        if "user_db" in parameters and env.user_tools is not None and env.user_tools.db is not None:
            self.templates["user_db"] = Template.of(env.user_tools.db)

    def __call__(self, solo_mode: bool = False) -> Environment:
        """A fresh environment, as ``registry.get_env_constructor(name)(solo_mode=...)`` builds it."""
        env = self.base(**{arg: template.copy() for arg, template in self.templates.items()}, solo_mode=solo_mode)
        _share(env.tools, self.templates["db"])
        if "user_db" in self.templates:
            _share(env.user_tools, self.templates["user_db"])
        return env


def _share(toolkit: ToolKitBase, template: Template) -> None:
    """Give this toolkit instance the template's incremental hash, and run its read-only tools (tau2's
    ``ToolType.READ``) over the shared records without copying them. Both read ``toolkit.db`` at call time: tau2
    replaces it when a task's initialization data updates the database."""
    use_tool = toolkit.use_tool

    def use_tool_lending(tool_name: str, **kwargs: Any) -> Any:
        if not (toolkit.has_tool(tool_name) and toolkit.tool_type(tool_name) == ToolType.READ):
            return use_tool(tool_name, **kwargs)
        collections = [value for value in toolkit.db.__dict__.values() if isinstance(value, CopyOnRead)]
        for records in collections:
            records.lending = True
        try:
            return use_tool(tool_name, **kwargs)
        finally:
            for records in collections:
                records.lending = False

    toolkit.use_tool = use_tool_lending  # type: ignore[method-assign]
    toolkit.get_db_hash = lambda: template.hash(toolkit.db)  # type: ignore[method-assign]


_domains: dict[str, SharedDomain] = {}
_domains_lock = threading.Lock()


def shared_domain(name: str) -> SharedDomain:
    """The process's ``SharedDomain`` for tau2 domain ``name`` (built, and registered with tau2, on first use)."""
    with _domains_lock:
        if name not in _domains:
            domain = SharedDomain(name)
            shared_name = name + SHARED_SUFFIX
            if shared_name not in registry.get_domains():
                registry.register_domain(domain, shared_name)
            _domains[name] = domain
        return _domains[name]


def environment(domain: str, solo_mode: bool = False) -> Environment:
    """A fresh tau2 environment of ``domain`` that shares the process's parsed database until its tools write."""
    return shared_domain(domain)(solo_mode=solo_mode)


def evaluate(
    simulation: SimulationRun, task: Task, evaluation_type: EvaluationType, domain: str, solo_mode: bool = False
) -> RewardInfo:
    """tau2's ``evaluate_simulation``, its environments built by ``environment``."""
    shared_domain(domain)
    return evaluate_simulation(
        simulation=simulation, task=task, evaluation_type=evaluation_type, solo_mode=solo_mode, domain=domain + SHARED_SUFFIX
    )


def registered_domains() -> Iterator[str]:
    """tau2's domains without the ``+shared`` entries this module registers."""
    return (name for name in registry.get_domains() if not name.endswith(SHARED_SUFFIX))

