"""model=openai against the fault server: every transport fault is retried; exhausted retries name their cause."""

from __future__ import annotations

import asyncio
import gzip
import json

import httpx
import openai
import pytest
from agent_framework import Content, Message

from agentlab.eval.harness import Evaluation
from agentlab.eval.runner import TaskRunner
from agentlab.jsonl import numbered_rows
from agentlab.models.fault_server import TRANSPORT_FAULTS, FaultPlan, FaultServer
from agentlab.models.openai_compat import CheckedTransport, OpenAIModel, malformed_completion
from agentlab.models.oracle_server import AGENT_MODEL, USER_MODEL
from agentlab.rundir import RESULTS_FILE

CLIENT_TIMEOUT = 0.5  # a `timeout` fault costs this much plus one backoff


def _ask(base_url: str, max_retries: int) -> str:
    """One user-simulator request (the task marker lets the oracle place it), as a fresh event loop."""
    model = OpenAIModel(USER_MODEL, base_url=base_url, max_retries=max_retries, timeout=CLIENT_TIMEOUT)

    async def ask() -> str:
        try:
            response = await model.client(None, "user").get_response([Message(role="user", contents=[Content.from_text("[task 0] hi")])])
            return response.text
        finally:
            await model.aclose()

    return asyncio.run(ask())


@pytest.mark.parametrize("fault", TRANSPORT_FAULTS)
def test_every_transport_fault_is_retried(airline, fault):
    with FaultServer(airline.tasks("base"), FaultPlan(script={USER_MODEL: [fault, fault]})) as server:
        assert _ask(server.base_url, max_retries=2).startswith("[task 0] ")
        stats = server.stats()
    assert stats["requests"] == 3 and stats["faults"] == {fault: 2}
    assert stats["peak_connections"] == 1  # a timed-out or dropped connection is closed before the retry connects


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ("500", "InternalServerError: Error code: 500"),
        ("429", "RateLimitError: Error code: 429"),
        ("timeout", "APITimeoutError: Request timed out."),
        ("drop", "APIConnectionError: Connection error."),
        ("not_json", "InternalServerError: Error code: 502 - {'error': {'message': 'malformed chat completion: the body is not JSON'"),
        ("no_choices", "InternalServerError: Error code: 502 - {'error': {'message': 'malformed chat completion: the completion has no choices'"),
    ],
)
def test_exhausted_retries_raise_an_error_naming_the_cause(airline, fault, error):
    with FaultServer(airline.tasks("base"), FaultPlan(script={USER_MODEL: [fault, fault]})) as server, pytest.raises(openai.OpenAIError) as raised:
        _ask(server.base_url, max_retries=1)
    assert f"{type(raised.value).__name__}: {raised.value}".startswith(error)


def test_a_pair_out_of_retries_is_an_infrastructure_error_row_and_the_run_goes_on(airline, tmp_path):
    """The first agent request (task 1's, at concurrency 1) fails twice with max_retries=1 and no task-level retry;
    task 5 is untouched."""
    with FaultServer(airline.tasks("base"), FaultPlan(script={AGENT_MODEL: ["500", "500"]})) as server:
        evaluation = Evaluation(
            runner=TaskRunner(airline),
            agent=OpenAIModel(AGENT_MODEL, base_url=server.base_url, max_retries=1, timeout=5),
            user=OpenAIModel(USER_MODEL, base_url=server.base_url, max_retries=1, timeout=5),
            task_split="base",
            task_ids=["1", "5"],
            progress=False,
            max_task_retries=0,
        )
        summary = evaluation(tmp_path, config={}, name="t", group="g")
    rows = {row["task_id"]: row for row in (row for _, row in numbered_rows(tmp_path / RESULTS_FILE))}
    assert rows["1"]["error"].startswith("InternalServerError: Error code: 500 - {'error': {'message': 'injected fault 500'")
    assert rows["1"]["termination_reason"] == "infrastructure_error" and rows["1"]["attempts"] == 1
    assert "error" not in rows["5"] and rows["5"]["reward"] == 1.0
    assert summary["infrastructure_errors"] == 1 and summary["errors"] == 0 and summary["num_pairs"] == 2
    assert summary["avg_reward"] == 1.0 and summary["pass^k"] == {1: 1.0}


def test_malformed_completion_names_the_cause():
    assert malformed_completion(b"<html>") == "the body is not JSON"
    assert malformed_completion(b'{"choices": []}') == "the completion has no choices"
    assert malformed_completion(b'[1]') == "the completion has no choices"
    assert malformed_completion(b'{"choices": [{"index": 0}]}') is None


def test_checked_transport_passes_a_compressed_completion_and_other_paths():
    completion = json.dumps({"choices": [{"index": 0}]}).encode()

    def reply(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/models"):
            return httpx.Response(200, content=b"not json, not checked")
        return httpx.Response(200, headers={"Content-Encoding": "gzip"}, content=gzip.compress(completion))

    async def fetch() -> tuple[httpx.Response, httpx.Response]:
        async with httpx.AsyncClient(transport=CheckedTransport(httpx.MockTransport(reply))) as client:
            return await client.post("http://x/v1/chat/completions"), await client.get("http://x/v1/models")

    checked, other = asyncio.run(fetch())
    assert checked.status_code == 200 and checked.json() == {"choices": [{"index": 0}]}
    assert other.status_code == 200 and other.content == b"not json, not checked"
