"""Dialog sources: the JSONL schema and its row-numbered errors, evaluation results, the oracle's expert dialogs.

The expert run also records every request the oracle agent received, to check that the formatter's text
before each assistant turn is exactly the prompt the local backend renders for that request.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from agent_framework import Message
from sft_helpers import TOOLS, tokenizer, weather_dialog
from tau2.data_model.tasks import Task

from agentlab.eval.dialog import Dialog, DialogError, load_dialogs_jsonl, write_dialogs_jsonl
from agentlab.eval.protocol import DEFAULT_PROMPTS
from agentlab.jsonl import numbered_rows
from agentlab.models import oracle
from agentlab.models.local import _instructions, request_tool_schemas
from agentlab.models.toolformat import chat_turns, system_prompt
from agentlab.rundir import RESULTS_FILE
from agentlab.training import data
from agentlab.training.data import dialogs_from_results, expert_dialogs
from agentlab.training.formatter import IGNORE_INDEX, AgentSFTFormatter

EXPERT_TASKS = ["0", "1", "7"]  # no call, two calls, five calls of three tools (airline train split)


class RecordingOracle(oracle.OracleModel):
    """The oracle, keeping every (messages, options) its agent clients receive."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, list[Message], dict[str, Any]]] = []

    def client(self, task: Task, role: str) -> oracle.OracleChatClient:
        return RecordingClient(task, role, self.requests)


class RecordingClient(oracle.OracleChatClient):
    def __init__(self, task: Task, role: str, requests: list) -> None:
        super().__init__(task, role)
        self.requests = requests

    async def _inner_get_response(self, *, messages: list[Message], stream: bool, options: Any, **kwargs: Any) -> Any:
        if self.role == "agent":
            self.requests.append((self.task.id, list(messages), dict(options or {})))
        return await super()._inner_get_response(messages=messages, stream=stream, options=options, **kwargs)


@pytest.fixture(scope="module")
def expert_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, list[Dialog], RecordingOracle]]:
    run_dir = tmp_path_factory.mktemp("expert")
    recorder = RecordingOracle()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(data, "OracleModel", lambda: recorder)
        dialogs = expert_dialogs("airline", "train", task_ids=EXPERT_TASKS, run_dir=run_dir)
    yield run_dir, dialogs, recorder


# --- JSONL ----------------------------------------------------------------------------------------------------


def good_row() -> dict[str, Any]:
    return weather_dialog().to_dict()


def with_turn(index: int, **changes: Any) -> dict[str, Any]:
    row = good_row()
    row["turns"][index] = {**row["turns"][index], **changes}
    return row


def without(key: str) -> dict[str, Any]:
    row = good_row()
    del row[key]
    return row


BAD_ROWS = [
    ('{"dialog_id": "x", "turns": [', "not valid JSON"),
    (["not", "an", "object"], "the row must be a JSON object, got list"),
    (without("turns"), "missing key(s) ['turns']"),
    ({**good_row(), "turn": []}, "unknown key(s) ['turn']"),
    (with_turn(1, role="system"), "turn 2 has role 'system'; expected one of ['user', 'assistant', 'tool']"),
    (with_turn(3, tool_call_id="c9"), "turn 4 (tool) answers call id 'c9', but no earlier assistant call"),
    (with_turn(3, name="book_taxi"), "turn 4 (tool) names 'book_taxi', but call 'c1' called 'get_weather'"),
    (with_turn(2, tool_calls=[{"id": "c1", "name": "fly", "arguments": {}}]), "turn 3 call 1 calls unknown tool 'fly'"),
    (with_turn(2, tool_calls=[{"id": "c1", "name": "get_weather", "arguments": "{}"}]), "'arguments' must be a JSON object"),
    (with_turn(2, tool_calls=[{"id": "c1", "name": "get_weather"}]), "turn 3 call 1 is missing ['arguments']"),
    (with_turn(1, tool_calls=[{"id": "u", "name": "get_weather", "arguments": {}}]), "turn 2 (user) cannot have ['tool_calls']"),
    (with_turn(4, content=""), "turn 5 (assistant) has neither content nor tool_calls"),
    (with_turn(1, content=None), "turn 2 'content' must be a string, got NoneType"),
    ({**good_row(), "dialog_id": ""}, '"dialog_id" is empty'),
    ({**good_row(), "tools": [{"description": "nameless"}]}, "tool 1 has no function name"),
    ({**good_row(), "turns": [{"role": "user", "content": "hi"}]}, "no assistant turn"),
    ({**good_row(), "target_tools": ["a", 1]}, '"target_tools" must hold only strings'),
]


@pytest.mark.parametrize(("row", "problem"), BAD_ROWS)
def test_jsonl_errors_name_file_row_and_problem(tmp_path: Path, row: Any, problem: str) -> None:
    path = tmp_path / "dialogs.jsonl"
    bad = row if isinstance(row, str) else json.dumps(row)
    path.write_text(json.dumps(good_row()) + "\n\n" + bad + "\n")  # row 2 is blank: skipped, still counted
    with pytest.raises(DialogError) as err:
        load_dialogs_jsonl(path)
    assert str(err.value).startswith(f"{path}: row 3: ")
    assert problem in str(err.value)


def test_jsonl_round_trip_and_defaults(tmp_path: Path) -> None:
    dialogs = [weather_dialog("Oslo"), weather_dialog("Lima", extra_turns=2, dialog_id="lima")]
    path = write_dialogs_jsonl(dialogs, tmp_path / "sub" / "dialogs.jsonl")
    assert load_dialogs_jsonl(path) == dialogs
    minimal = {"dialog_id": "m", "system": "", "tools": TOOLS, "turns": copy.deepcopy(weather_dialog().turns)}
    minimal["turns"][2]["content"] = None  # null content on a calling turn reads as ""
    path.write_text(json.dumps(minimal) + "\n")
    (loaded,) = load_dialogs_jsonl(path)
    assert loaded.target_tools == ["get_weather"] and loaded.metadata == {} and loaded.turns[2]["content"] == ""


