"""``llm_evaluate``: an LLM judge reads each new task's conversation and drops the tasks it calls BAD.

The judge sees the earlier turns, the question and the answer, the built-in criteria of a bad training task
plus the user's ``custom_rubrics``, and must reply with only ``{"reason": ..., "result": "GOOD" | "BAD"}``.
One task's failure (a raising call, an unreadable reply) never stops the batch: it becomes that task's reason.

Concurrency: up to ``max_thread`` judge calls are in flight on one event loop. A remote model
(``model=openai``) serves them in parallel; the local model (``hf_local`` / ``smollm2``) runs each call in
a worker thread but serialises generation with a lock, so concurrency there is safe but gives no speed-up.
"""

from __future__ import annotations

import ast
import asyncio
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

from agent_framework import Content, Message
from loguru import logger
from tqdm import tqdm

from agentlab.config import ConfigError
from agentlab.feedback.filters import FilterReport, Task

Result = Literal["GOOD", "BAD"]
JUDGED_BAD = "judged BAD"
UNPARSED = "judge reply not parsed"
CALL_FAILED = "judge call failed"

SYSTEM_PROMPT = """You review conversations between a user and an AI agent before they become training tasks.
Decide whether the task is BAD (it must be dropped). A task is BAD if any of these holds:
1. The answer is empty or nearly empty.
2. The answer does not address the question: a non-answer, a deflection, or "I can't help" where help was possible.
3. The answer is factually wrong or internally inconsistent.
4. The answer contains unsafe, harmful or privacy-leaking content.
5. The answer is truncated or garbled: cut off mid-sentence, broken formatting, repeated text.
6. The answer claims tool results or actions that the agent could not have obtained or done (hallucinated).
7. The question is not a real task (a test message, a bare greeting, spam), so there is nothing to learn.
Otherwise the task is GOOD."""

RUBRICS_HEADER = "Also apply these additional criteria; a task that fails any of them is BAD:"

REPLY_SHAPE = '{"reason": "<one short sentence>", "result": "GOOD" or "BAD"}'
REPLY_FORMAT = f"Reply with ONLY a JSON object and nothing else:\n{REPLY_SHAPE}"
REASK = f"Your reply could not be read. Reply with ONLY a JSON object: {REPLY_SHAPE}"

VERDICT_LINE = re.compile(
    r"""^[\s*_#>`-]*["']?(?:result|verdict)["']?[\s*_]*[:=][\s*_"'`]*(GOOD|BAD)\b""", re.IGNORECASE | re.MULTILINE
)
# the whole reply is a direct answer to the prompt's closing question ("Is this task GOOD or BAD?")
DIRECT_ANSWER = re.compile(r"^\W*(?:(?:this|the) task is\s+)?(GOOD|BAD)\W*$", re.IGNORECASE)
REASON_LINE = re.compile(r"""^[\s*_#>`-]*["']?reason["']?[\s*_]*[:=]\s*(.+?)\s*$""", re.IGNORECASE | re.MULTILINE)


@dataclass(frozen=True)
class Verdict:
    """The judge's decision on one task."""

    result: Result
    reason: str


def _verdict_of(obj: Any) -> Verdict | None:
    """A verdict from a parsed object with a ``result`` of GOOD or BAD (keys and value case-insensitive)."""
    if not isinstance(obj, dict):
        return None
    fields = {str(k).strip().lower(): v for k, v in obj.items()}
    result = str(fields.get("result", "")).strip().upper()
    if result not in ("GOOD", "BAD"):
        return None
    return Verdict(result=result, reason=str(fields.get("reason") or "").strip())


def _objects(text: str) -> Iterator[Any]:
    """Every ``{...}`` object in ``text``, in order: as JSON, else as a Python literal (single-quoted keys)."""
    decoder = json.JSONDecoder()
    for start in (m.start() for m in re.finditer(r"\{", text)):
        try:
            yield decoder.raw_decode(text, start)[0]
            continue
        except json.JSONDecodeError:
            pass
        for end in (m.end() for m in re.finditer(r"\}", text[start:])):
            try:
                yield ast.literal_eval(text[start : start + end])
                break
            except (ValueError, SyntaxError, TypeError, RecursionError):
                continue


def parse_verdict(text: str) -> Verdict | None:
    """The judge's verdict: the first JSON object with a valid ``result``, else a ``result: GOOD`` line, else a
    reply that is nothing but the answer to the prompt's question ("This task is GOOD."; small local judges
    answer so), else None.

    The result is read from a ``result`` (or ``verdict``) field or a bare answer, never guessed from a reason's words.
    """
    for obj in _objects(text or ""):
        verdict = _verdict_of(obj)
        if verdict is not None:
            return verdict
    direct = DIRECT_ANSWER.match((text or "").strip())
    if direct is not None:
        return Verdict(result=direct.group(1).upper(), reason=text.strip())
    line = VERDICT_LINE.search(text or "")
    if line is None:
        return None
    reason = REASON_LINE.search(text)
    return Verdict(result=line.group(1).upper(), reason=reason.group(1).strip("\"',") if reason else "")


def system_prompt(custom_rubrics: str = "") -> str:
    """The built-in criteria, the user's rubrics (if any) and the reply format."""
    parts = [SYSTEM_PROMPT]
    if custom_rubrics.strip():
        parts.append(f"{RUBRICS_HEADER}\n{custom_rubrics.strip()}")
    parts.append(REPLY_FORMAT)
    return "\n\n".join(parts)


