"""The lexical (BM25) channel: an SQLite FTS5 index of every memory's text.

Design (docs/store.md, "Lexical index"):

- ``memories_fts`` is an **external-content** FTS5 table over ``memories.text``, keyed by the
  memory row's ``rowid``. It stores only the inverted index, not a second copy of the text.
  (``contentless_delete`` needs SQLite 3.43; the ``sqlite3`` here may be older.)
- Triggers on ``memories`` keep it in sync, so every insert and delete of a memory row updates
  the index **in the same transaction**, whatever code path issues it.
- FTS5 keeps deleted entries as tombstones in its segment b-tree until segments merge, so the
  words of a forgotten memory would linger in the file. ``optimize`` merges every segment into
  one and drops them; ``MetaStore.delete`` runs it in the delete's own transaction, and
  ``compact`` runs it again (``secure_delete`` zeroes the freed pages).

Queries are free user text: ``match_expression`` turns them into a MATCH string made only of
double-quoted alphanumeric tokens joined by OR, so no FTS5 syntax ever reaches the parser.
"""

from __future__ import annotations

import math
import re
import sqlite3
import unicodedata
from functools import lru_cache
from typing import Any

from .errors import FTS5UnavailableError

FTS_TABLE = "memories_fts"
# porter: agents' questions and memories differ in inflection ("lessons" / "lesson", "started"
# / "starts"); stemming both sides matches them, and exact names still match because both sides
# are stemmed alike. unicode61 splits on every non-alphanumeric character, so "Kr-4432",
# "db-prod-07" and "anna.berg@example.com" are findable by their parts; remove_diacritics 2
# makes "café" match "cafe". Measured against the variant without porter in docs/store.md.
TOKENIZER = "porter unicode61 remove_diacritics 2"
MAX_QUERY_TERMS = 128  # longer queries keep their first 128 distinct terms

# Dropped from queries: words that say nothing about which memory is meant. Not the verb
# particles and adverbs in PARTICLES, though they are on the usual English lists: "Where did my
# manager grow up?" finds "... grew up in Tertathtin" only through "up" (porter does not map
# grew to grow), and "sign up", "log out", "hand over" name what happened. Measured in
# docs/recall.md, "Verb particles are search terms".
PARTICLES = frozenset("again down further off once out over under up".split())
STOP_WORDS = frozenset("""
a about above after against all am an and any are as at be because been before being
below between both but by can could did do does doing during each few for from had
has have having he her here hers herself him himself his how i if in into is it its itself just
me more most my myself no nor not now of on only or other our ours ourselves
own s same she should so some such t than that the their theirs them themselves then there these
they this those through to too until very was we were what when where which while who
whom why will with would you your yours yourself yourselves
""".split())

_TRIGGERS = (
    f"CREATE TRIGGER IF NOT EXISTS memories_fts_ai AFTER INSERT ON memories BEGIN "
    f"INSERT INTO {FTS_TABLE}(rowid, text) VALUES (new.rowid, new.text); END",
    f"CREATE TRIGGER IF NOT EXISTS memories_fts_ad AFTER DELETE ON memories BEGIN "
    f"INSERT INTO {FTS_TABLE}({FTS_TABLE}, rowid, text) VALUES ('delete', old.rowid, old.text);"
    f" END",
    f"CREATE TRIGGER IF NOT EXISTS memories_fts_au AFTER UPDATE OF text ON memories BEGIN "
    f"INSERT INTO {FTS_TABLE}({FTS_TABLE}, rowid, text) VALUES ('delete', old.rowid, old.text);"
    f" INSERT INTO {FTS_TABLE}(rowid, text) VALUES (new.rowid, new.text); END",
)
_TOKEN = re.compile(r"[^\W_]+")  # unicode61's token characters: letters and digits


@lru_cache(maxsize=1)
def fts5_available() -> bool:
    """Whether the ``sqlite3`` module SQLAlchemy uses can create an FTS5 table."""
    con = sqlite3.connect(":memory:")
    try:
        con.execute("CREATE VIRTUAL TABLE temp.probe USING fts5(x)")
        return True
    except sqlite3.Error:
        return False
    finally:
        con.close()


def require_fts5() -> None:
    """Raise ``FTS5UnavailableError`` with a fix when this Python's SQLite lacks FTS5."""
    if not fts5_available():
        raise FTS5UnavailableError(
            f"the Python sqlite3 module (SQLite {sqlite3.sqlite_version}) was built without "
            "FTS5, which the store's lexical index needs; use a Python whose SQLite has FTS5 "
            "(python.org, conda and most Linux distributions have it)")


def create_index(conn: Any) -> None:
    """Create the FTS table and its sync triggers (idempotent); ``conn`` is a SQLAlchemy
    connection inside the caller's transaction. Reads ``TOKENIZER`` at call time, so a
    measurement can compare tokenizers (tests/store/measure_lexical.py)."""
    conn.exec_driver_sql(f"CREATE VIRTUAL TABLE IF NOT EXISTS {FTS_TABLE} USING fts5("
                         f"text, content='memories', tokenize='{TOKENIZER}')")
    for stmt in _TRIGGERS:
        conn.exec_driver_sql(stmt)


def rebuild(conn: Any) -> None:
    """Re-index every memory row from scratch (used when upgrading an older space)."""
    conn.exec_driver_sql(f"INSERT INTO {FTS_TABLE}({FTS_TABLE}) VALUES ('rebuild')")


