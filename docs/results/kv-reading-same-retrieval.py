import sys, json
from msa_agent import Memory
from msa_agent.bench.answers import pick
from msa_agent.bench.tasks import build
from msa_agent.model.loader import load_model
from msa_agent.runtime.results import Scope
name = sys.argv[1]
lm = load_model(None)
task = build(name, "quick")
single = [q for q in task.stages[-1].queries if q.hops == 1]
qs = pick(single, 30)
ms = {s: Memory.open(f"/tmp/h14/kv/{name}/{s}", lm) for s in ("bare", "chat")}
same = 0
for q in qs:
    keys = [tuple(h.memory.metadata["key"] for h in m._engine.recall(q.text, 5, Scope(namespace=q.namespace), 1)) for m in ms.values()]
    same += keys[0] == keys[1]
print(name, "same retrieval (keys, order):", same, "of", len(qs))
