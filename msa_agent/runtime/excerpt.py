"""Sparse reading of text (``read="chunks"``): each memory's matched chunk and its neighbours.

A small reader drowns in whole sessions: five recalled sessions of ~2k tokens bury the one
line that answers. ``chunks`` reading hands it, per memory, the pooled chunk (``chunk_size``
tokens, the routing unit) that best matches the question, plus ``NEIGHBOURS`` chunks on each
side, as text.

The matched chunk is chosen by the question's words, not by MSA routing's ``best_chunk``:
on the frozen backbone routing finds the right memory far less often than the words do
(docs/recall.md), and within one memory the words are a sharper signal still. Each question
term present in a chunk adds ``1 / (chunks of this memory holding it)``, so a name that is in
every chunk of a session counts little and the chunk holding the rare word wins. Terms match
on a shared prefix of ``STEM`` characters ("lessons" ~ "lesson", "started" ~ "starts"). When
no chunk holds a question word, routing's ``best_chunk`` is used.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Sequence, Set
from typing import NamedTuple

from msa_agent.store.lexical import query_terms

NEIGHBOURS = 1  # chunks kept on each side of the matched one
STEM = 5  # characters two words must share to match ("lessons" / "lesson")
_WORD = re.compile(r"[^\W_]+")


class ChunkLayout(NamedTuple):
    """A memory text's pooled chunks: their character spans and their words' stems (what
    :func:`matched_chunk` scores; the same for every question, so the runtime caches it)."""

    spans: tuple[tuple[int, int], ...]
    words: tuple[frozenset[str], ...]


def _stem(word: str) -> str:
    return word[:STEM]


def chunk_words(text: str, spans: Sequence[tuple[int, int]]) -> list[set[str]]:
    """Per chunk span, the stems of the words that start in it (case-folded): a word cut by
    a chunk boundary belongs whole to the chunk where it starts."""
    starts = [a for a, _ in spans]
    out: list[set[str]] = [set() for _ in spans]
    for m in _WORD.finditer(text):
        out[max(0, bisect_right(starts, m.start()) - 1)].add(_stem(m.group().casefold()))
    return out


def matched_chunk(text: str, spans: Sequence[tuple[int, int]], question: str,
                  fallback: int = 0, words: Sequence[Set[str]] | None = None) -> int:
    """Index of the chunk span of ``text`` that best matches ``question`` (see the module);
    ``words``: :func:`chunk_words` of the spans, when already known."""
    terms = {_stem(t) for t in query_terms(question) if " " not in t}
    words = chunk_words(text, spans) if words is None else words
    holders = {t: sum(t in w for w in words) for t in terms}
    scores = [sum(1 / holders[t] for t in terms if t in w) for w in words]
    best = max(range(len(spans)), key=lambda i: (scores[i], i == fallback, -i), default=0)
    return best if scores and scores[best] > 0 else min(max(fallback, 0), len(spans) - 1)


def window(n_chunks: int, centre: int, neighbours: int = NEIGHBOURS) -> tuple[int, int]:
    """First and last (inclusive) chunk of the window around ``centre``."""
    return max(0, centre - neighbours), min(n_chunks - 1, centre + neighbours)
