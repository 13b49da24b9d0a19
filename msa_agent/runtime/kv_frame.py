"""The chat frame of K/V reading (``kv_frame="chat"``): stored K/V that read like text.

A text read shows the reader its memories inside a chat: a system turn, one worked example,
then ``Memories:`` followed by the memories and ``Question: ...``
(:func:`~msa_agent.runtime.answer.prompt_ids`). A model not trained for MSA reads K/V best
in that same frame. So a ``chat`` space encodes each memory's per-token K/V *after the
frame's head* (everything up to the memories; :func:`head_ids`). ``read="full"`` then
continues the frame: the head's own K/V (computed once per engine), the memories' K/V at the
positions that follow it, and the tail (``Question: ...`` and the generation prompt) as the
prompt. With one memory this is exactly prefilling the frame with the memory's text
(tested). With several, each memory saw only the head, not the others. ``kv_positions``
places them all at the same positions after the head (``parallel``, the paper's layout) or
one after another (``sequential``).

Memories carry no date or number here (their K/V are fixed at ingest, before any question
or order exists): the frame is that of one undated memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from msa_agent.errors import InvalidInputError
from msa_agent.model.attention import MemoryKV, paged_buffers, rotate_layers
from msa_agent.runtime.answer import KV, SYSTEM, WORKED_EXAMPLE, lay_out, prompt_text

SLOT = "@@msa-memory@@"  # stands for the memory while the frame is rendered
FRAMES = ("bare", "chat")
POSITIONS = ("parallel", "sequential")


def _split(tokenizer: Any, question: str) -> tuple[str, str]:
    """The rendered prompt of one memory around it: (head, tail). The memory's list marker
    goes: the K/V were encoded right after ``Memories:`` and a newline."""
    text = prompt_text(tokenizer, question, [SLOT], SYSTEM, WORKED_EXAMPLE)
    head, tail = text.replace(f"[1] {SLOT}", SLOT).split(SLOT)
    return head, tail


def _ids(tokenizer: Any, text: str, first: bool) -> list[int]:
    # A rendered chat template already holds its special tokens; a plain prompt gets the
    # tokenizer's own (a BOS) only at the very start.
    specials = first and not getattr(tokenizer, "chat_template", None)
    return list(tokenizer(text, add_special_tokens=specials)["input_ids"])


def head_ids(tokenizer: Any) -> list[int]:
    """Token ids of the frame before the memories (the same for every question)."""
    return _ids(tokenizer, _split(tokenizer, "?")[0], first=True)


def tail_ids(tokenizer: Any, question: str) -> list[int]:
    """Token ids after the memories: the question and the generation prompt."""
    return _ids(tokenizer, _split(tokenizer, question)[1], first=False)


def framed_kv(model: Any, head: KV, fetched: Sequence[KV], full_layers: Sequence[int],
              positions: str = "parallel") -> tuple[MemoryKV, int]:
    """Per-layer K/V of ``[head ; memories]`` and where the tail starts.

    ``head``: the frame's pre-RoPE ``(K, V)`` ``[P, n_layers, Hkv, D]`` (every layer);
    ``fetched``: each memory's stored pre-RoPE ``(K, V)`` ``[S_i, F, Hkv, D]`` of
    ``full_layers``. Every layer gets the head (rotated at 0..P-1); the full layers also
    get the memories, at P.. (``parallel``) or one after another (``sequential``).
    """
    return _framed(model, frame_head(model, head), fetched, full_layers, positions)


def frame_head(model: Any, head: KV) -> KV:
    """The head's K rotated at 0..P-1 and its V, both ``[n_layers, Hkv, P, D]``: the same
    for every read, so a :class:`KVFrame` computes them once."""
    hk, hv = head
    layers = list(range(hk.shape[1]))
    return (rotate_layers(model, hk, torch.arange(hk.shape[0]), layers),
            hv.permute(1, 2, 0, 3).contiguous())


def _framed(model: Any, head: KV, fetched: Sequence[KV], full_layers: Sequence[int],
            positions: str) -> tuple[MemoryKV, int]:
    """:func:`framed_kv` from a :func:`frame_head`. The full layers' K/V live in one buffer
    ``[F, Hkv, P + sum S_i, D]`` each: the head, then every memory rotated straight into its
    slot (``rotate_layers(out=...)``), so no layer is concatenated and each layer's K/V are
    views ``[1, Hkv, ., D]`` (on CUDA, of the kernel's pages: :func:`paged_buffers`)."""
    if positions not in POSITIONS:
        raise InvalidInputError(f"kv_positions must be one of {POSITIONS}, got {positions!r}")
    hk, hv = head
    p, sizes = hk.shape[2], [k.shape[0] for k, _ in fetched]
    if positions == "sequential":
        starts = [p + sum(sizes[:i]) for i in range(len(sizes))]
        end = p + sum(sizes)
    else:
        starts, end = [p] * len(sizes), p + max(sizes, default=0)
    mkv = MemoryKV()
    mkv.put(range(hk.shape[0]), hk, hv)
    if not fetched:
        return mkv, end
    rows = list(full_layers)
    kbuf, vbuf, pages = paged_buffers(hk, len(rows), hk.shape[1], p + sum(sizes), hk.shape[3])
    kbuf[:, :, :p], vbuf[:, :, :p] = hk[rows], hv[rows]
    lay_out(model, fetched, starts, rows, kbuf, vbuf, at=p)
    mkv.put(rows, kbuf, vbuf, pages)
    return mkv, end


class KVFrame:
    """A space's chat frame: its head ids (stored with the space) and the head's K/V,
    computed once by ``encode_head`` (an :meth:`Encoder.frame_kv`) when first read, and
    kept rotated (:func:`frame_head`)."""

    def __init__(self, head: Sequence[int], positions: str) -> None:
        self.head, self.positions = list(head), positions
        self._kv: KV | None = None

    def read(self, model: Any, encode_head: Any, tokenizer: Any, question: str,
             fetched: Sequence[KV], full_layers: Sequence[int]
             ) -> tuple[MemoryKV, int, list[int]]:
        """(memory K/V, start position, prompt ids) of a framed ``full`` read of ``fetched``
        (best first; laid out best last in ``sequential``, as a text read orders them)."""
        if self._kv is None:
            self._kv = frame_head(model, encode_head())
        ordered = list(reversed(fetched)) if self.positions == "sequential" else list(fetched)
        mkv, start = _framed(model, self._kv, ordered, full_layers, self.positions)
        return mkv, start, tail_ids(tokenizer, question)
