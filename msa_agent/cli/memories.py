"""``msa recall``, ``msa ls``, ``msa show``, ``msa forget``: read and delete memories."""

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
    record_dict,
    require_text,
    source_of,
)
from msa_agent.cli.options import HopsOpt, JsonOpt, KOpt, NamespaceOpt, PathOpt, WhereOpt, YesOpt

if TYPE_CHECKING:
    from msa_agent.memory import Memory
    from msa_agent.serve.client import MemoryClient
    from msa_agent.types import MemoryRecord, RecallHit


def recall(
    query: Annotated[str, typer.Argument(help="What to recall.")],
    path: PathOpt = None,
    k: KOpt = 5,
    where: WhereOpt = None,
    namespace: NamespaceOpt = None,
    explain: Annotated[bool, typer.Option(
        "--explain", help="Show per-layer routing scores and the matching chunk.")] = False,
    hops: HopsOpt = "1",
    json_: JsonOpt = False,
) -> None:
    """The memories MSA routing scores highest for QUERY, best first."""
    require_text(query, "query")
    filters = as_mapping(parse_pairs(where, "--where"))
    rounds = parse_hops(hops)
    with read_memory(path, namespace) as mem:
        hits = mem.recall(query, k=k, where=filters, explain=explain, hops=rounds)
    if json_:
        print_json([record_dict(h) for h in hits])
    else:
        out_console().print(_hits_table(query, hits, explain))


def parse_hops(value: str) -> int | str:
    """``"auto"`` or a positive integer."""
    if value == "auto":
        return value
    if not value.isdigit() or int(value) < 1:
        raise typer.BadParameter("a positive integer or 'auto'", param_hint="--hops")
    return int(value)


def _hits_table(query: str, hits: list[RecallHit], explain: bool) -> Table:
    table = Table(title=f"recall: {query}")
    table.add_column("score", justify="right")
    table.add_column("id", no_wrap=True, min_width=32)
    table.add_column("kind")
    table.add_column("source", no_wrap=True)
    table.add_column("memory")
    for h in hits:
        text = escape(preview(h.text))
        if explain and h.explanation is not None:
            text += f"\n[dim]matched: {escape(preview(h.explanation.best_chunk_text, 60))}[/]"
        table.add_row(f"{h.score:.3f}", h.id, h.kind, escape(source_of(h.metadata)), text)
    return table


def ls(
    path: PathOpt = None,
    namespace: NamespaceOpt = None,
    where: WhereOpt = None,
    limit: Annotated[int, typer.Option(min=0, help="At most this many.")] = 20,
    offset: Annotated[int, typer.Option(min=0, help="Skip this many first.")] = 0,
    newest: Annotated[bool, typer.Option("--newest", help="Newest first.")] = False,
    json_: JsonOpt = False,
) -> None:
    """List memories of a namespace, oldest first (``--newest`` for newest first)."""
    filters = as_mapping(parse_pairs(where, "--where"))
    with read_memory(path, namespace) as mem:
        rows = mem.list(where=filters, limit=limit, offset=offset, newest_first=newest)
    if json_:
        print_json([record_dict(r) for r in rows])
    else:
        out_console().print(_records_table(rows))


def _records_table(rows: list[MemoryRecord]) -> Table:
    table = Table()
    table.add_column("id", no_wrap=True, min_width=32)
    table.add_column("kind")
    table.add_column("created", no_wrap=True)
    table.add_column("source", no_wrap=True)
    table.add_column("memory")
    for r in rows:
        table.add_row(r.id, r.kind, r.created_at.strftime("%Y-%m-%d"),
                      escape(source_of(r.metadata)), escape(preview(r.text, 50)))
    return table


def show(
    id: Annotated[str, typer.Argument(help="Memory id.")],
    path: PathOpt = None,
    namespace: NamespaceOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Everything about one memory of the namespace: text, metadata, scope, sizes."""
    with read_memory(path, namespace) as mem:
        record = mem.get(id)
    if json_:
        print_json(record_dict(record))
        return
    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key, value in record_dict(record).items():
        if value not in (None, {}, ""):
            table.add_row(key, escape(str(value)))
    out_console().print(table)


def forget(
    id: Annotated[str | None, typer.Argument(help="Memory id (or use --where).")] = None,
    path: PathOpt = None,
    where: WhereOpt = None,
    namespace: NamespaceOpt = None,
    yes: YesOpt = False,
    compact: Annotated[bool, typer.Option(
        "--compact", help="Reclaim the disk of deleted memories now (see `msa compact`).")] = False,
    json_: JsonOpt = False,
) -> None:
    """Delete a memory by id (all parts of its source), or every memory matching --where."""
    filters = as_mapping(parse_pairs(where, "--where"))
    if (id is None) == (filters is None):
        raise typer.BadParameter("give either an ID or --where, not both or neither")
    with read_memory(path, namespace, write=True) as mem:
        what = _describe(mem, id, filters)
        if what is None:
            n = 0
        else:
            if not yes:
                typer.confirm(f"Forget {what}?", abort=True, err=True)
            n = mem.forget(id, where=filters)
        sizes = mem.compact() if compact else {}
    if json_:
        print_json({"deleted": n, **sizes})
    else:
        out_console().print(f"forgot {n} memor{'y' if n == 1 else 'ies'}")
        if sizes:
            out_console().print(compacted_line(sizes))


def compacted_line(sizes: dict[str, int]) -> str:
    expired = f"{sizes['expired']:,} expired memories deleted; " if sizes.get("expired") else ""
    return (f"{expired}compacted: {sizes['bytes_before']:,} -> {sizes['bytes_after']:,} "
            "bytes on disk")


def _describe(mem: Memory | MemoryClient, id: str | None, filters: dict[str, Any] | None
              ) -> str | None:
    """What ``forget`` would delete, for the prompt; None when nothing matches."""
    if id is not None:
        m = mem.get(id)
        parts = len(mem.list(where={"source_id": m.source_id}, limit=None)) if m.source_id else 1
        whole = f" and the other {parts - 1} part(s) of its text" if parts > 1 else ""
        return f"memory {id} ({preview(m.text, 50)!r}){whole}"
    n = len(mem.list(where=filters, limit=None))
    return f"{n} memories matching {filters}" if n else None
