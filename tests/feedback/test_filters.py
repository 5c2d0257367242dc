"""Rule and deduplication filters, the config -> filters builder, and filter chaining."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import pytest
from omegaconf import OmegaConf

from agentlab.feedback.filters import (
    DeduplicationFilter,
    FilterReport,
    RuleFilter,
    apply_filters,
    build_filters,
)
from agentlab.feedback.judge import LLMJudgeFilter

BOXED = r"\\boxed\{.+?\}"


def task(query: str, answer: str, history: list[dict[str, str]] | None = None) -> dict[str, Any]:
    return {
        "task_id": hashlib.sha256(f"{query}\n{answer}".encode()).hexdigest(),
        "query": query,
        "answer": answer,
        "history": history or [],
    }


def queries(tasks: list[dict[str, Any]]) -> list[str]:
    return [t["query"] for t in tasks]


class KeepFirst:
    """A user's own filter, reached by a dotted path: keeps the first ``count`` new tasks."""

    name = "keep_first"

    def __init__(self, count: int = 1) -> None:
        self.count = count

    def apply(self, new: list[dict], existing: list[dict]) -> tuple[list[dict], FilterReport]:
        dropped = [(t, "over the count") for t in new[self.count :]]
        return new[: self.count], FilterReport.of(self.name, new[: self.count], dropped)


class NeedsModel:
    """A user's filter that takes the judge model."""

    name = "needs_model"

    def __init__(self, model: Any, strict: bool = False) -> None:
        self.model, self.strict = model, strict

    def apply(self, new: list[dict], existing: list[dict]) -> tuple[list[dict], FilterReport]:
        return new, FilterReport.of(self.name, new, [])


# --- rule ---


def test_rule_length_bounds() -> None:
    tasks = [task("q1", "abc"), task("q2", "abcdef"), task("q3", "abcdefghijkl")]
    kept, report = RuleFilter(min_length=5, max_length=10).apply(tasks, [])
    assert queries(kept) == ["q2"]
    assert report.reasons == {"answer shorter than 5 chars": 1, "answer longer than 10 chars": 1}
    assert (report.kept, report.dropped) == (1, 2)
    assert [(t["query"], r) for t, r in report.dropped_tasks] == [
        ("q1", "answer shorter than 5 chars"),
        ("q3", "answer longer than 10 chars"),
    ]
    assert report.to_dict() == {"name": "rule", "kept": 1, "dropped": 2, "reasons": report.reasons, "cost_usd": 0.0}


def test_rule_on_query_field_and_no_bounds() -> None:
    tasks = [task("hi", "a long enough answer"), task("a real question", "ok")]
    kept, report = RuleFilter(min_length=5, field="query").apply(tasks, [])
    assert queries(kept) == ["a real question"]
    assert report.reasons == {"query shorter than 5 chars": 1}
    assert RuleFilter().apply(tasks, [])[0] == tasks


def test_rule_must_match_boxed() -> None:
    tasks = [task("q1", r"so the answer is \boxed{42}"), task("q2", "the answer is 42"), task("q3", r"\boxed{}")]
    kept, report = RuleFilter(must_match=[BOXED]).apply(tasks, [])
    assert queries(kept) == ["q1"]
    assert report.reasons == {f"answer does not match {BOXED!r}": 2}
    assert report.reasons == {r"answer does not match '\\\\boxed\\{.+?\\}'": 2}


def test_boxed_pattern_as_written_in_yaml() -> None:
    """YAML single quotes keep backslashes: the pattern ``\\\\boxed\\{.+?\\}`` is written ``'\\\\boxed\\{.+?\\}'``."""
    entries = OmegaConf.to_container(
        OmegaConf.create(r"""
filters:
  - type: rule
    enabled: true
    params: {must_match: ['\\boxed\{.+?\}']}
""")
    )["filters"]
    (rule,) = build_filters(entries)
    kept, _ = rule.apply([task("q1", r"\boxed{7}"), task("q2", "7")], [])
    assert queries(kept) == ["q1"]


def test_rule_must_match_all_and_must_not_match() -> None:
    tasks = [task("q1", "Final: 3. Done."), task("q2", "Final: 3. As an AI, Done."), task("q3", "Done.")]
    kept, report = RuleFilter(must_match=["Final:", r"Done\."], must_not_match=["(?i)as an ai"]).apply(tasks, [])
    assert queries(kept) == ["q1"]
    assert report.reasons == {"answer matches '(?i)as an ai'": 1, "answer does not match 'Final:'": 1}


