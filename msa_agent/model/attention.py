"""The ``msa`` attention function, registered with transformers' attention interfaces.

In an MSA layer the active context (query and generated tokens) attends over
``[memory K/V ; local K/V]``: every memory token is visible, the local part stays causal.
Memory K/V arrive through the forward kwarg ``msa_memory`` (a :class:`MemoryKV`), so no
modeling file is copied: ``model(..., msa_memory=mkv)`` with ``attn_implementation="msa"``.
Layers without memory, and calls without the kwarg, run plain SDPA.

On CUDA, a single sequence with a plain causal local part goes through the Triton kernel
``msa_agent.kernels.memory_attention`` (memory laid out once as 64-token pages, online softmax
across memory and local keys, split-KV for decode); anything else (padding masks, sliding
windows, soft-capping, dropout) takes SDPA over the concatenated K/V. ``MSA_ATTENTION_KERNEL``
= ``auto`` (default: CUDA only), ``1`` (wherever Triton runs, e.g. the CPU interpreter in
tests) or ``0`` (never).
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from transformers import AttentionInterface, AttentionMaskInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import sdpa_mask

from msa_agent.kernels import memory_attention
from msa_agent.kernels._dispatch import use_triton

MSA_ATTENTION = "msa"


PAGE = 64  # tokens per page of the kernel's memory pool


@dataclass(frozen=True)
class PagedKV:
    """One layer's memory as the kernel's pool: ``[P, PAGE, Hkv, D]`` pages, ids, lengths."""

    k: torch.Tensor
    v: torch.Tensor
    idx: torch.Tensor  # [P] int32
    page_len: torch.Tensor  # [P] int32, valid tokens per page


@dataclass
class MemoryKV:
    """Per-layer memory K/V, ``[B, Hkv, S, D]``, K already rotated at its memory positions.

    Set a layer's K/V in ``k``/``v`` directly, or several layers at once with :meth:`put`
    (rows of stacked ``[F, Hkv, S, D]`` tensors), which the kernel path pages in one pass
    for all of them instead of once per layer.

    ``visible``: optional boolean ``[T, S]`` (True = attend), which memory columns each of
    the T local queries may see (a layer holding fewer columns uses the first ones); None
    = all of them. Set, attention takes the SDPA path (the kernel has no such mask)."""

    k: dict[int, torch.Tensor] = field(default_factory=dict)
    v: dict[int, torch.Tensor] = field(default_factory=dict)
    visible: torch.Tensor | None = None
    _stacked: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list, repr=False)
    _rows: dict[int, tuple[int, int]] = field(default_factory=dict, repr=False)  # (stack, row)
    _pages: dict[tuple[int, torch.dtype], PagedKV] = field(default_factory=dict, repr=False)
    _causal: dict[tuple[int, int, int], tuple[torch.Tensor, bool]] = field(
        default_factory=dict, repr=False)  # (id(mask), T, S) -> (the mask, kept alive; causal?)
    # the kernel's split buffers, shared by the layers of a forward (they run one after
    # another on one stream): allocated once per shape instead of at every layer
    scratch: dict = field(default_factory=dict, repr=False)
    _stack_pages: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(
        default_factory=dict, repr=False)  # stack -> the page buffers it is a view of

    def get(self, layer: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        return (self.k[layer], self.v[layer]) if layer in self.k else None

    def put(self, layers: Sequence[int], k: torch.Tensor, v: torch.Tensor,
            pages: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
        """``layers[j]``'s K/V are the views ``k[j:j+1]``, ``v[j:j+1]`` of stacked
        ``[F, Hkv, S, D]`` tensors (a later :meth:`put` of a layer replaces it). ``pages``:
        the ``[F, P, PAGE, Hkv, D]`` buffers ``k`` and ``v`` are views of (from
        :func:`paged_buffers`), which the kernel then reads as they are."""
        stack = len(self._stacked)
        self._stacked.append((k, v))
        if pages is not None:
            self._stack_pages[stack] = pages
        for j, layer in enumerate(layers):
            self.k[layer], self.v[layer] = k[j:j + 1], v[j:j + 1]
            self._rows[layer] = (stack, j)

    def paged(self, layer: int, dtype: torch.dtype) -> PagedKV:
        """The layer's memory as 64-token pages, made once (reused at every decode step): for
        every layer of its :meth:`put` stack together when it came from one."""
        key = (layer, dtype)
        if key not in self._pages:
            if self._from_stack(layer):
                self._page_stack(self._rows[layer][0], dtype)
            else:
                k, v, idx, lens = _to_pages(self.k[layer], self.v[layer], dtype)
                self._pages[key] = PagedKV(k[0], v[0], idx, lens)
        return self._pages[key]

    def causal(self, mask: torch.Tensor | None, q: int, kv: int) -> bool:
        """True when transformers' ``mask`` of ``q`` queries over ``kv`` local keys is plain
        causal (None is). A tensor is compared once per forward (every layer passes the same
        one), not once per layer: the comparison waits for the device."""
        if mask is None:
            return True
        key = (id(mask), q, kv)
        if key not in self._causal:
            local = _local_mask(mask, q, kv, mask.device)
            plain = _local_mask(None, q, kv, mask.device)[0, 0]
            self._causal[key] = (mask, local.shape[0] == 1 and bool(torch.equal(local[0, 0],
                                                                                  plain)))
        return self._causal[key][1]

    def written(self) -> None:
        """Say that K/V rows were written in place: pages made from them are dropped (the
        kernel path would otherwise read the old values)."""
        self._pages.clear()

    @property
    def length(self) -> int:
        return next(iter(self.k.values())).shape[2] if self.k else 0

    def _from_stack(self, layer: int) -> bool:
        """The layer's K/V are still the rows :meth:`put` set (not replaced in ``k``/``v``)."""
        if layer not in self._rows:
            return False
        stack, j = self._rows[layer]
        k, v = self._stacked[stack]
        return self.k[layer].data_ptr() == k[j].data_ptr() and self.k[layer].shape[1:] == \
            k.shape[1:] and self.v[layer].data_ptr() == v[j].data_ptr()

    def _page_stack(self, stack: int, dtype: torch.dtype) -> None:
        own = self._stack_pages.get(stack)
        if own is not None and own[0].dtype == dtype:  # laid out in pages: no copy
            k, v = own
            idx, lens = _page_ids(self._stacked[stack][0].shape[2], k.device)
        else:
            k, v, idx, lens = _to_pages(*self._stacked[stack], dtype)
        for layer, (s, j) in self._rows.items():
            if s == stack and self._from_stack(layer):
                self._pages[(layer, dtype)] = PagedKV(k[j], v[j], idx, lens)


