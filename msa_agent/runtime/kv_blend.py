"""Re-encoding a few memory tokens in the reader's context (CacheBlend's idea).

Stored K/V are encoded one memory at a time: in a joint prefill each memory's tokens would
also see the memories laid out before them, and a reader not trained for MSA answers better
from that (docs/answering.md, "Where the K/V gap comes from"). :func:`blend` gives chosen
tokens that context back: it runs them through the model as a short prompt at their own
positions, each attending to every column before it in the layout (the frame's head, the
other memories' stored K/V, the chosen tokens before it, re-encoded), and writes their new
K/V over their stored rows in every layer that holds them. With every memory token chosen
this is exactly the joint prefill (tested); :func:`deviating` chooses the tokens whose
first layers change most in context, as CacheBlend does.

Only a sequential layout qualifies: there a memory column is its position.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext

import torch
from transformers import DynamicCache, PreTrainedModel

from msa_agent.model.attention import MemoryKV
from msa_agent.model.capture import StopForward, model_lock, stop_after
from msa_agent.runtime.generate import cache_kwarg, msa_attention


@torch.inference_mode()
def in_context(model: PreTrainedModel, memory: MemoryKV, ids: Sequence[int],
               cols: Sequence[int], layers: int | None = None) -> DynamicCache:
    """The local cache of ``ids`` run at positions ``cols`` (increasing) over ``memory``,
    each seeing the memory columns before its own except the other chosen ones, which it
    sees re-encoded (the local, causal part). ``layers``: run only the first ones."""
    device = next(model.parameters()).device
    col = torch.as_tensor(list(cols), device=device)
    n = max(t.shape[2] for t in memory.k.values())
    chosen = torch.zeros(n, dtype=torch.bool, device=device)
    chosen[col] = True
    cache = DynamicCache(config=model.config)
    stop = stop_after(model, layers - 1) if layers is not None else nullcontext()
    with model_lock(model), msa_attention(model), stop:
        memory.visible = (torch.arange(n, device=device)[None] < col[:, None]) & ~chosen[None]
        try:
            model.get_decoder()(input_ids=torch.tensor([list(ids)], device=device),
                                position_ids=col[None], use_cache=True, msa_memory=memory,
                                **{cache_kwarg(model): cache})
        except StopForward:
            pass
        finally:
            memory.visible = None
    return cache


def blend(model: PreTrainedModel, memory: MemoryKV, ids: Sequence[int],
          cols: Sequence[int]) -> None:
    """Re-encode the memory tokens ``ids`` at columns ``cols`` in context and write their
    K/V over the stored rows, in every layer whose memory reaches them."""
    if not cols:
        return
    cache = in_context(model, memory, ids, cols)
    col = torch.as_tensor(list(cols), device=cache.layers[0].keys.device)
    last = int(col.max())
    for layer, k in memory.k.items():
        if k.shape[2] > last:
            v = memory.v[layer]
            k[:, :, col] = cache.layers[layer].keys.to(k.dtype)
            v[:, :, col] = cache.layers[layer].values.to(v.dtype)
    memory.written()


def deviating(model: PreTrainedModel, memory: MemoryKV, ids: Sequence[int],
              cols: Sequence[int], share: float, layer: int = 1) -> list[int]:
    """Indices into ``cols`` of the ``share`` of tokens whose ``layer`` K/V change most when
    re-encoded in context (every token through the first ``layer + 1`` layers), in order."""
    take = round(share * len(cols))
    if take <= 0:
        return []
    cache = in_context(model, memory, ids, cols, layers=layer + 1)
    col = torch.as_tensor(list(cols), device=cache.layers[layer].keys.device)
    fresh_k, fresh_v = cache.layers[layer].keys, cache.layers[layer].values  # [1, Hkv, R, D]
    k, v = memory.k[layer][:, :, col], memory.v[layer][:, :, col]
    change = ((fresh_k - k).float().norm(dim=-1) + (fresh_v - v).float().norm(dim=-1)).sum(1)[0]
    return sorted(change.topk(take).indices.tolist())


def blend_share(model: PreTrainedModel, memory: MemoryKV, laid: Sequence[Sequence[int]],
                at: int, share: float) -> int:
    """Re-encode in context the ``share`` of the laid-out memory tokens whose K/V deviate
    most (all of them at 1). ``laid``: each memory's token ids in layout order, its rows
    one after another from column ``at``. Returns how many tokens were re-encoded."""
    ids = [i for part in laid for i in part]
    cols = list(range(at, at + len(ids)))
    pick = range(len(ids)) if share >= 1 else deviating(model, memory, ids, cols, share)
    blend(model, memory, [ids[j] for j in pick], [cols[j] for j in pick])
    return len(pick)
