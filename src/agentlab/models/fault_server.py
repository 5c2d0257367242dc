"""The loopback oracle server with faults injected: what a flaky model endpoint does to an evaluation.

Transport faults (``TRANSPORT_FAULTS``) hit any request: HTTP 429 with and without Retry-After, 500, 503,
a timeout (the request is held until the client gives up), a dropped connection, a truncated body, a 200
whose body is not JSON, a 200 without choices. A client must survive each by retrying. Output faults
(``OUTPUT_FAULTS``) replace the agent's reply with a malformed one (an unknown tool, arguments against the
schema or not JSON, an argument the tool does not take, several calls, text and a call, an empty or an
endless reply); the harness must turn each into a tool error the agent reads, or text, never a crash.

Faults come from a script (the n-th request of a model gets ``script[model][n]``; tests), from a task's fault
(every request of a model about that task gets ``task_faults[model][task_id]``: a task that never gets through)
or at random with ``rate`` and ``seed`` (load runs); the script wins while it lasts, then the task's fault. The
server counts requests (by model and by task), faults by kind, and (through ``LoopbackHTTPServer``) the TCP
connections open at once.

    with FaultServer(tasks, FaultPlan(rate=0.05, latency_s=(0, 0.02))) as server: ...
"""

from __future__ import annotations

import json
import random
import select
import socket
import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tau2.data_model.tasks import Task

from agentlab.models.oracle_server import CompletionHandler, LoopbackServer, OracleBrain, completion, error_body

TRANSPORT_FAULTS = ("429_retry_after", "429", "500", "503", "timeout", "drop", "truncated", "not_json", "no_choices")
OUTPUT_FAULTS = (
    "unknown_tool", "bad_arguments", "extra_argument", "invalid_json_arguments", "several_calls", "text_and_call", "empty_reply",
    "endless_reply",
)
UNKNOWN_TOOL = "lookup_everything"
ENDLESS_TEXT = "and so on " * 2000
STATUS = {"429_retry_after": 429, "429": 429, "500": 500, "503": 503}


@dataclass(frozen=True)
class FaultPlan:
    """Which requests fail and how; the default plan injects nothing.

    ``hold_s`` bounds how long a ``timeout`` fault holds a request (it ends sooner when the client hangs up,
    so a retried request does not leave a dead connection open); it must exceed the client's timeout.
    """

    script: Mapping[str, Sequence[str | None]] = field(default_factory=dict)
    task_faults: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    rate: float = 0.0
    kinds: Sequence[str] = TRANSPORT_FAULTS
    seed: int = 0
    latency_s: tuple[float, float] = (0.0, 0.0)
    retry_after_s: float = 0.05
    hold_s: float = 30.0

    def __post_init__(self) -> None:
        known = set(TRANSPORT_FAULTS) | set(OUTPUT_FAULTS)
        scripted = {k for faults in self.script.values() for k in faults if k is not None}
        unknown = (scripted | {k for faults in self.task_faults.values() for k in faults.values()}) - known
        if unknown:
            raise ValueError(f"unknown faults {sorted(unknown)}; known: {sorted(known)}")
        if not set(self.kinds) <= set(TRANSPORT_FAULTS):
            raise ValueError(f"random faults must be transport faults {TRANSPORT_FAULTS}, got {list(self.kinds)}")


