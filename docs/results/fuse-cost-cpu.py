"""fuse over 100 candidates (1-5 matched query words each), without and with more_words_within,
alternating in one process: medians of 7 runs of 200 calls.  python docs/results/fuse-cost-cpu.py"""
import random, time
from datetime import datetime, timedelta, timezone
from msa_agent.runtime.fusion import Fusion, fuse, MSA, LEXICAL
rng = random.Random(0)
ids = [f"m{i}" for i in range(100)]
T0 = datetime(2024,1,1,tzinfo=timezone.utc)
created = {i: T0 + timedelta(hours=rng.randint(0, 1000)) for i in ids}
r = {MSA: sorted(((i, rng.random()) for i in ids[:50]), key=lambda x: -x[1]),
     LEXICAL: sorted(((i, rng.random()*10) for i in ids[50:]), key=lambda x: -x[1])}
words = {i: set(rng.sample("abcdefgh", rng.randint(1, 5))) for i in ids}
kw = dict(weights=((MSA,1.0),(LEXICAL,2.0)), newer_within=0.5, subject_max=2, cover=0.5)
res = {"off": [], "on": []}
for rep in range(7):
    for name, f in (("off", Fusion("sum", **kw)), ("on", Fusion("sum", **kw, more_words_within=0.05))):
        t = time.perf_counter()
        for _ in range(200): fuse(r, created, f, words)
        res[name].append((time.perf_counter() - t) / 200 * 1e6)
for k, v in res.items(): print(k, "median us:", round(sorted(v)[3], 1))
