"""Fusing the two recall channels (MSA routing and lexical BM25), with a recency term.

Each channel ranks a candidate pool; the fused score of a memory is

- ``rrf``: ``sum_c w_c / (rrf_k + rank_c)`` over the channels that ranked it (reciprocal-rank
  fusion: scale-free, so a cosine and a BM25 score never need calibrating), or
- ``sum``: ``sum_c w_c * norm_c(score)``, a calibrated weighted sum: each channel's scores
  are divided by its pool's best (a pool whose best is not positive is min-max normalised),
  one scale whatever the signs of the other scores (docs/recall.md, "One scale for the MSA
  channel"); a channel named in ``norms`` is scaled its own way instead: ``minmax``
  maps its pool's worst to 0 and best to 1 (for scores bunched in a narrow band, such as
  the summary channel's cosines), ``z`` gives each score's z-score within the pool (so a
  channel whose best stands far out of its pool weighs more than one whose best barely
  does),

plus ``recency_weight * recency * top``, where ``recency`` is the memory's creation order
among the candidates that share the query's words (the lexical channel's; newest 1, oldest
0) and ``top`` the best fused score: when two memories tell the same thing at different
times, the newer one wins a near-tie, while a clearly more relevant old memory keeps its
place, and memories that merely happen to be recent gain nothing.

Then ``newer_within``: walking the fused ranking best first, a memory moves above every
directly preceding memory *older by at least* ``newer_gap_s`` whose fused score it reaches
within that fraction (``score >= (1 - newer_within) * older``) and, when the query words
each candidate contains are given (``Space.matched_terms``), that shares a *rare* query word
with it: one that at most ``subject_max`` candidates of the pool contain, and holds at least
``cover`` of the query words the older one holds. Versions of one fact
share their subject word ("garage" in "My car is parked with a garage called Brakel" and "I
moved the car: it now stays at a garage called Orvande"), which few other memories hold; long
sessions that merely share common words with the question are not versions of each other
and keep their order (LongMemEval's multi-session questions; docs/recall.md). Two versions
of a changed fact are near-ties whose BM25 scores differ by wording, by more than any
additive bonus small enough to leave other rankings alone; the window lets the newer one win
when the two are close. The gap keeps it to statements made at different times: documents
imported together (seconds or minutes apart) are not versions of each other, and their
near-ties keep their order.

Before that, ``more_words_within``: a memory moves above each directly preceding one whose
fused score it reaches within that fraction, when it holds every query word that one holds
and more, and the two share a rare query word (as above): of two memories about one subject,
the one that says more of what was asked wins a near-tie ("In which city is Stirkvon Group
based?": "Stirkvon Group is a mining company based in ..." above "... joined Stirkvon Group
as ...", which the MSA channel had preferred; docs/recall.md, "More of the question's words").
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

MSA, LEXICAL, SUMMARY = "msa", "lexical", "summary"
Ranking = Sequence[tuple[str, float]]  # (memory id, channel score), best first


@dataclass(frozen=True)
class Fusion:
    """How channels combine (see the module docstring); ``weights`` per channel name."""

    method: str = "rrf"
    rrf_k: int = 60
    weights: tuple[tuple[str, float], ...] = ((MSA, 1.0), (LEXICAL, 1.0))
    recency_weight: float = 0.0
    newer_within: float = 0.0
    newer_gap_s: float = 3600.0
    subject_max: int = 3  # a shared query word held by at most this many candidates; 0 = off
    cover: float = 0.0  # the newer holds at least this share of the older's query words
    more_words_within: float = 0.0  # a memory holding more query words passes a near-tie
    norms: tuple[tuple[str, str], ...] = ()  # channel -> "max" (default), "minmax" or "z"


@dataclass(frozen=True)
class Fused:
    """A fused candidate: its score and each channel's rank and score (for ``explain``)."""

    id: str
    score: float
    channels: dict[str, float]


