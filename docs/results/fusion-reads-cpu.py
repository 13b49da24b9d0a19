# The store reads of one hybrid recall's fusion, timed one by one on a 2,000-memory space.
# python docs/results/fusion-reads-cpu.py TAG [TREE]   (TREE: a checkout to import instead,
# with msa_agent/store and msa_agent/kernels linked to its store/ and kernels/; the space is
# /tmp/sp-float32/m of recall-speed-2000-dtype-ab.txt). Prints one JSON line of p50 ms.
# READ_ONLY=1: open the space read_only=True (fusion-reads-cpu-read-only.txt).
import json, os, statistics, sys, time
from datetime import datetime, timezone
if len(sys.argv) > 2:
    sys.path.insert(0, sys.argv[2])
from msa_agent.store import Space  # noqa: E402
from msa_agent.store import meta  # noqa: E402

QUESTIONS = ["Which host runs the nightly backup job?", "Where did Anna park her car last week?",
             "Who founded the textile company in the river city?"]


def p50(f, n: int = 300) -> float:
    for _ in range(20):
        f()
    xs = []
    for _ in range(n):
        a = time.perf_counter()
        f()
        xs.append((time.perf_counter() - a) * 1e3)
    return statistics.median(xs)


with Space.open("/tmp/sp-float32/m", read_only=os.environ.get("READ_ONLY") == "1") as sp:
    ids = [m.id for m in sp.find(limit=100)]  # a fusion pool: 2 x 50 candidates at most
    now = datetime.now(timezone.utc)
    row = {"tag": sys.argv[1], "imported": meta.__file__, "memories": sp.count()}
    row["created_times(100)"] = statistics.median(p50(lambda: sp.created_times(ids)) for _ in QUESTIONS)
    row["matched_terms(q, 100)"] = statistics.median(p50(lambda q=q: sp.matched_terms(q, ids)) for q in QUESTIONS)
    row["get_many(16)"] = p50(lambda: sp.get_many(ids[:16]))
    row["get_many(2)"] = p50(lambda: sp.get_many(ids[:2]))
    row["expired(now, ns)"] = p50(lambda: sp.expired(now, "default"))
    row["lexical_search(q, 50)"] = statistics.median(p50(lambda q=q: sp.lexical_search(q, 50, "default")) for q in QUESTIONS)
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}))
