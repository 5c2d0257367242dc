"""A deterministic NL-assertion judge behind a loopback OpenAI-compatible server (for judge tests; no network).

It reads the expected outcomes tau2's judge prompt lists and grades each one ``met`` (a fixed verdict),
answering in the JSON tau2 parses, with fixed token counts; it records every request it gets.
"""

from __future__ import annotations

import ast
import json
from typing import Any

from agentlab.models.oracle_server import CompletionHandler, LoopbackServer, completion

PROMPT_TOKENS, COMPLETION_TOKENS = 70, 30
OUTCOMES = "expectedOutcomes:"


def expected_outcomes(prompt: str) -> list[str]:
    """The outcomes tau2's judge prompt lists (a Python list literal after ``expectedOutcomes:``)."""
    return ast.literal_eval(prompt.split(OUTCOMES, 1)[1].strip())


class JudgeApp:
    """Grades every expected outcome ``met``; records each request's model, messages and temperature."""

    def __init__(self, met: bool) -> None:
        self.met = met
        self.requests: list[dict[str, Any]] = []

    def serve(self, handler: CompletionHandler, request: dict[str, Any]) -> None:
        self.requests.append(request)
        prompt = request["messages"][-1]["content"]
        prompt = prompt if isinstance(prompt, str) else " ".join(part.get("text", "") for part in prompt)
        results = [
            {"expectedOutcome": o, "reasoning": "scripted", "metExpectation": self.met}
            for o in expected_outcomes(prompt)
        ]
        body = completion(request["model"], {"role": "assistant", "content": json.dumps({"results": results})})
        body["usage"] = {
            "prompt_tokens": PROMPT_TOKENS,
            "completion_tokens": COMPLETION_TOKENS,
            "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
        }
        handler.send_json(200, body)


class JudgeServer(LoopbackServer):
    """``with JudgeServer(met=True) as server: server.base_url, server.app.requests``."""

    def __init__(self, met: bool = True) -> None:
        self.app = JudgeApp(met)
        super().__init__(self.app)
