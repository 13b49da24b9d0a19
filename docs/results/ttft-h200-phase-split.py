"""H200: wall time of the memory path's pieces per answer (no syncs added), none/full/kv_chunks."""
import functools, sys, tempfile, time, statistics
from collections import defaultdict
from pathlib import Path
import torch
from msa_agent import Memory
from msa_agent.bench import ttft
from msa_agent.bench.gpu_recall import random_model, random_router
import msa_agent.runtime.recall as R, msa_agent.runtime.ask as A, msa_agent.runtime.answer as AN
import msa_agent.runtime.engine as E, msa_agent.runtime.kv_frame as KF, msa_agent.runtime.routing as RT
import msa_agent.model.attention as AT, msa_agent.runtime.extract as X
from msa_agent.store import space as SP

acc = defaultdict(float); calls = defaultdict(int)
def wrap(owner, name, label=None):
    f = getattr(owner, name); label = label or f"{getattr(owner,'__name__',owner)}.{name}"
    @functools.wraps(f)
    def g(*a, **k):
        t = time.perf_counter()
        try: return f(*a, **k)
        finally: acc[label] += time.perf_counter() - t; calls[label] += 1
    setattr(owner, name, g)
for n in ("_lexical", "_mask", "_completed", "_fused", "_evidence", "query", "_queries"):
    wrap(R.Recall, n)
for n in ("rank_many", "explain"): wrap(RT.RoutingIndex, n)
for n in ("created_times", "matched_terms", "get_many", "lexical_search", "expired"): wrap(SP.Space, n)
wrap(R, "fuse"); wrap(R, "superseded")
wrap(A, "newest_versions"); wrap(A, "decoding"); wrap(A, "read_notes")
wrap(AN.Reader, "__init__", "Reader.__init__")
for n in ("framed_read", "kv_window", "read_kv"): wrap(E.Engine, n)
wrap(KF, "_framed"); wrap(KF, "lay_out", "kv_frame.lay_out"); wrap(KF.KVFrame, "read")
wrap(AT, "_kernel_attention"); wrap(AT.MemoryKV, "paged"); wrap(AT.MemoryKV, "causal")
wrap(X.CopySpans, "__init__", "CopySpans.__init__"); wrap(X.CopySpans, "choose")

import os; DEV = os.environ.get("DEV", "cuda"); dev = torch.device(DEV)
work = Path(tempfile.mkdtemp())
pair = random_model(Path(".gpu-model"), dev, 0, os.environ.get("DT", "bfloat16"))
router = random_router(pair, dev, work / "router.safetensors", 0)
texts = ttft.memory_texts(pair[1], 16, 1000)
layers = sys.argv[1]; k = int(sys.argv[2])
mem = Memory.open(work / "space", model=pair, device=DEV, routing="learned",
                  router_path=str(router), dtype=os.environ.get("DT", "bfloat16"), full_kv_layers=layers,
                  **ttft.open_options(1000))
ttft.fill(mem, texts)
wrap(type(mem._engine.lm.model), "forward", "model.forward")
eng = mem._engine
Q = "What does the author say about how to start a startup?"
def ans(mode):
    eng.prefetcher.wait(60); torch.cuda.is_available() and torch.cuda.synchronize()
    t = time.perf_counter()
    s = mem.answer(Q, k=k, namespace=ttft.EMPTY_NAMESPACE if mode == "none" else None,
                   read="text" if mode == "none" else mode, max_new_tokens=1, stream=True)
    it = iter(s); next(it, None); dt = time.perf_counter() - t
    for _ in it: pass
    return dt
modes = ("none", "full", "kv_chunks")
for _ in range(3):
    for m in modes: ans(m)
N = int(os.environ.get("N", 20))
res = {}
for m in modes:
    acc.clear(); calls.clear(); ts = []
    for _ in range(N):
        ts.append(ans(m))
    res[m] = ({k2: 1000 * v / N for k2, v in acc.items()}, {k2: c / N for k2, c in calls.items()}, 1000 * statistics.median(ts))
labels = sorted({l for m in modes for l in res[m][0]})
print(f"## layers={layers} k={k}  ttft p50: " + "  ".join(f"{m} {res[m][2]:.1f}" for m in modes))
print("| piece | " + " | ".join(f"{m} ms (calls)" for m in modes) + " |")
for l in labels:
    print(f"| {l} | " + " | ".join(f"{res[m][0].get(l,0):.2f} ({res[m][1].get(l,0):.0f})" for m in modes) + " |")
