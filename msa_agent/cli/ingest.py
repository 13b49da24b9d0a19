"""``msa ingest``: files, folders, chat logs, PDFs and stdin into memories, in batches."""

from __future__ import annotations

import codecs
import hashlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.progress import Progress, TaskID, TextColumn

from msa_agent.cli.common import (
    CliError,
    err_console,
    open_memory,
    out_console,
    parse_pairs,
    print_json,
    progress_bar,
)
from msa_agent.cli.options import JsonOpt, MetaOpt, ModelOpt, NamespaceOpt, PathOpt
from msa_agent.cli.sources import DEFAULT_INCLUDE, STDIN, Skipped, collect, read_item
from msa_agent.errors import InvalidInputError

if TYPE_CHECKING:
    from msa_agent.memory import Memory

Batch = list[tuple[str, dict[str, Any]]]  # (source, remember_many item)

BATCH_FILES = 32
BATCH_CHARS = 200_000
BATCH_SECONDS = 0.5  # a batch grows while it encodes faster than this, so the bar moves often
MAX_KEY = 255  # Memory's limit on a key


def ingest(
    paths: Annotated[list[str], typer.Argument(
        help="Files, folders (recursive) or - for stdin. .jsonl files are chat sessions, "
             ".pdf files give their text.")],
    path: PathOpt = None,
    model: ModelOpt = None,
    kind: Annotated[str | None, typer.Option(
        help="Memory kind (default: document; session for .jsonl chat logs).")] = None,
    namespace: NamespaceOpt = None,
    meta: MetaOpt = None,
    include: Annotated[list[str] | None, typer.Option(
        help="Glob of files to take from folders (default: *.md *.markdown *.txt *.rst "
             "*.jsonl *.pdf). Repeatable.")] = None,
    exclude: Annotated[list[str] | None, typer.Option(
        help="Glob of files to leave out of folders. Repeatable.")] = None,
    encoding: Annotated[str, typer.Option(
        help="Text encoding of the files, e.g. latin-1 (a file that does not decode is "
             "skipped and named).")] = "utf-8",
    json_: JsonOpt = False,
) -> None:
    """Remember files, folders, .jsonl chat sessions, PDFs or stdin; unreadable files are
    skipped. Paths are checked before the model loads: a missing one changes nothing.
    Run again, it adds only what is new: a file already ingested (keyed by its absolute
    path) is left alone if unchanged and updated in place if changed, and a text the
    namespace already holds is not stored twice."""
    metadata = parse_pairs(meta, "--meta")
    sources = _sources(paths, include, exclude, encoding)
    with open_memory(path, model=model, namespace=namespace, create=True) as mem:
        run = Run(mem, kind, metadata, encoding)
        run.ingest_all(sources)
        if not run.ids and run.skipped:  # inside the block: a space made for this is removed
            _report(run, json_)
            raise typer.Exit(1)
    _report(run, json_)


def _sources(paths: list[str], include: list[str] | None, exclude: list[str] | None,
             encoding: str) -> list[str]:
    """The files to read; a missing path, an unknown encoding or nothing to read is refused."""
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise InvalidInputError(f"--encoding: unknown encoding {encoding!r}") from None
    sources, missing = collect(paths, include, exclude)
    if missing:
        raise CliError("no such file or folder: " + ", ".join(m.source for m in missing))
    if not sources:
        globs = " ".join(include or DEFAULT_INCLUDE)
        raise CliError(f"nothing to ingest in {', '.join(paths)} (no files matching {globs})")
    return sources