def test_rule_bad_regex_fails_at_construction() -> None:
    with pytest.raises(ValueError, match=r"must_not_match pattern '\(unclosed'"):
        RuleFilter(must_not_match=["ok", "(unclosed"])
    with pytest.raises(ValueError, match="field must be one of answer, query"):
        RuleFilter(field="history")
    with pytest.raises(ValueError, match="min_length 9 is greater than max_length 3"):
        RuleFilter(min_length=9, max_length=3)


# --- deduplication ---

LONG = "please explain how to reset the router when the internet connection keeps dropping every hour"


def test_ngram_drops_exact_duplicate_within_batch() -> None:
    first = task("Reset the ROUTER?", "Unplug it for ten seconds, then plug it back in.")
    again = task("reset  the router?", "unplug it for ten seconds,\nthen plug it back in.")
    other = task("What is the capital of France?", "Paris is the capital of France.")
    kept, report = DeduplicationFilter().apply([first, again, other], [])
    assert kept == [first, other]
    assert report.dropped_tasks == [(again, f"near-duplicate of {first['task_id'][:12]} (similarity 1.00)")]
    assert report.reasons == {"near-duplicate": 1}


def test_ngram_drops_near_duplicate_of_existing() -> None:
    old = task("router", LONG + " today")
    near = task("router", LONG + " tonight")  # 14 of the 16 word 3-grams of both are shared: 0.875
    distinct = task(
        "router", "the capital of france is paris and it lies on the river seine in the north of the country"
    )
    kept, report = DeduplicationFilter().apply([near, distinct], [old])
    assert kept == [distinct]
    ((_, reason),) = report.dropped_tasks
    assert reason == f"near-duplicate of {old['task_id'][:12]} (similarity 0.88)"


def test_ngram_threshold_is_inclusive() -> None:
    """n=1 compares word sets: {alpha, beta, gamma} vs {alpha, beta, delta} is 2/4 = 0.5 exactly."""
    old, new = task("alpha beta", "gamma"), task("alpha beta", "delta")
    assert DeduplicationFilter(threshold=0.5, n=1).apply([new], [old])[0] == []
    assert DeduplicationFilter(threshold=0.5001, n=1).apply([new], [old])[0] == [new]


def test_ngram_short_texts_use_word_sets() -> None:
    """Two words with n=3: compared as word sets, so word order does not matter."""
    old, new = task("hello", "world"), task("world", "hello")
    assert DeduplicationFilter().apply([new], [old])[0] == []


def test_dropped_task_never_causes_another_drop() -> None:
    """b is 0.8 like a and is dropped; c is 0.67 like b but only 0.5 like a, the only kept one: c stays."""
    a, b, c = task("w1 w2 w3", "w4"), task("w1 w2 w3", "w4 w5"), task("w2 w3 w4", "w5 w6")
    kept, report = DeduplicationFilter(threshold=0.65, n=1).apply([a, b, c], [])
    assert kept == [a, c]
    assert report.dropped == 1


def test_dedup_bad_config() -> None:
    with pytest.raises(ValueError, match="method must be one of ngram, embedding"):
        DeduplicationFilter(method="minhash")
    with pytest.raises(ValueError, match=r"threshold must be in \(0, 1\]"):
        DeduplicationFilter(threshold=1.5)
    assert DeduplicationFilter().threshold == 0.8
    assert DeduplicationFilter(method="embedding", encoder=lambda texts: np.ones((len(texts), 2))).threshold == 0.95


def fake_encoder(texts: list[str]) -> np.ndarray:
    """Vectors by topic word: cat and kitten are 0.96 alike, car is orthogonal to both (unnormalised on purpose)."""
    vectors = {"cat": [2.0, 0.0], "kitten": [0.96, 0.28], "car": [0.0, 3.0]}
    return np.array([next(v for word, v in vectors.items() if word in text.split()) for text in texts])


def test_embedding_with_injected_encoder() -> None:
    cat, kitten, car = task("cat", "meow"), task("kitten", "meow"), task("car", "vroom")
    kept, report = DeduplicationFilter(method="embedding", encoder=fake_encoder).apply([kitten, car], [cat])
    assert kept == [car]
    assert report.dropped_tasks == [(kitten, f"near-duplicate of {cat['task_id'][:12]} (similarity 0.96)")]
    assert DeduplicationFilter(method="embedding", threshold=0.97, encoder=fake_encoder).apply([kitten, car], [cat])[
        0
    ] == [
        kitten,
        car,
    ]


# --- build_filters / apply_filters ---


