"""Answering from memory: route once (one backbone forward on the question), read, generate."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

import torch

from msa_agent.runtime.answer import (
    DATED,
    KV_READS,
    ORDER,
    SYSTEM,
    TEXT_READS,
    WINDOW_READS,
    Reader,
    Selection,
    arrange,
    arranged_order,
    pick_read,
)
from msa_agent.runtime.engine import Engine
from msa_agent.runtime.extract import decoding
from msa_agent.runtime.interleave import Hops, max_rounds
from msa_agent.runtime.residency import Candidates
from msa_agent.runtime.results import Recalled, Scope
from msa_agent.runtime.stream import AnswerStream, GenerativeSource, ReadOnce
from msa_agent.store import StoredMemory


def answer_stream(engine: Engine, question: str, k: int, scope: Scope, hops: Hops,
                  read: str, max_new: int, channels: str | None = None) -> AnswerStream:
    """A token stream answering ``question`` from the memories of ``scope``.

    ``read`` and ``channels`` (the recall mode, ``routing=``) as :meth:`Memory.answer`.
    With an MSA checkpoint, pooled reading with ``hops`` other than 1 runs the paper's
    generative interleave. Otherwise the question's router queries are computed once and
    serve both the reported hits and, for pooled reading, each layer's own selection.
    Once a K/V read is done, the ``prefetch`` candidates ranked next start loading into the
    tiers in the background (``Engine.prefetch``): the next round's pool of a generative
    interleave, the question's pool after its hits otherwise.
    """
    mode = pick_read(read, engine.cfg.keep_full_kv, engine.lm.msa is not None,
                     engine.kv_reads_like_text, engine.kv_first_sooner(k))
    if mode == "pooled" and engine.lm.msa is not None and hops != 1:
        def select(text: str) -> Selection:
            q = engine.query(text)  # once: the selection and the prefetch's ranking share it
            chosen = engine.route_per_layer(text, k, scope, q=q)
            return Selection(chosen, _next_per_layer(engine, text, k, scope, q, chosen))

        source = GenerativeSource(engine, question, select, max_rounds(hops), max_new)
        return AnswerStream(engine, source, {})
    started = time.perf_counter()
    q = engine.query(question)
    # routing evidence (best chunks) only where a chunk window is read: ~2 ms of an H200's
    # first token otherwise spent on a second scoring pass whose result nothing reads
    hits = engine.recall(question, k, scope, hops, q=q, mode=channels,
                         evidence=mode in WINDOW_READS)
    per_layer = engine.route_per_layer(question, k, scope, q=q) \
        if mode == "pooled" and hits else None
    routed = time.perf_counter()
    read = hits if engine.cfg.read_superseded else newest_versions(hits)
    notes, system = read_notes(engine, question, read, mode) if mode in TEXT_READS else ([], SYSTEM)
    ahead = (_next_per_layer(engine, question, k, scope, q, per_layer) if per_layer
             else _next_routed(engine, question, k, scope, q, channels, hits)
             if mode in KV_READS else None)
    # kv_chunks: each memory's chunk window, as text (what the answer copies from) and rows
    windows = [engine.kv_window(h, question) for h in read] if mode == "kv_chunks" else None
    with engine.lock:
        reader = Reader(engine, question, [h.memory for h in read], mode, per_layer, notes,
                        system, ahead, [r for _, r in windows] if windows else None)
    timings = {"route_ms": 1000 * (routed - started),
               "read_ms": 1000 * (time.perf_counter() - routed)}
    shown = (notes if mode in TEXT_READS else [t for t, _ in windows] if windows
             else [h.memory.text for h in read])
    how = decoding(engine.tokenizer, engine.cfg.answer_format, shown, question,
                   followed(read, mode))
    return AnswerStream(engine, ReadOnce(engine, reader, hits, max_new, per_layer, how), timings)


def followed(read: Sequence[Recalled], mode: str) -> list[int]:
    """Which of the memories shown (in the order the reader sees them) a later round of
    interleave found: a second hop, about what the first hop named rather than the question
    (:class:`~msa_agent.runtime.extract.CopySpans`)."""
    order = (arranged_order([h.memory.created_at for h in read]) if mode in TEXT_READS
             else range(len(read)))
    return [i for i, rank in enumerate(order) if read[rank].round > 1]


def newest_versions(hits: Sequence[Recalled]) -> list[Recalled]:
    """``hits`` without those a newer one of them restates (``Recalled.superseded_by``): a
    small reader shown both versions of a changed fact often answers with the older one."""
    ids = {h.memory.id for h in hits}
    return [h for h in hits if h.superseded_by not in ids]


def read_notes(engine: Engine, question: str, hits: Sequence[Recalled], mode: str,
               with_dates: bool = DATED, order: str = ORDER) -> tuple[list[str], str]:
    """The memory notes of a ``text`` or ``chunks`` read and the system line for them:
    whole texts, or (``chunks``) each memory's matched chunk and neighbours
    (``Engine.excerpt``), arranged by :func:`~msa_agent.runtime.answer.arrange`."""
    texts = [engine.excerpt(h, question) if mode == "chunks" else h.memory.text for h in hits]
    return arrange(texts, [h.memory.created_at for h in hits], order, with_dates)


def _next_routed(engine: Engine, question: str, k: int, scope: Scope, q: torch.Tensor,
                 channels: str | None, hits: Sequence[Recalled]) -> Candidates | None:
    """The question's candidates ranked after its hits (its first round's pool, ranked
    ``k + prefetch`` deep with the same channels and router queries: no forward, so the
    worker never takes the model's lock), as a callable for the prefetch worker."""
    n = engine.prefetch_depth
    if not n or not hits:
        return None

    def ahead() -> list[StoredMemory]:
        read = {h.memory.id for h in hits}
        pool = engine.route(question, k + n, scope, None, q, channels, evidence=False)
        return [h.memory for h in pool if h.memory.id not in read][:n]
    return ahead


def _next_per_layer(engine: Engine, text: str, k: int, scope: Scope, q: torch.Tensor,
                    chosen: Mapping[int, Sequence[StoredMemory]]) -> Candidates | None:
    """Each MSA layer's candidates after its own top ``k`` (ranked ``k + prefetch`` deep),
    taken rank by rank across layers, ``prefetch`` in all, none already selected."""
    n = engine.prefetch_depth
    if not n or not chosen:
        return None

    def ahead() -> list[StoredMemory]:
        read = {m.id for sel in chosen.values() for m in sel}
        wide = list(engine.route_per_layer(text, k + n, scope, q=q).values())
        out: dict[str, StoredMemory] = {}
        for rank in range(k + n):
            for m in (sel[rank] for sel in wide if rank < len(sel)):
                if m.id not in read and len(out) < n:
                    out.setdefault(m.id, m)
        return list(out.values())
    return ahead
