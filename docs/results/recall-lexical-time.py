import cProfile, pstats, io, time
from msa_agent import Memory
from msa_agent.bench.wiki import wiki_split
split = wiki_split(); qs = [a.description for a in split.questions[:60]]
mem = Memory.open("/tmp/spd/m")
eng = mem._engine; sc = mem._scope(None, None, alive=True)
for q in qs[:3]: eng._lexical(q, 50, sc, set())
t = time.perf_counter()
for q in qs: eng._lexical(q, 50, sc, set())
print("lexical ms", (time.perf_counter() - t) / len(qs) * 1000)
t = time.perf_counter()
for q in qs: eng._space.matched_terms(q, [])
pr = cProfile.Profile(); pr.enable()
for q in qs: eng._lexical(q, 50, sc, set())
pr.disable()
s = io.StringIO(); pstats.Stats(pr, stream=s).sort_stats("tottime").print_stats(15); print(s.getvalue())
