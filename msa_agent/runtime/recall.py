"""Recall over the engine's space and index: MSA routing, the lexical channel, their fusion,
memory interleave, per-layer selection and explanations.

A mixin of :class:`~msa_agent.runtime.engine.Engine`, which owns every piece of state used
here (space, index, lock, encoder); this file only holds the methods that read them.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import torch

from msa_agent.config import MemoryConfig
from msa_agent.model.encoder import Encoder
from msa_agent.model.text import query_ids, special_prefix, summary_ids
from msa_agent.runtime.excerpt import ChunkLayout, chunk_words, matched_chunk, window
from msa_agent.runtime.fusion import (
    LEXICAL,
    MSA,
    SUMMARY,
    Fusion,
    Ranking,
    completed,
    fuse,
    superseded,
    versions,
    without_word_rules,
)
from msa_agent.runtime.interleave import Hops, interleave
from msa_agent.runtime.results import Recalled, Scope
from msa_agent.runtime.routing import Ranked, RoutingIndex
from msa_agent.store import Space, StoredMemory

QUESTION_SUMMARIES = 64  # questions whose summary vectors a recall keeps (2.3 KB each)
BRIDGE_WORDS = 1  # the most specific word of a memory a later interleave round adds to the question


def needs_evidence(asked: bool, hops: Hops) -> bool:
    """Whether a recall computes its hits' routing evidence: when asked, and always with
    rounds after the first (their bridge falls back on a hit's best chunk)."""
    return asked or hops != 1


class Recall:
    """Routing and recall methods; the state is the engine's (declared here for types)."""

    cfg: MemoryConfig
    tokenizer: Any
    encoder: Encoder
    layers: list[int]
    index: RoutingIndex
    fusion: Fusion
    summary_layer: int | None
    lock: threading.RLock
    _question_summaries: OrderedDict[str, torch.Tensor]  # recent questions' summary vectors
    _summaries_lock: threading.Lock
    _space: Space
    _layouts: Callable[[str], ChunkLayout]  # _layout_of, cached per text (the engine's)

    def query(self, text: str) -> torch.Tensor:
        """Router queries ``[T, L, Hq, D]`` of ``text``: one backbone forward (with the
        summary channel on, the same forward reads its summary vector: :meth:`query_many`)."""
        return self._question_forward([text])[0]

    def query_many(self, texts: Sequence[str]) -> list[torch.Tensor]:
        """:meth:`query` of several texts, their forwards batched by length. With the summary
        channel on, each text's summary template rides in the same forwards
        (``Encoder.queries_and_summaries``) and its vector is kept for the text's routes, so
        a recall that computed its queries first still costs one forward."""
        return self._question_forward(texts)

    def _question_forward(self, texts: Sequence[str]) -> list[torch.Tensor]:
        # query and query_many both call this, not each other: Memory Parallel overrides both
        ids = [query_ids(self.tokenizer, t, self.cfg.max_doc_tokens) for t in texts]
        if not self.summary_on:
            return self.encoder.query_vectors_many(ids)
        assert self.summary_layer is not None
        queries, vectors = self.encoder.queries_and_summaries(
            ids, [self._summary_ids(t) for t in texts], self.summary_layer)
        self._keep_summaries(texts, vectors)
        return queries

    def summary_vectors(self, texts: Sequence[str]) -> torch.Tensor:
        """Unit summary vectors ``[B, hidden]`` of ``texts`` read as questions: each inside
        the summary template; those :meth:`query_many` kept, the others from one batched
        forward up to ``summary_layer``."""
        assert self.summary_layer is not None
        with self._summaries_lock:
            kept = {t: self._question_summaries.get(t) for t in texts}
        missing = [t for t, v in kept.items() if v is None]
        if missing:
            computed = self.encoder.last_states([self._summary_ids(t) for t in missing],
                                                self.summary_layer)
            kept.update(zip(missing, computed))
            self._keep_summaries(missing, computed)
        return torch.stack([kept[t] for t in texts])  # type: ignore[misc]

    def _keep_summaries(self, texts: Sequence[str], vectors: torch.Tensor) -> None:
        """Keep the latest ``QUESTION_SUMMARIES`` questions' summary vectors (a text's vector
        depends on the model and the text only)."""
        with self._summaries_lock:
            for t, v in zip(texts, vectors):
                self._question_summaries[t] = v
                self._question_summaries.move_to_end(t)
            while len(self._question_summaries) > QUESTION_SUMMARIES:
                self._question_summaries.popitem(last=False)

    def _summary_ids(self, text: str) -> list[int]:
        return summary_ids(self.tokenizer, query_ids(self.tokenizer, text,
                                                     self.cfg.max_doc_tokens))

    def recall(self, question: str, k: int, scope: Scope, hops: Hops = 1,
               q: torch.Tensor | None = None, mode: str | None = None,
               first: list[Recalled] | None = None, evidence: bool = True) -> list[Recalled]:
        """Top-``k`` memories of ``scope`` (routing-driven rounds for ``hops`` > 1).

        ``mode``: "hybrid" (MSA routing and the lexical channel fused), "msa" or "lexical";
        None = the config's ``recall_mode``. ``q``: the question's router queries, if already
        computed (round 1 then costs no backbone forward). ``first``: round 1's routes, if
        already computed (:meth:`recall_many` routes several questions' round 1 together).
        ``evidence``: each hit's per-layer scores and best chunk (``Recalled.layer_scores``,
        ``best_chunk``), a second scoring pass over the hits' chunks; a caller that shows no
        explanation and reads no chunk window leaves it out. Rounds after the first always
        compute it (their bridge falls back on the best chunk).
        """
        evidence = needs_evidence(evidence, hops)

        def route(text: str, exclude: set[str]) -> list[Recalled]:
            nonlocal first
            if first is not None:  # round 1 (the question, nothing excluded), routed already
                out, first = first, None
                return out
            if text == question:
                return self.route(text, k, scope, exclude, q, mode, evidence)
            later = mode if self.cfg.hop_routing == "same" else self.cfg.hop_routing
            return self.route(text, k, scope, exclude, None, later, evidence)

        return interleave(route, question, k, hops, min_score=self.cfg.hop_min_score,
                          bridge=self.bridge_text)

    def recall_many(self, questions: Sequence[str], k: int, scope: Scope, hops: Hops = 1,
                    qs: Sequence[torch.Tensor | None] | None = None, mode: str | None = None,
                    evidence: bool = True) -> list[list[Recalled]]:
        """:meth:`recall` of each of ``questions`` (one ``k``, scope, ``hops`` and mode), in
        order. Round 1 of every question is routed together (:meth:`route_many`: one pass over
        the routing keys for all of them); the later rounds of ``hops`` > 1 or ``"auto"``
        route each question's own bridged query afterwards, one question at a time, exactly
        as :meth:`recall`. ``qs``: the questions' router queries, where computed."""
        qs = list(qs) if qs is not None else [None] * len(questions)
        firsts = self.route_many(questions, k, scope, qs, mode,
                                 needs_evidence(evidence, hops))
        return [self.recall(text, k, scope, hops, q, mode, first=hits, evidence=evidence)
                for text, q, hits in zip(questions, qs, firsts)]

    def route_many(self, texts: Sequence[str], k: int, scope: Scope,
                   qs: Sequence[torch.Tensor | None] | None = None, mode: str | None = None,
                   evidence: bool = True) -> list[list[Recalled]]:
        """:meth:`route` of each of ``texts`` (nothing excluded), their MSA rankings in one
        ``RoutingIndex.rank_many`` call (:meth:`_route_batch`). An engine whose ``route`` is
        its own (Memory Parallel's collective route over a sharded index) routes the texts
        one by one with it. ``qs``: router queries, where computed."""
        qs = list(qs) if qs is not None else [None] * len(texts)
        if type(self).route is not Recall.route:
            return [self.route(t, k, scope, None, q, mode, evidence) for t, q in zip(texts, qs)]
        return self._route_batch(texts, k, scope, set(), qs, mode, evidence)

    def route(self, text: str, k: int, scope: Scope, exclude: set[str] | None = None,
              q: torch.Tensor | None = None, mode: str | None = None,
              evidence: bool = True) -> list[Recalled]:
        """One routing pass: the top-``k`` memories of ``scope`` not in ``exclude``
        (``evidence`` as :meth:`recall`)."""
        return self._route_batch([text], k, scope, exclude or set(), [q], mode, evidence)[0]

    def _route_batch(self, texts: Sequence[str], k: int, scope: Scope, exclude: set[str],
                     qs: Sequence[torch.Tensor | None], mode: str | None,
                     evidence: bool = True) -> list[list[Recalled]]:
        """Routing passes of ``texts`` over one scope and ``exclude``: ``msa`` ranks the
        ``k`` best of each, hybrid each one's fusion pool (then fused with its own lexical
        channel), both in one ``rank_many`` pass over the keys; lexical needs no keys."""
        mode = mode or self.cfg.recall_mode
        pool = max(k, self.cfg.fusion_pool)
        if mode == LEXICAL:  # one channel: its own BM25 scores, no fusion
            return [self._lexical_only(self._lexical(t, pool, scope, exclude)[:k])
                    for t in texts]
        if mode == MSA and not self.summary_on:
            queries = self._queries(texts, qs)
            with self.lock:
                ranked = self.index.rank_many(queries, k, self._mask(scope, exclude),
                                              self.cfg.layer_combine, explain=evidence)
                return [self._recalled(r) for r in ranked]
        pools, queries = self.channel_pools(texts, pool, scope, exclude, qs, mode)
        f = self.fusion if mode != MSA else self.fusion_alone
        return [self._fused(channels, k, q if evidence else None, t, f)
                for t, q, channels in zip(texts, queries, pools)]

    @property
    def summary_on(self) -> bool:
        """Whether recall reads the summary channel: a space with summaries and a positive
        ``summary_weight`` (0 turns it off: no question forward for it)."""
        return self.index.has_summary and self.cfg.summary_weight > 0

    def channel_pools(self, texts: Sequence[str], pool: int, scope: Scope, exclude: set[str],
                      qs: Sequence[torch.Tensor | None], mode: str
                      ) -> tuple[list[dict[str, Ranking]], list[torch.Tensor]]:
        """Each text's channel candidates before fusion (MSA routing, and the lexical channel
        unless ``mode`` is "msa", and the summary channel when on: ``pool`` each, the MSA
        and summary ones completed with the other channels' candidates), and the texts'
        router queries. The MSA rankings of all texts come from one ``rank_many`` pass."""
        # Hybrid, one channel after the other: the lexical search costs ~5 ms at 2,000
        # memories, and overlapping it with the forward on a worker thread only made both
        # compete for the cores (docs/recall.md, "Cost").
        lexical = [self._lexical(t, pool, scope, exclude) for t in texts] \
            if mode != MSA else [[] for _ in texts]
        queries = self._queries(texts, qs)
        vectors = self.summary_vectors(texts) if self.summary_on else None
        with self.lock:
            mask = self._mask(scope, exclude)
            ranked = self.index.rank_many(queries, pool, mask, self.cfg.layer_combine,
                                          explain=False)
            ids = self.index.doc_ids
            msa = [[(ids[d], s) for d, s in zip(r.docs, r.scores)] for r in ranked]
            cosines = None if vectors is None else self.index.summary_scores(vectors, mask)
            out = []
            for i, (lex, m) in enumerate(zip(lexical, msa)):
                channels: dict[str, Ranking] = {LEXICAL: lex} if mode != MSA else {}
                if cosines is not None:
                    channels[SUMMARY] = self._summary_pool(cosines[i], pool, [*lex, *m])
                others = [x for c in (LEXICAL, SUMMARY) for x in channels.get(c, [])]
                channels[MSA] = self._completed(m, others, queries[i])
                out.append(channels)
        return out, queries

    @property
    def fusion_alone(self) -> Fusion:
        """How ``routing="msa"`` fuses MSA routing with the summary channel
        (:func:`~msa_agent.runtime.fusion.without_word_rules` of the engine's fusion)."""
        return without_word_rules(self.fusion)

    def _summary_pool(self, cosines: torch.Tensor, n: int, also: Ranking
                      ) -> list[tuple[str, float]]:
        """The summary channel's candidates, best first: the ``n`` documents of highest
        cosine (``cosines`` ``[M]``, -inf outside the scope) and the other channels'
        candidates ``also``, each with its own cosine (every fused candidate then has a real
        summary score, as ``fusion_complete`` gives the MSA channel)."""
        live = int(torch.isfinite(cosines).sum())
        top = torch.topk(cosines, min(n, live)).indices.tolist() if live else []
        pos = self.index.positions([i for i, _ in also])
        chosen = list(dict.fromkeys([*top, *pos]))
        values = cosines[chosen].tolist() if chosen else []
        ids = self.index.doc_ids
        return sorted(((ids[d], v) for d, v in zip(chosen, values) if v != float("-inf")),
                      key=lambda x: -x[1])

    def _queries(self, texts: Sequence[str], qs: Sequence[torch.Tensor | None]
                 ) -> list[torch.Tensor]:
        """Router queries of ``texts``: ``qs[i]`` where given, else computed (one text: its
        own forward, as a lone recall; several: batched)."""
        missing = [i for i, q in enumerate(qs) if q is None]
        if len(missing) == 1:
            computed = {missing[0]: self.query(texts[missing[0]])}
        else:
            computed = dict(zip(missing, self.query_many([texts[i] for i in missing])
                                if missing else []))
        return [q if q is not None else computed[i] for i, q in enumerate(qs)]

    def _completed(self, msa: list[tuple[str, float]], lexical: list[tuple[str, float]],
                   q: torch.Tensor) -> list[tuple[str, float]]:
        """:func:`~msa_agent.runtime.fusion.completed` with the routing scores of the lexical
        candidates outside MSA's pool, when ``fusion_complete`` (chosen on validation,
        docs/recall.md)."""
        if not self.cfg.fusion_complete:
            return msa
        return completed(msa, self.routing_scores([i for i, _ in lexical], {i for i, _ in msa},
                                                  q))

    def routing_scores(self, ids: list[str], skip: set[str], q: torch.Tensor
                       ) -> list[tuple[str, float]]:
        """The routing score of each of ``ids`` not in ``skip`` (``RoutingIndex.explain``)."""
        missing = list(dict.fromkeys(i for i in ids if i not in skip))  # channels overlap
        if not missing:
            return []
        with self.lock:
            ranked, names = self._explain_ids(missing, q, evidence=False)
        return [(names[d], s) for d, s in zip(ranked.docs, ranked.scores)]

    def _lexical(self, text: str, n: int, scope: Scope, exclude: set[str]
                 ) -> list[tuple[str, float]]:
        """The lexical channel's top ``n`` (the space serialises its own reads)."""
        found = self._space.lexical_search(text, n + len(exclude), scope.namespace,
                                           scope.where, scope.since, scope.until,
                                           scope.alive_at)
        return [(i, s) for i, s in found if i not in exclude][:n]

    def _lexical_only(self, found: list[tuple[str, float]]) -> list[Recalled]:
        with self.lock:
            by_id = {m.id: m for m in self._space.get_many([i for i, _ in found])}
        return [Recalled(by_id[i], s, channels={LEXICAL: s, f"{LEXICAL}_rank": float(r)})
                for r, (i, s) in enumerate(found, 1) if i in by_id]

    def _fused(self, channels: dict[str, list[tuple[str, float]]], k: int,
               q: torch.Tensor | None, text: str, f: Fusion | None = None) -> list[Recalled]:
        """Fuse the channels' candidates (by ``f``, default the engine's fusion); routing
        evidence for the top ``k`` when ``q``."""
        f = self.fusion if f is None else f
        with self.lock:  # times for the whole pool, full records for the top k only
            pool = list({i for ranking in channels.values() for i, _ in ranking})
            created = self._space.created_times(pool)
            matched = (self._space.matched_terms(text, pool)
                       if f.newer_within > 0 and f.subject_max > 0 else None)
            top = [x for x in fuse(channels, created, f, matched) if x.id in created][:k]
            by_id = {m.id: m for m in self._space.get_many([x.id for x in top])}
            evidence = self._evidence([x.id for x in top], q)
        later = {} if matched is None else superseded(
            [x.id for x in top], created, f.newer_gap_s,
            versions(matched, f.subject_max, f.cover))
        return [Recalled(by_id[x.id], x.score, channels=x.channels,
                         superseded_by=later.get(x.id), **evidence.get(x.id, {}))
                for x in top if x.id in by_id]

    def _evidence(self, ids: list[str], q: torch.Tensor | None) -> dict[str, dict[str, Any]]:
        """Per-layer routing scores and best chunk of ``ids`` (none without router queries)."""
        if q is None or not ids:
            return {}
        ranked, names = self._explain_ids(ids, q)
        return {names[d]: {"layer_scores": dict(zip(self.layers, ls)), "best_chunk": c}
                for d, ls, c in zip(ranked.docs, ranked.layer_scores, ranked.best_chunk)}

    def _explain_ids(self, ids: list[str], q: torch.Tensor, evidence: bool = True
                     ) -> tuple[Ranked, list[str]]:
        """``RoutingIndex.explain`` of ``ids`` (``evidence`` as there) and the id of each of
        its positions (Memory Parallel explains over the owners' rows)."""
        return self.index.explain(ids, q, self.cfg.layer_combine, evidence), self.index.doc_ids

    def route_per_layer(self, text: str, k: int, scope: Scope, q: torch.Tensor | None = None
                        ) -> dict[int, list[StoredMemory]]:
        """The paper's protocol: each MSA layer selects its own top-``k`` memories."""
        q = self.query(text) if q is None else q
        with self.lock:
            if not self.index.doc_ids:
                return {}
            chosen = self.index.rank_per_layer(q, k, self._mask(scope, None))
            by_id = self._memories({d for sel in chosen for d in sel})
            ids = self.index.doc_ids
            return {layer: [by_id[ids[d]] for d in sel if ids[d] in by_id]
                    for layer, sel in zip(self.layers, chosen)}

    def _mask(self, scope: Scope, exclude: set[str] | None) -> torch.Tensor:
        allowed = None
        if scope.narrowed:
            allowed = [m.id for m in self._space.find(scope.namespace, scope.where,
                                                      since=scope.since, until=scope.until)]
        mask = self.index.mask_for(scope.namespace, allowed)
        expired = [] if scope.alive_at is None else self._space.expired(  # one rule, below
            scope.alive_at, scope.namespace)
        if exclude or expired:
            mask &= ~self.index.mask_for(None, [*(exclude or ()), *expired])
        return mask

    def _memories(self, positions: set[int]) -> dict[str, StoredMemory]:
        ids = [self.index.doc_ids[d] for d in positions]
        return {m.id: m for m in self._space.get_many(ids)}

    def _recalled(self, ranked: Ranked) -> list[Recalled]:
        by_id = self._memories(set(ranked.docs))
        out = []
        for i, (d, score) in enumerate(zip(ranked.docs, ranked.scores)):
            m = by_id.get(self.index.doc_ids[d])
            if m is None:
                continue
            evidence = {"layer_scores": dict(zip(self.layers, ranked.layer_scores[i])),
                        "best_chunk": ranked.best_chunk[i]} if ranked.layer_scores else {}
            out.append(Recalled(m, score, channels={MSA: score}, **evidence))
        return out

    def bridge_text(self, hit: Recalled, question: str) -> str:
        """What a later interleave round appends for ``hit``: the most specific words of its
        matched chunk and neighbours (those the fewest memories contain, not in the
        question). Appending the whole text let its common words outvote the one new name
        (facts val two-hop R@5 0.00 with whole chunks, docs/recall.md). The matched chunk is
        the one holding the question's rarest words (``excerpt.matched_chunk``, as
        ``read="chunks"`` picks it; routing's best chunk when none has them): in a long
        session routing's best chunk can be filler whose rare words lead nowhere."""
        text = self.excerpt(hit, question) or hit.memory.text
        with self.lock:
            words = self._space.rare_terms(text, BRIDGE_WORDS, exclude=question)
        return " ".join(words) or text

    def chunk_spans(self, text: str) -> tuple[tuple[int, int], ...]:
        """Character spans ``[start, end)`` of ``text``'s pooled chunks (see
        :meth:`_layout_of`)."""
        return self._layouts(text).spans

    def _layout_of(self, text: str) -> ChunkLayout:
        """``text``'s chunk spans, from one tokenisation, and their word stems: chunk ``c``
        holds document tokens ``[c * P, (c + 1) * P)``, the tokenizer's special prefix
        counted. Spans tile the text (each ends where the next starts; the last at the
        text's end). Pure in ``text``: the engine caches it (a memory read again, as hot
        memories are, costs no tokenisation)."""
        enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        offs = enc["offset_mapping"]
        p, lead = self.cfg.chunk_size, len(special_prefix(self.tokenizer))
        n_chunks = -(-(len(offs) + lead) // p)  # ceil
        starts = [0] + [offs[c * p - lead][0] for c in range(1, n_chunks)]
        spans = tuple(zip(starts, [*starts[1:], len(text)]))
        return ChunkLayout(spans, tuple(frozenset(w) for w in chunk_words(text, spans)))

    def chunk_text(self, text: str, chunk: int, last: int | None = None) -> str:
        """The characters of ``text`` in pooled chunks ``chunk`` to ``last`` (inclusive;
        default just ``chunk``); empty past the end."""
        spans = self.chunk_spans(text)
        last = min(chunk if last is None else last, len(spans) - 1)
        return _text_of(text, spans, chunk, last) if 0 <= chunk <= last else ""

    def excerpt(self, hit: Recalled, question: str) -> str:
        """``read="chunks"``: the chunk of ``hit`` that best matches ``question`` and its
        neighbours, as text (``msa_agent.runtime.excerpt``)."""
        return _text_of(hit.memory.text, *self._window(hit, question))

    def kv_window(self, hit: Recalled, question: str) -> tuple[str, tuple[int, int]]:
        """``read="kv_chunks"``: :meth:`excerpt`'s text and the token rows ``[a, b)`` of
        ``hit``'s stored K/V that hold it (chunk ``c`` is document tokens
        ``[c * P, (c + 1) * P)``), from one tokenisation."""
        spans, first, last = self._window(hit, question)
        p = self.cfg.chunk_size
        return (_text_of(hit.memory.text, spans, first, last),
                (first * p, min((last + 1) * p, hit.memory.n_tokens)))

    def _window(self, hit: Recalled, question: str
                ) -> tuple[Sequence[tuple[int, int]], int, int]:
        """``hit``'s chunk spans and the first and last chunk of its window: the chunk that
        best matches ``question`` and its neighbours."""
        spans, words = self._layouts(hit.memory.text)
        centre = matched_chunk(hit.memory.text, spans, question, hit.best_chunk, words)
        return (spans, *window(len(spans), centre))


def _text_of(text: str, spans: Sequence[tuple[int, int]], first: int, last: int) -> str:
    """The characters of ``text`` in its chunks ``first`` to ``last`` (inclusive), stripped."""
    return text[spans[first][0]:spans[last][1]].strip()
