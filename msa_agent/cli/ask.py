"""``msa ask``: answer a question from memory (route, read, generate), showing the evidence."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from msa_agent.cli.common import (
    as_mapping,
    open_memory,
    out_console,
    parse_pairs,
    preview,
    print_json,
)
from msa_agent.cli.memories import parse_hops
from msa_agent.cli.options import HopsOpt, JsonOpt, KOpt, NamespaceOpt, PathOpt, WhereOpt

if TYPE_CHECKING:
    from msa_agent.types import Answer


def ask(
    question: Annotated[str, typer.Argument(help="The question.")],
    path: PathOpt = None,
    k: KOpt = 5,
    where: WhereOpt = None,
    namespace: NamespaceOpt = None,
    hops: HopsOpt = "1",
    read: Annotated[str, typer.Option(
        help="How memories are read: auto, text, chunks, full or pooled.")] = "auto",
    max_new_tokens: Annotated[int, typer.Option(min=1, help="Tokens to generate at most.")] = 64,
    stream: Annotated[bool, typer.Option(help="Print tokens as they come.")] = True,
    json_: JsonOpt = False,
) -> None:
    """Answer QUESTION from memory and show which memories each round read."""
    filters = as_mapping(parse_pairs(where, "--where"))
    kwargs = {"k": k, "where": filters, "hops": parse_hops(hops), "read": read,
              "max_new_tokens": max_new_tokens}
    console = out_console()
    with open_memory(path, namespace=namespace) as mem:
        if json_ or not stream:
            answer = mem.answer(question, **kwargs)  # type: ignore[arg-type]
        else:
            pieces = mem.answer(question, stream=True, **kwargs)  # type: ignore[arg-type]
            for piece in pieces:
                console.print(piece, end="", markup=False, highlight=False)
            console.print()
            answer = pieces.answer  # type: ignore[union-attr]
    if json_:
        print_json(answer.model_dump(mode="json"))
        return
    if not stream:
        console.print(answer.text, markup=False, highlight=False)
    console.print(_evidence(answer))


def _evidence(answer: Answer) -> Table:
    ms = {name: f"{v:.0f}" for name, v in answer.timings_ms.items()}
    table = Table(title=f"read={answer.read}  prompt {answer.prompt_tokens} tok, memory "
                        f"{answer.memory_tokens}, generated {answer.generated_tokens}  "
                        f"ms {ms}")
    table.add_column("round", justify="right")
    table.add_column("score", justify="right")
    table.add_column("id", no_wrap=True, min_width=32)
    table.add_column("memory")
    for r in answer.rounds:
        for h in r.memories:
            table.add_row(str(r.round), f"{h.score:.3f}", h.id, preview(h.text))
    return table
