"""The lexical (BM25) channel of a PostgreSQL space: postings tables, scored as FTS5 scores.

Same tokens, same scores, same ranking as the SQLite path (store/lexical.py), on any database:

- **Tokens.** SQLite's own FTS5 tokenizer (``lexical.TOKENIZER``: porter, unicode61, diacritics
  removed) runs on an in-memory database and hands back each text's tokens in order
  (``fts5vocab`` 'instance'). Both backends index exactly the same tokens: no second tokenizer
  to keep equal to FTS5's (the store needs FTS5 anyway).
- **Tables** (``memory_id`` references ``memories.id`` ON DELETE CASCADE):
  ``lex_postings(term, memory_id, tf)``, ``lex_docs(memory_id, length)`` and the one row of
  ``lex_stats(n_docs, n_tokens)``. They are written in the memory's own transaction
  (``MetaStore.commit_add`` and ``_remove``), so the index never disagrees with the rows.
- **Phrases.** A compound query term ("kr 4432") matches its parts at adjacent positions:
  the documents holding every part are re-tokenized to count the phrase.
- **Scoring.** FTS5's bm25 (k1 1.2, b 0.75, its clamped idf, written as its C code writes it)
  picks the same pool of ``RESCORE_POOL`` candidates, which are rescored with Lucene's idf.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections import Counter
from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.orm import Session

from . import lexical
from .schema import LexDocRow, LexStatsRow, MemoryRow, PostingRow
from .types import StoredMemory

MAX_TERM_CHARS = 128  # longer tokens are stored as a hash (a btree entry holds ~2.7 kB)
K1, B = 1.2, 0.75  # FTS5's bm25 constants
BATCH = 10_000  # ids per IN (...) list


def tokenize(texts: Sequence[str]) -> list[list[str]]:
    """Each text's tokens in order, by FTS5's own tokenizer (``lexical.TOKENIZER``)."""
    out: list[list[str]] = [[] for _ in texts]
    if not texts:
        return out
    con = sqlite3.connect(":memory:")
    try:
        con.execute(f"CREATE VIRTUAL TABLE t USING fts5(x, tokenize='{lexical.TOKENIZER}')")
        con.execute("CREATE VIRTUAL TABLE v USING fts5vocab(t, 'instance')")
        con.executemany("INSERT INTO t(rowid, x) VALUES (?, ?)",
                        ((i + 1, t) for i, t in enumerate(texts)))
        rows = con.execute("SELECT doc, \"offset\", term FROM v").fetchall()
    finally:
        con.close()
    for doc, _, term in sorted(rows):
        out[doc - 1].append(term)
    return out


def term_key(token: str) -> str:
    """The stored form of a token: itself, or ``#`` + sha256 when longer than
    ``MAX_TERM_CHARS`` (``#`` is never part of a token)."""
    if len(token) <= MAX_TERM_CHARS:
        return token
    return "#" + hashlib.sha256(token.encode()).hexdigest()


def phrase_count(tokens: list[str], phrase: list[str]) -> int:
    """How many positions of ``tokens`` start ``phrase`` (overlaps counted, as FTS5 does)."""
    n = len(phrase)
    return sum(1 for i in range(len(tokens) - n + 1) if tokens[i:i + n] == phrase)


def fts_term_score(idf: float, tf: float, length: float, avgdl: float) -> float:
    """One phrase's term of FTS5's bm25 sum, with its C expression's order of operations."""
    return idf * ((tf * (K1 + 1.0)) / (tf + K1 * (1 - B + B * length / avgdl)))


class PostingsIndex:
    """The lexical index of one PostgreSQL space (its tables are in the space's schema)."""

    # -- writes ------------------------------------------------------------------------------
    def create(self, s: Session) -> None:
        s.add(LexStatsRow(id=1, n_docs=0, n_tokens=0))

    def add(self, s: Session, memories: Sequence[StoredMemory]) -> None:
        """Index ``memories`` (their rows are already flushed), in the caller's transaction."""
        docs, posts = [], []
        for m, tokens in zip(memories, tokenize([m.text for m in memories])):
            docs.append({"memory_id": m.id, "length": len(tokens)})
            posts += [{"term": t, "memory_id": m.id, "tf": n}
                      for t, n in Counter(term_key(t) for t in tokens).items()]
        s.execute(insert(LexDocRow), docs)
        if posts:
            s.execute(insert(PostingRow), posts)
        self._bump(s, len(docs), sum(d["length"] for d in docs))

    def remove(self, s: Session, ids: list[str]) -> None:
        """Drop the postings of ``ids`` (before their memory rows go: the cascade is a
        safety net) and take them out of the statistics."""
        n, tokens = s.execute(select(func.count(), func.coalesce(func.sum(LexDocRow.length), 0))
                              .where(LexDocRow.memory_id.in_(ids))).one()
        s.execute(delete(PostingRow).where(PostingRow.memory_id.in_(ids)))
        s.execute(delete(LexDocRow).where(LexDocRow.memory_id.in_(ids)))
        self._bump(s, -int(n), -int(tokens))

    def _bump(self, s: Session, docs: int, tokens: int) -> None:
        s.execute(update(LexStatsRow).where(LexStatsRow.id == 1).values(
            n_docs=LexStatsRow.n_docs + docs, n_tokens=LexStatsRow.n_tokens + tokens))

    # -- reads -------------------------------------------------------------------------------
    def stats(self, s: Session) -> tuple[int, int]:
        row = s.execute(select(LexStatsRow.n_docs, LexStatsRow.n_tokens)).one()
        return int(row[0]), int(row[1])

    def hits(self, s: Session, phrase: list[str]) -> dict[str, int]:
        """``{memory id: occurrences}`` of a phrase (one token or several adjacent ones)."""
        if not phrase:
            return {}
        keys = [term_key(t) for t in phrase]
        if len(keys) == 1:
            rows = s.execute(select(PostingRow.memory_id, PostingRow.tf)
                             .where(PostingRow.term == keys[0]))
            return {mid: int(tf) for mid, tf in rows}
        having = func.count(func.distinct(PostingRow.term)) == len(set(keys))
        holders = (select(PostingRow.memory_id).where(PostingRow.term.in_(set(keys)))
                   .group_by(PostingRow.memory_id).having(having))
        rows = s.execute(select(MemoryRow.id, MemoryRow.text)
                         .where(MemoryRow.id.in_(holders))).all()
        counts = [phrase_count(t, phrase) for t in tokenize([r.text for r in rows])]
        return {r.id: c for r, c in zip(rows, counts) if c}

    def _term_hits(self, s: Session, terms: list[str]) -> list[dict[str, int]]:
        return [self.hits(s, p) for p in tokenize(terms)]

    def _candidates(self, s: Session, ids: set[str], conds: list[Any]) -> list[Any]:
        """``(id, created_at, length)`` of the hit memories that pass the filters."""
        out: list[Any] = []
        ordered = sorted(ids)
        for i in range(0, len(ordered), BATCH):
            stmt = (select(MemoryRow.id, MemoryRow.created_at, LexDocRow.length)
                    .join(LexDocRow, LexDocRow.memory_id == MemoryRow.id)
                    .where(MemoryRow.id.in_(ordered[i:i + BATCH]), *conds))
            out += s.execute(stmt).all()
        return out

    def search(self, s: Session, terms: list[str], conds: list[Any], k: int
               ) -> list[tuple[str, float]]:
        """``(id, score)`` of the best ``k`` memories for ``terms``, exactly as the SQLite
        path ranks them: FTS5's bm25 picks the pool, Lucene's idf rescores it; ties: newer
        first, then id."""
        n_docs, n_tokens = self.stats(s)
        hits = self._term_hits(s, terms)
        found = set().union(*hits) if hits else set()
        if not n_docs or not found:
            return []
        avgdl = n_tokens / n_docs
        rows = self._candidates(s, found, conds)
        fts = [lexical.fts_idf(n_docs, len(h)) for h in hits]
        lucene = [lexical.lucene_idf(n_docs, len(h)) for h in hits]

        def pool_score(r: Any) -> float:
            score = 0.0
            for h, idf in zip(hits, fts):
                score += fts_term_score(idf, h.get(r.id, 0), r.length, avgdl)
            return score

        def final_score(r: Any) -> float:
            out = 0.0
            for h, f_idf, l_idf in zip(hits, fts, lucene):
                if r.id in h:
                    out += fts_term_score(f_idf, h[r.id], r.length, avgdl) * (l_idf / f_idf)
            return out

        pool = sorted(rows, key=lambda r: (-pool_score(r), -r.created_at.timestamp(), r.id))
        pool = pool[:max(k, lexical.RESCORE_POOL)]
        scores = {r.id: final_score(r) for r in pool}
        ranked = sorted(pool, key=lambda r: (-scores[r.id], -r.created_at.timestamp(), r.id))
        return [(r.id, scores[r.id]) for r in ranked[:k]]

    def matched_terms(self, s: Session, terms: list[str], ids: list[str]
                      ) -> dict[str, set[str]]:
        """Which of ``terms`` each memory of ``ids`` holds (memories with none left out)."""
        want, out = set(ids), {}
        for term, h in zip(terms, self._term_hits(s, terms)):
            for mid in want.intersection(h):
                out.setdefault(mid, set()).add(term)
        return out

    def rare_terms(self, s: Session, text: str, n: int, exclude: set[str]) -> list[str]:
        """``lexical.rare_terms`` on the postings: the ``n`` words of ``text`` in the fewest
        memories, and in at least two."""
        words = [t for t in lexical.query_terms(text) if " " not in t and t not in exclude]
        counts = dict(zip(words, (len(h) for h in self._term_hits(s, words))))
        found = [t for t in words if counts[t] >= 2]
        return sorted(found, key=lambda t: counts[t])[:n]
