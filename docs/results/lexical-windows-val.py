"""Probe (val only): the lexical channel scored over ~4-line windows, a memory's score its best
window (MaxP), instead of BM25 over the whole memory.

Reads the tune's cached val pools of the default (/tmp/tune/TASK-full/*.qbf16: routing queries
from the bfloat16 copy), replaces the lexical pool by one from an in-memory FTS5 index of the
val memories' windows (same tokenizer, same Lucene-idf rescoring, idf counted over every
window of the space as the runtime counts it over every memory), and fuses with the default
setting. MSA scores of candidates outside both cached pools are read from the space.

    python docs/results/lexical-windows-val.py OUT.json
"""
import json
import sys
from pathlib import Path

import sqlalchemy as sa

from msa_agent.bench import metrics
from msa_agent.bench.systems import dedupe, windows
from msa_agent.bench.tasks import build
from msa_agent.bench.tasks.base import memory_time
from msa_agent.bench.tune import K, _fusion
from msa_agent.runtime.fusion import LEXICAL, MSA, completed, fuse
from msa_agent.store import lexical

TASKS = ("facts", "sessions", "wiki", "longmemeval")
DEFAULT = _fusion("sum", 2.0, 60, 0.0, 0.5, 2, 0.5)


def space_rows(path: Path) -> list[tuple[str, str, str, str]]:
    import sqlite3
    con = sqlite3.connect(path / "meta.sqlite")
    rows = con.execute("select id, namespace, text, json_extract(metadata, '$.key') "
                       "from memories").fetchall()
    con.close()
    return rows


def window_index(rows, lines: int):
    eng = sa.create_engine("sqlite://")
    conn = eng.connect()
    conn.exec_driver_sql(f"CREATE VIRTUAL TABLE {lexical.FTS_TABLE} USING fts5(text, "
                         f"tokenize='{lexical.TOKENIZER}')")
    owner, by_ns = {}, {}
    for mid, ns, text, _ in rows:
        wins = windows(text, lines=lines, stride=max(1, lines // 2)) if lines else [text]
        for w in wins:
            r = conn.exec_driver_sql(f"INSERT INTO {lexical.FTS_TABLE}(text) VALUES (?)",
                                     (w,)).lastrowid
            owner[r] = mid
            by_ns.setdefault(ns, []).append(r)
    return conn, owner, by_ns


def window_pool(conn, owner, by_ns, q, pool: int = 50):
    terms = lexical.query_terms(q.text)
    scores = lexical.rescore(conn, terms, by_ns.get(q.namespace, []))
    best: dict[str, float] = {}
    for r, s in scores.items():
        if s > 0:
            best[owner[r]] = max(best.get(owner[r], 0.0), s)
    return sorted(best.items(), key=lambda x: -x[1])[:pool]


def main(out: str) -> None:
    from msa_agent import Memory

    report = {"script": "docs/results/lexical-windows-val.py", "results": []}
    for name in TASKS:
        task = build(name, "full")
        val = [q for q in task.stages[-1].queries if q.split == "val"]
        path = Path(f"/tmp/tune/{name}-full")
        pools = json.loads((path / "pools-val.json.qbf16").read_text())
        matched = json.loads((path / "matched-val.json.qbf16").read_text())
        extra = json.loads((path / "msa-completed-val.json.qbf16").read_text())
        when = {m.key: memory_time(m) for m in task.stages[-1].memories}
        rows = space_rows(path)
        key_of = {mid: key for mid, _, _, key in rows}
        variants = {"whole (default)": None, "windows 4 lines": 4, "windows 8 lines": 8,
                    "windows 2 lines": 2}
        with Memory.open(path, None, read_only=True) as mem:
            engine = mem._engine
            for label, lines in variants.items():
                if lines is None:
                    lex = [p["pools"][LEXICAL] for p in pools]
                else:
                    conn, owner, by_ns = window_index(rows, lines)
                    lex = [window_pool(conn, owner, by_ns, q) for q in val]
                rankings, missing = [], 0
                for q, p, m, e, lp in zip(val, pools, matched, extra, lex):
                    have = {i for i, _ in p["pools"][MSA]} | {i for i, _ in e}
                    need = [i for i, _ in lp if i not in have]
                    if need:
                        missing += len(need)
                        e = e + engine.routing_scores(need, have, engine.query(q.text))
                    msa = completed(p["pools"][MSA], [tuple(x) for x in e])
                    ids = {i for i, _ in msa} | {i for i, _ in lp}
                    created = {i: when[key_of[i]] for i in ids}
                    ranked = fuse({MSA: msa, LEXICAL: lp}, created, DEFAULT, m)
                    rankings.append(dedupe([key_of[r.id] for r in ranked], K))
                res = metrics.score(val, rankings)
                a = next(r for r in res if r["kind"] == "all")
                print(f"{name:12s} {label:18s} R@1 {a['r1']:.3f} R@5 {a['r5']:.3f} "
                      f"missing {missing}", flush=True)
                report["results"].append({"task": name, "row": label, "rows": res,
                                          "msa_scores_read": missing})
    Path(out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main(sys.argv[1])
