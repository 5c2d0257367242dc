"""Benchmark: StudioReader throughput on large AgentScope Studio databases, per span schema.

For each schema (old, new, new with flat attribute keys) a database of ``--spans`` spans is generated, seeded,
with the traced agent's own span builder (scripts/traced_agent.py): conversations of 1-4 turns, each an agent
reply span whose answer carries tool_use/tool_result blocks (airline-sized JSON results) and text with
apostrophes, quotes and unicode, with LLM and tool child spans under it (about 1 reply span in 4 spans); ~1% of
the replies are ERROR spans (half without output) and a few end in a tool call with no text. Then
``StudioReader(path).pairs()`` is consumed fully, best of ``--repeats``, in a fresh process per schema so
that its peak RSS is the reader's own. Generation is not timed.

    python scripts/bench_tracing.py [--spans 100000] [--schemas old new new-flat] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import resource
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchlib import command_line, machine, write_results
from tqdm import tqdm

from agentlab.feedback.reader import StudioReader
from agentlab.feedback.studio import SpanRecord, StudioWriter, iso_time

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "experiments" / "bench_tracing"
SCHEMAS = {"old": ("old", False), "new": ("new", False), "new-flat": ("new", True)}
START_NS = 1_756_720_800_000_000_000  # 2025-09-01T10:00:00Z
TURN_UNIT_NS = 40_000_000
ERROR_SHARE = 0.01
# child spans per reply -> its agent messages: 1 text only; 2 a call and its result, no text (cut by the tool-round
# limit); 3 a call then text; 4 two parallel calls then text; 5 two calls in sequence then text. Mean 3 children.
CHILD_WEIGHTS = {1: 30, 2: 1, 3: 35, 4: 10, 5: 24}
NAMES = ("Noah O'Brien", "Zoë Müller", "Łukasz Wiśniewski", "李娜", "José Álvarez", "D'Angelo Rossi", "Aiyana \"Ace\" Begay")
QUERIES = (
    "Hi, I'm {name} - I'd like to {action} reservation {res}. It's urgent, my flight's on {date}!",
    "Bonjour, c'est {name} : je voudrais {action} ma réservation {res} du {date}, s'il vous plaît 🙏",
    "你好，我是{name}。我想{action}预订 {res}（{date}）。谢谢！",
    "My user id is {user}. Can you {action} {res}? The agent said \"it's fine\" last time.",
)
FOLLOW_UPS = ("Thanks! Could you confirm what's been done?", "And will I get an e-mail? I'm travelling on {date} 😅",
              "Parfait, merci - c'est tout.")
ACTIONS = ("cancel", "change the cabin of", "add a checked bag to", "update the passengers of")
ANSWERS = (
    "I've {done} reservation {res} for {name}; you'll get a confirmation e-mail. Anything else I can help with?",
    "Done - {res} is {state}. Your refund of ${amount} goes back to the original payment method within 5-7 days.",
    "C'est fait : la réservation {res} est {state_fr}. Bon voyage ! ✈️",
)
TOOLS = ("get_user_details", "get_reservation_details", "search_direct_flight", "cancel_reservation", "update_reservation_baggages")


@dataclass
class Generated:
    """What a database holds, as the reader should see it."""

    spans: int = 0
    conversations: int = 0
    reply_spans: int = 0
    valid: int = 0  # replies the reader must pair
    errors: int = 0
    errors_without_output: int = 0
    tool_only: int = 0


class Synth:
    """Seeded airline-flavoured text, tool calls and tool results."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.calls = 0

    def fields(self) -> dict[str, Any]:
        rng = self.rng
        return {
            "name": rng.choice(NAMES), "res": "".join(rng.choices("ABCDEFGHJKLMNPQRSTUVWXYZ23456789", k=6)),
            "user": f"user_{rng.randrange(10_000):04d}", "date": f"2024-05-{rng.randrange(1, 29):02d}",
            "action": rng.choice(ACTIONS), "done": rng.choice(("cancelled", "updated", "changed")),
            "state": rng.choice(("cancelled", "updated")), "state_fr": rng.choice(("annulée", "modifiée")),
            "amount": rng.randrange(50, 2000),
        }

    def query(self, turn: int, fields: dict[str, Any]) -> str:
        return (self.rng.choice(QUERIES) if turn == 0 else self.rng.choice(FOLLOW_UPS)).format(**fields)

    def answer(self, fields: dict[str, Any]) -> str:
        return self.rng.choice(ANSWERS).format(**fields)

    def call(self, fields: dict[str, Any]) -> dict[str, Any]:
        self.calls += 1
        arguments = {"reservation_id": fields["res"], "user_id": fields["user"], "note": f"{fields['name']}'s request"}
        return {"id": f"call_{self.calls}", "name": self.rng.choice(TOOLS), "arguments": arguments}

    def result(self, call: dict[str, Any], fields: dict[str, Any]) -> dict[str, Any]:
        """A tool message with a reservation-sized JSON output (~1 KB, like airline's get_reservation_details)."""
        flights = [{"flight_number": f"HAT{self.rng.randrange(1000):03d}", "origin": "JFK", "destination": "SFO",
                    "date": fields["date"], "price": self.rng.randrange(80, 900)} for _ in range(self.rng.randrange(1, 5))]
        output = {"reservation_id": fields["res"], "user_id": fields["user"], "passengers": [{"name": fields["name"]}],
                  "flights": flights, "payment_history": [{"payment_id": "credit_card_7815826", "amount": fields["amount"]}],
                  "note": "l'itinéraire a été confirmé"}
        return {"role": "tool", "id": call["id"], "content": json.dumps(output, ensure_ascii=False)}

    def replies(self, children: int, fields: dict[str, Any]) -> list[dict[str, Any]]:
        """The agent's messages of a turn with ``children`` model and tool calls (tau2 dumps, as traced_agent reads them)."""
        messages: list[dict[str, Any]] = []
        parallel = children == 4
        for _ in range(children // 2 - parallel):
            call = self.call(fields)
            messages += [{"role": "assistant", "content": None, "tool_calls": [call]}, self.result(call, fields)]
        if parallel:
            calls = [self.call(fields), self.call(fields)]
            messages += [{"role": "assistant", "content": None, "tool_calls": calls}, *(self.result(c, fields) for c in calls)]
        if children % 2 or parallel:
            messages.append({"role": "assistant", "content": self.answer(fields), "tool_calls": None})
        return messages


class Generator:
    """Seeded conversations written through the traced agent's ``SpanFactory``, counted as the reader should see them."""

    def __init__(self, schema: str, flat: bool, seed: int) -> None:
        from traced_agent import SpanFactory  # here, not at the top: the measuring process stays free of the harness

        self.rng = random.Random(seed)
        self.synth = Synth(self.rng)
        self.factory = SpanFactory(schema, flat, "AirlineAgent", "smollm2-135m-instruct", random.Random(seed + 1))
        self.made = Generated()

    def conversation(self, limit: int) -> tuple[str, int, list[SpanRecord]]:
        """One conversation (id, start, spans) of at most ``limit`` spans."""
        conversation, fields = self.factory.new_id(128), self.synth.fields()
        start = clock = START_NS + self.made.conversations * 600 * 10**9
        spans: list[SpanRecord] = []
        for turn in range(self.rng.randint(1, 4)):
            if len(spans) == limit:
                break
            written = self.turn(self.synth.query(turn, fields), fields, clock, conversation, limit - len(spans))
            spans += written
            clock = written[-1].end_ns + 2 * TURN_UNIT_NS
        self.made.conversations += 1
        self.made.spans += len(spans)
        return conversation, start, spans

    def turn(self, query: str, fields: dict[str, Any], clock: int, conversation: str, limit: int) -> list[SpanRecord]:
        """A reply span and its children (at most ``limit`` spans); ERROR now and then, with or without output."""
        from traced_agent import Turn

        children = min(self.rng.choices(list(CHILD_WEIGHTS), list(CHILD_WEIGHTS.values()))[0], limit - 1)
        failed = self.rng.random() < ERROR_SHARE
        self.made.reply_spans += 1
        if children == 0 or (failed and self.rng.random() < 0.5):
            self.made.errors += 1
            self.made.errors_without_output += 1
            return self.factory.failed(query, "RuntimeError: model call timed out", clock, TURN_UNIT_NS, conversation)
        written = self.factory.turn(Turn(query, self.synth.replies(children, fields)), clock, TURN_UNIT_NS, conversation)
        if failed:
            self.made.errors += 1
            written[0].status, written[0].status_message = "ERROR", "ValueError: reply hook failed"
        elif children == 2:
            self.made.tool_only += 1
        else:
            self.made.valid += 1
        return written


def generate(path: Path, schema: str, flat: bool, spans: int, seed: int = 0) -> Generated:
    """A Studio database of exactly ``spans`` spans (a new file at ``path``); the counts say what it holds."""
    path.unlink(missing_ok=True)
    generator = Generator(schema, flat, seed)
    with StudioWriter(path, schema) as writer, tqdm(total=spans, desc=f"generating {path.name}", unit="span") as bar:
        while generator.made.spans < spans:
            conversation, start, written = generator.conversation(spans - generator.made.spans)
            writer.add_run(conversation, "bench", f"conversation {generator.made.conversations}", iso_time(start))
            writer.add_spans(written)
            bar.update(len(written))
    return generator.made


def generate_file(path: str, schema: str, flat: bool, spans: int, seed: int) -> dict[str, Any]:
    """``generate`` for a worker process: the harness imports stay out of the parent, whose children measure."""
    return asdict(generate(Path(path), schema, flat, spans, seed))


def measure(path: str, repeats: int) -> dict[str, Any]:
    """Best-of-``repeats`` seconds of one full read (wall clock and this process's CPU time: on a shared machine the
    CPU time is what the reader itself costs), with the process's peak RSS (``ru_maxrss``).

    Run in a fresh process whose parent stays small: Linux carries ``ru_maxrss`` over fork and exec, so a child of
    the generating process would report that process's size.
    """
    baseline_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times, cpu_times = [], []
    for _ in range(repeats):
        reader = StudioReader(path)
        started, cpu_started = time.perf_counter(), time.process_time()
        pairs = sum(1 for _ in reader.pairs())
        times.append(time.perf_counter() - started)
        cpu_times.append(time.process_time() - cpu_started)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"agent_spans": reader.stats.spans, "pairs": pairs, "skipped": dict(reader.stats.skipped),
            "seconds": min(times), "all_seconds": times, "cpu_seconds": min(cpu_times),
            "peak_rss_mb": peak_kb / 1024, "baseline_rss_mb": baseline_kb / 1024}


