"""An API key given through the environment reaches the model server and nowhere else: not stdout or stderr (even
at DEBUG), not the ``.hydra`` dumps, results, summaries, tau2 file, W&B config, tables or artifacts; even when the
server echoes the key back in an error message. The test greps every file the run wrote.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

from conftest import ROOT

from agentlab.eval.domains import Tau2Domain
from agentlab.models.oracle_server import OracleBrain, completion

LEAKY_TASK = "1"  # the server answers this task's requests with an error that quotes the key


class EchoingServer(BaseHTTPRequestHandler):
    """The oracle over HTTP; records each request's key; quotes the key in a 401 for ``LEAKY_TASK``."""

    brain: ClassVar[OracleBrain]
    keys_seen: ClassVar[set[str]] = set()

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        key = self.headers.get("Authorization", "").removeprefix("Bearer ")
        type(self).keys_seen.add(key)
        task = self.brain.task_of(body["messages"])
        if task.id == LEAKY_TASK:
            reply, status = {"error": {"message": f"Incorrect API key provided: {key}", "type": "invalid_request_error"}}, 401
        else:
            reply, status = completion(body["model"], self.brain.answer(body["model"], body["messages"])), 200
        data = json.dumps(reply).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        """Quiet."""


def _files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def test_the_api_key_never_leaves_the_environment(tmp_path):
    key = f"sk-agentlab-{secrets.token_hex(16)}"
    EchoingServer.brain = OracleBrain(Tau2Domain("airline").tasks("base"))
    server = ThreadingHTTPServer(("127.0.0.1", 0), EchoingServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/v1"
    wandb_home = tmp_path / "wandb-home"
    env = {
        **os.environ, "OPENAI_API_KEY": key, "AGENTLAB_LOG_LEVEL": "DEBUG",
        **{var: str(wandb_home / var.lower()) for var in ("WANDB_DIR", "WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR")},
    }
    command = [
        sys.executable, "-m", "agentlab.run", "+experiment=tau2_airline", "task_split=base", "task_ids=[0,1,2]",
        "model@agent=openai", "agent.model=oracle-agent", f"agent.base_url={url}", "agent.max_retries=0",
        "model@user=openai", "user.model=oracle-user", f"user.base_url={url}", "user.max_retries=0",
        "logger=wandb", "debug=true", f"hydra.run.dir={tmp_path / 'run'}",
    ]
    try:
        result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    finally:
        server.shutdown()
    assert result.returncode == 0, result.stderr[-3000:]
    assert EchoingServer.keys_seen == {key}  # the key was used on every request

    rows = [json.loads(line) for line in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
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