class FaultApp:
    """The oracle's answers, except where the plan injects a fault. Thread-safe: one instance serves every thread."""

    def __init__(self, tasks: list[Task], plan: FaultPlan) -> None:
        self.brain, self.plan = OracleBrain(tasks), plan
        self.rng = random.Random(plan.seed)
        self.requests = 0
        self.requests_by_model: Counter[str] = Counter()
        self.requests_by_task: Counter[str] = Counter()
        self.injected: Counter[str] = Counter()
        self._lock = threading.Lock()

    def serve(self, handler: CompletionHandler, request: dict[str, Any]) -> None:
        model = request["model"]
        fault, delay = self._draw(model, self._task_id(request["messages"]))
        time.sleep(delay)
        if fault in TRANSPORT_FAULTS:
            self._transport_fault(handler, model, fault)
            return
        try:
            message = self.brain.answer(model, request["messages"])
        except LookupError as exc:
            handler.send_json(400, error_body(str(exc)))
            return
        finish_reason = None
        if fault is not None:
            message, finish_reason = output_fault(fault, message, request.get("tools") or [])
        handler.send_json(200, completion(model, message, finish_reason))

    def _task_id(self, messages: list[dict[str, Any]]) -> str | None:
        try:
            return self.brain.task_of(messages).id
        except LookupError:
            return None

    def _draw(self, model: str, task_id: str | None) -> tuple[str | None, float]:
        """This request's fault (scripted first, then the task's, then random) and latency, counted under the lock."""
        with self._lock:
            index = self.requests_by_model[model]
            self.requests_by_model[model] += 1
            self.requests_by_task[str(task_id)] += 1
            self.requests += 1
            script = self.plan.script.get(model, ())
            task_fault = self.plan.task_faults.get(model, {}).get(str(task_id))
            if index < len(script):
                fault = script[index]
            elif task_fault is not None:
                fault = task_fault
            else:
                fault = self.rng.choice(self.plan.kinds) if self.rng.random() < self.plan.rate else None
            if fault is not None:
                self.injected[fault] += 1
            return fault, self.rng.uniform(*self.plan.latency_s)

    def _transport_fault(self, handler: CompletionHandler, model: str, fault: str) -> None:
        """Fail this request at the HTTP level, as an overloaded or broken endpoint does."""
        if fault in STATUS:
            headers = {"Retry-After": f"{self.plan.retry_after_s:g}"} if fault == "429_retry_after" else {}
            handler.send_json(STATUS[fault], error_body(f"injected fault {fault}", "server_error"), headers)
        elif fault == "timeout":  # nothing until the client hangs up (its timeout) or hold_s passes
            deadline = time.monotonic() + self.plan.hold_s
            while time.monotonic() < deadline and not _peer_closed(handler.connection):
                pass
            _drop(handler)
        elif fault == "drop":
            _drop(handler)
        elif fault == "truncated":
            data = json.dumps(completion(model, {"role": "assistant", "content": "cut off"})).encode()
            handler.send(200, data[: len(data) // 2], declared_length=len(data))
            _drop(handler)
        elif fault == "not_json":
            handler.send(200, b"<html><body>upstream gateway hiccup</body></html>")
        else:  # no_choices
            handler.send_json(200, {**completion(model, {"role": "assistant", "content": ""}), "choices": []})

    def stats(self) -> dict[str, Any]:
        """Requests served (faulty ones included, by task too) and faults injected by kind."""
        with self._lock:
            return {
                "requests": self.requests,
                "requests_by_task": dict(self.requests_by_task),
                "faults": dict(self.injected),
                "faults_total": sum(self.injected.values()),
            }


def _peer_closed(connection: socket.socket, poll_s: float = 0.02) -> bool:
    """Whether the client closed its end (readable with nothing to read); waits up to ``poll_s``."""
    readable, _, _ = select.select([connection], [], [], poll_s)
    if not readable:
        return False
    try:
        return connection.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


def _drop(handler: CompletionHandler) -> None:
    """Close the connection now, with or without a partial answer sent."""
    handler.close_connection = True
    handler.wfile.flush()
    try:
        handler.connection.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # the client closed first


def _call(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def output_fault(fault: str, message: dict[str, Any], tools: list[dict[str, Any]]) -> tuple[dict[str, Any], str | None]:
    """The reply (and finish reason) that replaces the oracle's ``message`` for an output fault.

    Faulty calls get ids outside the oracle's ``oracle_`` prefix, so the oracle does not count their results
    as progress and plays its gold move on the next request: a task survives the fault with reward 1.0.
    A real tool is named for schema faults (the first one offered), so the call reaches the tool layer.
    """
    tool = tools[0]["function"]["name"] if tools else "get_user_details"
    gold = message.get("tool_calls") or []
    if fault == "unknown_tool":
        return {"role": "assistant", "content": None, "tool_calls": [_call("fault_0", UNKNOWN_TOOL, "{}")]}, None
    if fault == "bad_arguments":
        return {"role": "assistant", "content": None, "tool_calls": [_call("fault_0", tool, json.dumps({"no_such_argument": 1}))]}, None
    if fault == "extra_argument":  # the gold call with an argument its tool does not take
        call = gold[0]["function"] if gold else {"name": tool, "arguments": "{}"}
        arguments = json.dumps({**json.loads(call["arguments"]), "status": "urgent"})
        return {"role": "assistant", "content": None, "tool_calls": [_call("fault_0", call["name"], arguments)]}, None
    if fault == "invalid_json_arguments":
        return {"role": "assistant", "content": None, "tool_calls": [_call("fault_0", tool, '{"user_id": ')]}, None
    if fault == "several_calls":
        extra = [_call("fault_0", UNKNOWN_TOOL, "{}"), _call("fault_1", UNKNOWN_TOOL, '{"again": true}')]
        return {"role": "assistant", "content": None, "tool_calls": [*gold, *extra]}, None
    if fault == "text_and_call":
        return {"role": "assistant", "content": "Let me look that up for you.", "tool_calls": gold or None}, None
    if fault == "empty_reply":
        return {"role": "assistant", "content": ""}, "stop"
    if fault == "endless_reply":
        return {"role": "assistant", "content": ENDLESS_TEXT}, "length"
    raise ValueError(f"not an output fault: {fault}")


class FaultServer(LoopbackServer):
    """``with FaultServer(tasks, plan) as server: server.base_url, server.stats()`` on a free loopback port."""

    def __init__(self, tasks: list[Task], plan: FaultPlan | None = None, host: str = "127.0.0.1", port: int = 0) -> None:
        self.app = FaultApp(tasks, plan or FaultPlan())
        super().__init__(self.app, host, port)

    def stats(self) -> dict[str, Any]:
        """The app's counts plus the TCP connections open now and at most."""
        return {**self.app.stats(), "open_connections": self.open_connections, "peak_connections": self.peak_connections}