def msa_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,  # [B, Hq, T, D]
    key: torch.Tensor,  # [B, Hkv, S_local, D]
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: object,
) -> tuple[torch.Tensor, None]:
    """[memory ; local] attention in MSA layers, plain SDPA elsewhere. Out: ``[B, T, Hq, D]``."""
    memory = kwargs.pop("msa_memory", None)
    kwargs.pop("is_causal", None)
    prefix = memory.get(module.layer_idx) if isinstance(memory, MemoryKV) else None
    if prefix is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask,
                                      dropout=dropout, scaling=scaling, **kwargs)
    assert isinstance(memory, MemoryKV)
    if memory.visible is None and _kernel_serves(module, query, dropout, kwargs) \
            and memory.causal(attention_mask, query.shape[2], key.shape[2]):
        return _kernel_attention(memory.paged(module.layer_idx, key.dtype), query, key, value,
                                 scaling, memory.scratch), None
    mk, mv = (t.to(key.dtype) for t in prefix)
    local = _local_mask(attention_mask, query.shape[2], key.shape[2], query.device)
    shape = (*local.shape[:-1], mk.shape[2])
    seen = torch.ones(shape, dtype=torch.bool, device=query.device) if memory.visible is None \
        else memory.visible[:, :mk.shape[2]].expand(shape)
    mask = torch.cat([seen, local], -1)  # [B|1, 1, T, S_mem + S_local]
    k, v = torch.cat([mk, key], 2), torch.cat([mv, value], 2)
    if _plain(module, dropout, kwargs):
        return _grouped_sdpa(query, k, v, mask, scaling), None
    return sdpa_attention_forward(module, query, k, v, mask, dropout=dropout, scaling=scaling,
                                  is_causal=False, **kwargs)


