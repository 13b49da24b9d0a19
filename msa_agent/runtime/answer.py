"""Answering from memory: route (with interleave), read the memories, generate.

Reading modes:
- ``text``: the memories' original text is put in the prompt and re-read (exact; any model);
- ``chunks``: per memory only the chunk that matches the question and its neighbours, as
  text (``msa_agent.runtime.excerpt``): a small reader is not buried in whole sessions;
- ``full``: the memories' stored per-token pre-RoPE K/V are re-rotated at document-local
  positions and attended to in the layers that kept them (the MSA layers, or every layer with
  ``full_kv_layers="all"``), with no re-prefill (needs ``keep_full_kv``);
- ``kv_chunks``: as ``full``, but only the rows of each memory's chunk window (the tokens a
  ``chunks`` read shows as text): K/V reading with the sparsity of ``chunks``;
- ``pooled``: MSA-native, the 64x-pooled K/V of each layer's own top-k (MSA-trained models).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

import torch

from msa_agent.config import READ_MODES
from msa_agent.errors import InvalidInputError
from msa_agent.model.attention import MemoryKV, paged_buffers, rope_tables, rotate_with
from msa_agent.model.loader import LoadedModel
from msa_agent.runtime.residency import Candidates
from msa_agent.store import StoredMemory

TEXT_READS = ("text", "chunks")  # modes that put memory text in the prompt
KV_READS = ("full", "kv_chunks")  # modes that read the stored per-token K/V
WINDOW_READS = ("chunks", "kv_chunks")  # modes that read each memory's chunk window
KV = tuple[torch.Tensor, torch.Tensor]
# Space setting naming how pooled K were stored: "rope" = chunk means of post-RoPE K.
POOLED_K_SETTING, POOLED_K_ROPE = "pooled_k", "rope"
SYSTEM = "Answer the question in a few words, using the memories when they are relevant."
# The system line when memories are dated (changed facts); by time, it also says the order.
SYSTEM_DATED = SYSTEM + " The memories are dated; when they disagree, the newest one is right."
SYSTEM_DATED_BY_TIME = (SYSTEM + " The memories are dated and listed oldest first; when they "
                        "disagree, the newest one is right.")


def pick_read(read: str, has_full: bool, msa_trained: bool, reads_like_text: bool = False,
              kv_sooner: bool = True) -> str:
    """Resolve ``auto``; refuse a mode the space or model cannot serve.

    ``auto``: ``pooled`` for an MSA checkpoint; else the question's chunk windows
    (``chunks``: best on the full sessions' val split), read as their stored K/V
    (``kv_chunks``) where that K/V reads like the text (``reads_like_text``: chat-framed and
    kept in every layer) and reading it reaches the first token sooner than re-reading the
    windows' text (``kv_sooner``, :meth:`Engine.kv_first_sooner`): the two read as well on val
    at the answer's default k (docs/answering.md)."""
    if read not in READ_MODES:
        raise InvalidInputError(f"read must be one of {READ_MODES}, got {read!r}")
    if read in KV_READS and not has_full:
        raise InvalidInputError(f"read={read!r} needs a space created with keep_full_kv=True")
    if read == "auto":
        return "pooled" if msa_trained else \
            "kv_chunks" if reads_like_text and kv_sooner else "chunks"
    return read


# One worked example of the short-answer format, shown before the question when a prompt
# has memories: generic agent memory, unlike any benchmark's wording or names.
EXAMPLE = (("My dentist appointment moved to Friday at 10.",
            "I bought a blue bicycle for the commute."),
           "When is my dentist appointment?", "Friday at 10")


def _body(question: str, memories: Sequence[str]) -> str:
    if not memories:
        return question
    lines = "\n".join(f"[{i + 1}] {t}" for i, t in enumerate(memories))
    return f"Memories:\n{lines}\n\nQuestion: {question}"


def prompt_ids(tokenizer: Any, question: str, memories: Sequence[str],
               system: str = SYSTEM, example: bool = False) -> list[int]:
    """Chat-formatted prompt (when the tokenizer has a template); memories inline if given.
    ``example``: a worked example turn (``EXAMPLE``) first, when there are memories."""
    return _prompt(tokenizer, question, memories, system, example, tokenize=True)


def prompt_text(tokenizer: Any, question: str, memories: Sequence[str],
                system: str = SYSTEM, example: bool = False) -> str:
    """:func:`prompt_ids` as text (special tokens written out), before tokenization."""
    return _prompt(tokenizer, question, memories, system, example, tokenize=False)


def _prompt(tokenizer: Any, question: str, memories: Sequence[str], system: str,
            example: bool, tokenize: bool) -> Any:
    shots = [(_body(EXAMPLE[1], EXAMPLE[0]), EXAMPLE[2])] if example and memories else []
    body = _body(question, memories)
    if getattr(tokenizer, "chat_template", None):
        msgs = [{"role": "system", "content": system}]
        for asked, answered in shots:
            msgs += [{"role": "user", "content": asked},
                     {"role": "assistant", "content": answered}]
        msgs.append({"role": "user", "content": body})
        out = tokenizer.apply_chat_template(msgs, add_generation_prompt=True,
                                            tokenize=tokenize, return_dict=False)
        return list(out) if tokenize else out
    lead = "".join(f"{asked}\nAnswer: {answered}\n\n" for asked, answered in shots)
    text = f"{system}\n{lead}{body}\nAnswer:"
    return tokenizer(text)["input_ids"] if tokenize else text


def dated(text: str, when: datetime | None) -> str:
    """A memory as the reader sees it: its date first, so it can tell versions apart."""
    return f"({when:%Y-%m-%d}) {text}" if when is not None else text


ORDERS = ("rank", "reverse", "time")  # recall's order, best last, oldest first
# How a text read shows memories, chosen on validation (docs/answering.md, "Reading text"):
# best last, dated, after one worked example of the short-answer format.
DATED, ORDER, WORKED_EXAMPLE = True, "reverse", True


def arranged_order(times: Sequence[datetime], order: str = ORDER) -> list[int]:
    """Where each shown memory comes from: ``idx[i]`` is the rank (best first) of the
    memory that :func:`arrange` shows ``i``-th, given the memories' ``times``."""
    if order not in ORDERS:
        raise InvalidInputError(f"order must be one of {ORDERS}, got {order!r}")
    idx = list(range(len(times)))
    if order == "time":
        idx.sort(key=lambda i: times[i])
    elif order == "reverse":
        idx.reverse()
    return idx


def arrange(texts: Sequence[str], times: Sequence[datetime], order: str = ORDER,
            with_dates: bool = DATED) -> tuple[list[str], str]:
    """Memory texts (given best first) as a text read shows them, and the system line.

    ``order``: ``"rank"`` as given, ``"reverse"`` best last (next to the question),
    ``"time"`` oldest first, so a changed fact's newest version is read last (a stable sort:
    same-time memories keep their rank). ``with_dates``: each text starts with its date and
    the system line says that the newest of disagreeing memories is right. The benchmark's
    RAG rows use this same rule, so every reader sees one frame.
    """
    if not texts:
        return [], SYSTEM  # the question alone
    idx = arranged_order(times, order)
    if not with_dates:
        return [texts[i] for i in idx], SYSTEM
    system = SYSTEM_DATED_BY_TIME if order == "time" else SYSTEM_DATED
    return [dated(texts[i], times[i]) for i in idx], system


def full_kv(model: Any, fetched: Sequence[KV], layers: Sequence[int]) -> tuple[MemoryKV, int]:
    """Per-layer exact K/V for ``full`` reading, and where the query starts.

    ``fetched``: each memory's stored (pre-RoPE) ``(K, V)`` ``[S_i, L, Hkv, D]`` on the
    model's device. Each document is rotated at its own positions 0..len-1, straight into its
    slot of one ``[L, Hkv, sum S_i, D]`` buffer (``rotate_with``), and the active context
    starts after the longest one. Each layer's K/V are views ``[1, Hkv, sum S_i, D]``.
    """
    k0 = fetched[0][0]
    total = sum(k.shape[0] for k, _ in fetched)
    keys, values, pages = paged_buffers(k0, len(layers), k0.shape[2], total, k0.shape[3])
    lay_out(model, fetched, [0] * len(fetched), layers, keys, values)
    mkv = MemoryKV()
    mkv.put(layers, keys, values, pages)
    return mkv, max(k.shape[0] for k, _ in fetched)


def lay_out(model: Any, fetched: Sequence[KV], starts: Sequence[int], layers: Sequence[int],
            keys: torch.Tensor, values: torch.Tensor, at: int = 0,
            together: bool | None = None) -> None:
    """Write each memory's pre-RoPE K ``[S_i, F, Hkv, D]``, rotated at positions
    ``start..start+S_i-1``, and its V into ``keys``/``values`` ``[F, Hkv, ., D]``, one memory
    after another from column ``at``.

    ``together`` (default: on CUDA) rotates all memories in one pass over their concatenated
    K, with one RoPE table row per token: a handful of launches instead of five per memory
    (16 memories: ~2 ms of a first token on an H200, where launches bound the time), at the
    cost of one temporary copy of the K. Apart (the CPU's default, where that copy is what
    costs) each memory is rotated straight into its slot (``rotate_with``) from one RoPE table
    covering every memory's positions. Both write the same values."""
    if not fetched:
        return
    if keys.is_cuda if together is None else together:
        _lay_out_together(model, fetched, starts, layers, keys, values, at)
        return
    lo = min(starts)
    hi = max(start + k.shape[0] for (k, _), start in zip(fetched, starts))
    tables = rope_tables(model, keys, torch.arange(lo, hi), list(layers))
    for (k, v), start in zip(fetched, starts):
        n, a = k.shape[0], start - lo
        rotate_with(k, [(g, cos[a:a + n], sin[a:a + n]) for g, cos, sin in tables],
                    keys[:, :, at:at + n])
        values[:, :, at:at + n] = v.permute(1, 2, 0, 3)
        at += n


def _lay_out_together(model: Any, fetched: Sequence[KV], starts: Sequence[int],
                      layers: Sequence[int], keys: torch.Tensor, values: torch.Tensor,
                      at: int) -> None:
    """:func:`lay_out` in one pass: K ``[sum S_i, F, Hkv, D]`` concatenated, rotated by the
    RoPE rows of every token's own position; V concatenated straight into its columns."""
    total = sum(k.shape[0] for k, _ in fetched)
    positions = torch.cat([torch.arange(s, s + k.shape[0]) for (k, _), s in zip(fetched, starts)])
    rotate_with(torch.cat([k for k, _ in fetched]), rope_tables(model, keys, positions,
                                                                list(layers)),
                keys[:, :, at:at + total])
    torch.cat([v.permute(1, 2, 0, 3) for _, v in fetched], dim=2,
              out=values[:, :, at:at + total])


def pooled_kv(
    fetched: Mapping[str, KV], per_layer: Mapping[int, Sequence[StoredMemory]],
    layers: Sequence[int],
) -> tuple[MemoryKV, int]:
    """Per-layer pooled K/V, each MSA layer reading its own selected documents (the paper).

    ``fetched``: pooled ``(K, V)`` ``[C_i, L, Hkv, D]`` by memory id, on the model's device.
    Pooled K were rotated at document-local token positions before pooling (the encoder), so
    nothing is rotated here. The active context starts at position k, the number of selected
    documents: each document takes one slot (the paper's parallel and global RoPE).
    """
    mkv = MemoryKV()
    for j, layer in enumerate(layers):
        sel = per_layer.get(layer, ())
        if sel:
            mkv.k[layer] = torch.cat([fetched[m.id][0][:, j] for m in sel]).transpose(0, 1)[None]
            mkv.v[layer] = torch.cat([fetched[m.id][1][:, j] for m in sel]).transpose(0, 1)[None]
    return mkv, max((len(sel) for sel in per_layer.values()), default=0)


def check_pooled_layout(layout: str | None) -> None:
    """Refuse pooled reading of a space whose pooled K were not all stored after RoPE."""
    if layout != POOLED_K_ROPE:
        raise InvalidInputError(
            f"this space's pooled K are {layout!r} (bundles of another layout were imported); "
            "read='pooled' needs a space whose pooled K are all post-RoPE chunk means")


def stop_ids(model: Any, tokenizer: Any) -> set[int]:
    """End-of-turn ids: the tokenizer's EOS and the generation config's (int or list)."""
    ids = {tokenizer.eos_token_id}
    gen = getattr(model, "generation_config", None)
    eos = getattr(gen, "eos_token_id", None)
    ids |= set(eos) if isinstance(eos, (list, tuple)) else {eos}
    return {i for i in ids if i is not None}


class MemorySource(Protocol):
    """What a reader needs of the runtime (the engine): the model and the memories' K/V."""

    lm: LoadedModel
    tokenizer: Any
    layers: list[int]
    full_layers: list[int]

    @property
    def pooled_layout(self) -> str | None: ...

    def read_kv(self, kind: str, memories: Sequence[StoredMemory], widen: bool = True,
                rows: Sequence[tuple[int, int]] | None = None) -> list[KV]: ...

    def framed_read(self, question: str, memories: Sequence[StoredMemory],
                    rows: Sequence[tuple[int, int]] | None = None
                    ) -> tuple[MemoryKV, int, list[int]] | None: ...

    def prefetch(self, kind: str, candidates: Candidates, keep: Iterable[str]) -> None: ...


class Selection(dict[int, list[StoredMemory]]):
    """Each MSA layer's selected memories (a ``per_layer`` mapping), and ``ahead``: what to
    prefetch once they are read (the generative interleave's next round, whose reader is
    built from the selection alone)."""

    def __init__(self, chosen: Mapping[int, Sequence[StoredMemory]],
                 ahead: Candidates | None = None) -> None:
        super().__init__({layer: list(sel) for layer, sel in chosen.items()})
        self.ahead = ahead


class Reader:
    """Everything generation needs once routing is done: prompt, memory K/V, start position.

    ``per_layer`` (``pooled`` reading) gives each MSA layer its own selected memories.
    """

    def __init__(self, engine: MemorySource, question: str, memories: Sequence[StoredMemory],
                 read: str, per_layer: Mapping[int, Sequence[StoredMemory]] | None = None,
                 notes: Sequence[str] = (), system: str = SYSTEM,
                 ahead: Candidates | None = None,
                 rows: Sequence[tuple[int, int]] | None = None) -> None:
        """``notes``: the memory text a ``text`` or ``chunks`` read puts in the prompt.
        ``rows``: per memory, the token rows ``[a, b)`` a ``kv_chunks`` read attends to
        (its chunk window; every row when None).
        ``ahead`` (or a :class:`Selection`'s): the memories to prefetch once a K/V read is
        done and :meth:`prefetch_next` is called (ranked on the worker, not here)."""
        tok, model = engine.tokenizer, engine.lm.model
        self.read = read
        self.memory: MemoryKV | None = None
        self.start = 0
        rows = rows if read == "kv_chunks" else None
        self.memory_tokens = (
            sum(len(tok(n, add_special_tokens=False)["input_ids"]) for n in notes)
            if read == "chunks" else sum(b - a for a, b in rows) if rows is not None
            else sum(m.n_tokens for m in memories))
        kv_read = read in KV_READS and bool(memories)
        framed = engine.framed_read(question, memories, rows) if kv_read else None
        self.prompt = framed[2] if framed is not None else prompt_ids(
            tok, question, notes if read in TEXT_READS else [], system, WORKED_EXAMPLE)
        if framed is not None:  # chat-framed K/V: the frame's head, memories, then the tail
            self.memory, self.start = framed[0], framed[1]
        elif kv_read:
            fetched = engine.read_kv("full", memories, rows=rows)
            self.memory, self.start = full_kv(model, fetched, engine.full_layers)
        elif read == "pooled" and per_layer:
            check_pooled_layout(engine.pooled_layout)
            chosen = list({m.id: m for sel in per_layer.values() for m in sel}.values())
            fetched = dict(zip([m.id for m in chosen], engine.read_kv("pooled", chosen)))
            self.memory, self.start = pooled_kv(fetched, per_layer, engine.layers)
            self.memory_tokens = sum(m.n_chunks for m in chosen)
        if isinstance(per_layer, Selection):
            ahead = ahead or per_layer.ahead
        self._prefetch: tuple[str, Candidates, set[str]] | None = None
        if ahead is not None and self.memory is not None and read in (*KV_READS, "pooled"):
            read_ids = {m.id for m in memories} | {m.id for sel in (per_layer or {}).values()
                                                  for m in sel}
            self._prefetch = ("pooled" if read == "pooled" else "full", ahead, read_ids)
        self._engine = engine

    def prefetch_next(self) -> None:
        """Start loading the memories likely to be read next (``engine.prefetch``), once.
        The stream calls it after the first token: the worker's ranking would otherwise
        compete with the prefill for the interpreter and delay the first token."""
        if self._prefetch is not None:
            read, ahead, read_ids = self._prefetch
            self._prefetch = None
            self._engine.prefetch(read, ahead, read_ids)
