"""(query, tool) pairs from real conversations: the conversation up to an agent turn -> the tool it called next.

Dialogs come from the training data sources (``agentlab.training.sources``: the oracle's expert runs,
evaluation ``results.jsonl`` files filtered by reward, dialog files) and the Studio trace reader
(``agentlab.feedback.source``), each with ``dialogs(work_dir)``; this module only cuts them into pairs.
Every assistant turn that calls tools gives one pair per distinct tool it calls, its query the turns
before it. A pair's tool is a catalog id: the dialog's domain (``metadata.domain``) and the tool name, or,
for a dialog that names no domain (traces, external files), the one catalog tool of that name.

Held-out tasks never feed training: a training dialog of a task in its domain's ``test`` split (the split
every training source refuses) is refused, as ``stage=train`` refuses dialogs of the tasks it evaluates on.
The held-out queries (``HeldOutDialogs``) are the oracle's gold runs of exactly those tasks.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from agentlab.config import ConfigError
from agentlab.eval.dialog import Dialog
from agentlab.eval.domains import Tau2Domain
from agentlab.eval.protocol import Protocol
from agentlab.retrieval.catalog import CatalogTool
from agentlab.training.data import HELD_OUT_SPLIT, dialogs_of_tasks, expert_dialogs

RESULT_CHARS = 300  # a tool result's text kept in a query (results can be whole database rows)


@dataclass(frozen=True)
class Pair:
    """A query (the conversation so far, as text) and the catalog id of the tool the agent called next."""

    query: str
    tool: str
    dialog_id: str


def render(turns: Sequence[dict[str, Any]]) -> str:
    """Turns as the text a retriever reads: one line per turn, calls as ``name(arguments)``, results cut short."""
    lines = []
    for turn in turns:
        if turn["role"] == "tool":
            lines.append(f"tool {turn.get('name')}: {turn['content'][:RESULT_CHARS]}")
            continue
        if turn.get("content"):
            lines.append(f"{turn['role']}: {turn['content']}")
        for call in turn.get("tool_calls") or []:
            lines.append(f"{turn['role']} called {call['name']}({json.dumps(call['arguments'], sort_keys=True)})")
    return "\n".join(lines)


def _resolver(catalog: Iterable[CatalogTool]) -> tuple[set[str], dict[str, list[str]]]:
    tools = list(catalog)
    by_name: dict[str, list[str]] = defaultdict(list)
    for tool in tools:
        if tool.side == "assistant":
            by_name[tool.name].append(tool.id)
    return {t.id for t in tools}, by_name


def pairs_of(
    dialogs: Iterable[Dialog], catalog: Iterable[CatalogTool], counts: dict[str, int] | None = None
) -> list[Pair]:
    """Every (conversation so far, next tool) pair of ``dialogs`` whose tool the catalog holds.

    A call whose tool is not in the catalog (or, with no domain, is ambiguous) gives no pair; ``counts`` gets
    ``pairs`` and ``calls_not_in_catalog``.
    """
    ids, by_name = _resolver(catalog)
    tally = counts if counts is not None else {}
    tally.setdefault("pairs", 0)
    tally.setdefault("calls_not_in_catalog", 0)
    pairs = []
    for dialog in dialogs:
        domain = dialog.metadata.get("domain")
        for index, turn in enumerate(dialog.turns):
            if turn["role"] != "assistant" or not turn.get("tool_calls"):
                continue
            query = render(dialog.turns[:index])
            for name in dict.fromkeys(call["name"] for call in turn["tool_calls"]):
                tool = f"{domain}/{name}" if domain else (by_name[name][0] if len(by_name.get(name, [])) == 1 else None)
                if tool not in ids:
                    tally["calls_not_in_catalog"] += 1
                    continue
                pairs.append(Pair(query, tool, dialog.dialog_id))
    tally["pairs"] += len(pairs)
    return pairs


def held_out_dialogs(dialogs: list[Dialog]) -> list[Dialog]:
    """The dialogs of tasks in their domain's held-out ``test`` split (only dialogs naming domain and task match)."""
    found = []
    for domain in sorted({str(d.metadata["domain"]) for d in dialogs if d.metadata.get("domain")}):
        tau2 = Tau2Domain(domain)
        if HELD_OUT_SPLIT in tau2.splits():
            found += dialogs_of_tasks(dialogs, domain, [t.id for t in tau2.tasks(HELD_OUT_SPLIT)])
    return found


def refuse_held_out_dialogs(dialogs: list[Dialog], allow: bool, counts: dict[str, int]) -> None:
    """Training dialogs of held-out tasks are refused (``allow``: counted as ``held_out_overlap`` and kept)."""
    overlap = held_out_dialogs(dialogs)
    if not overlap:
        return
    ids = sorted({f"{d.metadata['domain']}/{d.metadata['task_id']}" for d in overlap})
    if not allow:
        raise ConfigError(
            f"stage.sources: {len(overlap)} training dialog(s) are of {len(ids)} held-out task(s) (the {HELD_OUT_SPLIT!r} "
            f"split: {ids[:10]}{' ...' if len(ids) > 10 else ''}): the retriever would be measured on queries it was trained "
            "on. Train on other tasks (e.g. the results of a task_split=train run) or set stage.allow_held_out_overlap=true"
        )
    counts["held_out_overlap"] = len(overlap)


def hard_negatives(pair: Pair, by_domain: dict[str, list[str]], count: int, rng: random.Random) -> list[str]:
    """``count`` other tools of the positive's own domain (where look-alikes are most confusable), seeded."""
    domain = pair.tool.split("/", 1)[0]
    others = [t for t in by_domain.get(domain, []) if t != pair.tool]
    return rng.sample(others, k=min(count, len(others)))


def tools_by_domain(catalog: Iterable[CatalogTool]) -> dict[str, list[str]]:
    by_domain: dict[str, list[str]] = defaultdict(list)
    for tool in catalog:
        by_domain[tool.domain].append(tool.id)
    return dict(by_domain)


def write_pairs(pairs: Iterable[Pair], path: Path) -> Path:
    """Pairs as JSONL (query, tool, dialog_id), for inspection and re-use."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(asdict(p)) + "\n" for p in pairs), encoding="utf-8")
    return path


@dataclass
class HeldOutDialogs:
    """The held-out queries' conversations: the oracle's gold runs of ``domain``'s ``test`` split, kept in ``work_dir``.

    Measured on, never trained on (training dialogs of these tasks are refused). A domain without a ``test``
    split (mock) has no held-out tasks and gives none.
    """

    domain: str
    num_tasks: int | None = None
    max_steps: int = 200
    protocol: Protocol | None = None

    def dialogs(self, work_dir: Path) -> list[Dialog]:
        if HELD_OUT_SPLIT not in Tau2Domain(self.domain).splits():
            return []
        return expert_dialogs(
            self.domain,
            HELD_OUT_SPLIT,
            self.num_tasks,
            None,
            work_dir / f"held_out_{self.domain}",
            self.max_steps,
            self.protocol,
            allow_held_out=True,
        )
