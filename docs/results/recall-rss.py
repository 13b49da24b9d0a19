# Resident memory of a float32 space opened with routing_query_dtype=M after one recall.
# python docs/results/recall-rss.py M   (needs the space /tmp/sp-float32 of recall-speed-2000-dtype-ab.txt)
import resource, sys, tempfile
from msa_agent import Memory
mode = sys.argv[1]
mem = Memory.open("/tmp/sp-float32/m", dtype="float32", routing_query_dtype=mode)
mem.recall("Which river flows through the capital city of France", k=5)
import psutil, os
print(mode, "rss MB %.0f" % (psutil.Process(os.getpid()).memory_info().rss / 2**20),
      "maxrss MB %.0f" % (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))
