"""Synthetic fill of a memory space for the recall benchmarks (issue 15): many tokens of
model-shaped memory, written in minutes instead of hours.

Memories are written through the store's own API, ``Space.add`` (the call ``Engine`` makes
after encoding), with **random arrays** in place of the backbone's: every array the space
declares (routing keys, pooled K/V; full K/V too if the space keeps them), in its dtype and
row shape, with the right rows per memory (``n_chunks = ceil(n_tokens / chunk_size)`` for
chunk arrays, ``n_tokens`` for token arrays). The texts are the caller's (the lexical channel
indexes them as usual); their ``n_tokens`` is the caller's estimate, not a tokenisation.
Nothing is indexed in a runtime here: opening the space with ``Memory.open`` afterwards loads
its routing index from the store, as a user's open would.

- **Routing keys** (``route_k``) are always standard-normal random rows, drawn on ``device``
  (a seeded torch generator; on CUDA this costs nothing next to the writes).
- **The other arrays** (``pooled="random"``) are random too, or (``pooled="zeros"``) all
  zero: recall never reads them, and the store's Zarr arrays keep no chunk that equals the
  fill value (0), so zeros cost neither disk nor write time. Random fp16 rows do not
  compress (Blosc keeps them raw): at SmolLM2's layout each array holds 5,760 bytes a chunk.
- The space is opened with ``durable=False`` for the fill (no fsync per batch); a batch is
  still one atomic ``Space.add``.
- With ``prefetch``, one thread prepares the next batch (texts, arrays, records) while the
  current one is stored (off by default: on a 2-core machine it saved nothing, the store
  being ~85% of the time and the thread competing with it).

This module imports nothing of ``msa_agent.train``; ``msa_agent.store`` is imported when
used (the benchmark maps it first on a checkout that is not installed).
"""

from __future__ import annotations

import math
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from msa_agent.store import ArraySpec, NewMemory, Space

POOLED = ("random", "zeros")
ROUTING = "route_k"  # always random: what recall ranks


@dataclass
class Docs:
    """A batch of documents to store: texts, each one's estimated tokens, and the caller's
    own record of the batch (handed back with the ids once stored)."""

    texts: list[str]
    n_tokens: list[int]
    rows: Any = None


@dataclass
class FillOptions:
    batch_docs: int = 4096  # memories per Space.add
    namespace: str = "default"
    pooled: str = "random"  # the arrays other than route_k: "random" or "zeros"
    device: str = "cpu"  # where random rows are drawn
    seed: int = 0
    prefetch: bool = False  # measured no faster on 2 cores (it competes with the store)


@dataclass
class Prepared:
    """One batch ready for ``Space.add``; ``seconds``: time spent preparing it, by stage."""

    docs: Docs
    memories: list[NewMemory]
    arrays: list[dict[str, np.ndarray]]
    chunks: int
    seconds: dict[str, float] = field(default_factory=dict)


class RandomRows:
    """Seeded standard-normal rows drawn on a torch device, returned as host numpy arrays."""

    def __init__(self, device: str, seed: int) -> None:
        self.device = torch.device(device)
        self.gen = torch.Generator(device=self.device).manual_seed(seed)

    def __call__(self, n: int, row_shape: Sequence[int], dtype: str) -> np.ndarray:
        t = torch.randn((n, *row_shape), generator=self.gen, device=self.device,
                        dtype=getattr(torch, dtype))
        return t.cpu().numpy()


def estimate_tokens(words: int, per_word: float) -> int:
    """A document's tokens from its words and the calibrated tokens per word."""
    return max(1, round(words * per_word))


def texts_of(gen: Any, per_word: float) -> Callable[[int], Docs]:
    """``n`` new documents of a text generator (``gen.draw(n)``: word indices ``[n, words]``,
    ``gen.text(row)``: the text), each with its estimated tokens; the rows are kept."""
    def make(n: int) -> Docs:
        rows = gen.draw(n)
        tokens = estimate_tokens(rows.shape[1], per_word)
        return Docs([gen.text(r) for r in rows], [tokens] * n, rows)

    return make


def n_chunks(n_tokens: int, chunk_size: int) -> int:
    return math.ceil(n_tokens / chunk_size)


