"""``msa init``, ``msa stats``: create a space and describe it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from msa_agent.cli.common import (
    open_memory,
    out_console,
    print_json,
    read_memory,
    record_dict,
    space_path,
)
from msa_agent.cli.options import JsonOpt, ModelOpt, PathOpt

if TYPE_CHECKING:
    from msa_agent.types import SpaceStats


def init(
    folder: Annotated[Path | None, typer.Argument(
        help="Space folder to create (default: --path / MSA_PATH / the per-user folder).",
        show_default=False)] = None,
    path: PathOpt = None,
    model: ModelOpt = None,
    dtype: Annotated[str | None, typer.Option(
        help="Compute dtype of a new space: float32 (default), bfloat16, float16, or auto "
             "(bfloat16 where the device computes it natively). An existing space keeps "
             "its own.", show_default=False)] = None,
    json_: JsonOpt = False,
) -> None:
    """Create a memory space bound to a model (opening an existing one just checks it)."""
    target = space_path(folder or path)
    with open_memory(target, model=model, create=True,
                     **({"dtype": dtype} if dtype else {})) as mem:
        stats = mem.stats()
    if json_:
        print_json(record_dict(stats))
        return
    out_console().print(f"memory space ready at {stats.path}")
    out_console().print(stats_table(stats))


def stats(path: PathOpt = None, json_: JsonOpt = False) -> None:
    """Counts and sizes of the space: memories, namespaces, tokens, chunks, bytes."""
    with read_memory(path) as mem:
        s = mem.stats()
    if json_:
        print_json(record_dict(s))
    else:
        out_console().print(stats_table(s))


def compact(path: PathOpt = None, json_: JsonOpt = False) -> None:
    """Reclaim the disk of deleted memories now (forget also does it past a threshold)."""
    from msa_agent.cli.memories import compacted_line

    with read_memory(path, write=True) as mem:
        sizes = mem.compact()
    if json_:
        print_json(sizes)
    else:
        out_console().print(compacted_line(sizes))


def stats_table(s: SpaceStats) -> Table:
    """The stats as a two-column table."""
    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    rows = [("path", s.path), ("model", f"{s.model} ({s.dtype})"),
            ("routing", f"{s.routing} ({s.router_id})"),
            ("memories", str(s.memories)), ("tokens", str(s.tokens)), ("chunks", str(s.chunks)),
            ("bytes on disk", f"{s.bytes_on_disk:,}")]
    rows += [(f"namespace {ns}", str(n)) for ns, n in sorted(s.namespaces.items())]
    for key, value in rows:
        table.add_row(key, value)
    return table
