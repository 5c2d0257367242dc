"""Load under faults, small: 40 pairs at concurrency 8 through ``python -m agentlab.run`` against the fault server.

Agent and user both talk HTTP to a server that fails ~8% of requests at random (every transport fault kind)
after a small random latency: every pair still has exactly one row, none is an error, all score 1.0, and the
two models together never hold more connections than ``concurrency``. ``scripts/fault_load.py`` is the long run.
"""

from __future__ import annotations

import sys

from conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
from fault_load import run_load


def test_forty_pairs_at_concurrency_eight_survive_random_server_faults(tmp_path):
    figures = run_load(num_tasks=20, trials=2, concurrency=8, fault_rate=0.08, latency=(0.0, 0.01), out_dir=tmp_path / "run", seed=1)
    assert (figures["rows"], figures["unique_pairs"], figures["duplicates"], figures["lost"]) == (40, 40, 0, 0)
    assert figures["error_rows"] == 0 and figures["reward_mean"] == 1.0, figures["errors"]
    assert figures["faults_injected"] > 0 and figures["requests"] > figures["faults_injected"]
    assert 1 <= figures["peak_open_connections"] <= 8