def test_build_filters_skips_disabled_and_keeps_order() -> None:
    entries = [
        {"type": "rule", "enabled": True, "params": {"min_length": 2}},
        {"type": "deduplication", "enabled": False, "params": {"nonsense": 1}},
        {"type": "deduplication"},
    ]
    filters = build_filters(entries)
    assert [type(f) for f in filters] == [RuleFilter, DeduplicationFilter]
    assert filters[0].min_length == 2
    assert build_filters(None) == [] and build_filters([]) == []


def test_unknown_type_names_known_types_and_index() -> None:
    entries = [{"type": "rule"}, {"type": "rule"}, {"type": "llm_judge", "enabled": True}]
    with pytest.raises(
        ValueError,
        match=r"filters\[2\]\.type: unknown filter type 'llm_judge'; known types: deduplication, "
        r"llm_evaluate, rule",
    ):
        build_filters(entries)


def test_dotted_path_custom_filter() -> None:
    (custom,) = build_filters([{"type": f"{__name__}.KeepFirst", "params": {"count": 2}}])
    kept, reports = apply_filters([custom], [task("a", "1"), task("b", "2"), task("c", "3")], [])
    assert queries(kept) == ["a", "b"] and reports[0].reasons == {"over the count": 1}
    with pytest.raises(ValueError, match=r"filters\[0\]\.type: cannot import 'agentlab\.feedback\.nowhere\.Filter'"):
        build_filters([{"type": "agentlab.feedback.nowhere.Filter"}])


def test_unknown_param_names_accepted_params() -> None:
    with pytest.raises(
        ValueError,
        match=r"filters\[0\]\.params: .*'min_len'.*filter 'rule' accepts: min_length, max_length, "
        r"must_match, must_not_match, field",
    ):
        build_filters([{"type": "rule", "params": {"min_len": 3}}])


def test_bad_entry_shapes() -> None:
    with pytest.raises(ValueError, match=r"filters\[0\]: unknown keys param; an entry has only type, enabled, params"):
        build_filters([{"type": "rule", "param": {}}])
    with pytest.raises(ValueError, match=r"filters\[0\]\.params must be a mapping, got list"):
        build_filters([{"type": "rule", "params": ["min_length", 3]}])
    with pytest.raises(ValueError, match=r"filters\[0\]\.enabled must be true or false, got 'no'"):
        build_filters([{"type": "rule", "enabled": "no"}])
    with pytest.raises(ValueError, match=r"filters\[0\] must be a mapping"):
        build_filters(["rule"])


def test_judge_injected_into_model_parameter() -> None:
    judge, own = object(), object()
    upstream = {
        "custom_rubrics": "1. Drop wrong answers.\n",
        "temperature": 0.5,
        "print_reason": False,
        "max_thread": 16,
    }
    built = build_filters(
        [
            {"type": "llm_evaluate", "enabled": True, "params": upstream},
            {"type": f"{__name__}.NeedsModel", "params": {"model": own}},
            {"type": f"{__name__}.NeedsModel", "params": {"model": None, "strict": True}},
        ],
        judge=judge,
    )
    assert isinstance(built[0], LLMJudgeFilter) and built[0].model is judge and built[0].max_thread == 16
    assert built[1].model is own and built[2].model is judge


def test_missing_judge_model() -> None:
    with pytest.raises(ValueError, match=r"filters\[1\]: filter 'llm_evaluate' needs a judge model"):
        build_filters([{"type": "rule"}, {"type": "llm_evaluate", "params": {"custom_rubrics": "x"}}])


def test_apply_filters_chains_and_reports() -> None:
    existing = [task("router", LONG + " today")]
    new = [
        task("q1", "tiny"),
        task("router", LONG + " tonight"),
        task("q3", r"a fine answer: \boxed{3}"),
        task("q3", r"a fine answer: \boxed{3}"),
        task("q5", "a fine answer without a box"),
    ]
    filters = build_filters(
        [
            {"type": "rule", "params": {"min_length": 5}},
            {"type": "deduplication", "params": {"method": "ngram"}},
            {"type": "rule", "params": {"must_match": [BOXED]}},
        ]
    )
    kept, reports = apply_filters(filters, new, existing)
    assert kept == [new[2]]
    assert [(r.name, r.kept, r.dropped) for r in reports] == [("rule", 4, 1), ("deduplication", 2, 2), ("rule", 1, 1)]
    assert reports[1].reasons == {"near-duplicate": 2}
    assert [t["query"] for t, _ in reports[2].dropped_tasks] == ["q5"]
