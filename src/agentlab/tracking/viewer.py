"""The conversation viewer: every conversation of one or more runs as one self-contained HTML page.

A page shows each (task, trial) once, with one column per run (two runs: side by side): the turns, the tool
calls with their arguments and results, the termination reason, tau2's reward breakdown (DB check, env
assertions, action, communicate and NL checks), and an error row's cause. Filters (failed only, task ids,
termination reason, rewards that differ) and the open entries live in the URL's ``#`` part, so a view can be
shared or screenshotted. The rows travel as one JSON block that the page's own script reads and draws with
``textContent`` only, so no model output can become markup; an entry is drawn when first opened and the list
grows a page at a time, so thousands of conversations stay light. Nothing is fetched at view time.
"""

from __future__ import annotations

import html
import io
import json
import math
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from tau2.metrics.agent_metrics import is_successful

from agentlab.eval.results import pair_key
from agentlab.jsonl import atomic_writer
from agentlab.rundir import CONVERSATIONS_FILE, RESULTS_FILE
from agentlab.tracking.report import Run, display_path, iter_result_rows, results_dir, task_order

ERROR_REASON = "error"  # the termination reason shown for an error row (the pair raised before tau2 scored it)
MESSAGE_KEYS = ("role", "content", "tool_calls", "id", "error")  # what the page shows of a tau2 message


@dataclass(frozen=True)
class ViewerRun:
    """One column of the page: a run's label, where it came from, and its result rows (read afresh at each call)."""

    label: str
    path: Path
    rows: Callable[[], Iterable[dict[str, Any]]]


def conversation(row: dict[str, Any]) -> dict[str, Any]:
    """What the page shows of one result row (an error row has no messages and its cause instead)."""
    messages = row.get("messages")
    if messages is None:
        messages = (row.get("simulation") or {}).get("messages") or []
    reward = _finite(row.get("reward"))
    error = row.get("error")
    usage = row.get("usage") or {}
    return {
        "reward": reward,
        "ok": error is None and reward is not None and bool(is_successful(reward)),
        "reason": ERROR_REASON if error else str(row.get("termination_reason") or ERROR_REASON),
        "error": error,
        "traceback": row.get("traceback"),
        "steps": row.get("steps"),
        "duration": _finite(row.get("duration")),
        "tokens": [usage.get("input_token_count"), usage.get("output_token_count")] if usage else None,
        "format_errors": row.get("format_errors"),
        "evaluation": row.get("evaluation") or (row.get("simulation") or {}).get("reward_info"),
        "messages": [{k: m[k] for k in MESSAGE_KEYS if m.get(k) is not None} for m in messages if isinstance(m, dict)],
    }


def task_brief(task: Any) -> dict[str, Any] | None:
    """A task's purpose and the user's instructions (tau2's ``Task`` as the row stores it)."""
    if not isinstance(task, dict):
        return None
    scenario = task.get("user_scenario") or {}
    return {"purpose": (task.get("description") or {}).get("purpose"), "instructions": scenario.get("instructions")}


class PageIndex:
    """The page's pairs without their conversations: each run's figures, and where each (pair, run) conversation
    and task brief lie in a spill file, so the page is written in (task, trial) order holding one pair at a time."""

    def __init__(self, runs: Sequence[ViewerRun], spill: BinaryIO) -> None:
        self.spill, self.columns = spill, len(runs)
        self.runs: list[dict[str, Any]] = []
        self.where: dict[tuple[str, int], list[tuple[int, int] | None]] = {}
        for column, run in enumerate(runs):
            count, reward_sum = 0, 0.0
            for row in run.rows():
                count, reward_sum = count + 1, reward_sum + (_finite(row.get("reward")) or 0.0)
                slots = self.where.setdefault(pair_key(row), [None] * len(runs))
                if slots[column] is None:  # a run dir extended with resume=extend keeps the first row of a pair
                    slots[column] = self._spill([conversation(row), task_brief(row.get("task"))])
            self.runs.append({"label": run.label, "path": display_path(run.path), "count": count, "avg_reward": reward_sum / count if count else None})

    def _spill(self, value: Any) -> tuple[int, int]:
        data = json.dumps(value, ensure_ascii=False, default=str).encode("utf-8")
        self.spill.seek(0, io.SEEK_END)
        return self.spill.tell(), self.spill.write(data)

    def _read(self, where: tuple[int, int]) -> Any:
        self.spill.seek(where[0])
        return json.loads(self.spill.read(where[1]))

    def pairs(self) -> Iterator[dict[str, Any]]:
        """Each pair as the page holds it (one conversation per run, None where a run lacks the pair), in order."""
        for key in sorted(self.where, key=lambda k: (task_order(k[0]), k[1])):
            convs, task = [], None
            for slot in self.where[key]:
                conv, brief = self._read(slot) if slot is not None else (None, None)
                convs.append(conv)
                task = task or brief
            yield {"task_id": key[0], "trial": key[1], "task": task, "convs": convs}


