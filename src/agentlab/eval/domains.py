"""A tau2 domain as agentlab uses it: its tasks by split, its tools, and a fresh environment set to a task's initial state."""

from __future__ import annotations

from functools import cache

from tau2.data_model.tasks import Task
from tau2.environment.environment import Environment
from tau2.environment.tool import Tool
from tau2.registry import registry

from agentlab.eval.environments import environment, registered_domains


@cache
def _tools(name: str) -> tuple[tuple[Tool, ...], tuple[Tool, ...]]:
    """Domain ``name``'s assistant and user tools as tau2 describes them, built once per process: tau2 builds a
    pydantic model per tool on every ``get_tools()`` (~30 ms a domain). They are read for their names, descriptions
    and parameters only; calls run through each pair's own environment."""
    env = environment(name)
    return tuple(env.get_tools()), tuple(env.get_user_tools()) if env.user_tools else ()


class Tau2Domain:
    """``domain=<name>``: one of tau2's registered domains (``airline``, ``retail``, ``mock``, ...)."""

    def __init__(self, name: str, task_set: str | None = None) -> None:
        domains = sorted(registered_domains())
        if name not in domains:
            raise ValueError(f"domain.name={name!r} is not a tau2 domain; expected one of {domains}")
        self.name = name
        self.task_set = task_set or name

    def splits(self) -> list[str]:
        """The task splits the domain defines (empty when it has none)."""
        loader = registry.get_task_splits_loader(self.task_set)
        return sorted(loader()) if loader else []

    def tasks(self, split: str | None) -> list[Task]:
        """The tasks of ``split`` (all tasks for ``None`` or a domain without splits)."""
        loader = registry.get_tasks_loader(self.task_set)
        if split is None or not self.splits():
            return loader(None) if self.splits() else loader()
        if split not in self.splits():
            raise ValueError(f"task_split={split!r} is not a split of {self.name}; expected one of {self.splits()}")
        return loader(split)

    def task(self, task_id: str | int) -> Task:
        """The task with id ``task_id`` (compared as strings), whatever split holds it."""
        found = next((task for task in self.tasks(None) if task.id == str(task_id)), None)
        if found is None:
            raise ValueError(f"task id {task_id!r} is not a task of domain {self.name}")
        return found

    def tools(self) -> tuple[Tool, ...]:
        """The assistant's tools (their schemas; an environment runs them)."""
        return _tools(self.name)[0]

    def user_tools(self) -> tuple[Tool, ...]:
        """The user's own tools (telecom's phone); none for most domains."""
        return _tools(self.name)[1]

    def environment(self, task: Task | None = None) -> Environment:
        """A fresh environment (over the process's parsed database: ``environments``), brought to ``task``'s
        initial state as tau2's orchestrator does."""
        env = environment(self.name)
        state = task.initial_state if task is not None else None
        if state is not None:
            env.set_state(
                initialization_data=state.initialization_data,
                initialization_actions=state.initialization_actions,
                message_history=state.message_history or [],
            )
        return env
