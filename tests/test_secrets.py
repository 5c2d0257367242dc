"""An API key given through the environment reaches the model server and nowhere else: not stdout or stderr (even
at DEBUG), not the ``.hydra`` dumps, results, summaries, tau2 file, W&B config, tables or artifacts; even when the
server echoes the key back in an error message. The test greps every file the run wrote.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

from conftest import ROOT

from agentlab.eval.domains import Tau2Domain
from agentlab.jsonl import numbered_rows
from agentlab.models.oracle_server import CompletionHandler, LoopbackServer, OracleBrain, completion, error_body

LEAKY_TASK = "1"  # the server answers this task's requests with an error that quotes the key


class EchoingOracle:
    """A loopback app: the oracle over HTTP; records each request's key; quotes the key in a 401 for ``LEAKY_TASK``."""

    def __init__(self) -> None:
        self.brain = OracleBrain(Tau2Domain("airline").tasks("base"))
        self.keys_seen: set[str] = set()

    def serve(self, handler: CompletionHandler, request: dict[str, Any]) -> None:
        key = handler.headers.get("Authorization", "").removeprefix("Bearer ")
        self.keys_seen.add(key)
        if self.brain.task_of(request["messages"]).id == LEAKY_TASK:
            handler.send_json(401, error_body(f"Incorrect API key provided: {key}"))
        else:
            handler.send_json(200, completion(request["model"], self.brain.answer(request["model"], request["messages"])))


def _files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def test_the_api_key_never_leaves_the_environment(tmp_path):
    key = f"sk-agentlab-{secrets.token_hex(16)}"
    app = EchoingOracle()
    wandb_home = tmp_path / "wandb-home"
    env = {
        **os.environ, "OPENAI_API_KEY": key, "AGENTLAB_LOG_LEVEL": "DEBUG",
        **{var: str(wandb_home / var.lower()) for var in ("WANDB_DIR", "WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR")},
    }
    with LoopbackServer(app) as server:
        url = server.base_url
        command = [
            sys.executable, "-m", "agentlab.run", "+experiment=tau2_airline", "task_split=base", "task_ids=[0,1,2]",
            "model@agent=openai", "agent.model=oracle-agent", f"agent.base_url={url}", "agent.max_retries=0",
            "model@user=openai", "user.model=oracle-user", f"user.base_url={url}", "user.max_retries=0",
            "logger=wandb", "debug=true", f"hydra.run.dir={tmp_path / 'run'}",
        ]
        result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert app.keys_seen == {key}  # the key was used on every request

    rows = [row for _, row in numbered_rows(tmp_path / "run" / "results.jsonl")]
    leaky = next(r for r in rows if r["task_id"] == LEAKY_TASK)
    assert "Incorrect API key provided: ***" in leaky["error"]  # the cause is kept, the key is not
    assert sorted(r["reward"] for r in rows) == [0.0, 1.0, 1.0]

    written = _files(tmp_path)
    assert any(p.suffix == ".wandb" for p in written) and any(".hydra" in p.parts for p in written)
    assert any("artifacts" in p.parts or p.name == "results.jsonl" for p in written)
    leaks = [str(p.relative_to(tmp_path)) for p in written if key.encode() in p.read_bytes()]
    assert leaks == []
    assert key not in result.stdout and key not in result.stderr
    assert "Incorrect API key provided: ***" in result.stdout + result.stderr  # the DEBUG log shows the server's error, scrubbed