def rows_of(spec: ArraySpec, memory: NewMemory) -> int:
    return memory.n_chunks if spec.unit == "chunk" else memory.n_tokens


def new_memories(docs: Docs, chunk_size: int, namespace: str) -> list[NewMemory]:
    """One single-part memory per text, as ``Engine`` records it (own id as ``source_id``)."""
    from msa_agent.store import NewMemory

    out = []
    for text, tokens in zip(docs.texts, docs.n_tokens, strict=True):
        mid = uuid.uuid4().hex
        out.append(NewMemory(text=text, namespace=namespace, source_id=mid, id=mid,
                             n_tokens=tokens, n_chunks=n_chunks(tokens, chunk_size)))
    return out


def block(spec: ArraySpec, n: int, draw: RandomRows, pooled: str) -> np.ndarray:
    """``n`` rows of ``spec``: random (routing keys always), or zeros."""
    if spec.name == ROUTING or pooled == "random":
        return draw(n, spec.row_shape, spec.dtype)
    return np.zeros((n, *spec.row_shape), dtype=spec.dtype)


def batch_arrays(specs: dict[str, ArraySpec], memories: Sequence[NewMemory],
                 draw: RandomRows, pooled: str) -> list[dict[str, np.ndarray]]:
    """Each memory's rows of every declared array: one block per array, split into views."""
    out: list[dict[str, np.ndarray]] = [{} for _ in memories]
    for name, spec in specs.items():
        counts = [rows_of(spec, m) for m in memories]
        rows = block(spec, sum(counts), draw, pooled)
        for d, part in zip(out, np.split(rows, np.cumsum(counts)[:-1])):
            d[name] = part
    return out


def prepare(make: Callable[[int], Docs], n: int, layout: tuple[dict[str, ArraySpec], int],
            draw: RandomRows, opts: FillOptions) -> Prepared:
    specs, chunk_size = layout
    t0 = time.perf_counter()
    docs = make(n)
    t1 = time.perf_counter()
    memories = new_memories(docs, chunk_size, opts.namespace)
    t2 = time.perf_counter()
    arrays = batch_arrays(specs, memories, draw, opts.pooled)
    t3 = time.perf_counter()
    return Prepared(docs, memories, arrays, sum(m.n_chunks for m in memories),
                    {"text": t1 - t0, "records": t2 - t1, "arrays": t3 - t2})


def batch_sizes(tokens: int, target: int, per_doc: int, batch_docs: int) -> Iterator[int]:
    """Documents per batch until about ``target`` tokens (``per_doc`` estimated a document)."""
    while tokens < target:
        n = min(batch_docs, max(1, math.ceil((target - tokens) / per_doc)))
        tokens += n * per_doc
        yield n


