"""``tool_retrieval``: each of the agent's model calls carries exactly the retrieved tools (and those it has run);
a needed tool it was not offered costs the task, and scoring replays the rest without raising."""

from __future__ import annotations

import asyncio
import pickle
import subprocess
from typing import Any

import numpy as np
import pytest
from agent_framework import FunctionTool
from test_retriever_stage import _foreign_adapter, _run_cli

from agentlab.eval.messages import convert_agent_framework_messages_to_tau2_messages
from agentlab.eval.offer import AllTools, not_found
from agentlab.eval.runner import TaskRunner
from agentlab.eval.trajectory import agent_turns
from agentlab.models.oracle import OracleChatClient
from agentlab.retrieval.bm25 import BM25Retriever
from agentlab.retrieval.catalog import ToolCatalog, domain_tools
from agentlab.retrieval.encoder import Encoder
from agentlab.retrieval.offer import BM25Ranker, EncoderRanker, RetrievedTools, elsewhere
from agentlab.retrieval.pairs import render


@pytest.fixture(scope="module")
def tiny_encoder_dir(tmp_path_factory):
    from tiny_encoder import save_tiny_encoder

    return save_tiny_encoder(tmp_path_factory.mktemp("tiny") / "encoder")


class RecordingOracle(OracleChatClient):
    """The gold agent, recording each model call's request: its messages and the tools it carries."""

    def __init__(self, task: Any) -> None:
        super().__init__(task, "agent")
        self.requests: list[tuple[list[Any], list[FunctionTool]]] = []

    async def _inner_get_response(self, *, messages: list[Any], stream: bool, options: Any, **kwargs: Any) -> Any:
        self.requests.append((list(messages), list(options.get("tools") or [])))
        return await super()._inner_get_response(messages=messages, stream=stream, options=options, **kwargs)


class Favouring:
    """A ranker that scores the named tools of one domain 1 (in the order given) and every other tool 0."""

    def __init__(self, domain: str, names: list[str]) -> None:
        self.domain, self.names = domain, names

    def index(self, tools: list[Any]) -> Any:
        scores = np.array(
            [
                len(self.names) - self.names.index(t.name) if t.domain == self.domain and t.name in self.names else 0.0
                for t in tools
            ]
        )
        return lambda query: scores


class InTurn:
    """A ranker that ranks first the tool of ``names`` whose turn it is: the n-th once n calls are in the query."""

    def __init__(self, domain: str, names: list[str]) -> None:
        self.domain, self.names = domain, names

    def index(self, tools: list[Any]) -> Any:
        def scores(query: str) -> np.ndarray:
            due = self.names[min(query.count("assistant called "), len(self.names) - 1)]
            return np.array([float(t.domain == self.domain and t.name == due) for t in tools])

        return scores


def _play(runner: TaskRunner, task: Any) -> tuple[Any, RecordingOracle]:
    agent = RecordingOracle(task)
    played = asyncio.run(runner.play(task, 0, agent, OracleChatClient(task, "user")))
    return played, agent


def _task(domain: Any, task_id: str) -> Any:
    return next(t for t in domain.tasks("base") if t.id == task_id)


def test_each_model_call_carries_exactly_the_retrieved_tools_and_those_already_run(airline):
    catalog = ToolCatalog(domains=["airline", "retail"], distractors=40)
    runner = TaskRunner(airline, tool_offer=RetrievedTools(3, catalog, BM25Ranker()))
    played, agent = _play(runner, _task(airline, "39"))

    tools, real = catalog.tools(), {t.name for t in airline.tools()}
    bm25 = BM25Retriever(tools)
    candidates = [
        i for i, t in enumerate(tools) if t.side == "assistant" and (t.domain == "airline" or t.name not in real)
    ]
    by_name = {t.name: t for t in tools if t.domain == "airline"}
    already_run: set[str] = set()
    foreign = 0
    for messages, offered in agent.requests:
        turns = agent_turns(convert_agent_framework_messages_to_tau2_messages(messages))
        scores = bm25.scores([render(turns)])[0]
        top: list[str] = []
        for i in sorted(candidates, key=lambda i: -scores[i]):  # stable: catalog order breaks ties
            if tools[i].name not in top:
                top.append(tools[i].name)
        top = top[:3]
        already_run |= {t["name"] for t in turns if t["role"] == "tool" and t["content"] != not_found(t["name"])}
        assert [t.name for t in offered] == top + sorted(already_run - set(top))
        for tool in offered:
            spec = tool.to_json_schema_spec()["function"]
            if tool.name in real:  # the domain's own tool, as the harness shows it, acting on the task's environment
                assert spec == by_name[tool.name].schema()["function"]
            else:
                foreign += 1
                assert tool.func() == elsewhere(tool.name)
    assert len(agent.requests) > 5 and foreign  # the run offered tools of other domains
    assert played.reward_info is not None


def test_a_tool_once_run_stays_offered(airline):
    task = _task(airline, "39")
    gold = [a.name for a in task.evaluation_criteria.actions]
    runner = TaskRunner(
        airline, tool_offer=RetrievedTools(1, ToolCatalog(domains=["airline"]), InTurn("airline", gold))
    )
    played, agent = _play(runner, task)
    offers = [[t.name for t in tools] for _, tools in agent.requests]
    for i, offered in enumerate(offers[: len(gold)]):
        assert offered == [gold[i], *sorted(set(gold[:i]) - {gold[i]})]
    assert played.reward == 1.0  # one retrieved tool a call is enough when it is the right one