def _finite(value: Any) -> float | None:
    """A number the page's JSON can hold (JSON has no NaN or infinity)."""
    return (
        float(value)
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        else None
    )


def script_json(data: Any) -> str:
    """JSON safe inside ``<script>``: ``<``, ``>`` and ``&`` escaped, so no text can close the block or open a tag."""
    text = json.dumps(data, ensure_ascii=False, default=str)
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


def write_page(path: Path, runs: Sequence[ViewerRun], title: str) -> Path:
    """Write the self-contained page (inline CSS and script, the rows as one inert JSON block) atomically, the
    block piece by piece: ``{"runs": [...], "pairs": [...]}``, each pair dumped as it is read back."""
    path.parent.mkdir(parents=True, exist_ok=True)
    head, tail = PAGE.split("{data}")
    with tempfile.TemporaryFile() as spill, atomic_writer(path) as page:
        index = PageIndex(runs, spill)
        page.write(head.format(title=html.escape(title), style=STYLE))
        page.write(script_json(index.runs).join(['{"runs": ', ', "pairs": [']))
        for number, pair in enumerate(index.pairs()):
            page.write((", " if number else "") + script_json(pair))
        page.write("]}" + tail.format(script=SCRIPT))
    return path


def label_of(run_dir: Path) -> str:
    """A run dir's short name: its last two path parts (``tau2_airline/<date_time>``, ``rl_algo=dpo/eval_adapter``)."""
    return "/".join(run_dir.resolve().parts[-2:])


def viewer_runs(dirs: Sequence[Path]) -> list[ViewerRun]:
    """Each dir's rows (read only: a run still writing is left as it is), labelled; a clashing label becomes the path."""
    labels = [label_of(path) for path in dirs]
    labels = [display_path(path) if labels.count(label) > 1 else label for path, label in zip(dirs, labels)]
    return [ViewerRun(label, path, file_rows(path / RESULTS_FILE)) for path, label in zip(dirs, labels)]


def file_rows(path: Path) -> Callable[[], Iterator[dict[str, Any]]]:
    """A run's rows as a ``ViewerRun`` reads them: streamed from its ``results.jsonl`` at each call."""
    return lambda: iter_result_rows(path)


def compare_page(runs: Sequence[Run], out: Path) -> Path | None:
    """The compare report's ``out/conversations.html``: the runs with rows side by side (None, and no page, when none has)."""
    shown = [ViewerRun(run.label, results_dir(run), file_rows(results_dir(run) / RESULTS_FILE)) for run in runs]
    shown = [run for run in shown if next(iter(run.rows()), None) is not None]
    page = out / CONVERSATIONS_FILE
    if not shown:
        page.unlink(missing_ok=True)
        return None
    return write_page(page, shown, f"agentlab conversations: {len(shown)} compared runs")


class ConversationViewer:
    """The evaluation stage's page: ``<run dir>/conversations.html`` from the rows the run finished with."""

    def __call__(self, run_dir: Path, rows: Callable[[], Iterable[dict[str, Any]]]) -> Path:
        """The page of the run's rows (``rows()``: a fresh stream of them each call)."""
        label = label_of(run_dir)
        return write_page(run_dir / CONVERSATIONS_FILE, [ViewerRun(label, run_dir, rows)], f"agentlab conversations: {label}")


PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>{style}</style></head><body>
<h1>{title}</h1>
<div id="runs"></div>
<form id="filters" onsubmit="return false">
<label><input type="checkbox" id="failed"> failed only</label>
<label class="multi"><input type="checkbox" id="differ"> rewards differ</label>
<label>task ids <input type="text" id="task" list="task-ids" placeholder="e.g. 3, 7" size="18"></label>
<datalist id="task-ids"></datalist>
<label>termination <select id="reason"><option value="">any</option></select></label>
<button type="button" id="open-all">expand shown</button> <button type="button" id="close-all">collapse all</button>
<span id="count"></span>
</form>
<div id="list"></div>
<button type="button" id="more" hidden>show more</button>
<script type="application/json" id="data">{data}</script>
<script>{script}</script>
</body></html>
"""

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.4em; margin: 0 0 0.4em; }
#runs table { border-collapse: collapse; font-size: 0.9em; margin-bottom: 0.8em; }
#runs td, #runs th { border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: left; }
#filters { position: sticky; top: 0; background: #fafafa; border: 1px solid #ddd; padding: 0.5em; z-index: 1; }
#filters label { margin-right: 1em; } #count { color: #555; margin-left: 1em; }
details.pair { border: 1px solid #ccc; border-radius: 4px; margin: 0.4em 0; background: #fff; }
details.pair > summary { cursor: pointer; padding: 0.35em 0.6em; background: #f3f3f3; }
.chip { display: inline-block; margin-left: 0.8em; padding: 0 0.5em; border-radius: 3px; font-size: 0.9em; }
.chip.ok { background: #d9f2d9; } .chip.fail { background: #f8d4d4; } .chip.none { background: #e4e4e4; }
.task { padding: 0.4em 0.8em; color: #444; font-size: 0.9em; white-space: pre-wrap; }
.cols { display: grid; gap: 0.8em; padding: 0.6em; overflow-x: auto; }
.col { min-width: 24em; }
.col h3 { font-size: 1em; margin: 0 0 0.3em; }
.meta { color: #555; font-size: 0.85em; margin-bottom: 0.4em; }
.eval { border: 1px solid #ddd; background: #fcfcf6; padding: 0.4em; font-size: 0.85em; margin-bottom: 0.5em; }
.eval ul { margin: 0.2em 0; padding-left: 1.4em; }
.met { color: #17702a; } .unmet { color: #b0221b; }
.msg { border-left: 4px solid #bbb; margin: 0.3em 0; padding: 0.2em 0.5em; font-size: 0.9em; }
.msg.assistant { border-color: #3b75af; background: #f2f6fb; } .msg.user { border-color: #999; background: #f7f7f7; }
.msg.tool { border-color: #e6862e; background: #fdf6ee; } .msg.tool.err { border-color: #b0221b; background: #fbeeee; }
.role { font-weight: 600; font-size: 0.8em; text-transform: uppercase; color: #555; }
.role .id { text-transform: none; font-weight: normal; font-family: monospace; }
.text, pre { white-space: pre-wrap; overflow-wrap: anywhere; margin: 0.2em 0; }
pre { font-size: 0.85em; background: rgba(0, 0, 0, 0.04); padding: 0.3em; max-height: 24em; overflow: auto; }
.call { font-family: monospace; font-size: 0.9em; }
.error { color: #b0221b; white-space: pre-wrap; }
"""