@dataclass
class Run:
    """One ingest: reads files, stores them in paced batches, shows per-file progress."""

    mem: Memory
    kind: str | None
    metadata: dict[str, Any]
    encoding: str
    ids: dict[str, str] = field(default_factory=dict)
    status: dict[str, str] = field(default_factory=dict)  # source: added/updated/unchanged
    skipped: list[Skipped] = field(default_factory=list)
    size: int = 1  # files in the next batch
    tokens: int = 0

    def ingest_all(self, sources: list[str]) -> None:
        start = self.mem.stats().tokens
        rate = TextColumn("{task.fields[rate]}")
        with progress_bar(rate) as bar:
            task = bar.add_task("ingesting", total=len(sources), rate="")
            t0 = time.perf_counter()
            for batch in self._batches(sources, bar, task):
                self._store(batch)
                self.tokens = self.mem.stats().tokens - start
                per_s = self.tokens / max(time.perf_counter() - t0, 1e-9)
                bar.update(task, advance=len(batch), rate=f"{per_s:,.0f} tok/s")
            bar.update(task, description="ingesting")

    def _batches(self, sources: list[str], bar: Progress, task: TaskID) -> Iterator[Batch]:
        """Read files one by one; yield groups of ``size`` files (or BATCH_CHARS), paced."""
        batch: Batch = []
        chars = 0
        for src in sources:
            bar.update(task, description=f"ingesting {escape(Path(src).name[:30])}")
            item = read_item(src, self.kind, self.metadata, self.encoding)
            if isinstance(item, Skipped):
                self.skipped.append(item)
                bar.advance(task)
                continue
            batch.append((src, item if src == STDIN else {**item, "key": file_key(src)}))
            chars += len(item["text"])
            if len(batch) >= self.size or chars >= BATCH_CHARS:
                yield batch
                batch, chars = [], 0
        if batch:
            yield batch

    def _store(self, batch: Batch) -> None:
        """One ``remember_many`` call (retried file by file if refused); adapts the size."""
        started, now = time.perf_counter(), datetime.now(timezone.utc)
        stored = _remember(self.mem, batch, self.skipped)
        self.ids.update(stored)
        self.status.update({s: _status(self.mem, i, now) for s, i in stored.items()})
        took = time.perf_counter() - started
        if took < BATCH_SECONDS / 2:
            self.size = min(2 * self.size, BATCH_FILES)
        elif took > BATCH_SECONDS:
            self.size = max(1, self.size // 2)


def file_key(src: str) -> str:
    """The upsert key of a file: its absolute path (hashed if longer than a key may be)."""
    path = str(Path(src).resolve())
    key = f"file:{path}"
    if len(key) > MAX_KEY:
        key = "file-sha256:" + hashlib.sha256(path.encode()).hexdigest()
    return key


def _status(mem: Memory, id: str, since: datetime) -> str:
    """Whether this call added, updated or left alone the memory ``id`` (its history)."""
    last = mem.history(id)[-1:]
    if not last or last[0].at < since:
        return "unchanged"
    return "added" if last[0].event == "add" else "updated"


def _remember(mem: Memory, batch: Batch, skipped: list[Skipped]) -> dict[str, str]:
    """One ``remember_many`` call (deduplicated, upserts by file key); if the batch is
    refused, retry file by file."""
    try:
        return dict(zip([s for s, _ in batch],
                        mem.remember_many([i for _, i in batch], dedupe=True)))
    except InvalidInputError:
        out = {}
        for src, item in batch:
            try:
                out[src] = mem.remember_many([item], dedupe=True)[0]
            except InvalidInputError as e:
                skipped.append(Skipped(src, str(e)))
        return out


def _report(run: Run, json_: bool) -> None:
    if json_:
        print_json({"ingested": [{"source": s, "id": i, "status": run.status.get(s, "added")}
                                 for s, i in run.ids.items()],
                    "skipped": [{"source": s.source, "reason": s.reason} for s in run.skipped],
                    "tokens": run.tokens})
        return
    err = err_console()
    for s in run.skipped:
        err.print(f"[yellow]skipped[/] {escape(s.source)}: {escape(s.reason)}", highlight=False,
                  soft_wrap=True)
    counts = {k: sum(v == k for v in run.status.values())
              for k in ("added", "updated", "unchanged")}
    out_console().print(f"ingested {len(run.ids)} source(s), skipped {len(run.skipped)} "
                        f"({counts['added']} new, {counts['updated']} updated, "
                        f"{counts['unchanged']} unchanged; {run.tokens:,} tokens)")
