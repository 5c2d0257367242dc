"""The oracle behind a loopback OpenAI-compatible server, for benchmarks and fault tests of HTTP clients.

``POST /v1/chat/completions`` with model ``oracle-agent`` plays the gold agent, ``oracle-user`` the
scripted user, with its own gold calls where the domain gives the user tools (``GET /v1/models`` answers an
empty list, as a server that serves any name). The server is stateless: the task is found from the
conversation (the user's ``[task id]`` marker, or the scenario in the user simulator's system prompt) and the
move from what has been said, with the same functions the in-process oracle uses, so both score the same.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol, Self

from tau2.data_model.tasks import Task

from agentlab.models.oracle import TASK_MARKER, is_own_call, next_agent_move, next_user_move

AGENT_MODEL, USER_MODEL = "oracle-agent", "oracle-user"
COMPLETIONS_URL, MODELS_URL = "/v1/chat/completions", "/v1/models"


def _text(content: Any) -> str:
    if isinstance(content, list):
        return " ".join(part.get("text", "") for part in content if isinstance(part, dict))
    return content or ""


class OracleBrain:
    """Finds the task of a request and answers it.

    The ``[task id]`` marker of the user's opening names the task; before it, the user's first request is placed by
    the scenario in its system prompt. Tasks that share a scenario (telecom's differ by initial state: 114 base
    tasks, 5 scenarios) cannot be told apart there: such a request is refused, so serve those tasks one per server.
    """

    def __init__(self, tasks: list[Task]) -> None:
        self.by_id = {t.id: t for t in tasks}
        # the scenario as either protocol's user prompt quotes it: the instructions alone, or the whole user scenario
        self.by_scenario: dict[str, list[Task]] = {}
        for task in tasks:
            for text in {str(task.user_scenario.instructions), str(task.user_scenario)}:
                self.by_scenario.setdefault(text, []).append(task)

    def task_of(self, messages: list[dict[str, Any]]) -> Task:
        for message in messages:
            match = TASK_MARKER.search(_text(message.get("content")))
            if match and match["id"] in self.by_id:
                return self.by_id[match["id"]]
        system = " ".join(_text(m.get("content")) for m in messages if m["role"] == "system")
        for scenario, tasks in self.by_scenario.items():
            if scenario in system:
                if len(tasks) > 1:
                    ids = [t.id for t in tasks]
                    raise LookupError(f"tasks {ids} share this user scenario: serve them one per server")
                return tasks[0]
        raise LookupError("no task marker or known scenario in the conversation")

    def answer(self, model: str, messages: list[dict[str, Any]]) -> dict[str, Any]:
        """The ``message`` of a chat completion choice."""
        task = self.task_of(messages)
        side = "user" if model == USER_MODEL else "assistant"
        own = [m["role"] == "tool" and is_own_call(m.get("tool_call_id"), side) for m in messages]
        done, mid_turn = sum(own), bool(own) and own[-1]  # mid-turn: the last message is its own call's result
        if model == USER_MODEL:
            opened = any(m["role"] == "assistant" and TASK_MARKER.search(_text(m.get("content"))) for m in messages)
            move = next_user_move(task, opened, done, mid_turn)
        else:
            move = next_agent_move(task, done, mid_turn)
        if isinstance(move, str):
            return {"role": "assistant", "content": move}
        call = {"id": move.call_id, "type": "function", "function": {"name": move.name, "arguments": json.dumps(move.arguments)}}
        return {"role": "assistant", "content": None, "tool_calls": [call]}


def completion(model: str, message: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
    """An OpenAI chat completion body around ``message``."""
    return {
        "id": f"chatcmpl-{time.monotonic_ns()}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason or ("tool_calls" if message.get("tool_calls") else "stop")}],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
    }


def error_body(message: str, kind: str = "invalid_request_error") -> dict[str, Any]:
    """An OpenAI error body."""
    return {"error": {"message": message, "type": kind}}


class App(Protocol):
    """What a ``LoopbackHTTPServer`` serves: one parsed chat-completion request at a time (from many threads)."""

    def serve(self, handler: CompletionHandler, request: dict[str, Any]) -> None: ...


class CompletionHandler(BaseHTTPRequestHandler):
    """Parses ``POST /v1/chat/completions`` and hands it to the server's app, which answers through ``send``."""

    protocol_version = "HTTP/1.1"  # keep-alive: a client reuses its pooled connections
    disable_nagle_algorithm = True  # headers and body go out in two writes: Nagle would hold the body ~40 ms
    server: LoopbackHTTPServer

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        body = self.rfile.read(length)
        if len(body) < length:  # the client hung up mid-request (its own timeout): nobody to answer
            self.close_connection = True
            return
        if self.path != COMPLETIONS_URL:  # as a real server: nothing is served outside /v1
            self.send_json(404, error_body(f"no route {self.path}", "not_found"))
            return
        self.server.app.serve(self, json.loads(body))

    def do_GET(self) -> None:
        """``GET /v1/models``, what clients call to check an endpoint: any model name is served."""
        if self.path != MODELS_URL:
            self.send_json(404, error_body(f"no route {self.path}", "not_found"))
            return
        self.send_json(200, {"object": "list", "data": []})

    def send(self, status: int, data: bytes, headers: dict[str, str] | None = None, declared_length: int | None = None) -> None:
        """Answer ``data``; ``declared_length`` announces another Content-Length (a truncated body, for faults)."""
        self.send_response(status)
        for key, value in {"Content-Type": "application/json", "Content-Length": str(declared_length or len(data)), **(headers or {})}.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def send_json(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        self.send(status, json.dumps(payload).encode(), headers)

    def log_message(self, *args: Any) -> None:
        """Silent: a benchmark prints its own figures."""


class LoopbackHTTPServer(ThreadingHTTPServer):
    """A thread per connection, counting the TCP connections open now and at most (a client's pool bound, checked)."""

    daemon_threads = True
    request_queue_size = 256  # a burst of `concurrency` connects at start must not overflow the listen backlog

    def __init__(self, address: tuple[str, int], app: App) -> None:
        super().__init__(address, CompletionHandler)
        self.app = app
        self.open_connections = self.peak_connections = 0
        self._count_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._count_lock:
            self.open_connections += 1
            self.peak_connections = max(self.peak_connections, self.open_connections)
        super().process_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Quiet when a client hung up (it retries); any other error is printed as usual."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        """Called once per connection, when its handler thread ends (or it was refused)."""
        super().shutdown_request(request)
        with self._count_lock:
            self.open_connections -= 1


class LoopbackServer:
    """``with Server(...) as server: server.base_url`` - an app on a free loopback port, served from a thread."""

    def __init__(self, app: App, host: str = "127.0.0.1", port: int = 0) -> None:
        self.httpd = LoopbackHTTPServer((host, port), app)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    @property
    def peak_connections(self) -> int:
        return self.httpd.peak_connections

    @property
    def open_connections(self) -> int:
        return self.httpd.open_connections

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class OracleApp:
    """The oracle's answers after ``latency_s``; a request it cannot place gets HTTP 400."""

    def __init__(self, tasks: list[Task], latency_s: float = 0.0) -> None:
        self.brain, self.latency_s = OracleBrain(tasks), latency_s

    def serve(self, handler: CompletionHandler, request: dict[str, Any]) -> None:
        try:
            reply, status = completion(request["model"], self.brain.answer(request["model"], request["messages"])), 200
        except LookupError as exc:
            reply, status = error_body(str(exc)), 400
        time.sleep(self.latency_s)
        handler.send_json(status, reply)


class OracleServer(LoopbackServer):
    """``with OracleServer(tasks) as server: server.base_url`` - the oracle on a free loopback port."""

    def __init__(self, tasks: list[Task], latency_s: float = 0.0, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(OracleApp(tasks, latency_s), host, port)
