"""``msa ingest``: files, folders, chat logs and stdin into memories, in batches."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated, Any

import typer

from msa_agent.cli.common import (
    err_console,
    open_memory,
    out_console,
    parse_pairs,
    print_json,
    progress_bar,
)
from msa_agent.cli.options import JsonOpt, MetaOpt, ModelOpt, NamespaceOpt, PathOpt
from msa_agent.cli.sources import Skipped, collect, read_item
from msa_agent.errors import InvalidInputError

if TYPE_CHECKING:
    from msa_agent.memory import Memory

Batch = list[tuple[str, dict[str, Any]]]  # (source, remember_many item)

BATCH_FILES = 32
BATCH_CHARS = 200_000


def ingest(
    paths: Annotated[list[str], typer.Argument(
        help="Files, folders (recursive) or - for stdin. .jsonl files are chat sessions.")],
    path: PathOpt = None,
    model: ModelOpt = None,
    kind: Annotated[str | None, typer.Option(
        help="Memory kind (default: document; session for .jsonl chat logs).")] = None,
    namespace: NamespaceOpt = None,
    meta: MetaOpt = None,
    include: Annotated[list[str] | None, typer.Option(
        help="Glob of files to take from folders (default: *.md *.markdown *.txt *.rst "
             "*.jsonl). Repeatable.")] = None,
    exclude: Annotated[list[str] | None, typer.Option(
        help="Glob of files to leave out of folders. Repeatable.")] = None,
    json_: JsonOpt = False,
) -> None:
    """Remember files, folders, .jsonl chat sessions or stdin; unreadable files are skipped."""
    metadata = parse_pairs(meta, "--meta")
    sources, skipped = collect(paths, include, exclude)
    ids: dict[str, str] = {}
    with open_memory(path, model=model, namespace=namespace, create=True) as mem, \
            progress_bar() as bar:
        task = bar.add_task("ingesting", total=len(sources))
        for batch, bad in _batches(sources, kind, metadata):
            skipped += bad
            ids.update(_remember(mem, batch, skipped))
            bar.advance(task, len(batch) + len(bad))
    _report(ids, skipped, json_)
    if not ids and skipped:
        raise typer.Exit(1)


def _batches(sources: list[str], kind: str | None,
             metadata: dict[str, Any]) -> Iterator[tuple[Batch, list[Skipped]]]:
    """Yield ``([(source, item)], [Skipped])`` groups of at most BATCH_FILES / BATCH_CHARS."""
    batch: Batch = []
    bad: list[Skipped] = []
    chars = 0
    for src in sources:
        item = read_item(src, kind, metadata)
        if isinstance(item, Skipped):
            bad.append(item)
        else:
            batch.append((src, item))
            chars += len(item["text"])
        if len(batch) >= BATCH_FILES or chars >= BATCH_CHARS:
            yield batch, bad
            batch, bad, chars = [], [], 0
    if batch or bad:
        yield batch, bad


def _remember(mem: Memory, batch: Batch, skipped: list[Skipped]) -> dict[str, str]:
    """One ``remember_many`` call; if the batch is refused, retry file by file."""
    if not batch:
        return {}
    try:
        return dict(zip([s for s, _ in batch], mem.remember_many([i for _, i in batch])))
    except InvalidInputError:
        out = {}
        for src, item in batch:
            try:
                out[src] = mem.remember_many([item])[0]
            except InvalidInputError as e:
                skipped.append(Skipped(src, str(e)))
        return out


def _report(ids: dict[str, str], skipped: list[Skipped], json_: bool) -> None:
    if json_:
        print_json({"ingested": [{"source": s, "id": i} for s, i in ids.items()],
                    "skipped": [{"source": s.source, "reason": s.reason} for s in skipped]})
        return
    err = err_console()
    for s in skipped:
        err.print(f"[yellow]skipped[/] {s.source}: {s.reason}", highlight=False, soft_wrap=True)
    out_console().print(f"ingested {len(ids)} source(s), skipped {len(skipped)}")