def fuse(rankings: Mapping[str, Ranking], created: Mapping[str, datetime], f: Fusion,
         matched: Mapping[str, Collection[str]] | None = None) -> list[Fused]:
    """All candidates of every channel, best fused score first (ties: newer, then id).
    ``matched``: the query words each candidate contains; None = newer-first reorders any
    near-tie (as does ``f.subject_max`` 0)."""
    weights, norms = dict(f.weights), dict(f.norms)
    parts: dict[str, dict[str, float]] = {}
    score: dict[str, float] = {}
    for channel, ranking in rankings.items():
        for rank, (id, s), value in _contributions(ranking, f, norms.get(channel, "max")):
            parts.setdefault(id, {})[channel] = s
            parts[id][f"{channel}_rank"] = float(rank)
            score[id] = score.get(id, 0.0) + weights.get(channel, 1.0) * value
    subject = {i for i, _ in rankings.get(LEXICAL, ())} or set(score)
    _add_recency(score, parts, created, f.recency_weight, subject)
    order = sorted(score, key=lambda i: (-score[i], -_ts(created.get(i)), i))
    rare = _rare_words(matched, f.subject_max)  # read once: both rules below test a subject
    order = _more_words_first(order, score, rare, f.more_words_within)
    related = _versions_of(rare, f.cover)
    order = _newer_first_within(order, score, created, f.newer_within, f.newer_gap_s, related)
    return [Fused(i, score[i], parts[i]) for i in order]


def without_word_rules(f: Fusion) -> Fusion:
    """``f`` without the rules that read the question's words (recency, newer-first,
    more-words-first): they belong to the lexical channel, so ``routing="msa"`` fuses MSA
    routing with the summary channel (a space with a ``summary_layer``) without them."""
    return replace(f, recency_weight=0.0, newer_within=0.0, more_words_within=0.0)


def completed(msa: Ranking, extra: Ranking) -> list[tuple[str, float]]:
    """The MSA channel's pool plus the routing scores of other channels' candidates outside
    it (``MemoryConfig.fusion_complete``), best first: every fused candidate is then scored
    by both channels instead of counting as the pool's floor."""
    return sorted([*msa, *extra], key=lambda x: -x[1])


def versions(matched: Mapping[str, Collection[str]] | None, most: int, cover: float
             ) -> Callable[[str, str], bool]:
    """``related(new, old)``: both contain a query word that at most ``most`` candidates
    contain, and ``new`` holds at least ``cover`` of the query words ``old`` holds (a newer
    version restates the subject: "my car is parked at a garage called X" / "the car now
    stays at a garage called Y"; a session that shares one word of the question with the
    answer is no version of it). Always True without ``matched`` or with ``most`` 0."""
    return _versions_of(_rare_words(matched, most), cover)


Words = tuple[dict[str, set[str]], dict[str, set[str]]]  # each candidate's query words, rare ones


def _rare_words(matched: Mapping[str, Collection[str]] | None, most: int) -> Words | None:
    """Each candidate's query words, and those of them at most ``most`` candidates hold; None
    without ``matched`` or with ``most`` 0 (no subject test)."""
    if matched is None or most <= 0:
        return None
    words = {i: set(w) for i, w in matched.items()}
    held = Counter(t for w in words.values() for t in w)
    return words, {i: {t for t in w if held[t] <= most} for i, w in words.items()}


def _versions_of(sets: Words | None, cover: float) -> Callable[[str, str], bool]:
    """:func:`versions` from :func:`_rare_words`' sets."""
    if sets is None:
        return lambda new, old: True
    words, rare = sets

    def related(new: str, old: str) -> bool:
        mine, theirs = words.get(new, set()), words.get(old, set())
        return bool(rare.get(new, set()) & rare.get(old, set())) \
            and len(mine & theirs) >= cover * len(theirs)
    return related


def _more_words_first(order: list[str], score: Mapping[str, float], sets: Words | None,
                      window: float) -> list[str]:
    """Best-first ``order`` with each memory moved above the directly preceding ones whose
    score it reaches within ``window`` (of theirs), whose query words it holds and more, and
    with which it shares a rare query word (``sets``: :func:`_rare_words`)."""
    if window <= 0 or sets is None:
        return order
    words, rare = sets
    out: list[str] = []
    for id in order:
        at, mine = len(out), words.get(id, set())
        while at and score[id] >= (1 - window) * score[out[at - 1]] \
                and mine > words.get(out[at - 1], set()) \
                and rare.get(id, set()) & rare.get(out[at - 1], set()):
            at -= 1
        out.insert(at, id)
    return out