def task_prompt(task: Task) -> str:
    """The conversation the judge reviews, each part in tags so the texts cannot pose as instructions."""
    turns = "\n".join(f"[{turn.get('role', 'user')}]: {turn.get('content', '')}" for turn in task.get("history") or [])
    parts = [f"<history>\n{turns}\n</history>"] if turns else []
    parts.append(f"<question>\n{task.get('query') or ''}\n</question>")
    parts.append(f"<answer>\n{task.get('answer') or ''}\n</answer>")
    parts.append("Is this task GOOD or BAD?")
    return "\n\n".join(parts)


def _message(role: str, text: str) -> Message:
    return Message(role=role, contents=[Content.from_text(text)])


class LLMJudgeFilter:
    """``llm_evaluate``: keeps the tasks an LLM judge calls GOOD.

    ``model`` is a configured model (``client(task, role)``); a reply that cannot be parsed is re-asked
    ``retries`` times, then it (like a call that raises) is dropped or kept as ``on_unparsed`` says.
    """

    name = "llm_evaluate"

    def __init__(
        self,
        model: Any,
        custom_rubrics: str = "",
        temperature: float = 0.0,
        max_thread: int = 4,
        print_reason: bool = False,
        max_tokens: int = 256,
        on_unparsed: Literal["drop", "keep"] = "drop",
        retries: int = 1,
        progress: bool = True,
    ) -> None:
        if on_unparsed not in ("drop", "keep"):
            raise ConfigError(f"llm_evaluate filter: on_unparsed must be drop or keep, got {on_unparsed!r}")
        if max_thread < 1:
            raise ConfigError(f"llm_evaluate filter: max_thread must be >= 1, got {max_thread}")
        if retries < 0:
            raise ConfigError(f"llm_evaluate filter: retries must be >= 0, got {retries}")
        self.model = model
        self.system_prompt = system_prompt(custom_rubrics or "")
        self.options = {"temperature": float(temperature), "max_tokens": int(max_tokens)}
        self.max_thread, self.print_reason = max_thread, print_reason
        self.on_unparsed, self.retries, self.progress = on_unparsed, retries, progress
        self.usage: dict[str, int] = {}  # the judge's tokens over every call, for its cost

    async def _ask(self, task: Task) -> Verdict | str:
        """The verdict on ``task``, re-asking after an unreadable reply; the unparsed reason if none is readable."""
        client = self.model.client(None, "agent")
        messages = [_message("system", self.system_prompt), _message("user", task_prompt(task))]
        for _ in range(self.retries + 1):
            response = await client.get_response(messages, options=dict(self.options))
            for key, value in (response.usage_details or {}).items():
                if isinstance(value, int):
                    self.usage[key] = self.usage.get(key, 0) + value
            reply = response.text
            verdict = parse_verdict(reply)
            if verdict is not None:
                return verdict
            logger.debug(f"llm_evaluate: unreadable judge reply for {task.get('task_id', '')[:12]}: {reply[:200]!r}")
            messages = [*messages, _message("assistant", reply), _message("user", REASK)]
        return UNPARSED

    async def _judge(self, task: Task, slots: asyncio.Semaphore, bar: tqdm) -> Verdict | str:
        """The verdict, or why there is none; never raises, so one task cannot fail the batch."""
        async with slots:
            try:
                return await self._ask(task)
            except Exception as exc:  # noqa: BLE001 - any client error is this task's outcome, not the batch's
                logger.warning(f"llm_evaluate: judge call failed for {task.get('task_id', '')[:12]}: {exc!r}")
                return f"{CALL_FAILED}: {type(exc).__name__}"
            finally:
                bar.update()

    async def _judge_all(self, tasks: list[Task]) -> list[Verdict | str]:
        """All verdicts in input order, at most ``max_thread`` calls in flight; the model's connections closed after."""
        slots = asyncio.Semaphore(self.max_thread)
        with tqdm(total=len(tasks), desc="llm_evaluate", unit="task", disable=not self.progress) as bar:
            try:
                return await asyncio.gather(*(self._judge(task, slots, bar) for task in tasks))
            finally:
                await self.model.aclose()

    def _log(self, task: Task, outcome: Verdict | str) -> None:
        if self.print_reason:
            text = f"{outcome.result}: {outcome.reason}" if isinstance(outcome, Verdict) else outcome
            logger.info(f"llm_evaluate {task.get('task_id', '')[:12]}: {text}")

    def apply(self, new: list[Task], existing: list[Task]) -> tuple[list[Task], FilterReport]:
        """Judge ``new`` (``existing`` is not needed); call from synchronous code (it runs its own event loop)."""
        outcomes = asyncio.run(self._judge_all(new)) if new else []
        kept, dropped, unjudged = [], [], 0
        for task, outcome in zip(new, outcomes, strict=True):
            self._log(task, outcome)
            if isinstance(outcome, Verdict) and outcome.result == "GOOD":
                kept.append(task)
            elif isinstance(outcome, Verdict):
                dropped.append((task, f"{JUDGED_BAD}: {outcome.reason}" if outcome.reason else JUDGED_BAD))
            elif self.on_unparsed == "keep":
                kept.append(task)
                unjudged += 1
            else:
                dropped.append((task, outcome))
        if unjudged:
            logger.warning(f"llm_evaluate: kept {unjudged} task(s) the judge could not assess (on_unparsed=keep)")
        prices = self.model.prices
        cost = None if prices is None else prices.cost(self.usage)
        return kept, FilterReport.of(self.name, kept, dropped, group=_summary, cost_usd=cost)


def _summary(reason: str) -> str:
    """Free-text judge reasons share one bucket; failure reasons stay as they are."""
    return JUDGED_BAD if reason.startswith(JUDGED_BAD) else reason
