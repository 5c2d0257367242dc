"""The conversation viewer on rows the real harness wrote (mock domain, oracle): content, escaping, filters,
side by side, the compare report's links, and the page as headless Chromium draws it."""

from __future__ import annotations

import contextlib
import html
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from chromium import chromium, console_lines
from conftest import ROOT
from hydra.utils import instantiate
from matplotlib.image import imread

from agentlab.compare import main as compare_main
from agentlab.eval.domains import Tau2Domain
from agentlab.eval.harness import Evaluation
from agentlab.eval.results import pair_key
from agentlab.jsonl import numbered_rows
from agentlab.models.base import ModelFactory
from agentlab.models.oracle import OracleModel
from agentlab.rundir import CONVERSATIONS_FILE, RESULTS_FILE, settings_of
from agentlab.tracking.viewer import ConversationViewer
from agentlab.view import main as view_main

HOSTILE = "</script><script>document.title='pwned'</script><img src=x onerror=\"document.title='pwned'\"> & done"
FAILING_TASK = "update_task_1"
TITLE_RE = re.compile(r"<title>([^<]*)</title>")


class FailingModel(ModelFactory):
    """The oracle, except that one task's agent cannot be built: that pair becomes an error row."""

    name = "failing"

    def __init__(self) -> None:
        self.oracle = OracleModel()

    def client(self, task, role):
        if task.id == FAILING_TASK:
            raise RuntimeError(f"backend down {HOSTILE}")
        return self.oracle.client(task, role)


def _evaluate(run_dir: Path, max_steps: int, num_trials: int, agent: ModelFactory) -> list[dict]:
    from agentlab.eval.runner import TaskRunner

    evaluation = Evaluation(
        runner=TaskRunner(Tau2Domain("mock"), max_steps=max_steps),
        agent=agent,
        user=OracleModel(),
        task_split=None,
        num_trials=num_trials,
        progress=False,
        viewer=ConversationViewer(),
    )
    evaluation(run_dir, config={}, name="viewer", group="test")
    return [row for _, row in numbered_rows(run_dir / RESULTS_FILE)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, tuple[Path, list[dict]]]:
    """``full``: the oracle, 2 trials (8 of 9 mock tasks pass). ``short``: max_steps=2 (nothing passes), 1 trial, one
    error row, and one message rewritten to hostile text (its page rebuilt with ``python -m agentlab.view``)."""
    root = tmp_path_factory.mktemp("runs")
    full = _evaluate(root / "full", max_steps=30, num_trials=2, agent=OracleModel())
    short = _evaluate(root / "short", max_steps=2, num_trials=1, agent=FailingModel())
    played = next(row for row in short if row.get("messages"))
    played["messages"][1]["content"] = HOSTILE
    (root / "short" / RESULTS_FILE).write_text("".join(json.dumps(row) + "\n" for row in short))
    with contextlib.redirect_stdout(io.StringIO()):
        view_main([str(root / "short")])
    return {"full": (root / "full", full), "short": (root / "short", short)}


def page_data(page: Path) -> dict:
    """The rows the page carries (its JSON block)."""
    text = page.read_text(encoding="utf-8")
    return json.loads(text.split('<script type="application/json" id="data">', 1)[1].split("</script>", 1)[0])


def _pairs(data: dict) -> dict[tuple[str, int], list]:
    return {(p["task_id"], p["trial"]): p["convs"] for p in data["pairs"]}


