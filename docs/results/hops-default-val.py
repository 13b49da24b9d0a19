"""Validation only: default recall with hops=1 vs hops='auto' on ALL val questions."""
import json, sys, time
from pathlib import Path
from msa_agent import Memory
from msa_agent.bench import metrics
from msa_agent.bench.rescore import keys
from msa_agent.bench.tasks import build
from msa_agent.model.loader import load_model

lm = load_model(None)
out = []
for name in sys.argv[1:]:
    task = build(name, "full")
    val = [q for q in task.stages[-1].queries if q.split == "val"]
    path = Path(f"/tmp/tune/{name}-full")
    with Memory.open(path, lm, route_top_tokens=2) as mem:
        for hops in (1, "auto"):
            t = time.time()
            rankings = [keys(mem, q.text, q.namespace, hops=hops) for q in val]
            rows = metrics.score(val, rankings)
            out.append({"task": name, "hops": hops, "rows": rows, "s": time.time() - t})
            for r in rows:
                print(name, hops, r["kind"], f"R@1 {r['r1']:.3f} R@5 {r['r5']:.3f}",
                      f"newest {r.get('newest_first', float('nan')):.2f} n={r['n']}", flush=True)
    Path(f"/tmp/h12/hops-{name}.json").write_text(json.dumps(out, default=str, indent=1))
