"""``msa ask``: answer a question from memory (route, read, generate), showing the evidence."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from msa_agent.cli.common import (
    as_mapping,
    out_console,
    parse_pairs,
    preview,
    print_json,
    read_memory,
    require_text,
    source_of,
)
from msa_agent.cli.memories import parse_hops
from msa_agent.cli.options import HopsOpt, JsonOpt, NamespaceOpt, PathOpt, WhereOpt
from msa_agent.config import READ_MODES

if TYPE_CHECKING:
    from msa_agent.memory import Memory
    from msa_agent.serve.client import MemoryClient
    from msa_agent.types import Answer


def ask(
    question: Annotated[str, typer.Argument(help="The question.")],
    path: PathOpt = None,
    k: Annotated[int | None, typer.Option(
        "-k", "--k", min=1, help="How many memories to read (default: the memory's answer_k, "
        "2).")] = None,
    where: WhereOpt = None,
    namespace: NamespaceOpt = None,
    hops: HopsOpt = "1",
    read: Annotated[str, typer.Option(
        help="How memories are read: auto, text, chunks, full, kv_chunks or pooled.")] = "auto",
    max_tokens: Annotated[int, typer.Option(
        "--max-tokens", "--max-new-tokens", min=1,
        help="Tokens to generate at most; the output says when the answer stopped there.")] = 64,
    stream: Annotated[bool, typer.Option(help="Print tokens as they come.")] = True,
    json_: JsonOpt = False,
) -> None:
    """Answer QUESTION from memory and show which memories each round read."""
    require_text(question, "question")
    if read not in READ_MODES:  # before the model loads (seconds)
        raise typer.BadParameter(f"must be one of {', '.join(READ_MODES)}, got {read!r}",
                                 param_hint="--read")
    filters = as_mapping(parse_pairs(where, "--where"))
    kwargs = {"k": k, "where": filters, "hops": parse_hops(hops), "read": read,
              "max_new_tokens": max_tokens}
    live = stream and not json_
    with read_memory(path, namespace) as mem:
        answer = _answer(mem, question, kwargs, live)
    _show(answer, max_tokens, json_=json_, text=not live)


def _answer(mem: Memory | MemoryClient, question: str, kwargs: dict[str, Any],
            live: bool) -> Answer:
    """The answer, its tokens printed as they come when ``live`` (from a local memory's stream
    or a server's server-sent events)."""
    from msa_agent.types import Answer

    if not live:
        return mem.answer(question, **kwargs)  # type: ignore[return-value]
    console = out_console()
    remote = hasattr(mem, "answer_stream")  # a MemoryClient (httpx may not be installed)
    pieces = (mem.answer_stream(question, **kwargs) if remote  # type: ignore[union-attr]
              else mem.answer(question, stream=True, **kwargs))
    answer = None
    for piece in pieces:
        if isinstance(piece, Answer):
            answer = piece
        else:
            console.print(piece, end="", markup=False, highlight=False)
    console.print()
    return answer if answer is not None else pieces.answer  # type: ignore[union-attr]


def _show(answer: Answer, max_tokens: int, *, json_: bool, text: bool) -> None:
    """JSON, or the answer text (unless streamed), a note if generation hit the limit, the
    evidence table and the timing line."""
    stopped = answer.generated_tokens >= max_tokens
    if json_:
        print_json({**answer.model_dump(mode="json"), "stopped_at_limit": stopped})
        return
    console = out_console()
    if text:
        console.print(answer.text, markup=False, highlight=False)
    if stopped:
        console.print(f"[yellow](stopped at the {max_tokens}-token limit; --max-tokens N "
                      "for a longer answer)[/]")
    console.print(_evidence(answer))
    console.print(timing_line(answer), highlight=False)


def timing_line(answer: Answer) -> str:
    """``route 12 ms · read 30 ms · generate 410 ms (7.3 tok/s) · total 452 ms``."""
    ms = answer.timings_ms
    parts = []
    for name, v in ms.items():
        part = f"{name.removesuffix('_ms')} {v:,.0f} ms"
        if name == "generate_ms" and v > 0 and answer.generated_tokens:
            part += f" ({1000 * answer.generated_tokens / v:.1f} tok/s)"
        parts.append(part)
    return " · ".join([*parts, f"total {sum(ms.values()):,.0f} ms"])


def _evidence(answer: Answer) -> Table:
    table = Table(title=f"read={answer.read}  prompt {answer.prompt_tokens} tok, memory "
                        f"{answer.memory_tokens}, generated {answer.generated_tokens}")
    table.add_column("round", justify="right")
    table.add_column("score", justify="right")
    table.add_column("id", no_wrap=True, min_width=32)
    table.add_column("source", no_wrap=True)
    table.add_column("memory")
    for r in answer.rounds:
        for h in r.memories:
            table.add_row(str(r.round), f"{h.score:.3f}", h.id, escape(source_of(h.metadata)),
                          escape(preview(h.text)))
    return table
