"""The oracle behind a loopback OpenAI-compatible server, for benchmarks and fault tests of HTTP clients.

``POST /v1/chat/completions`` with model ``oracle-agent`` plays the gold agent, ``oracle-user`` the
scripted user. The server is stateless: the task is found from the conversation (the user's ``[task id]``
marker, or the scenario in the user simulator's system prompt) and the move from what has been said, with
the same functions the in-process oracle uses, so both score the same.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tau2.data_model.tasks import Task

from agentlab.models.oracle import TASK_MARKER, is_own_call, next_agent_move, next_user_move

AGENT_MODEL, USER_MODEL = "oracle-agent", "oracle-user"


def _text(content: Any) -> str:
    if isinstance(content, list):
        return " ".join(part.get("text", "") for part in content if isinstance(part, dict))
    return content or ""


class OracleBrain:
    """Finds the task of a request and answers it."""

    def __init__(self, tasks: list[Task]) -> None:
        self.by_id = {t.id: t for t in tasks}
        self.by_scenario = {str(t.user_scenario.instructions): t for t in tasks}

    def task_of(self, messages: list[dict[str, Any]]) -> Task:
        for message in messages:
            text = _text(message.get("content"))
            if message["role"] == "system":
                for scenario, task in self.by_scenario.items():
                    if scenario in text:
                        return task
            match = TASK_MARKER.search(text)
            if match and match["id"] in self.by_id:
                return self.by_id[match["id"]]
        raise LookupError("no task marker or known scenario in the conversation")

    def answer(self, model: str, messages: list[dict[str, Any]]) -> dict[str, Any]:
        """The ``message`` of a chat completion choice."""
        task = self.task_of(messages)
        if model == USER_MODEL:
            opened = any(m["role"] == "assistant" and TASK_MARKER.search(_text(m.get("content"))) for m in messages)
            return {"role": "assistant", "content": next_user_move(task, opened)}
        move = next_agent_move(task, sum(1 for m in messages if m["role"] == "tool" and is_own_call(m.get("tool_call_id"))))
        if isinstance(move, str):
            return {"role": "assistant", "content": move}
        call = {"id": move.call_id, "type": "function", "function": {"name": move.name, "arguments": json.dumps(move.arguments)}}
        return {"role": "assistant", "content": None, "tool_calls": [call]}


def completion(model: str, message: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI chat completion body around ``message``."""
    return {
        "id": f"chatcmpl-{time.monotonic_ns()}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if message.get("tool_calls") else "stop"}],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
    }


def make_handler(brain: OracleBrain, latency_s: float) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go out in two writes: Nagle would hold the body ~40 ms

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            try:
                reply = completion(body["model"], brain.answer(body["model"], body["messages"]))
                status = 200
            except LookupError as exc:
                reply, status = {"error": {"message": str(exc), "type": "invalid_request_error"}}, 400
            time.sleep(latency_s)
            data = json.dumps(reply).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            """Silent: a benchmark prints its own figures."""

    return Handler


class OracleServer:
    """``with OracleServer(tasks) as server: server.base_url`` - a loopback server on a free port."""

    def __init__(self, tasks: list[Task], latency_s: float = 0.0, host: str = "127.0.0.1", port: int = 0) -> None:
        self.httpd = ThreadingHTTPServer((host, port), make_handler(OracleBrain(tasks), latency_s))
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def __enter__(self) -> OracleServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
