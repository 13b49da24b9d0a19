# The completed fusion scores' routing pass with and without the per-layer evidence, in one
# process, alternating: RoutingIndex.explain(ids, q) against explain(ids, q, evidence=False)
# for 50 memories of the 2,000-memory space (/tmp/sp-float32/m), one question's queries.
# python docs/results/explain-scores-alone-cpu.py
import json, statistics, time
from msa_agent import Memory

with Memory.open("/tmp/sp-float32/m", dtype="float32") as mem:
    eng = mem._engine
    ids = eng.index.doc_ids[:50]
    out = {}
    for question in ["Which river flows through the capital city of France",
                     "Who wrote the first published novel about a detective"]:
        q = eng.query(question)
        assert eng.index.explain(ids, q).scores == eng.index.explain(ids, q, evidence=False).scores
        times: dict[str, list[float]] = {"with evidence": [], "scores alone": []}
        for _ in range(300):
            for name, ev in (("with evidence", True), ("scores alone", False)):
                a = time.perf_counter()
                eng.index.explain(ids, q, evidence=ev)
                times[name].append((time.perf_counter() - a) * 1e3)
        out[question] = {k: round(statistics.median(v), 3) for k, v in times.items()}
    print(json.dumps({"memories": len(eng.index.doc_ids), "ids": len(ids), "p50_ms": out}))