@pytest.fixture(scope="module")
def side_by_side(runs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("side") / "both.html"
    with contextlib.redirect_stdout(io.StringIO()):
        view_main([str(runs["full"][0]), str(runs["short"][0]), "--out", str(out)])
    return out


def test_evaluation_writes_every_conversation_with_its_checks(runs):
    run_dir, rows = runs["full"]
    data = page_data(run_dir / CONVERSATIONS_FILE)
    pairs = _pairs(data)
    assert set(pairs) == {pair_key(row) for row in rows} and len(pairs) == 18
    for row in rows:
        (conv,) = pairs[pair_key(row)]
        assert conv["reward"] == row["reward"] and conv["reason"] == row["termination_reason"] == "user_stop"
        assert conv["ok"] == (row["reward"] == 1.0)
        assert [m["role"] for m in conv["messages"]] == [m["role"] for m in row["messages"]]
        assert conv["evaluation"]["reward_basis"] == row["evaluation"]["reward_basis"]
    calls = [c for convs in pairs.values() for m in convs[0]["messages"] for c in m.get("tool_calls", [])]
    assert calls and all("arguments" in c and c["name"] for c in calls)
    failed = pairs[("update_task_with_history_and_env_assertions", 0)][0]
    assert not failed["ok"] and failed["evaluation"]["env_assertions"][0]["met"] is False
    assert data["runs"][0]["count"] == 18 and data["runs"][0]["avg_reward"] == pytest.approx(16 / 18)


def test_side_by_side_pairs_every_task_and_trial(runs, side_by_side):
    data = page_data(side_by_side)
    pairs = _pairs(data)
    (full_dir, full), (short_dir, short) = runs["full"], runs["short"]
    assert [run["label"] for run in data["runs"]] == [f"{full_dir.parent.name}/full", f"{short_dir.parent.name}/short"]
    assert set(pairs) == {pair_key(r) for r in full} | {pair_key(r) for r in short}
    for key, (left, right) in pairs.items():
        assert left is not None and (right is None) == (key[1] == 1)  # the short run played one trial
    error = pairs[(FAILING_TASK, 0)][1]
    assert (
        error["reason"] == "error"
        and error["error"] == f"RuntimeError: backend down {HOSTILE}"
        and error["messages"] == []
    )
    assert {pairs[key][1]["reason"] for key in pairs if key[1] == 0} == {"max_steps", "error"}


def test_model_text_stays_text(runs, side_by_side, tmp_path):
    page = side_by_side.read_text(encoding="utf-8")
    assert HOSTILE not in page and "<img" not in page and page.count("<script") == 2  # the data block and the script
    convs = [c for p in page_data(side_by_side)["pairs"] for c in p["convs"] if c]
    assert HOSTILE in [m.get("content") for c in convs for m in c["messages"]]  # carried whole, as data
    dom = chromium("--dump-dom", side_by_side.as_uri() + "#open=1", profile=tmp_path / "profile")
    assert not console_lines(dom.stderr)
    assert TITLE_RE.search(dom.stdout).group(1).startswith("agentlab conversations")  # no injected script ran
    assert "<img" not in dom.stdout and html.escape(HOSTILE, quote=False) in dom.stdout


def test_page_loads_nothing(side_by_side):
    """Outside its data block the page names no URL, file or loader: it opens offline, from anywhere."""
    page = side_by_side.read_text(encoding="utf-8")
    start = page.index('<script type="application/json" id="data">')
    shell = page[:start] + page[page.index("</script>", start) :]
    for loader in ("src=", "href=", "url(", "@import", "http:", "https:", "fetch(", "XMLHttpRequest", "import("):
        assert loader not in shell


def _shown(dom: str) -> int:
    return dom.count('<details class="pair"')


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        ("", lambda pairs: pairs),
        ("failed=1", lambda pairs: {k: v for k, v in pairs.items() if not all(c and c["ok"] for c in v)}),
        (
            f"task={FAILING_TASK},create_task_1",
            lambda pairs: {k: v for k, v in pairs.items() if k[0] in (FAILING_TASK, "create_task_1")},
        ),
        (
            "reason=error",
            lambda pairs: {k: v for k, v in pairs.items() if any(c and c["reason"] == "error" for c in v)},
        ),
        (
            "differ=1&reason=max_steps",
            lambda pairs: {
                k: v
                for k, v in pairs.items()
                if v[1] and v[1]["reason"] == "max_steps" and v[0]["reward"] != v[1]["reward"]
            },
        ),
    ],
    ids=["none", "failed", "task_ids", "reason", "differ_and_reason"],
)
def test_filters_in_the_browser(side_by_side, tmp_path, state, expected):
    pairs = _pairs(page_data(side_by_side))
    dom = chromium("--dump-dom", f"{side_by_side.as_uri()}#{state}", profile=tmp_path / "profile").stdout
    wanted = expected(pairs)
    assert 0 < len(wanted) and _shown(dom) == len(wanted)
    assert f"showing {len(wanted)} of {len(wanted)} matching ({len(pairs)} task x trial pairs)" in dom
    for task_id, trial in wanted:
        assert f"task {html.escape(task_id)} · trial {trial}</b>" in dom
    for control in (
        'id="failed"',
        'id="differ"',
        'id="task"',
        '<option value="error">error</option>',
        '<option value="max_steps">',
    ):
        assert control in dom


