"""Host time of the memory attention per layer on CUDA, as a prefill calls it: 30 layers of
a [1, 9, 22, 64] bf16 query over 16k memory tokens in pages, one sync at the end. The host
bounds this loop (the GPU work per layer is a few microseconds), so wall time per layer is
the host's time per layer. Beside it, transformers' SDPA path over the local keys alone
(what a layer without memory costs). Run from a tree's root: python3 THIS [label]."""
import sys, time, statistics
from types import SimpleNamespace
import torch
import msa_agent.model.attention as AT
from transformers.integrations.sdpa_attention import sdpa_attention_forward

dev, dt = "cuda", torch.bfloat16
H, HKV, D, T, S, LAYERS = 9, 3, 64, 22, 16000, 30
torch.manual_seed(0)
mkv = AT.MemoryKV()
k = torch.randn(LAYERS, HKV, S, D, device=dev, dtype=dt)
mkv.put(list(range(LAYERS)), k, k.clone())
q = torch.randn(1, T, H, D, device=dev, dtype=dt).transpose(1, 2)  # as a model's q_proj view
kl = torch.randn(1, T, HKV, D, device=dev, dtype=dt).transpose(1, 2)
mods = [SimpleNamespace(layer_idx=i, sinks=None, is_causal=True, training=False,
                        num_key_value_groups=H // HKV, config=SimpleNamespace())
        for i in range(LAYERS)]


def memory_layers() -> None:
    for m in mods:
        AT.msa_attention_forward(m, q, kl, kl, None, 0.0, D ** -0.5, msa_memory=mkv)


def sdpa_layers() -> None:
    for m in mods:
        sdpa_attention_forward(m, q, kl, kl, None, 0.0, D ** -0.5)


def per_layer_us(fn, rounds: int = 200, reps: int = 7) -> tuple[float, float]:
    fn(); torch.cuda.synchronize()
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        for _ in range(rounds):
            fn()
        torch.cuda.synchronize()
        out.append((time.perf_counter() - t) / rounds / LAYERS * 1e6)
    return statistics.median(out), min(out)


label = sys.argv[1] if len(sys.argv) > 1 else "tree"
for name, fn in (("memory attention", memory_layers), ("sdpa, no memory", sdpa_layers)):
    med, lo = per_layer_us(fn)
    print(f"| {label} | {name} | {med:.1f} | {lo:.1f} |")