def batches(make: Callable[[int], Docs], sizes: Iterator[int],
            layout: tuple[dict[str, ArraySpec], int], opts: FillOptions) -> Iterator[Prepared]:
    """Prepared batches in order; with ``opts.prefetch`` one ahead, from a worker thread."""
    draw = RandomRows(opts.device, opts.seed)
    if not opts.prefetch:
        for n in sizes:
            yield prepare(make, n, layout, draw, opts)
        return
    q: queue.Queue[Prepared | BaseException | None] = queue.Queue(maxsize=1)
    stop = threading.Event()

    def put(item: Prepared | BaseException | None) -> None:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def work() -> None:
        try:
            for n in sizes:
                if stop.is_set():
                    return
                put(prepare(make, n, layout, draw, opts))
            put(None)
        except BaseException as e:  # handed to the consumer, re-raised there
            put(e)

    worker = threading.Thread(target=work, name="synthetic-fill", daemon=True)
    worker.start()
    try:
        while (item := q.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        worker.join()


def space_layout(space: Space) -> tuple[dict[str, ArraySpec], int]:
    """The arrays a space declares and its chunk size (from its fingerprint)."""
    return dict(space.arrays), int(space.fingerprint["chunk_size"])


def disk_facts(space: Space) -> dict[str, Any]:
    st = space.stats()
    return {"bytes_on_disk": st["bytes_on_disk"], "sqlite_bytes": st["sqlite_bytes"],
            "array_bytes": {n: a["bytes_on_disk"] for n, a in st["arrays"].items()},
            "memories": st["memories"], "chunks": st["chunks"], "tokens": st["tokens"]}


def fill(path: Path, tokens: int, target: int, per_doc: int, make: Callable[[int], Docs],
         stored: Callable[[Sequence[str], Docs], None], opts: FillOptions) -> dict[str, Any]:
    """Add memories to the (closed) space at ``path`` from ``tokens`` up to about ``target``
    estimated tokens; ``stored(ids, docs)`` after each batch. The fill's rate, its stages
    (``store`` = ``Space.add``; with prefetch, ``prepare_*`` ran beside it and ``other`` is
    the loop's wait for the next batch and its bookkeeping) and the space's bytes on disk
    afterwards."""
    from msa_agent.store import Space

    space = Space.open(path, durable=False)
    added = {"tokens": 0, "docs": 0, "chunks": 0, "array_bytes": 0}
    prep: dict[str, float] = {}
    store_s = 0.0
    t0 = time.perf_counter()
    try:
        layout = space_layout(space)
        sizes = batch_sizes(tokens, target, per_doc, opts.batch_docs)
        for b in batches(make, sizes, layout, opts):
            t = time.perf_counter()
            ids = space.add(b.memories, b.arrays)
            store_s += time.perf_counter() - t
            stored(ids, b.docs)
            for k, v in b.seconds.items():
                prep[k] = prep.get(k, 0.0) + v
            added["tokens"] += sum(b.docs.n_tokens)
            added["docs"] += len(ids)
            added["chunks"] += b.chunks
            added["array_bytes"] += sum(a.nbytes for d in b.arrays for a in d.values())
        seconds = time.perf_counter() - t0
        disk = disk_facts(space)
    finally:
        space.close()
    return summary(added, seconds, store_s, prep, disk, opts)


def summary(added: dict[str, int], seconds: float, store_s: float, prep: dict[str, float],
            disk: dict[str, Any], opts: FillOptions) -> dict[str, Any]:
    stages = {**prep, "store": store_s}
    if opts.prefetch:  # preparing overlapped the stores; "other": waiting for it, the rest
        stages = {**{f"prepare_{k}": v for k, v in prep.items()}, "store": store_s,
                  "other": max(0.0, seconds - store_s)}
    return {"how": "synthetic", "tokens_added": added["tokens"], "docs_added": added["docs"],
            "chunks_added": added["chunks"], "array_bytes_written": added["array_bytes"],
            "seconds": seconds, "tokens_per_s": added["tokens"] / max(seconds, 1e-9),
            "array_mb_per_s": added["array_bytes"] / 1e6 / max(seconds, 1e-9),
            "stage_seconds": stages, "pooled": opts.pooled, "prefetch": opts.prefetch,
            "batch_docs": opts.batch_docs, "random_on": opts.device, "durable": False,
            "disk": disk}


def gb(n: int) -> str:
    return f"{n / 1e9:.2f}"


def table(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown: each benchmark row's synthetic fill (``row["ingest"]``, a :func:`fill`
    record with ``open_seconds``), its bytes on disk and the reopen."""
    head = ("| memory | memories | chunks | tokens added | seconds | tokens/s | array MB/s "
            "| store s | on disk GB | of which arrays GB | sqlite GB | open s | keys resident |")
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for r in rows:
        if r.get("fill") != "synthetic":
            continue
        i, d = r["ingest"], r["ingest"]["disk"]
        lines.append(
            f"| {r['tokens'] / 1e6:.3g}M | {d['memories']:,} | {d['chunks']:,} "
            f"| {i['tokens_added']:,} | {i['seconds']:.1f} | {i['tokens_per_s']:,.0f} "
            f"| {i['array_mb_per_s']:,.0f} | {i['stage_seconds']['store']:.1f} "
            f"| {gb(d['bytes_on_disk'])} | {gb(sum(d['array_bytes'].values()))} "
            f"| {gb(d['sqlite_bytes'])} | {i['open_seconds']:.1f} "
            f"| {gb(r['resident_key_bytes'])} GB {r['resident_key_dtype']} |")
    return "\n".join(lines)
