"""``msa bench``: the benchmark suite (tasks x systems), a rich table, JSON and PNG plots.

The work is in :mod:`msa_agent.bench.suite`; this module only parses options and writes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

TasksArg = Annotated[list[str] | None, typer.Argument(
    help="Tasks to run: facts, wiki, sessions, longmemeval, needles (default: all).",
    show_default=False)]
SystemsOpt = Annotated[list[str] | None, typer.Option(
    "--system", "-s", help="Systems: bm25, minilm, minilm-windows, mem0, msa "
                           "(repeatable; default: all; mem0 is skipped if not installed).")]
VariantOpt = Annotated[list[str] | None, typer.Option(
    "--msa-variant", help="A msa-agent row NAME=JSON of Memory.recall keyword arguments, "
                          "e.g. 'hops=auto={\"hops\": \"auto\"}' (repeatable; default: one "
                          "row per routing mode that recall accepts, else its default).")]


def parse_variants(specs: list[str] | None) -> dict[str, dict[str, Any]] | None:
    """``NAME=JSON`` strings -> ``{name: kwargs}``; None when there are none."""
    if not specs:
        return None
    out: dict[str, dict[str, Any]] = {}
    for spec in specs:
        name, sep, raw = spec.partition("={")
        if not sep:
            raise typer.BadParameter(f"--msa-variant {spec!r}: expected NAME=JSON")
        out[f"msa-agent {name}"] = json.loads("{" + raw)
    return out


def answer_count(answers: bool | None, per_split: int | None, mode: str,
                 defaults: dict[str, int]) -> int:
    """Answer-stage questions per split: 0 when off (default off for quick, on for full)."""
    if answers is None:
        answers = mode == "full"
    if not answers:
        return 0
    if per_split is not None and per_split < 1:
        raise typer.BadParameter("--answer-questions must be >= 1")
    return per_split or defaults[mode]


def bench(
    tasks: TasksArg = None,
    quick: Annotated[bool, typer.Option(
        "--quick/--full", help="Quick (<10 min on a 2-core CPU) or full sizes.")] = True,
    systems: SystemsOpt = None,
    msa_variant: VariantOpt = None,
    out: Annotated[Path, typer.Option(help="Folder for the JSON and the PNG plots.")] = Path(
        "bench-out"),
    name: Annotated[str | None, typer.Option(
        help="File name stem (default: bench-quick or bench-full[-TASKS]).")] = None,
    max_size: Annotated[str | None, typer.Option(
        help="Needles: largest memory size (16K, 64K, 256K, 1M).")] = None,
    plots: Annotated[bool, typer.Option(help="Write PNG plots.")] = True,
    work: Annotated[Path, typer.Option(help="Scratch folder for the systems' indexes.")] = Path(
        "bench-out/work"),
    answers: Annotated[bool | None, typer.Option(
        "--answers/--no-answers", help="Answer stage: accuracy, token F1 and latency of "
        "msa-agent answer, RAG, full context and no memory (default: off with --quick, on "
        "with --full).", show_default=False)] = None,
    answer_questions: Annotated[int | None, typer.Option(
        help="Answer-stage questions per split (default: 6 quick, 30 full).",
        show_default=False)] = None,
) -> None:
    """Run the benchmark suite: recall@1/@5 per task and kind (val and test), costs, plots;
    with --answers also answer accuracy and token F1 against RAG, full context, no memory."""
    from msa_agent.bench import answer_report, report
    from msa_agent.bench.answers import PER_SPLIT
    from msa_agent.bench.suite import SYSTEMS, RunConfig, run, write
    from msa_agent.bench.tasks import TASKS, needles

    console = Console()
    chosen = list(tasks or TASKS)
    mode = "quick" if quick else "full"
    overrides: dict[str, dict[str, Any]] = {}
    if max_size:
        sizes = list(needles.SIZES)
        if max_size not in sizes:
            raise typer.BadParameter(f"--max-size: one of {', '.join(sizes)}")
        overrides["needles"] = {"sizes": tuple(sizes[: sizes.index(max_size) + 1])}
    stem = name or f"bench-{mode}" + ("" if tasks is None else "-" + "-".join(chosen))
    cfg = RunConfig(tasks=chosen, mode=mode, systems=list(systems or SYSTEMS),
                    msa_variants=parse_variants(msa_variant), workdir=work,
                    overrides=overrides, log=lambda m: console.print(m, markup=False),
                    answers=answer_count(answers, answer_questions, mode, PER_SPLIT),
                    on_task=lambda partial: write(partial, out / f"{stem}.json"))
    doc = run(cfg)
    path = write(doc, out / f"{stem}.json")
    console.print(report.rich_table(doc))
    if doc.get("answers"):
        console.print(answer_report.rich_table(doc))
    console.print(f"results: {path}")
    if plots:
        for png in report.plots(doc, out, stem):
            console.print(f"plot: {png}")
