"""Greedy generation that reads memories through the registered ``msa`` attention.

The memory K/V (a :class:`MemoryKV`) is prepended in MSA layers at every step; the local
cache holds only the active context (prompt + generated tokens), whose positions start at
``start`` (after the memories' document-local positions, as in the paper's parallel RoPE).

Threads: each step runs under the model's lock (:func:`~msa_agent.model.capture.model_lock`)
with the ``msa`` attention switched on for that step only, and nothing is held between
steps, so a stream that its caller pauses blocks no one and encoders never see the switch.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from transformers import DynamicCache, PreTrainedModel

from msa_agent.model.attention import MSA_ATTENTION, MemoryKV
from msa_agent.model.capture import model_lock
from msa_agent.runtime.extract import CopySpans


@contextmanager
def msa_attention(model: PreTrainedModel) -> Iterator[None]:
    """Switch the model to the ``msa`` attention for the block (restored afterwards)."""
    text = getattr(model.config, "text_config", None)
    configs = [model.config] + ([text] if text is not None and text is not model.config else [])
    before = {id(c): c._attn_implementation for c in configs}
    for c in configs:
        c._attn_implementation = MSA_ATTENTION
    try:
        yield
    finally:
        for c in configs:
            c._attn_implementation = before[id(c)]


@torch.inference_mode()
def greedy(
    model: PreTrainedModel,
    prompt: Sequence[int],
    max_new_tokens: int,
    stop: set[int],
    memory: MemoryKV | None = None,
    start: int = 0,
    copy: CopySpans | None = None,
) -> Iterator[int]:
    """Yield generated token ids one by one (argmax), stopping at a ``stop`` id. With
    ``copy``, the argmax over the tokens that continue a span of its texts (extractive)."""
    device = next(model.parameters()).device
    ids = torch.tensor([list(prompt)], device=device)
    pos = torch.arange(start, start + ids.shape[1], device=device).view(1, -1)
    cache = DynamicCache(config=model.config)
    extra: dict = {"msa_memory": memory} if memory is not None else {}
    extra[cache_kwarg(model)] = cache
    lock = model_lock(model)
    for _ in range(max_new_tokens):
        with lock, msa_attention(model):  # one step; released before the token is yielded
            out = model(input_ids=ids, position_ids=pos, use_cache=True, **extra)
        logits = out.logits[0, -1]
        token = copy.choose(logits, stop) if copy is not None else int(logits.argmax())
        if token is None or token in stop:
            return
        yield token
        ids = torch.tensor([[token]], device=device)
        pos = pos[:, -1:] + 1


def cache_kwarg(model: PreTrainedModel) -> str:
    """``cache`` on newer transformers, ``past_key_values`` on older ones."""
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"