def superseded(ids: Sequence[str], created: Mapping[str, datetime], gap_s: float,
               related: Callable[[str, str], bool]) -> dict[str, str]:
    """Each of ``ids`` that a newer one of ``ids`` restates (written ``gap_s`` seconds or more
    later and ``related`` to it, :func:`versions`) -> the newest such one: the older versions
    of a changed fact among a request's hits."""
    out: dict[str, str] = {}
    for old in ids:
        t = _ts(created.get(old))
        newer = [i for i in ids if _ts(created.get(i)) >= t + gap_s and related(i, old)]
        if newer:
            out[old] = max(newer, key=lambda i: _ts(created.get(i)))
    return out


def _newer_first_within(order: list[str], score: Mapping[str, float],
                        created: Mapping[str, datetime], window: float, gap_s: float,
                        related: Callable[[str, str], bool]) -> list[str]:
    """Best-first ``order`` with each memory moved above the directly preceding ones, older
    by ``gap_s`` seconds or more, whose score it reaches within ``window`` (of theirs) and
    that are ``related`` to it."""
    if window <= 0:
        return order
    out: list[str] = []
    for id in order:
        at, t = len(out), _ts(created.get(id))
        while at and _ts(created.get(out[at - 1])) <= t - gap_s \
                and score[id] >= (1 - window) * score[out[at - 1]] and related(id, out[at - 1]):
            at -= 1
        out.insert(at, id)
    return out


def _contributions(ranking: Ranking, f: Fusion, norm: str = "max"
                   ) -> list[tuple[int, tuple[str, float], float]]:
    """(rank, item, fused value) of each item of ``ranking`` (see the module docstring)."""
    if f.method == "rrf":
        return [(r, item, 1.0 / (f.rrf_k + r)) for r, item in enumerate(ranking, 1)]
    scale = _NORMS.get(norm)
    if scale is None:
        raise ValueError(f"unknown channel norm {norm!r}: one of {sorted(_NORMS)}")
    values = scale([s for _, s in ranking])
    return [(r, item, v) for r, (item, v) in enumerate(zip(ranking, values), 1)]


def _by_best(scores: list[float]) -> list[float]:
    """Each score over the pool's best (min-max where the best is not positive)."""
    hi = max(scores, default=0.0)
    return _minmax(scores) if hi <= 0 else [s / hi for s in scores]


def _minmax(scores: list[float]) -> list[float]:
    """The pool's worst 0, its best 1 (all 1 when they are equal)."""
    lo, hi = min(scores, default=0.0), max(scores, default=0.0)
    return [1.0 if hi <= lo else (s - lo) / (hi - lo) for s in scores]


def _zscore(scores: list[float]) -> list[float]:
    """Each score's z-score within the pool (all 0 when they are equal)."""
    n = len(scores)
    mean = sum(scores) / n if n else 0.0
    sd = (sum((s - mean) ** 2 for s in scores) / n) ** 0.5 if n else 0.0
    return [0.0 if sd <= 0 else (s - mean) / sd for s in scores]


_NORMS: dict[str, Callable[[list[float]], list[float]]] = {
    "max": _by_best, "minmax": _minmax, "z": _zscore}


def _add_recency(score: dict[str, float], parts: dict[str, dict[str, float]],
                 created: Mapping[str, datetime], weight: float, subject: set[str]) -> None:
    """Newer memories among ``subject`` (those sharing the query's words) gain up to
    ``weight`` of the best score: versions of one fact compete, unrelated news does not."""
    if weight <= 0 or len(subject) < 2:
        return
    order = sorted(subject, key=lambda i: (_ts(created.get(i)), i))  # oldest first
    top = max(score.values())
    for n, id in enumerate(order):
        recency = n / (len(order) - 1)
        parts[id]["recency"] = recency
        score[id] += weight * recency * top


def _ts(t: datetime | None) -> float:
    return t.timestamp() if t is not None else 0.0