def _plain(module: torch.nn.Module, dropout: float, kwargs: dict) -> bool:
    """No dropout, sinks, sliding window or softcap: plain masked attention."""
    return not (dropout or getattr(module, "sinks", None) is not None
                or kwargs.get("sliding_window") or kwargs.get("softcap"))


def _grouped_sdpa(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                  mask: torch.Tensor, scaling: float | None) -> torch.Tensor:
    """SDPA with grouped K/V heads as they are (``enable_gqa``): transformers expands them to
    the query heads whenever a mask is given: over 16k memory tokens, 15 layers took 1.1 to
    1.3 s expanded and 0.42 s grouped on CPU (docs/results/gqa-attention-cpu.txt).
    ``[B, Hq, T, D]`` in, ``[B, T, Hq, D]`` out."""
    out = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, scale=scaling,
                                         enable_gqa=query.shape[1] != key.shape[1])
    return out.transpose(1, 2).contiguous()


def _local_mask(mask: torch.Tensor | None, q: int, kv: int, device: torch.device) -> torch.Tensor:
    """Boolean ``[B|1, 1, q, kv]`` (True = attend) from transformers' mask, or causal if None."""
    if mask is None:
        i = torch.arange(q, device=device).view(q, 1) + (kv - q)
        return (torch.arange(kv, device=device).view(1, kv) <= i).view(1, 1, q, kv)
    mask = mask[..., -kv:]
    return mask if mask.dtype == torch.bool else mask == 0


def _kernel_serves(module: torch.nn.Module, query: torch.Tensor, dropout: float,
                   kwargs: dict) -> bool:
    """True when the Triton kernel computes exactly what SDPA would here, given a plain
    causal local mask (:meth:`MemoryKV.causal`)."""
    mode = os.environ.get("MSA_ATTENTION_KERNEL", "auto")
    if mode == "0" or (mode == "auto" and not query.is_cuda) or not use_triton(query):
        return False
    return query.shape[0] == 1 and _plain(module, dropout, kwargs)


def _kernel_attention(pages: PagedKV, query: torch.Tensor, key: torch.Tensor,
                      value: torch.Tensor, scaling: float | None,
                      scratch: dict | None = None) -> torch.Tensor:
    """[memory pages ; causal local] via the kernel: ``[1, Hq, T, D]`` in, ``[1, T, Hq, D]`` out.
    The rows go in heads first, as they are (no transposed views: this runs once per layer
    and token, where the host's time per call is what costs)."""
    out = memory_attention(query[0], key[0], value[0], pages.k, pages.v, pages.idx, scaling,
                           page_len=pages.page_len, heads_first=True,
                           scratch=scratch)  # [T, Hq, D]
    return out[None]


