"""The LLM judge filter against a scripted chat model, and verdict parsing."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from loguru import logger
from scripted_judge import GOOD, ScriptedModel, bad

from agentlab.feedback.filters import build_filters
from agentlab.feedback.judge import REASK, LLMJudgeFilter, Verdict, parse_verdict
from agentlab.models.pricing import Prices


def task(query: str, answer: str = "an answer", history: list[dict[str, str]] | None = None) -> dict[str, Any]:
    return {
        "task_id": hashlib.sha256(f"{query}\n{answer}".encode()).hexdigest(),
        "query": query,
        "answer": answer,
        "history": history or [],
    }


def test_good_kept_bad_dropped_with_reasons() -> None:
    model = ScriptedModel({"q1": [GOOD], "q2": [bad("wrong sum")], "q3": [bad("empty answer")]})
    tasks = [task("q1"), task("q2"), task("q3")]
    kept, report = LLMJudgeFilter(model).apply(tasks, [task("old")])
    assert kept == [tasks[0]]
    assert (report.name, report.kept, report.dropped) == ("llm_evaluate", 1, 2)
    assert report.reasons == {"judged BAD": 2}
    assert [(t["query"], r) for t, r in report.dropped_tasks] == [
        ("q2", "judged BAD: wrong sum"),
        ("q3", "judged BAD: empty answer"),
    ]
    assert model.closed == 1


def test_report_has_the_judges_cost_from_its_token_usage() -> None:
    model = ScriptedModel({"q1": [GOOD], "q2": ["no verdict here", GOOD]})  # q2 is re-asked once: 3 calls
    _, report = LLMJudgeFilter(model).apply([task("q1"), task("q2")], [])
    assert report.cost_usd == 0.0 and report.to_dict()["cost_usd"] == 0.0  # a local judge costs nothing
    model = ScriptedModel({"q1": [GOOD], "q2": ["no verdict here", GOOD]})
    model.prices = Prices(input=1.0, output=10.0)
    assert LLMJudgeFilter(model).apply([task("q1"), task("q2")], [])[1].cost_usd == pytest.approx(3 * (100 * 1.0 + 10 * 10.0) / 1e6)
    model = ScriptedModel({"q1": [GOOD]})
    model.prices = None  # a served judge litellm does not know
    assert LLMJudgeFilter(model).apply([task("q1")], [])[1].cost_usd is None


def test_prompt_holds_criteria_rubrics_and_conversation() -> None:
    model = ScriptedModel({"What is 2+2?": [GOOD]})
    rubrics = "1. Drop the task if the answer is wrong.\n2. The final answer must be wrapped in \\boxed{}.\n"
    history = [{"role": "user", "content": "hi there"}, {"role": "assistant", "content": "hello, how can I help?"}]
    LLMJudgeFilter(model, custom_rubrics=rubrics).apply([task("What is 2+2?", "\\boxed{4}", history)], [])
    ((messages, _),) = model.calls
    assert [m.role for m in messages] == ["system", "user"]
    system, user = messages[0].text, messages[1].text
    assert all(f"\n{i}. " in system for i in range(1, 8))
    assert "hallucinated" in system and "truncated or garbled" in system
    assert rubrics.strip() in system
    assert '{"reason": "<one short sentence>", "result": "GOOD" or "BAD"}' in system
    assert "[user]: hi there\n[assistant]: hello, how can I help?" in user
    assert "<question>\nWhat is 2+2?\n</question>" in user and "<answer>\n\\boxed{4}\n</answer>" in user


def test_temperature_and_max_tokens_passed_to_client() -> None:
    model = ScriptedModel({"q": [GOOD]})
    LLMJudgeFilter(model, temperature=0.5, max_tokens=64).apply([task("q")], [])
    assert model.calls[0][1] == {"temperature": 0.5, "max_tokens": 64}


def test_unparsed_reply_is_reasked_then_dropped_or_kept() -> None:
    model = ScriptedModel({"q1": ["I think it is fine.", "Still fine, really."], "q2": ["hmm", GOOD]})
    kept, report = LLMJudgeFilter(model).apply([task("q1"), task("q2")], [])
    assert [t["query"] for t in kept] == ["q2"]
    assert report.reasons == {"judge reply not parsed": 1}
    assert len(model.calls) == 4
    retry = next(messages for messages, _ in model.calls if len(messages) == 4)
    assert [m.role for m in retry] == ["system", "user", "assistant", "user"] and retry[3].text == REASK

    model = ScriptedModel({"q1": ["no idea"]})
    kept, report = LLMJudgeFilter(model, on_unparsed="keep", retries=0).apply([task("q1")], [])
    assert [t["query"] for t in kept] == ["q1"] and report.dropped == 0 and len(model.calls) == 1


def test_raising_call_drops_only_that_task() -> None:
    model = ScriptedModel({"q1": [GOOD], "q2": [TimeoutError("slow")], "q3": [bad("off topic")]})
    kept, report = LLMJudgeFilter(model).apply([task("q1"), task("q2"), task("q3")], [])
    assert [t["query"] for t in kept] == ["q1"]
    assert report.reasons == {"judge call failed: TimeoutError": 1, "judged BAD": 1}
    model = ScriptedModel({"q2": [ConnectionError("down")]})
    assert LLMJudgeFilter(model, on_unparsed="keep").apply([task("q2")], [])[0] == [task("q2")]


def test_max_thread_bounds_calls_in_flight() -> None:
    queries = [f"q{i}" for i in range(8)]
    model = ScriptedModel({q: [GOOD] for q in queries}, delays={q: 0.02 for q in queries})
    kept, _ = LLMJudgeFilter(model, max_thread=3).apply([task(q) for q in queries], [])
    assert len(kept) == 8 and model.max_active == 3
    serial = ScriptedModel({q: [GOOD] for q in queries}, delays={q: 0.005 for q in queries})
    LLMJudgeFilter(serial, max_thread=1).apply([task(q) for q in queries], [])
    assert serial.max_active == 1


def test_order_preserved_whatever_completes_first() -> None:
    queries = [f"q{i}" for i in range(6)]
    replies = {q: [GOOD if i % 2 == 0 else bad(f"bad {q}")] for i, q in enumerate(queries)}
    model = ScriptedModel(replies, delays={q: 0.03 - 0.005 * i for i, q in enumerate(queries)})
    kept, report = LLMJudgeFilter(model, max_thread=6).apply([task(q) for q in queries], [])
    assert [t["query"] for t in kept] == ["q0", "q2", "q4"]
    assert [(t["query"], r) for t, r in report.dropped_tasks] == [
        (q, f"judged BAD: bad {q}") for q in ("q1", "q3", "q5")
    ]


def test_print_reason_logs_each_verdict() -> None:
    lines: list[str] = []
    sink = logger.add(lines.append, level="INFO", format="{message}")
    try:
        LLMJudgeFilter(ScriptedModel({"q": [bad("wrong sum")]}), print_reason=True).apply([task("q")], [])
    finally:
        logger.remove(sink)
    assert any(line.strip() == f"llm_evaluate {task('q')['task_id'][:12]}: BAD: wrong sum" for line in lines)


def test_built_from_upstream_config() -> None:
    entry = {
        "type": "llm_evaluate",
        "enabled": True,
        "params": {
            "custom_rubrics": "1. Drop wrong answers.\n",
            "temperature": 0.5,
            "print_reason": False,
            "max_thread": 16,
        },
    }
    model = ScriptedModel({"q1": [GOOD], "q2": [bad("wrong")]})
    (judge,) = build_filters([entry], judge=model)
    kept, _ = judge.apply([task("q1"), task("q2")], [])
    assert [t["query"] for t in kept] == ["q1"]
    assert model.calls[0][1]["temperature"] == 0.5 and "1. Drop wrong answers." in model.calls[0][0][0].text


def test_bad_config() -> None:
    with pytest.raises(ValueError, match="on_unparsed must be drop or keep"):
        LLMJudgeFilter(ScriptedModel({}), on_unparsed="skip")
    with pytest.raises(ValueError, match="max_thread must be >= 1"):
        LLMJudgeFilter(ScriptedModel({}), max_thread=0)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('```json\n{"reason": "fine", "result": "GOOD"}\n```', Verdict("GOOD", "fine")),
        (
            'Let me think. The answer is off.\n{"reason": "off by one", "result": "BAD"}\nHope this helps!',
            Verdict("BAD", "off by one"),
        ),
        ('{"reason": "ok", "result": "good"}', Verdict("GOOD", "ok")),
        ("{'reason': \"it's right\", 'result': 'Bad'}", Verdict("BAD", "it's right")),
        ('{"Result": "BAD"}', Verdict("BAD", "")),
        (
            "The answer is incomplete.\nReason: it stops mid-sentence\nresult: BAD",
            Verdict("BAD", "it stops mid-sentence"),
        ),
        ("**Verdict:** GOOD", Verdict("GOOD", "")),
        ('{\n  "reason": "cut off",\n  "result": "BAD"', Verdict("BAD", "cut off")),
        (
            '{"reason": "looks GOOD at first, but the total is wrong", "result": "BAD"}',
            Verdict("BAD", "looks GOOD at first, but the total is wrong"),
        ),
        ('{"note": "x"} then {"reason": "r", "result": "GOOD"}', Verdict("GOOD", "r")),
        ("The answer looks GOOD to me.", None),
        ("This task is BAD.", Verdict("BAD", "This task is BAD.")),
        (" good ", Verdict("GOOD", "good")),
        ("This task is GOOD but also BAD.", None),
        ('{"reason": "fine", "result": "MAYBE"}', None),
        ("", None),
        ("garbage {not json at all", None),
    ],
)
def test_parse_verdict(text: str, expected: Verdict | None) -> None:
    assert parse_verdict(text) == expected
