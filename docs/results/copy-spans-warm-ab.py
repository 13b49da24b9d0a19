"""Warm build of the extractive constraint with a question, 16 memories of ~1,000 tokens."""
import json, statistics, sys, time, torch
torch.set_num_threads(1)
from transformers import AutoTokenizer
import msa_agent
from msa_agent.bench import ttft
from msa_agent.runtime.extract import decoding
tok = AutoTokenizer.from_pretrained(sys.argv[1])
texts = ttft.memory_texts(tok, 16, 1000)
qs = [f"What did the essay say about startups and hiring number {i}?" for i in range(200)]
decoding(tok, "extractive", texts, qs[0])  # cold: per-text parts cached
ts = []
for q in qs:
    t = time.perf_counter(); decoding(tok, "extractive", texts, q); ts.append(1000 * (time.perf_counter() - t))
print(json.dumps({"package": msa_agent.__file__, "warm_with_question_ms_p50": statistics.median(ts),
                  "n": len(ts)}))
