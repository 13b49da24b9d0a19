"""Probe (val only): the lexical channel's idf counted within the query's namespace instead
of over the whole space (FTS5's own length normalisation, with the space's average length,
is kept). Runs the val tune on copies of the val spaces with store.lexical.rescore patched.

    python docs/results/fusion-val-namespace-idf.py --tasks sessions --tasks longmemeval \
        --mode full --work /tmp/tune-ns --out OUT.json

(/tmp/tune-ns: copies of /tmp/tune/{sessions,longmemeval}-full without their pools-,
matched- and msa-completed-val.json caches; 2-core CPU, ~2 min.)"""
import sys
from msa_agent.store import lexical
from msa_agent.store.lexical import FTS_TABLE, fts_idf, lucene_idf

def rescore_in_namespace(conn, terms, rowids):
    if not rowids:
        return {}
    marks = ",".join("?" * len(rowids))
    spaces = {r[0] for r in conn.exec_driver_sql(
        f"SELECT DISTINCT namespace FROM memories WHERE rowid IN ({marks})", tuple(rowids))}
    n_rows = conn.exec_driver_sql(f"SELECT count(*) FROM {FTS_TABLE}").scalar() or 0
    if len(spaces) == 1:
        (ns,) = spaces
        mine = {r[0] for r in conn.exec_driver_sql(
            "SELECT rowid FROM memories WHERE namespace = ?", (ns,))}
    else:
        mine = None
    out = dict.fromkeys(rowids, 0.0)
    for t in terms:
        hits = conn.exec_driver_sql(
            f"SELECT rowid, bm25({FTS_TABLE}) FROM {FTS_TABLE} WHERE {FTS_TABLE} MATCH ?",
            (f'"{t}"',)).all()
        if not hits:
            continue
        if mine is None:
            n, df = n_rows, len(hits)
        else:
            n, df = len(mine), sum(1 for r, _ in hits if r in mine)
        scale = lucene_idf(n, df) / fts_idf(n_rows, len(hits))
        for rowid, bm in hits:
            if rowid in out:
                out[rowid] += -bm * scale
    return out

lexical.rescore = rescore_in_namespace
from msa_agent.bench.tune import main  # noqa: E402
import typer  # noqa: E402
sys.argv = ["tune", *sys.argv[1:]]
typer.run(main)
