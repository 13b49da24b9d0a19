"""Metrics: recall@k of the gold set, newest-first, latency; answer accuracy and token F1.

A ranking is the list of memory keys a system returned for a query, best first (no
duplicates). For a multi-gold query, recall@k counts only when *all* gold keys are in the top
k. For a changed fact (``metric == "newest"``, gold = ``(new, old)``), recall@k is about the
new memory, and ``newest_first`` asks that the new one be in the top k and ranked above the
old one (an old one outside the top k counts as below).

Answers are compared after SQuAD's normalisation (lowercase, punctuation and the articles
a/an/the removed, whitespace collapsed): *accuracy* = the normalised gold answer occurs in the
normalised generated text as whole words; *token F1* = SQuAD's bag-of-tokens F1.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

from msa_agent.bench.tasks.base import Query

KS = (1, 5)


def hit_at(ranking: Sequence[str], query: Query, k: int) -> bool:
    """Whether the query counts as recalled at ``k``."""
    top = set(ranking[:k])
    gold = query.gold[:1] if query.metric == "newest" else query.gold
    return all(g in top for g in gold)


def newest_first(ranking: Sequence[str], query: Query, k: int = 5) -> bool:
    """For a changed fact: the new memory is in the top ``k`` and ranked above the old one."""
    new, old = query.gold[0], query.gold[1]
    top = list(ranking[:k])
    if new not in top:
        return False
    return old not in top or top.index(new) < top.index(old)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in [0, 100]) of ``values``; nan when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def score(queries: Sequence[Query], rankings: Sequence[Sequence[str]]) -> list[dict[str, Any]]:
    """One row per (split, kind) and per (split, ``"all"``): n, r1, r5 (+ newest_first)."""
    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, q in enumerate(queries):
        groups[q.split, q.kind].append(i)
        groups[q.split, "all"].append(i)
    rows = []
    for (split, kind), idx in sorted(groups.items()):
        row: dict[str, Any] = {"split": split, "kind": kind, "n": len(idx)}
        for k in KS:
            row[f"r{k}"] = sum(hit_at(rankings[i], queries[i], k) for i in idx) / len(idx)
        newest = [i for i in idx if queries[i].metric == "newest"]
        if newest:
            row["newest_first"] = sum(newest_first(rankings[i], queries[i])
                                      for i in newest) / len(newest)
        rows.append(row)
    return rows


_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lowercase, strip punctuation, drop articles, collapse spaces."""
    return " ".join(_ARTICLES.sub(" ", text.lower().translate(_PUNCT)).split())


def answer_hit(generated: str, gold: str) -> bool:
    """Whether the normalised ``gold`` occurs in the normalised ``generated`` as whole words."""
    g = normalize_answer(gold)
    return bool(g) and f" {g} " in f" {normalize_answer(generated)} "


def token_f1(generated: str, gold: str) -> float:
    """SQuAD token F1 between the normalised texts (0 when either is empty)."""
    pred, ref = normalize_answer(generated).split(), normalize_answer(gold).split()
    same = sum((Counter(pred) & Counter(ref)).values())
    if not same:
        return 0.0
    precision, recall = same / len(pred), same / len(ref)
    return 2 * precision * recall / (precision + recall)


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def score_answers(outputs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (split, kind) and (split, ``"all"``) of one system's graded answers.

    ``outputs``: dicts with ``split``, ``kind``, ``skipped`` and, when answered, ``correct``,
    ``f1``, ``ms``, ``truncated``, ``gold_in_context``, ``prompt_tokens``. Accuracy, F1 and
    latency are over the answered questions; ``skipped`` counts the others (never dropped).
    """
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for o in outputs:
        groups[o["split"], o["kind"]].append(o)
        groups[o["split"], "all"].append(o)
    rows = []
    for (split, kind), group in sorted(groups.items()):
        done = [o for o in group if not o["skipped"]]
        ms = [o["ms"] for o in done]
        rows.append({
            "split": split, "kind": kind, "n": len(group), "answered": len(done),
            "skipped": len(group) - len(done),
            "truncated": sum(bool(o.get("truncated")) for o in done),
            "accuracy": _mean([float(o["correct"]) for o in done]),
            "f1": _mean([o["f1"] for o in done]),
            "gold_in_context": _mean([float(o["gold_in_context"]) for o in done]),
            "prompt_tokens": _mean([o["prompt_tokens"] for o in done]),
            "p50_ms": percentile(ms, 50) if ms else None,
            "p95_ms": percentile(ms, 95) if ms else None})
    return rows