def test_a_needed_tool_not_offered_costs_the_task_and_scoring_replays_the_rest(airline):
    task = _task(airline, "39")
    gold = [a.name for a in task.evaluation_criteria.actions]
    every = TaskRunner(
        airline, tool_offer=RetrievedTools(len(set(gold)), ToolCatalog(domains=["airline"]), Favouring("airline", gold))
    )
    assert _play(every, task)[0].reward == 1.0

    missing = gold[-1]
    offered = [name for name in dict.fromkeys(gold) if name != missing]
    runner = TaskRunner(
        airline,
        tool_offer=RetrievedTools(len(offered), ToolCatalog(domains=["airline"]), Favouring("airline", offered)),
    )
    played, agent = _play(runner, task)
    assert all(missing not in [t.name for t in tools] for _, tools in agent.requests)
    unrun = [m for m in played.messages if m.role == "tool" and m.content == not_found(missing)]
    assert unrun and played.reward == 0.0  # the call ran nothing; tau2's replay of the others did not raise
    assert played.reward_info.db_check is not None and not played.reward_info.db_check.db_match


def test_the_offer_fails_before_any_pair_when_the_catalog_lacks_the_domain(airline):
    from agentlab.config import ConfigError

    runner = TaskRunner(airline, tool_offer=RetrievedTools(5, ToolCatalog(domains=["retail"]), BM25Ranker()))
    with pytest.raises(ConfigError, match="the catalog has no tools of domain 'airline'"):
        runner.check_window(_task(airline, "0"))
    with pytest.raises(ConfigError, match="tool_retrieval.top_k=0"):
        RetrievedTools(0, ToolCatalog(domains=["airline"]), BM25Ranker())


def test_the_window_budgets_for_the_domain_tools_and_the_largest_retrieved_others(airline):
    offer = RetrievedTools(2, ToolCatalog(domains=["airline", "retail"]), BM25Ranker())
    own = TaskRunner(airline)._assistant_setup(_task(airline, "0"))[1]
    schemas = offer.window_schemas("airline", own)
    retail = sorted(
        (len(str(t.schema())) for t in domain_tools("retail") if t.name not in {f.name for f in own}), reverse=True
    )
    assert schemas[: len(own)] == [t.to_json_schema_spec() for t in own]
    assert [len(str(s)) for s in schemas[len(own) :]] == retail[:2]


def test_a_used_offer_pickles_without_its_index(airline):
    offer = RetrievedTools(3, ToolCatalog(domains=["airline"]), BM25Ranker())
    tools = TaskRunner(airline)._assistant_setup(_task(airline, "0"))[1]
    before = offer.offered("airline", tools, "user: cancel my reservation", set())
    copy = pickle.loads(pickle.dumps(offer))
    assert copy._scorer is None and copy._tools is None
    assert [t.id for t in copy.offered("airline", tools, "user: cancel my reservation", set())] == [
        t.id for t in before
    ]


def test_tool_retrieval_options_compose_into_the_runner(compose_cfg, tiny_encoder_dir, tmp_path):
    from hydra.utils import instantiate

    assert isinstance(instantiate(compose_cfg().runner).tool_offer, AllTools)
    bm25 = instantiate(
        compose_cfg("tool_retrieval=bm25", "tool_retrieval.top_k=7", "tool_retrieval.catalog.distractors=30").runner
    )
    assert isinstance(bm25.tool_offer, RetrievedTools) and bm25.tool_offer.top_k == 7
    assert isinstance(bm25.tool_offer.ranker, BM25Ranker) and len(bm25.tool_offer.tools()) == 76 + 30
    adapter = _foreign_adapter(tmp_path, tiny_encoder_dir)[1].split("=", 1)[1]
    trained = instantiate(
        compose_cfg("tool_retrieval=trained", f"tool_retrieval.ranker.encoder.adapter={adapter}").runner
    )
    ranker = trained.tool_offer.ranker
    assert (
        isinstance(ranker, EncoderRanker) and isinstance(ranker.encoder, Encoder) and ranker.encoder.adapter == adapter
    )


def _eval_cli(tmp_path, *args: str) -> subprocess.CompletedProcess:
    players = ("model@agent=oracle", "model@user=oracle", "num_tasks=1")
    return _run_cli(*players, f"hydra.run.dir={tmp_path / 'run'}", *args)


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (
            lambda tmp, enc: ["tool_retrieval=bm25", "tool_retrieval.catalog.domains=[retail]"],
            "the catalog has no tools of domain 'airline'",
        ),
        (lambda tmp, enc: ["tool_retrieval=bm25", "tool_retrieval.catalog.domains=[]"], "the tool catalog is empty"),
        (
            lambda tmp, enc: [
                "tool_retrieval=trained",
                f"tool_retrieval.ranker.encoder.model_path={enc}",
                *[a.replace("stage.encoder", "tool_retrieval.ranker.encoder") for a in _foreign_adapter(tmp, enc)[1:]],
            ],
            "was trained for another encoder (layers_used: adapter 1 vs encoder 2)",
        ),
        (lambda tmp, enc: ["tool_retrieval=trained"], "tool_retrieval.ranker.encoder.adapter"),
    ],
    ids=["domain_not_in_catalog", "empty_catalog", "adapter_for_another_encoder", "no_adapter"],
)
def test_bad_tool_retrieval_input_exits_2_in_one_paragraph(tmp_path, tiny_encoder_dir, make, says):
    result = _eval_cli(tmp_path, *make(tmp_path, tiny_encoder_dir))
    assert result.returncode == 2, result.stderr[-2000:]
    message = result.stderr.strip()
    assert "\n" not in message and "Traceback" not in message, message
    assert says in message, message
    assert not (tmp_path / "run" / "results.jsonl").exists()