def in_fresh_process(function: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(function, *args).result()


def bench_schema(name: str, spans: int, repeats: int, work: Path, seed: int) -> dict[str, Any]:
    """Generate one schema's database, read it, check the reader saw what was written."""
    schema, flat = SCHEMAS[name]
    path = work / f"studio-{name}.sqlite"
    made = in_fresh_process(generate_file, str(path), schema, flat, spans, seed)
    read = in_fresh_process(measure, str(path), repeats)
    if (read["pairs"], read["agent_spans"]) != (made["valid"], made["reply_spans"]):
        raise RuntimeError(f"{name}: the reader made {read['pairs']} pairs of {read['agent_spans']} agent spans; "
                           f"the database holds {made['valid']} valid of {made['reply_spans']}")
    seconds, cpu_seconds = read["seconds"], read["cpu_seconds"]
    row = {
        "schema": name, "generated": made, "db_mb": round(path.stat().st_size / 2**20, 1),
        **{k: read[k] for k in ("agent_spans", "pairs", "skipped")},
        "seconds": round(seconds, 3), "all_seconds": [round(s, 3) for s in read["all_seconds"]],
        "spans_per_s": round(made["spans"] / seconds), "agent_spans_per_s": round(read["agent_spans"] / seconds),
        "cpu_seconds": round(cpu_seconds, 3), "cpu_spans_per_s": round(made["spans"] / cpu_seconds),
        "peak_rss_mb": round(read["peak_rss_mb"], 1), "baseline_rss_mb": round(read["baseline_rss_mb"], 1),
    }
    print(f"{name:>8}: {row['spans_per_s']:,} spans/s, {row['agent_spans_per_s']:,} agent spans/s, {seconds:.2f} s "
          f"({row['cpu_spans_per_s']:,} spans/s of CPU time, {cpu_seconds:.2f} s), peak RSS {row['peak_rss_mb']} MB", flush=True)
    return row


def readme(results: dict[str, Any], command: str) -> str:
    m = results["machine"]
    lines = [
        "| schema | spans in db | agent spans | pairs | skipped | seconds | spans/s | agent spans/s | CPU seconds | spans/s of CPU | db MB | peak RSS MB (idle) |",
        "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|",
        *(
            f"| {r['schema']} | {r['generated']['spans']:,} | {r['agent_spans']:,} | {r['pairs']:,} | "
            f"{', '.join(f'{k} {v}' for k, v in sorted(r['skipped'].items()))} | {r['seconds']:.2f} | {r['spans_per_s']:,} | "
            f"{r['agent_spans_per_s']:,} | {r['cpu_seconds']:.2f} | {r['cpu_spans_per_s']:,} | {r['db_mb']} | "
            f"{r['peak_rss_mb']} ({r['baseline_rss_mb']}) |"
            for r in results["schemas"]
        ),
    ]
    return f"""# Studio reader throughput

What: `StudioReader(path).pairs()` consumed fully on a generated AgentScope Studio database of
{results['spans']:,} spans per schema (`old`; `new` with nested attributes; `new-flat`, Studio's flattened keys), best of
{results['repeats']}, each schema in a fresh process (peak RSS is the reader's; idle = the process before reading).
The databases come from scripts/traced_agent.py's span builder with seeded synthetic airline conversations:
1-4 turns, about 1 agent reply span per 4 spans (the rest LLM and tool child spans, which the reader must skip),
answers with tool_use/tool_result blocks (~1 KB JSON results), apostrophes, quotes and unicode in the text,
~{ERROR_SHARE:.0%} ERROR replies (half without output) and a few replies cut after a tool call (no text: `no_output`).
Generation is not timed. spans/s counts every span in the database; agent spans/s the reply spans read.
Seconds are wall clock (best of {results['repeats']}); CPU seconds the reading process's own CPU time (best of {results['repeats']}),
which other work on a shared machine changes much less than the wall clock.

Command:

    {command}

Machine: {m['platform']}, {m['cpu_count']} CPUs, Python {m['python']}. 1-minute load average {m['load_average_1m']}
before and {results['load_average_1m_after']} after (above ~2, other work shared the two cores).

{chr(10).join(lines)}

Raw figures: `results.json`.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--spans", type=int, default=100_000, help="spans per database (replies and their child spans)")
    parser.add_argument("--schemas", nargs="+", choices=list(SCHEMAS), default=list(SCHEMAS), help="databases to measure")
    parser.add_argument("--repeats", type=int, default=3, help="full reads per database; the best counts")
    parser.add_argument("--seed", type=int, default=0, help="seeds the generated conversations and ids")
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/bench_tracing"), help="where the databases are written")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where results.json and README.md go")
    args = parser.parse_args()
    args.work_dir.mkdir(parents=True, exist_ok=True)
    load_before = round(os.getloadavg()[0], 2)
    rows = [bench_schema(name, args.spans, args.repeats, args.work_dir, args.seed) for name in args.schemas]
    results = {  # machine() imports torch: only now, so that the measuring processes' parent stayed small
        "machine": {**machine(), "load_average_1m": load_before}, "spans": args.spans, "repeats": args.repeats,
        "seed": args.seed, "schemas": rows, "load_average_1m_after": round(os.getloadavg()[0], 2),
    }
    write_results(args.out, results, readme(results, command_line("bench_tracing.py")))


if __name__ == "__main__":
    main()
