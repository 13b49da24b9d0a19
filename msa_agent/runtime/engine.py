"""The runtime behind ``Memory``: encoder + router + resident routing index, over one space."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from rich.progress import Progress

from msa_agent.config import MemoryConfig
from msa_agent.errors import InvalidInputError
from msa_agent.model.encoder import EncodedDoc, Encoder
from msa_agent.model.loader import LoadedModel, model_fingerprint
from msa_agent.model.router import Router, shipped_router
from msa_agent.model.shape import ModelShape, resolve_msa_layers
from msa_agent.model.text import query_ids, special_prefix, split_text
from msa_agent.runtime.answer import POOLED_K_ROPE, POOLED_K_SETTING
from msa_agent.runtime.residency import HostKVCache
from msa_agent.runtime.routing import Ranked, RoutingIndex
from msa_agent.store import ArraySpec, Space, StoredMemory

OWN_QK = "own_qk"
_REENCODE_BATCH = 64
CPU_BATCH_TOKENS = 1024  # 2-core CPU, SmolLM2: 717 tok/s vs 428 at 8192 and 587 one by one
CUDA_BATCH_TOKENS = 16384
HOST_CACHE_MB_CUDA, HOST_CACHE_MB_CPU = 2048, 256  # host tier of memory K/V (answers)


class RoutingQualityWarning(UserWarning):
    """Routing runs on the model's own Q/K, measured at chance level across documents."""