SCRIPT = r"""
"use strict";
const DATA = JSON.parse(document.getElementById("data").textContent);
const PAGE_SIZE = 100;
const multi = DATA.runs.length > 1;
const $ = (id) => document.getElementById(id);
let shown = PAGE_SIZE, openAll = false;

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}
const fmt = (x) => (x === null || x === undefined ? "—" : Number(x).toFixed(2));
const pretty = (v) => (typeof v === "string" ? v : JSON.stringify(v, null, 2));
const fields = (v) => (v && typeof v === "object" && !Array.isArray(v)
  ? Object.entries(v).filter(([, x]) => x !== null).map(([k, x]) => `${k}: ${pretty(x)}`).join("\n")
  : pretty(v));
function asJson(text) {
  try { const v = JSON.parse(text); return typeof v === "object" && v !== null ? JSON.stringify(v, null, 2) : text; }
  catch (e) { return text; }
}

function runsTable() {
  const table = el("table"), head = el("tr");
  ["run", "dir", "conversations", "avg reward"].forEach((h) => head.appendChild(el("th", "", h)));
  table.appendChild(head);
  DATA.runs.forEach((run) => {
    const tr = el("tr");
    [run.label, run.path, run.count, fmt(run.avg_reward)].forEach((c) => tr.appendChild(el("td", "", c)));
    table.appendChild(tr);
  });
  $("runs").appendChild(table);
}

function setupFilters() {
  const reasons = new Set(), ids = new Set();
  DATA.pairs.forEach((p) => { ids.add(p.task_id); p.convs.forEach((c) => c && reasons.add(c.reason)); });
  [...reasons].sort().forEach((r) => { const o = el("option", "", r); o.value = r; $("reason").appendChild(o); });
  [...ids].forEach((id) => { const o = el("option"); o.value = id; $("task-ids").appendChild(o); });
  document.querySelectorAll(".multi").forEach((n) => { n.hidden = !multi; });
  const state = new URLSearchParams(location.hash.slice(1));
  $("failed").checked = state.get("failed") === "1";
  $("differ").checked = multi && state.get("differ") === "1";
  $("task").value = state.get("task") || "";
  $("reason").value = reasons.has(state.get("reason")) ? state.get("reason") : "";
  openAll = state.get("open") === "1";
  ["failed", "differ", "reason"].forEach((id) => $(id).addEventListener("change", refresh));
  $("task").addEventListener("input", refresh);
  $("open-all").addEventListener("click", () => { openAll = true; refresh(); });
  $("close-all").addEventListener("click", () => { openAll = false; refresh(); });
  $("more").addEventListener("click", () => { shown += PAGE_SIZE; draw(); });
}

function saveState() {
  const state = new URLSearchParams();
  if ($("failed").checked) state.set("failed", "1");
  if ($("differ").checked) state.set("differ", "1");
  if ($("task").value.trim()) state.set("task", $("task").value.trim());
  if ($("reason").value) state.set("reason", $("reason").value);
  if (openAll) state.set("open", "1");
  try { history.replaceState(null, "", "#" + state.toString()); } catch (e) { /* a browser that keeps file: URLs fixed */ }
}

function matches(pair) {
  const ids = $("task").value.split(/[\s,]+/).filter(Boolean), reason = $("reason").value, present = pair.convs.filter(Boolean);
  if (ids.length && !ids.includes(pair.task_id)) return false;
  if (reason && !present.some((c) => c.reason === reason)) return false;
  if ($("failed").checked && pair.convs.every((c) => c && c.ok)) return false;
  if ($("differ").checked && new Set(pair.convs.map((c) => (c ? c.reward : null))).size < 2) return false;
  return true;
}

function refresh() { shown = PAGE_SIZE; saveState(); draw(); }

function draw() {
  const hits = DATA.pairs.filter(matches), list = $("list");
  list.replaceChildren();
  hits.slice(0, shown).forEach((pair) => list.appendChild(entry(pair)));
  $("count").textContent = `showing ${Math.min(shown, hits.length)} of ${hits.length} matching (${DATA.pairs.length} task x trial pairs)`;
  $("more").hidden = hits.length <= shown;
}

function entry(pair) {
  const details = el("details", "pair"), summary = el("summary");
  summary.appendChild(el("b", "", `task ${pair.task_id} · trial ${pair.trial}`));
  pair.convs.forEach((c, i) => {
    const who = multi ? DATA.runs[i].label + ": " : "";
    const text = c ? `${who}reward ${fmt(c.reward)} · ${c.reason}` : `${who}not run`;
    summary.appendChild(el("span", "chip " + (c ? (c.ok ? "ok" : "fail") : "none"), text));
  });
  details.appendChild(summary);
  details.addEventListener("toggle", () => { if (details.open && details.childNodes.length === 1) details.appendChild(body(pair)); });
  if (openAll) details.open = true;
  return details;
}

function body(pair) {
  const wrap = el("div");
  if (pair.task && pair.task.purpose) wrap.appendChild(el("div", "task", "purpose: " + pair.task.purpose));
  if (pair.task && pair.task.instructions) {
    const more = el("details", "task");
    more.appendChild(el("summary", "", "the user's instructions"));
    more.appendChild(el("div", "", fields(pair.task.instructions)));
    wrap.appendChild(more);
  }
  const cols = el("div", "cols");
  cols.style.gridTemplateColumns = `repeat(${pair.convs.length}, minmax(24em, 1fr))`;
  pair.convs.forEach((c, i) => cols.appendChild(column(c, DATA.runs[i])));
  wrap.appendChild(cols);
  return wrap;
}

function column(c, run) {
  const col = el("div", "col");
  if (multi) col.appendChild(el("h3", "", run.label));
  if (!c) { col.appendChild(el("div", "meta", "this run has no row for this task and trial")); return col; }
  const meta = [`reward ${fmt(c.reward)}`, `ended: ${c.reason}`];
  if (c.steps !== null && c.steps !== undefined) meta.push(`${c.steps} steps`);
  if (c.duration !== null) meta.push(`${c.duration.toFixed(1)} s`);
  if (c.tokens) meta.push(`tokens ${c.tokens[0] ?? "?"} in / ${c.tokens[1] ?? "?"} out`);
  if (c.format_errors) meta.push(`${c.format_errors} malformed tool calls`);
  col.appendChild(el("div", "meta", meta.join(" · ")));
  if (c.error) {
    col.appendChild(el("div", "error", c.error));
    if (c.traceback) { const d = el("details"); d.appendChild(el("summary", "", "traceback")); d.appendChild(el("pre", "", c.traceback)); col.appendChild(d); }
  }
  if (c.evaluation) col.appendChild(evaluation(c.evaluation));
  c.messages.forEach((m) => col.appendChild(message(m)));
  return col;
}

function check(ul, ok, text, extra) {
  const li = el("li", ok ? "met" : "unmet", (ok ? "✓ " : "✗ ") + text);
  if (extra) li.appendChild(el("div", "meta", extra));
  ul.appendChild(li);
}

const call = (name, args) => `${name}(${args ? JSON.stringify(args) : ""})`;

function evaluation(ev) {
  const box = el("div", "eval");
  const basis = ev.reward_basis ? ` (basis: ${ev.reward_basis.join(", ")})` : "";
  box.appendChild(el("div", "", `reward ${fmt(ev.reward)}${basis}`));
  if (ev.reward_breakdown) {
    box.appendChild(el("div", "", "breakdown: " + Object.entries(ev.reward_breakdown).map(([k, v]) => `${k} ${fmt(v)}`).join(" · ")));
  }
  const ul = el("ul");
  if (ev.db_check) check(ul, ev.db_check.db_match, `database matches the gold end state (reward ${fmt(ev.db_check.db_reward)})`);
  (ev.env_assertions || []).forEach((a) => check(ul, a.met, "env assertion " + call(a.env_assertion.func_name, a.env_assertion.arguments), a.env_assertion.message));
  (ev.action_checks || []).forEach((a) => check(ul, a.action_match, `action ${call(a.action.name, a.action.arguments)} by ${a.action.requestor}`, a.action.info));
  (ev.communicate_checks || []).forEach((a) => check(ul, a.met, `communicate "${a.info}"`, a.justification));
  (ev.nl_assertions || []).forEach((a) => check(ul, a.met, "NL assertion: " + a.nl_assertion, a.justification));
  if (ul.childNodes.length) box.appendChild(ul);
  Object.entries(ev.info || {}).forEach(([k, v]) => { if (v) box.appendChild(el("div", "meta", `${k}: ${pretty(v)}`)); });
  const known = new Set(["reward", "reward_basis", "reward_breakdown", "db_check", "env_assertions", "action_checks", "communicate_checks", "nl_assertions", "info"]);
  Object.entries(ev).forEach(([k, v]) => { if (!known.has(k) && v !== null) box.appendChild(el("div", "meta", `${k}: ${pretty(v)}`)); });
  return box;
}

function message(m) {
  const box = el("div", `msg ${m.role}${m.error ? " err" : ""}`);
  const role = el("div", "role", m.role === "tool" ? `tool result${m.error ? " (error)" : ""}` : m.role);
  if (m.id) role.appendChild(el("span", "id", " " + m.id));
  box.appendChild(role);
  if (m.content) box.appendChild(m.role === "tool" ? el("pre", "", asJson(m.content)) : el("div", "text", m.content));
  (m.tool_calls || []).forEach((t) => {
    box.appendChild(el("div", "call", `→ ${t.name}${t.id ? "  [" + t.id + "]" : ""}`));
    box.appendChild(el("pre", "", JSON.stringify(t.arguments, null, 2)));
  });
  return box;
}

runsTable();
setupFilters();
draw();
"""