def test_thousands_of_conversations_draw_a_page_at_a_time(runs, tmp_path):
    rows = runs["full"][1]
    many = tmp_path / "many"
    many.mkdir()
    copies = [{**rows[i % len(rows)], "task_id": f"t{i}", "trial": 0} for i in range(3000)]
    (many / RESULTS_FILE).write_text("".join(json.dumps(row) + "\n" for row in copies))
    with contextlib.redirect_stdout(io.StringIO()):
        view_main([str(many)])
    dom = chromium("--dump-dom", (many / CONVERSATIONS_FILE).as_uri(), profile=tmp_path / "profile")
    assert _shown(dom.stdout) == 100 and "showing 100 of 3000 matching (3000 task x trial pairs)" in dom.stdout
    assert '<div class="msg' not in dom.stdout  # an entry's conversation is drawn when it is opened
    assert not console_lines(dom.stderr)


def test_screenshot_is_not_blank(side_by_side, tmp_path):
    shot = tmp_path / "shot.png"
    done = chromium(
        f"--screenshot={shot}",
        "--window-size=1280,1600",
        f"{side_by_side.as_uri()}#failed=1&open=1",
        profile=tmp_path / "profile",
    )
    assert not console_lines(done.stderr)
    pixels = imread(shot)
    assert pixels.shape[:2] == (1600, 1280)
    drawn = pixels[..., :3].min(axis=2) < 0.9
    assert drawn.mean() > 0.05 and drawn[800:].mean() > 0.05  # text top to bottom: opened conversations fill the view


def test_compare_report_links_every_page(runs, tmp_path):
    out = tmp_path / "report"
    with contextlib.redirect_stdout(io.StringIO()):
        compare_main([str(runs["full"][0]), str(runs["short"][0]), "--out", str(out)])
    report = (out / "report.html").read_text(encoding="utf-8")
    hrefs = re.findall(r'<a href="([^"]*)">', report)
    assert len(hrefs) == 3 and hrefs[0] == CONVERSATIONS_FILE
    assert {(out / href).resolve() for href in hrefs[1:]} == {(runs[k][0] / CONVERSATIONS_FILE).resolve() for k in runs}
    assert len(page_data(out / CONVERSATIONS_FILE)["runs"]) == 2


def test_view_of_a_dir_without_results_exits_2_naming_it(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "agentlab.view", str(tmp_path / "nowhere")],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and str(tmp_path / "nowhere") in done.stderr and "Traceback" not in done.stderr


def test_config_gives_every_evaluation_a_viewer_that_never_changes_the_run_record(compose_cfg):
    cfg = compose_cfg()
    assert isinstance(instantiate(cfg.stage).viewer, ConversationViewer)
    assert not any(key.startswith("viewer") for key in settings_of(cfg.stage))  # old run dirs still resume
    train = compose_cfg("stage=train", "rl_algo=sft")
    assert isinstance(instantiate(train.stage.evaluator).evaluation(agent=None).viewer, ConversationViewer)
    assert instantiate(compose_cfg("viewer=null").stage).viewer is None