# --- expert dialogs and evaluation results -------------------------------------------------------------------


def test_expert_dialogs_are_the_gold_trajectories(expert_run: tuple[Path, list[Dialog], RecordingOracle], airline: Any) -> None:
    run_dir, dialogs, _ = expert_run
    assert [d.dialog_id for d in dialogs] == [f"airline/{t}/0" for t in EXPERT_TASKS]
    system = DEFAULT_PROMPTS.agent(airline.environment().get_policy())
    tasks = {t.id: t for t in airline.tasks("train")}
    for dialog in dialogs:
        task = tasks[dialog.metadata["task_id"]]
        gold = oracle.gold_calls(task)
        assert dialog.system == system and len(dialog.tools) == 14
        assert dialog.metadata["reward"] == 1.0 and dialog.metadata["agent"] == "oracle"
        assert dialog.turns[0] == {"role": "assistant", "content": "Hi! How can I help you today?"}
        assert dialog.turns[1] == {"role": "user", "content": oracle.user_opening(task)}
        assert [(c["name"], c["arguments"]) for c in dialog.calls()] == [(g.name, g.arguments) for g in gold]
        assert dialog.target_tools == list(dict.fromkeys(g.name for g in gold))
        assert dialog.turns[-1] == {"role": "assistant", "content": oracle.final_agent_text(task)}  # no user ###STOP###
        results = [t for t in dialog.turns if t["role"] == "tool"]
        assert [t["tool_call_id"] for t in results] == [c["id"] for c in dialog.calls()]
        assert all(t["content"] and not t["content"].startswith("Error") for t in results)
    assert (run_dir / RESULTS_FILE).is_file()
    formatter = AgentSFTFormatter(tokenizer(), max_length=16384)
    assert [s["task_type"] for s in formatter.format_dialogs(dialogs)] == ["timing_decision", "tool_selection", "multi_step_planning"]


def test_a_kept_run_dir_resumes_and_returns_only_the_asked_tasks(expert_run: tuple[Path, list[Dialog], RecordingOracle]) -> None:
    run_dir, dialogs, _ = expert_run
    (again,) = expert_dialogs("airline", "train", task_ids=["1"], run_dir=run_dir)  # finished: nothing re-runs
    assert again == dialogs[1]
    assert len((run_dir / RESULTS_FILE).read_text().splitlines()) == len(EXPERT_TASKS)


def test_training_text_matches_the_backend_prompts(expert_run: tuple[Path, list[Dialog], RecordingOracle]) -> None:
    """Every prompt the agent was given, rendered by the local backend, ends where a labelled reply starts."""
    _, dialogs, recorder = expert_run
    tok = tokenizer()
    formatter = AgentSFTFormatter(tok, max_length=16384)
    samples = {d.metadata["task_id"]: formatter.format_dialog(d) for d in dialogs}
    assert len(recorder.requests) == sum(1 + len(d.calls()) for d in dialogs)  # one per reply after the greeting
    for task_id, messages, options in recorder.requests:
        sample = samples[task_id]
        chat = chat_turns(messages, system_prompt(_instructions(options), messages, request_tool_schemas(options)), False)
        prompt = tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
        assert sample["text"].startswith(prompt)
        prompt_ids = tok(prompt, add_special_tokens=False)["input_ids"]
        assert sample["input_ids"][: len(prompt_ids)] == prompt_ids
        assert sample["labels"][len(prompt_ids) - 1] == IGNORE_INDEX and sample["labels"][len(prompt_ids)] != IGNORE_INDEX


def test_results_are_filtered_by_reward(expert_run: tuple[Path, list[Dialog], RecordingOracle], tmp_path: Path) -> None:
    run_dir, dialogs, _ = expert_run
    rows = [row for _, row in numbered_rows(run_dir / RESULTS_FILE)]
    rows[1]["reward"] = 0.0
    error_row = {"task_id": "99", "trial": 0, "reward": 0.0, "error": "RuntimeError: boom", "config": rows[0]["config"]}
    path = tmp_path / RESULTS_FILE
    path.write_text("".join(json.dumps(r) + "\n" for r in [*rows, error_row]))
    by_task = {d.metadata["task_id"]: d for d in dialogs}
    assert [d.metadata["task_id"] for d in dialogs_from_results(path)] == ["0", "7"]
    assert [d.metadata["task_id"] for d in dialogs_from_results(path, min_reward=0.0)] == ["0", "1", "7"]
    assert dialogs_from_results(path)[1].turns == by_task["7"].turns
    del rows[2]["messages"]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DialogError, match=rf"{RESULTS_FILE}: row 3: not a usable result row: missing key 'messages'"):
        dialogs_from_results(path)


@pytest.mark.parametrize(
    ("split", "task_ids", "problem"),
    [
        ("test", None, "split='test' is held out for evaluation"),
        ("base", None, "split='base' selects 20 task(s) of the held-out 'test' split"),
        ("base", ["0", "2"], "selects 1 task(s) of the held-out 'test' split (ids ['2'])"),
        (None, None, "split=None selects 20 task(s)"),
    ],
)
def test_held_out_tasks_are_refused(tmp_path: Path, split: str | None, task_ids: list[str] | None, problem: str) -> None:
    with pytest.raises(ValueError) as err:
        expert_dialogs("airline", split, task_ids=task_ids, run_dir=tmp_path)
    assert problem in str(err.value)
    assert not (tmp_path / RESULTS_FILE).exists()  # refused before anything ran
