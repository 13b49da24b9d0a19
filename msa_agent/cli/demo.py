"""``msa demo``: the main job on the embedded default model, end to end, in a scratch space."""

from __future__ import annotations

import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

from msa_agent.cli.options import KOpt

if TYPE_CHECKING:
    from msa_agent.memory import Memory

DEMO_MEMORIES = [
    ("session", "User: my daughter Maya starts violin lessons on Tuesdays at 5pm."),
    ("session", "User: I am allergic to peanuts, please never suggest satay."),
    ("tool", "weather(city='Lisbon') -> 21C, clear sky, wind 12 km/h from the north."),
    ("document", "The Rust borrow checker enforces that references never outlive their data."),
    ("document", "Photosynthesis converts light energy into chemical energy stored in glucose."),
    ("session", "User: our team standup moved from 9:30 to 10:00 starting next Monday."),
    ("document", "The Treaty of Westphalia (1648) ended the Thirty Years' War in Europe."),
    ("tool", "git log -1 -> 'Fix race in the pinned-memory prefetcher' by dana, 2 days ago."),
]
DEMO_QUERIES = [
    "When are Maya's music lessons?",
    "What food should I avoid?",
    "What was the weather in Lisbon?",
    "Which treaty ended the Thirty Years' War?",
]


def demo(
    path: Path | None = typer.Option(None, help="Space folder (default: a temporary folder)."),
    k: KOpt = 3,
) -> None:
    """Remember a few sessions, tool results and documents, then recall them with MSA routing."""
    from msa_agent import Memory
    from msa_agent.errors import RoutingQualityWarning

    console = Console()
    folder = path or Path(tempfile.mkdtemp(prefix="msa-demo-"))
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", RoutingQualityWarning)
            with console.status("loading the embedded model (first run converts it once)..."):
                mem = Memory.open(folder)
        for w in caught:
            console.print(f"[yellow]warning:[/] {w.message}")
        with mem:
            _run(mem, console, k)
    finally:
        if path is None:
            shutil.rmtree(folder, ignore_errors=True)


def _run(mem: Memory, console: Console, k: int) -> None:
    start = time.perf_counter()
    mem.remember_many([{"text": t, "kind": kind} for kind, t in DEMO_MEMORIES])
    took = time.perf_counter() - start
    s = mem.stats()
    console.print(f"remembered {s.memories} memories ({s.tokens} tokens, {s.chunks} chunks) "
                  f"in {took:.2f}s; routing: {s.routing}")
    for q in DEMO_QUERIES:
        table = Table(title=f"recall: {q}", show_lines=False)
        table.add_column("score", justify="right")
        table.add_column("kind")
        table.add_column("memory")
        for hit in mem.recall(q, k=k):
            table.add_row(f"{hit.score:.3f}", hit.kind, hit.text)
        console.print(table)
