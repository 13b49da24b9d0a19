"""Answering from memory: route (with interleave), read the memories, generate.

Reading modes:
- ``text``: the memories' original text is put in the prompt and re-read (exact; any model);
- ``full``: the memories' stored per-token pre-RoPE K/V are re-rotated at document-local
  positions and attended to in MSA layers, with no re-prefill (needs ``keep_full_kv``);
- ``pooled``: MSA-native, the 64x-pooled K/V of each layer's own top-k (MSA-trained models).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from msa_agent.model.attention import MemoryKV, rotate_memory
from msa_agent.store import Space, StoredMemory

READ_MODES = ("auto", "pooled", "full", "text")
# Space setting naming how pooled K were stored: "rope" = chunk means of post-RoPE K.
POOLED_K_SETTING, POOLED_K_ROPE = "pooled_k", "rope"
SYSTEM = "Answer the question in a few words, using the memories when they are relevant."


def pick_read(read: str, has_full: bool, msa_trained: bool) -> str:
    """Resolve ``auto``; refuse a mode the space or model cannot serve."""
    if read not in READ_MODES:
        raise ValueError(f"read must be one of {READ_MODES}, got {read!r}")
    if read == "full" and not has_full:
        raise ValueError("read='full' needs a space created with keep_full_kv=True")
    if read == "auto":
        return "pooled" if msa_trained else "text"
    return read


def prompt_ids(tokenizer: Any, question: str, memories: Sequence[str]) -> list[int]:
    """Chat-formatted prompt (when the tokenizer has a template); memories inline if given."""
    body = question
    if memories:
        lines = "\n".join(f"[{i + 1}] {t}" for i, t in enumerate(memories))
        body = f"Memories:\n{lines}\n\nQuestion: {question}"
    if getattr(tokenizer, "chat_template", None):
        msgs = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": body}]
        return list(tokenizer.apply_chat_template(msgs, add_generation_prompt=True,
                                                  tokenize=True, return_dict=False))
    return tokenizer(f"{SYSTEM}\n{body}\nAnswer:")["input_ids"]


def full_kv(
    model: Any, space: Space, memories: Sequence[StoredMemory], layers: Sequence[int]
) -> tuple[MemoryKV, int]:
    """Per-layer exact K/V of ``memories`` for ``full`` reading, and where the query starts.

    Stored K is pre-RoPE; each document is rotated at its own positions 0..len-1 and the
    active context starts after the longest one.
    """
    keys = [torch.from_numpy(a).float() for a in space.read("full_k", memories)]  # [S_i, L, H, D]
    vals = [torch.from_numpy(a).float() for a in space.read("full_v", memories)]
    device = next(model.parameters()).device
    positions = [torch.arange(k.shape[0]) for k in keys]
    mkv = MemoryKV()
    for j, layer in enumerate(layers):
        mkv.k[layer] = rotate_memory(model, [k[:, j].to(device) for k in keys], positions,
                                     layer)
        mkv.v[layer] = torch.cat([v[:, j] for v in vals]).transpose(0, 1)[None].to(device)
    return mkv, max(k.shape[0] for k in keys)


def pooled_kv(
    space: Space, per_layer: Mapping[int, Sequence[StoredMemory]], layers: Sequence[int],
    device: torch.device,
) -> tuple[MemoryKV, int]:
    """Per-layer pooled K/V, each MSA layer reading its own selected documents (the paper).

    Pooled K were rotated at document-local token positions before pooling (the encoder), so
    nothing is rotated here. The active context starts at position k, the number of selected
    documents: each document takes one slot (the paper's parallel and global RoPE).
    """
    if space.get_setting(POOLED_K_SETTING) != POOLED_K_ROPE:
        raise ValueError("this space stores pooled K before RoPE (made by msa-agent < 0.2); "
                         "read='pooled' needs a space re-created by this version")
    union = {m.id: m for sel in per_layer.values() for m in sel}
    arrays = {name: dict(zip(union, space.read(name, list(union.values()))))
              for name in ("pooled_k", "pooled_v")}
    mkv = MemoryKV()
    for j, layer in enumerate(layers):
        sel = per_layer.get(layer, ())
        if not sel:
            continue
        for name, out in (("pooled_k", mkv.k), ("pooled_v", mkv.v)):
            rows = [torch.from_numpy(arrays[name][m.id][:, j]).float() for m in sel]  # [C_i, H, D]
            out[layer] = torch.cat(rows).transpose(0, 1)[None].to(device)
    return mkv, max((len(sel) for sel in per_layer.values()), default=0)


def stop_ids(model: Any, tokenizer: Any) -> set[int]:
    """End-of-turn ids: the tokenizer's EOS and the generation config's (int or list)."""
    ids = {tokenizer.eos_token_id}
    gen = getattr(model, "generation_config", None)
    eos = getattr(gen, "eos_token_id", None)
    ids |= set(eos) if isinstance(eos, (list, tuple)) else {eos}
    return {i for i in ids if i is not None}


class Reader:
    """Everything generation needs once routing is done: prompt, memory K/V, start position.

    ``per_layer`` (``pooled`` reading) gives each MSA layer its own selected memories.
    """

    def __init__(self, engine: Any, space: Space, question: str, memories: Sequence[StoredMemory],
                 read: str, per_layer: Mapping[int, Sequence[StoredMemory]] | None = None
                 ) -> None:
        tok, model = engine.tokenizer, engine.lm.model
        self.read = read
        texts = [m.text for m in memories] if read == "text" else []
        self.prompt = prompt_ids(tok, question, texts)
        self.memory: MemoryKV | None = None
        self.start = 0
        self.memory_tokens = sum(m.n_tokens for m in memories)
        if read == "full" and memories:
            self.memory, self.start = full_kv(model, space, memories, engine.layers)
        elif read == "pooled" and per_layer:
            self.memory, self.start = pooled_kv(space, per_layer, engine.layers, engine.lm.device)
            chosen = {m.id: m for sel in per_layer.values() for m in sel}
            self.memory_tokens = sum(m.n_chunks for m in chosen.values())