def optimize(conn: Any) -> None:
    """Merge all index segments into one, dropping the entries of deleted memories."""
    conn.exec_driver_sql(f"INSERT INTO {FTS_TABLE}({FTS_TABLE}) VALUES ('optimize')")


def _word_terms(word: str) -> list[str]:
    """Terms of one whitespace-separated word: its non-stop parts, plus the whole compound as
    a phrase ("kr 4432") when it has two or more, so adjacent parts score higher."""
    parts = _TOKEN.findall(word)
    kept = [p for p in parts if p not in STOP_WORDS]
    return kept + ([" ".join(parts)] if len(kept) > 1 else [])


def query_terms(query: str) -> list[str]:
    """Distinct search terms of free text: NFKC, case-folded, stop words dropped."""
    text = unicodedata.normalize("NFKC", query).casefold()
    terms = [t for word in text.split() for t in _word_terms(word)]
    return list(dict.fromkeys(terms))[:MAX_QUERY_TERMS]


def match_expression(query: str) -> str | None:
    """A safe FTS5 MATCH string for ``query`` (every term quoted, joined by OR), or None
    when nothing searchable is left. Terms hold only letters, digits and spaces."""
    terms = query_terms(query)
    return " OR ".join(f'"{t}"' for t in terms) if terms else None


# -- scoring -------------------------------------------------------------------------------
# FTS5's bm25() uses idf = ln((N - n + 0.5) / (n + 0.5)) and clamps it to 1e-6 when a term is
# in half the rows or more, so in a small space ("based" in 100 of 200 facts, a word in 4 of
# one user's 8 sessions) such a term stops counting at all. Lucene's BM25 (and bm25s) add 1
# inside the log and keep it. Scores are recomputed with Lucene's idf from FTS5's own
# per-term scores: bm25 of a one-term match is idf_fts * g(tf, length), so g is recovered
# exactly by dividing by idf_fts (k1 = 1.2, b = 0.75, FTS5's length statistics).
RESCORE_POOL = 200  # candidates fetched by the OR match, then rescored


def fts_idf(n_rows: int, n_hit: int) -> float:
    n_hit = min(n_hit, n_rows)  # counted apart: a reader may see a writer's commit between
    idf = math.log((n_rows - n_hit + 0.5) / (n_hit + 0.5))
    return idf if idf > 0 else 1e-6


def lucene_idf(n_rows: int, n_hit: int) -> float:
    n_hit = min(n_hit, n_rows)
    return math.log(1 + (n_rows - n_hit + 0.5) / (n_hit + 0.5))


def rows_with(conn: Any, term: str) -> int:
    """How many rows hold ``term`` (a search term: letters, digits and spaces)."""
    return conn.exec_driver_sql(f"SELECT count(*) FROM {FTS_TABLE} WHERE {FTS_TABLE} MATCH ?",
                                (f'"{term}"',)).scalar() or 0


def rescore(conn: Any, terms: list[str], rowids: list[int]) -> dict[int, float]:
    """Lucene-idf BM25 of the candidate rows ``rowids`` for the quoted ``terms``.

    One query per term over all its hits gives both its row count (for the idf) and the
    candidates' one-term scores: ~10x faster than a count plus a ``rowid IN (...)`` match,
    which FTS5 answers by one seek per listed row (2,000 memories: 1.7 ms against 19 ms)."""
    if not rowids:
        return {}
    n_rows = conn.exec_driver_sql(f"SELECT count(*) FROM {FTS_TABLE}").scalar() or 0
    out = dict.fromkeys(rowids, 0.0)
    for t in terms:
        hits = conn.exec_driver_sql(
            f"SELECT rowid, bm25({FTS_TABLE}) FROM {FTS_TABLE} WHERE {FTS_TABLE} MATCH ?",
            (f'"{t}"',)).all()
        if not hits:
            continue
        scale = lucene_idf(n_rows, len(hits)) / fts_idf(n_rows, len(hits))
        for rowid, bm in hits:
            if rowid in out:
                out[rowid] += -bm * scale
    return out


def matched_terms(conn: Any, terms: list[str], rowids: list[int]) -> dict[int, set[str]]:
    """Which of the search ``terms`` each of ``rowids`` contains (rows with none left out):
    one FTS5 query per term. Fusion uses it to tell versions of one fact from memories that
    merely share common words with the question (runtime/fusion.py, ``subject_max``)."""
    want: set[int] = set(rowids)
    out: dict[int, set[str]] = {}
    for t in terms:
        hits = conn.exec_driver_sql(
            f"SELECT rowid FROM {FTS_TABLE} WHERE {FTS_TABLE} MATCH ?", (f'"{t}"',)).all()
        for r in want.intersection(h[0] for h in hits):
            out.setdefault(r, set()).add(t)
    return out


def rare_terms(conn: Any, text: str, n: int, exclude: set[str]) -> list[str]:
    """The ``n`` single-word terms of ``text`` (not in ``exclude``) found in the fewest rows,
    and in at least two (the memory itself and another): what is specific about a memory and
    links it to another (a name, a code), for query expansion."""
    words = [t for t in query_terms(text) if " " not in t and t not in exclude]
    hits = {t: rows_with(conn, t) for t in words}
    found = [t for t in words if hits[t] >= 2]  # a link: in the memory and in another one
    return sorted(found, key=lambda t: hits[t])[:n]