class Engine:
    """Encodes, stores and routes; the facade only validates and formats."""

    def __init__(self, lm: LoadedModel, cfg: MemoryConfig, router: Router | None) -> None:
        self.lm, self.cfg, self.router = lm, cfg, router
        self.tokenizer = lm.tokenizer
        self.shape = ModelShape.of(lm.model)
        self.layers = resolve_msa_layers(self.shape, cfg.msa_layers)
        self.full_layers = (list(range(self.shape.n_layers)) if cfg.full_kv_layers == "all"
                            else self.layers)
        self.encoder = Encoder(lm, self.layers, chunk_size=cfg.chunk_size, router=router,
                               keep_full_kv=cfg.keep_full_kv, full_layers=self.full_layers,
                               batch_tokens=cfg.batch_tokens or _default_batch_tokens(lm))
        self.index = RoutingIndex(lm.device)
        budget = _host_cache_bytes(lm, cfg)
        pin = lm.device.type == "cuda"
        self.kv_cache = {kind: HostKVCache((f"{kind}_k", f"{kind}_v"), budget, pin)
                         for kind in ("pooled", "full")}

    def read_kv(self, kind: str, space: Space, memories: Sequence[StoredMemory]
                ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``kind`` ("pooled" or "full") K/V of ``memories`` on the model's device, in order:
        from the host tier when cached (one gather launch), else from the store."""
        return self.kv_cache[kind].fetch(space, memories, self.lm.device)

    def forget(self, ids: Sequence[str]) -> None:
        """Drop deleted memories from the routing index and the host tier."""
        self.index.remove(list(ids))
        for cache in self.kv_cache.values():
            cache.evict(ids)

    @classmethod
    def build(cls, lm: LoadedModel, cfg: MemoryConfig) -> Engine:
        """Pick the router per ``cfg.routing``; warn when falling back to the model's own Q/K."""
        layers = resolve_msa_layers(ModelShape.of(lm.model), cfg.msa_layers)
        return cls(lm, cfg, _pick_router(lm, cfg, layers))

    @property
    def routing_mode(self) -> str:
        return "learned" if self.router is not None else OWN_QK

    @property
    def router_id(self) -> str:
        return self.router.router_id if self.router is not None else OWN_QK

    def fingerprint(self) -> dict[str, Any]:
        """What a space's arrays depend on; a different one cannot share the space."""
        fp = {**model_fingerprint(self.lm), "msa_layers": self.layers,
              "chunk_size": self.cfg.chunk_size, "store_dtype": self.cfg.store_dtype,
              "keep_full_kv": self.cfg.keep_full_kv}
        if self.cfg.keep_full_kv and self.cfg.full_kv_layers != "msa":  # older spaces: no key
            fp["full_kv_layers"] = self.cfg.full_kv_layers
        return fp

    def array_specs(self) -> list[ArraySpec]:
        s, n_layers, dt = self.shape, len(self.layers), self.cfg.store_dtype
        kv = (n_layers, s.n_kv_heads, s.head_dim)
        specs = [ArraySpec(n, "chunk", kv, dt) for n in ("route_k", "pooled_k", "pooled_v")]
        if self.cfg.keep_full_kv:
            full = (len(self.full_layers), s.n_kv_heads, s.head_dim)
            specs += [ArraySpec(n, "token", full, dt) for n in ("full_k", "full_v")]
        return specs

    # ---------------------------------------------------------------- space binding
    def attach(self, space: Space) -> None:
        """Load routing keys into the resident index, re-encoding them if the router changed."""
        made_with = space.get_setting("router_id")
        live = space.live_chunks()
        if space.get_setting(POOLED_K_SETTING) is None:  # older spaces pooled pre-RoPE K
            space.set_setting(POOLED_K_SETTING, "pre-rope" if live else POOLED_K_ROPE)
        if live and made_with not in (None, self.router_id):
            self.reencode_routing(space, live)
        space.set_setting("router_id", self.router_id)
        self._load_index(space, live)

    def refresh_routing(self, space: Space, router: Router | None | str = "keep") -> int:
        """Switch to ``router`` (unless "keep"), re-encode every stored memory's routing keys
        with it and rebuild the resident index; K/V stay. Returns the number re-encoded."""
        if router != "keep":
            if router is not None and sorted(router.layer_ids) != self.layers:
                raise InvalidInputError(f"router covers layers {router.layer_ids}, "
                                        f"this space uses {self.layers}")
            self.router = self.encoder.router = router  # type: ignore[assignment]
        live = space.live_chunks()
        if live:
            self.reencode_routing(space, live)
        space.set_setting("router_id", self.router_id)
        self.index = RoutingIndex(self.lm.device)
        self._load_index(space, live)
        return len(live)

    def _load_index(self, space: Space, live: Sequence[StoredMemory]) -> None:
        if live:
            keys, _owner = space.read_all("route_k")
            splits = [m.n_chunks for m in live]
            self.index.add([m.id for m in live], [m.namespace for m in live],
                           list(torch.from_numpy(keys).split(splits)))

    def reencode_routing(self, space: Space, live: Sequence[StoredMemory]) -> None:
        """Recompute only the routing keys of stored memories (their K/V stay).

        The space is marked ``partial:`` first: keys of two routers may then be mixed, so a
        run cut short (a killed process) is re-encoded at the next open, whatever the router.
        The caller records the final router id once every memory is done.
        """
        space.set_setting("router_id", f"partial:{self.router_id}")
        ids = self._original_ids(live)
        with Progress(transient=True) as bar:
            task = bar.add_task("re-encoding routing keys", total=len(live))
            for s in range(0, len(live), _REENCODE_BATCH):
                batch = live[s : s + _REENCODE_BATCH]
                docs = self.encoder.encode([ids[m.id] for m in batch])
                for m, d in zip(batch, docs):
                    space.overwrite("route_k", m, self._np(d.route_k))
                bar.advance(task, len(batch))

    def _original_ids(self, live: Sequence[StoredMemory]) -> dict[str, list[int]]:
        """Token ids each memory was first encoded from.

        A long text was cut into parts by token position; re-tokenising one part alone can
        differ at its edges, so the parts of a source are joined and split again the same way.
        A source whose parts no longer split back the same way falls back to each part's text.
        """
        by_source: dict[str, list[StoredMemory]] = {}
        for m in live:
            by_source.setdefault(m.source_id or m.id, []).append(m)
        out: dict[str, list[int]] = {}
        for parts in by_source.values():
            parts.sort(key=lambda m: m.part)
            pieces = split_text(self.tokenizer, "".join(m.text for m in parts),
                                self.cfg.max_doc_tokens) if len(parts) > 1 else []
            same = [p.text for p in pieces] == [m.text for m in parts]
            for i, m in enumerate(parts):
                out[m.id] = pieces[i].ids if same else _fit(self._ids(m.text), m.n_tokens)
        return out

    # ---------------------------------------------------------------- write / route
    def store(self, space: Space, pending: Sequence[Any]) -> None:
        """Encode every pending document in batched passes, then one atomic space write."""
        docs = self.encoder.encode([p.ids for p in pending])
        memories = [_with_counts(p, d) for p, d in zip(pending, docs)]
        arrays = [self._arrays(d) for d in docs]
        ids = space.add(memories, arrays)
        # index what was stored (store dtype), so a reopened space ranks identically
        keys = [torch.from_numpy(a["route_k"]) for a in arrays]
        self.index.add(ids, [m.namespace for m in memories], keys)

    def route(self, ids: list[int], k: int, namespace: str | None,
              allowed: list[str] | None, exclude: set[int] | None = None) -> Ranked:
        """Top-``k`` documents for query token ids, among allowed and not excluded ones."""
        q = self.encoder.query_vectors(ids)
        mask = self.index.mask_for(namespace, allowed)
        if exclude:
            mask[list(exclude)] = False
        return self.index.rank(q, k, mask, self.cfg.layer_combine)

    def route_per_layer(
        self, ids: list[int], k: int, namespace: str | None, allowed: list[str] | None = None
    ) -> dict[int, list[int]]:
        """The paper's protocol: each MSA layer selects its own top-``k`` documents."""
        q = self.encoder.query_vectors(ids)
        mask = self.index.mask_for(namespace, allowed)
        return dict(zip(self.layers, self.index.rank_per_layer(q, k, mask)))

    def chunk_text(self, text: str, chunk: int) -> str:
        """The characters of ``text`` covered by pooled chunk number ``chunk``."""
        enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        offs = enc["offset_mapping"]
        p, lead = self.cfg.chunk_size, len(special_prefix(self.tokenizer))
        lo = max(0, chunk * p - lead)
        hi = min(len(offs), (chunk + 1) * p - lead)
        return text[offs[lo][0] : offs[hi - 1][1]] if lo < hi else ""

    def _ids(self, text: str) -> list[int]:
        return query_ids(self.tokenizer, text, 1 << 30)

    def _np(self, t: torch.Tensor) -> np.ndarray:
        return t.to(torch.float32).numpy().astype(self.cfg.store_dtype)

    def _arrays(self, d: EncodedDoc) -> dict[str, np.ndarray]:
        out = {"route_k": self._np(d.route_k), "pooled_k": self._np(d.pooled_k),
               "pooled_v": self._np(d.pooled_v)}
        if self.cfg.keep_full_kv:
            out["full_k"], out["full_v"] = self._np(d.full_k), self._np(d.full_v)
        return out


def _fit(ids: list[int], n: int) -> list[int]:
    """Best effort for a part whose source cannot be re-split: keep its stored length."""
    return ids[:n] + ids[-1:] * max(0, n - len(ids))


def _host_cache_bytes(lm: LoadedModel, cfg: MemoryConfig) -> int:
    mb = cfg.host_cache_mb
    if mb is None:
        mb = HOST_CACHE_MB_CUDA if lm.device.type == "cuda" else HOST_CACHE_MB_CPU
    return mb << 20


def _default_batch_tokens(lm: LoadedModel) -> int:
    """Padded tokens per pass: small on CPU (bigger batches were slower there), large on GPU."""
    return CUDA_BATCH_TOKENS if lm.device.type == "cuda" else CPU_BATCH_TOKENS


def _with_counts(p: Any, d: EncodedDoc) -> Any:
    return replace(p.memory, id=p.id, n_tokens=d.n_tokens, n_chunks=d.n_chunks)


def _pick_router(lm: LoadedModel, cfg: MemoryConfig, layers: list[int]) -> Router | None:
    if cfg.routing == OWN_QK:
        return None
    if lm.router is not None and cfg.router_path is None and lm.router.layer_ids == layers:
        return lm.router  # an MSA checkpoint's own learned router
    fp = model_fingerprint(lm)
    path = cfg.router_path or shipped_router(fp, layers)
    if path is not None:
        return Router.load(path, fp).to(lm.device)
    if cfg.routing == "learned":
        raise InvalidInputError(
            f"routing='learned' but no router exists for {lm.name} on layers {layers}: "
            "train one with `msa train-router` and pass router_path=..."
        )
    warnings.warn(
        f"no trained router for {lm.name}: routing uses the model's own Q/K, which ranks "
        "documents at about chance level (docs/recall.md). Train one with `msa train-router`.",
        RoutingQualityWarning,
        stacklevel=3,
    )
    return None
