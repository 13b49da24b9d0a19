# The default model's backbone forward (no LM head), float32 against bfloat16, on this CPU.
# python docs/results/bf16-forward-cpu.py   (output: bf16-forward-cpu.txt)
import time, torch, statistics, os
from transformers import AutoModelForCausalLM
p = os.path.expanduser("~/.cache/msa-agent/models/SmolLM2-135M-Instruct")
ms = {dt: AutoModelForCausalLM.from_pretrained(p, dtype=dt).eval() for dt in (torch.float32, torch.bfloat16)}
for T in (12, 256, 1000):
    ids = torch.randint(0, 1000, (1, T))
    for dt, m in ms.items():
        with torch.inference_mode():
            for _ in range(2): m.model(input_ids=ids)
            ts=[]
            for _ in range(5 if T>100 else 15):
                t=time.perf_counter(); m.model(input_ids=ids); ts.append(time.perf_counter()-t)
        print(dt, T, "%.1f ms" % (1e3*statistics.median(ts)), flush=True)
