"""Answering from memory: route once (one backbone forward on the question), read, generate."""

from __future__ import annotations

import time
from collections.abc import Sequence

from msa_agent.runtime.answer import DATED, ORDER, SYSTEM, TEXT_READS, Reader, arrange, pick_read
from msa_agent.runtime.engine import Engine
from msa_agent.runtime.interleave import Hops, max_rounds
from msa_agent.runtime.results import Recalled, Scope
from msa_agent.runtime.stream import AnswerStream, GenerativeSource, ReadOnce


def answer_stream(engine: Engine, question: str, k: int, scope: Scope, hops: Hops,
                  read: str, max_new: int, channels: str | None = None) -> AnswerStream:
    """A token stream answering ``question`` from the memories of ``scope``.

    ``read`` and ``channels`` (the recall mode, ``routing=``) as :meth:`Memory.answer`.
    With an MSA checkpoint, pooled reading with ``hops`` other than 1 runs the paper's
    generative interleave. Otherwise the question's router queries are computed once and
    serve both the reported hits and, for pooled reading, each layer's own selection.
    """
    mode = pick_read(read, engine.cfg.keep_full_kv, engine.lm.msa is not None)
    if mode == "pooled" and engine.lm.msa is not None and hops != 1:
        def select(text: str):  # noqa: ANN202 - SelectPerLayer
            return engine.route_per_layer(text, k, scope)

        source = GenerativeSource(engine, question, select, max_rounds(hops), max_new)
        return AnswerStream(engine, source, {})
    started = time.perf_counter()
    q = engine.query(question)
    hits = engine.recall(question, k, scope, hops, q=q, mode=channels)
    per_layer = engine.route_per_layer(question, k, scope, q=q) \
        if mode == "pooled" and hits else None
    routed = time.perf_counter()
    notes, system = read_notes(engine, question, hits, mode) if mode in TEXT_READS else ([], SYSTEM)
    with engine.lock:
        reader = Reader(engine, question, [h.memory for h in hits], mode, per_layer, notes,
                        system)
    timings = {"route_ms": 1000 * (routed - started),
               "read_ms": 1000 * (time.perf_counter() - routed)}
    return AnswerStream(engine, ReadOnce(engine, reader, hits, max_new, per_layer), timings)


def read_notes(engine: Engine, question: str, hits: Sequence[Recalled], mode: str,
               with_dates: bool = DATED, order: str = ORDER) -> tuple[list[str], str]:
    """The memory notes of a ``text`` or ``chunks`` read and the system line for them:
    whole texts, or (``chunks``) each memory's matched chunk and neighbours
    (``Engine.excerpt``), arranged by :func:`~msa_agent.runtime.answer.arrange`."""
    texts = [engine.excerpt(h, question) if mode == "chunks" else h.memory.text for h in hits]
    return arrange(texts, [h.memory.created_at for h in hits], order, with_dates)