def _to_pages(k: torch.Tensor, v: torch.Tensor, dtype: torch.dtype
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stacked ``[F, Hkv, S, D]`` K/V -> ``[F, P, PAGE, Hkv, D]`` pages each (the tail of the
    last page zeroed), the page ids ``[P]`` and valid tokens per page ``[P]`` (int32)."""
    f, h, s, d = k.shape
    pages = []
    for x in (k, v):
        out = _page_buffer(f, s, h, d, dtype, x.device)
        out[:, :s] = x.transpose(1, 2)
        pages.append(out.view(f, -1, PAGE, h, d))
    return (pages[0], pages[1], *_page_ids(s, k.device))


def _page_buffer(f: int, s: int, h: int, d: int, dtype: torch.dtype, device: torch.device
                 ) -> torch.Tensor:
    """``[f, P * PAGE, h, d]``: room for ``s`` tokens in whole pages, the tail zeroed (the
    kernel's masked loads of it must not read NaN)."""
    out = torch.empty((f, -(-s // PAGE) * PAGE, h, d), dtype=dtype, device=device)
    out[:, s:] = 0
    return out


def _page_ids(s: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The ids ``[P]`` of the pages holding ``s`` tokens and their valid tokens ``[P]``
    (int32)."""
    n = -(-s // PAGE)
    lens = torch.full((n,), PAGE, dtype=torch.int32, device=device)
    if n:  # a fill, not an item assignment: that copies the value from the host and waits
        lens[-1:].fill_(s - (n - 1) * PAGE)
    return torch.arange(n, dtype=torch.int32, device=device), lens


def paged_buffers(like: torch.Tensor, layers: int, heads: int, length: int, dim: int,
                  paged: bool | None = None) -> tuple[torch.Tensor, torch.Tensor,
                                                      tuple[torch.Tensor, torch.Tensor] | None]:
    """Empty K and V ``[F, Hkv, length, D]`` to lay memories out in (``like``'s dtype and
    device), and the page buffers they are views of (pass them to :meth:`MemoryKV.put`).
    On CUDA they are views of the kernel's 64-token pages ``[F, P, PAGE, Hkv, D]`` (the
    tail past ``length`` zeroed), so the kernel reads them with no second copy: 16
    memories of 1k tokens in every layer are ~376 MB in bfloat16. Elsewhere (SDPA reads
    them) plain contiguous tensors, and no pages. ``paged`` overrides the choice."""
    if not (like.is_cuda if paged is None else paged):
        k = like.new_empty((layers, heads, length, dim))
        return k, torch.empty_like(k), None
    bufs = [_page_buffer(layers, length, heads, dim, like.dtype, like.device) for _ in "kv"]
    k, v = (b[:, :length].transpose(1, 2) for b in bufs)
    return k, v, (bufs[0].view(layers, -1, PAGE, heads, dim),
                  bufs[1].view(layers, -1, PAGE, heads, dim))


def register() -> None:
    """Make ``attn_implementation="msa"`` available (idempotent)."""
    AttentionInterface.register(MSA_ATTENTION, msa_attention_forward)
    AttentionMaskInterface.register(MSA_ATTENTION, sdpa_mask)


def rotate_memory(
    model: torch.nn.Module, keys: Sequence[torch.Tensor], positions: Sequence[torch.Tensor],
    layer: int | None = None,
) -> torch.Tensor:
    """Apply the model's RoPE to pre-RoPE keys ``[S_i, Hkv, D]`` at ``positions`` ``[S_i]``.

    Returns one ``[1, Hkv, sum S_i, D]`` tensor: documents laid side by side, each rotated at
    its own document-local positions (the paper's parallel RoPE). ``layer`` picks the
    layer's own RoPE where a model has several (Gemma3: sliding vs. full attention layers).
    """
    k = torch.cat(list(keys)).unsqueeze(0)  # [1, S, Hkv, D]
    return rotate_layers(model, k.transpose(0, 1), torch.cat(list(positions)),
                         [layer if layer is not None else -1])


Tables = list[tuple[list[int], torch.Tensor, torch.Tensor]]  # (rows of layers, cos, sin)


def rotate_layers(model: torch.nn.Module, keys: torch.Tensor, positions: torch.Tensor,
                  layers: Sequence[int], out: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`rotate_memory` of several layers in one pass: pre-RoPE keys ``[S, F, Hkv, D]``
    of ``layers`` at ``positions`` ``[S]`` -> ``[F, Hkv, S, D]``, written into ``out`` if
    given (for instance a slice of a buffer holding several memories), else a new contiguous
    tensor (each ``[j:j+1]`` is then a layer's ``[1, Hkv, S, D]`` without a copy). Layers
    sharing a RoPE (all of them in most models) share one cos/sin table; the rotation reads
    ``keys`` in place and writes each half of the output once (no ``rotate_half``
    temporaries: on a CPU re-rotating 16k memory tokens was most of a ``full`` read)."""
    if out is None:
        out = torch.empty(keys.permute(1, 2, 0, 3).shape, dtype=keys.dtype, device=keys.device)
    return rotate_with(keys, rope_tables(model, out, positions, layers), out)


def rope_tables(model: torch.nn.Module, like: torch.Tensor, positions: torch.Tensor,
                layers: Sequence[int]) -> Tables:
    """The RoPE tables ``[S, D]`` of ``positions`` ``[S]`` in ``like``'s dtype and device,
    one per group of ``layers`` sharing a RoPE (rows into ``layers``). Rows ``a:b`` of a
    table are the tables of ``positions[a:b]``, so several memories laid out in one span
    share one computation (``answer.lay_out``)."""
    pos = positions.view(1, -1).to(like.device)
    return [(group, *_cos_sin(model, like, pos, layers[group[0]]))
            for group in _rope_groups(model, layers)]


def rotate_with(keys: torch.Tensor, tables: Tables, out: torch.Tensor) -> torch.Tensor:
    """Pre-RoPE keys ``[S, F, Hkv, D]`` rotated by ``tables`` (:func:`rope_tables` of their
    ``S`` positions) into ``out`` ``[F, Hkv, S, D]``; tables in ``out``'s dtype widen
    narrower keys here."""
    x = keys.permute(1, 2, 0, 3)  # [F, Hkv, S, D], a view
    for group, cos, sin in tables:
        if len(group) == x.shape[0]:
            _rope_into(x, cos, sin, out)
        else:
            out[group] = _rope_into(x[group], cos, sin,
                                    torch.empty(x[group].shape, dtype=out.dtype,
                                                device=out.device))
    return out


def _rope_into(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
               out: torch.Tensor) -> torch.Tensor:
    """``x * cos + rotate_half(x) * sin`` (the HF rule, ``rotate_half(x) = [-x2, x1]``) for
    ``x`` ``[..., S, D]`` and ``cos``/``sin`` ``[S, D]``, written into ``out`` (computed in
    the wider of ``x``'s and the tables' dtypes)."""
    h = x.shape[-1] // 2
    x1, x2, o1, o2 = x[..., :h], x[..., h:], out[..., :h], out[..., h:]
    torch.mul(x1, cos[:, :h], out=o1)
    o1.addcmul_(x2, sin[:, :h], value=-1)
    torch.mul(x2, cos[:, h:], out=o2)
    o2.addcmul_(x1, sin[:, h:])
    return out


def _rope_groups(model: torch.nn.Module, layers: Sequence[int]) -> list[list[int]]:
    """Indices into ``layers``, grouped by the layer's RoPE type (one group for most models)."""
    groups: dict[str, list[int]] = {}
    for j, layer in enumerate(layers):
        groups.setdefault(_layer_type(model, layer), []).append(j)
    return list(groups.values())


def _layer_type(model: torch.nn.Module, layer: int | None) -> str:
    types = getattr(model.config, "layer_types", None) or ["full_attention"]
    return types[layer] if layer is not None and -len(types) <= layer < len(types) \
        else types[-1]


def _cos_sin(model: torch.nn.Module, like: torch.Tensor, pos: torch.Tensor,
             layer: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's RoPE tables ``[S, D]`` at ``pos`` ``[1, S]`` for ``layer``, in
    ``like``'s dtype."""
    rotary = model.model.rotary_emb
    extra = {}
    if "layer_type" in inspect.signature(rotary.forward).parameters:
        extra["layer_type"] = _layer_type(model, layer)
    cos, sin = rotary(like, position_ids=pos, **extra)
    return cos[0], sin[0]


register()
