"""A framed K/V read's layout and paging on CUDA: 16 memories of ~1k tokens, every layer of
the model's shape (30 x 3 heads x 64, bfloat16), laid out after a 60-token frame head and
paged for the kernel (``MemoryKV.paged`` of every layer, what the first forward does).
Wall ms per read with a sync at the end (median of 30, min) and the peak CUDA memory the
read allocates. Run from a tree's root: python3 THIS LABEL."""
import statistics, sys, time
from pathlib import Path
import torch
from msa_agent.bench.gpu_recall import random_model
from msa_agent.runtime.kv_frame import _framed, frame_head

dt, dev = torch.bfloat16, torch.device("cuda")
model, _ = random_model(Path(".gpu-model") if Path(".gpu-model").exists() else Path("../.gpu-model"),
                        dev, 0, "bfloat16")
cfg = model.config
L, H, D = cfg.num_hidden_layers, cfg.num_key_value_heads, cfg.hidden_size // cfg.num_attention_heads
g = torch.Generator(device=dev).manual_seed(0)
head = frame_head(model, tuple(torch.randn(60, L, H, D, device=dev, generator=g).to(dt) for _ in "kv"))
sizes = [1009 + 4 * i for i in range(16)]
fetched = [tuple(torch.randn(n, L, H, D, device=dev, generator=g).to(dt) for _ in "kv") for n in sizes]


def read() -> None:
    mkv, _ = _framed(model, head, fetched, list(range(L)), "parallel")
    for layer in range(L):
        mkv.paged(layer, dt)


for _ in range(3):
    read()
torch.cuda.synchronize()
base = torch.cuda.memory_allocated()
torch.cuda.reset_peak_memory_stats()
ts = []
for _ in range(30):
    t = time.perf_counter()
    read()
    torch.cuda.synchronize()
    ts.append((time.perf_counter() - t) * 1e3)
peak = (torch.cuda.max_memory_allocated() - base) / 2**20
print(f"| {sys.argv[1]} | {statistics.median(ts):.2f} | {min(ts):.2f} | {peak:.0f} |")
