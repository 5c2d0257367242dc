"""``feedback=studio``: a Studio database -> new pairs -> filters -> the task store -> training dialogs.

Trace feedback, as a ``stage=train`` data source (``dialogs(work_dir)``): each training round
reads the database again, and only pairs never seen before go through the filters; the kept ones are
appended to ``train_output_path`` with the round that added them, and the round trains on its own new
train-split tasks (the stage's replay buffer adds earlier rounds). A re-run into the same run dir finds
its round's tasks in the store, so a crash after filtering loses nothing and judges nothing twice.

A task becomes a dialog the agent's way round: system prompt and tools (the tau2 domain's, as the harness
shows them, or ``system_prompt`` for a non-tau2 agent), the earlier exchanges of its conversation, the
question, then the answer with its tool calls and results when the traced reply carried them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from loguru import logger

from agentlab.config import ConfigError
from agentlab.eval.dialog import Dialog, DialogError, domain_prompt, parse_dialog
from agentlab.feedback.filters import apply_filters, build_filters
from agentlab.feedback.msg import TraceMessage
from agentlab.feedback.reader import StudioReader
from agentlab.feedback.studio import StudioError
from agentlab.feedback.tasks import TaskStore
from agentlab.jsonl import write_atomic
from agentlab.rundir import FEEDBACK_REPORT_FILE


def answer_turns(blocks: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """An answer's blocks -> assistant/tool turns: calls ride on the assistant turn before their results."""
    message = TraceMessage(role="assistant", blocks=[dict(b) for b in blocks])
    results = {r["id"]: r for r in message.tool_results()}
    calls = {c["id"]: c for c in message.tool_calls()}
    turns: list[dict[str, Any]] = []
    text: list[str] = []
    pending: list[dict[str, Any]] = []
    for block in message.blocks:
        kind = block.get("type")
        if kind == "text" and block.get("text"):
            text.append(block["text"])
        elif kind == "tool_use":
            pending.append(calls[block["id"]])
        elif kind == "tool_result" and block.get("id") in results:
            if pending:
                turns.append({"role": "assistant", "content": "\n".join(text), "tool_calls": pending})
                text, pending = [], []
            result = results[block["id"]]
            turns.append({"role": "tool", "content": result["output"], "tool_call_id": result["id"], "name": result.get("name")})
    if pending:
        turns.append({"role": "assistant", "content": "\n".join(text), "tool_calls": pending})
    elif text:
        turns.append({"role": "assistant", "content": "\n".join(text)})
    return turns


class StudioFeedback:
    """The ``feedback`` settings, built: the database, the task store and the filters."""

    def __init__(
        self,
        base_url: str,
        train_output_path: str,
        filters: list[dict[str, Any]] | None = None,
        judge: Any = None,
        val_ratio: float = 0.3,
        seed: int = 0,
        agent_spans: str | None = None,
        max_history: int = 8,
        domain: str | None = None,
        system_prompt: str = "",
    ) -> None:
        try:
            self.reader = StudioReader(base_url, agent_spans, max_history)
        except StudioError as exc:
            raise StudioError(f"feedback.base_url: {exc}") from exc
        try:
            self.filters = build_filters(list(filters or []), judge)
        except ConfigError as exc:
            raise ConfigError(f"feedback.{exc}") from exc
        self.store = TaskStore(train_output_path, val_ratio, seed)
        self.domain, self.system_prompt = domain, system_prompt
        self.counts: dict[str, int] = {}

    def refresh(self, round_id: str) -> dict[str, Any]:
        """Read the database; filter the new pairs; store kept and dropped ones. Returns the read's report."""
        database = str(self.reader.path)
        new, repeats = self.store.new_tasks(self.reader.pairs(), round_id, database)
        kept, reports = apply_filters(self.filters, new, self.store.tasks)
        dropped = [(task, report.name, reason) for report in reports for task, reason in report.dropped_tasks]
        self.store.add(kept, dropped)
        stats = self.reader.stats
        logger.info(f"{database}: {stats.pairs} pairs, {repeats} seen before, {len(new)} new, {len(kept)} kept -> {self.store.path}")
        return {
            "read": stats.to_dict(),
            "repeats": repeats,
            "new": len(new),
            "kept": len(kept),
            "filters": [r.to_dict() for r in reports],
            "tasks_file": str(self.store.path),
            "tasks_total": len(self.store.tasks),
        }

    def dialogs(self, work_dir: Path) -> list[Dialog]:
        """This round's new train-split tasks as dialogs; the read's report goes to ``work_dir/tracing.json``."""
        round_id = str(work_dir.resolve())
        report = self.refresh(round_id)
        tasks = self.store.round_tasks(round_id, "train")
        system, tools = domain_prompt(self.domain) if self.domain else (self.system_prompt, [])
        dialogs = [d for d in (self._dialog(t, system, tools) for t in tasks) if d is not None]
        report.update(round_train=len(tasks), round_val=len(self.store.round_tasks(round_id, "val")), dialogs=len(dialogs))
        work_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(work_dir / FEEDBACK_REPORT_FILE, json.dumps(report, indent=2))
        self.counts = {"trace_spans": report["read"]["spans"], "trace_pairs": report["read"]["pairs"], "new_tasks": report["new"],
                       "kept_tasks": report["kept"], "round_train_tasks": len(tasks), "tasks_total": report["tasks_total"],
                       **{f"dropped_by_{f['name']}": f["dropped"] for f in report["filters"]},
                       **{f"cost_usd_{f['name']}": f["cost_usd"] for f in report["filters"] if f["cost_usd"] != 0.0}}
        return dialogs

    def _dialog(self, task: Mapping[str, Any], system: str, tools: list[dict[str, Any]]) -> Dialog | None:
        turns = [*task["history"], {"role": "user", "content": task["query"]}, *answer_turns(task["answer_blocks"])]
        row = {"dialog_id": f"trace/{task['task_id'][:16]}", "system": system, "tools": tools, "turns": turns,
               "metadata": {"source": "tracing", "task_id": task["task_id"], "conversation_id": task["conversation_id"]}}
        try:
            return parse_dialog(row)
        except DialogError as exc:
            logger.warning(f"task {task['task_id'][:12]} is not a valid training dialog ({exc}); left out")
            return None
