"""Answering from memory: route once (one backbone forward on the question), read, generate."""

from __future__ import annotations

import time

from msa_agent.runtime.answer import Reader, pick_read
from msa_agent.runtime.engine import Engine
from msa_agent.runtime.interleave import Hops, max_rounds
from msa_agent.runtime.results import Scope
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
    with engine.lock:
        reader = Reader(engine, question, [h.memory for h in hits], mode, per_layer)
    timings = {"route_ms": 1000 * (routed - started),
               "read_ms": 1000 * (time.perf_counter() - routed)}
    return AnswerStream(engine, ReadOnce(engine, reader, hits, max_new, per_layer), timings)
