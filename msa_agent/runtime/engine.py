"""The runtime behind ``Memory``: one object owns the space, the routing index and the caches.

The facade validates, locks (with :attr:`Engine.lock`) and formats; everything that touches
the space, the resident routing index or the K/V host tier goes through this class. Index
positions never leave it: routes come back as :class:`Recalled` stored memories.

Threads: two locks, always taken in this order. :attr:`Engine.lock` guards the space, the
index and the caches; the model's lock (``model.capture.model_lock``) guards each forward of
the shared backbone (an encoder batch, a query, one generation step) and is the innermost:
nothing holding it waits for the engine's lock. Encoding runs outside the engine's lock, so
reads go on while a write encodes; a stream holds neither lock between its tokens. The K/V
prefetch worker (:class:`~msa_agent.runtime.residency.Prefetcher`) takes only the engine's
lock, briefly, and never the model's: it ranks with router queries the request computed.
"""

from __future__ import annotations

import functools
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from msa_agent.config import ROUTING_SETTINGS, MemoryConfig, SpaceLayout
from msa_agent.errors import InvalidInputError, RoutingQualityWarning
from msa_agent.model.attention import MemoryKV
from msa_agent.model.encoder import EncodedDoc, Encoder
from msa_agent.model.loader import LoadedModel, model_fingerprint, query_copy_dtype
from msa_agent.model.router import Router
from msa_agent.model.shape import ModelShape, resolve_msa_layers
from msa_agent.model.text import query_ids, split_text, summary_ids
from msa_agent.runtime import bundle
from msa_agent.runtime.answer import POOLED_K_ROPE, POOLED_K_SETTING
from msa_agent.runtime.fusion import LEXICAL, MSA, SUMMARY, Fusion
from msa_agent.runtime.kv_blend import blend_share
from msa_agent.runtime.kv_frame import KVFrame, head_ids
from msa_agent.runtime.recall import Recall
from msa_agent.runtime.reencode import original_ids, reencode_routing
from msa_agent.runtime.residency import Candidates, HostKVCache, Prefetcher
from msa_agent.runtime.router_choice import OWN_QK, pick_router
from msa_agent.runtime.routing import RoutingIndex
from msa_agent.runtime.targets import NewDoc, Plan, Target, resolve, source_parts
from msa_agent.store import (
    ArraySpec,
    HistoryEvent,
    NewMemory,
    RemoteLocation,
    Space,
    SpaceBusyError,
    StoredMemory,
    StoreError,
)

__all__ = ["Engine", "NewDoc", "RoutingQualityWarning", "OWN_QK"]

CPU_BATCH_TOKENS = 1024  # 2-core CPU, SmolLM2: 717 tok/s vs 428 at 8192 and 587 one by one
CUDA_BATCH_TOKENS = 16384
HOST_CACHE_MB_CUDA, HOST_CACHE_MB_CPU = 2048, 256  # host tier of memory K/V (answers)
GPU_CACHE_MB = 1024  # GPU tier above it, on CUDA only
CHUNK_LAYOUTS = 512  # memory texts whose chunk spans and words are kept (~30 KB for 1k tokens)
PREFETCH_CUDA = 2  # memories prefetched after a K/V read on CUDA (off on CPU: config.py)
KV_SOONER_CUDA_K = 8  # from this many memories, auto reads K/V on CUDA (kv_first_sooner)
KV_FRAME_SETTING = "kv_frame_ids"  # the head token ids a chat-framed space encoded K/V after


def _kept(d: NewDoc, p: StoredMemory) -> NewMemory:
    """Part ``p`` with ``d``'s fields and metadata: an update that keeps the text (and rows)."""
    return NewMemory(text=p.text, namespace=p.namespace, kind=d.kind,
                     metadata=dict(d.metadata or {}), session_id=d.session_id,
                     user_id=d.user_id, agent_id=d.agent_id, source_id=p.source_id or p.id,
                     part=p.part, n_tokens=p.n_tokens, n_chunks=p.n_chunks,
                     created_at=d.created_at or p.created_at, id=p.id,
                     key=d.key if p.part == 0 else None, expires_at=d.expires_at)


class Engine(Recall):
    """Encodes, stores, routes and reads, over the one space it owns (routing and recall
    methods: :class:`~msa_agent.runtime.recall.Recall`)."""

    def __init__(self, lm: LoadedModel, cfg: MemoryConfig, router: Router | None,
                 space: Space) -> None:
        self.lm, self.cfg, self.router, self._space = lm, cfg, router, space
        self.tokenizer = lm.tokenizer
        self.shape = ModelShape.of(lm.model)
        self.layers = resolve_msa_layers(self.shape, cfg.msa_layers)
        self.full_layers = _full_layers(self.shape, self.layers, cfg)
        self.summary_layer = resolve_summary_layer(self.shape, cfg.summary_layer)
        framed = cfg.keep_full_kv and cfg.kv_frame == "chat"
        self.kv_frame = KVFrame(head_ids(self.tokenizer), cfg.kv_positions) if framed else None
        self.encoder = Encoder(lm, self.layers, chunk_size=cfg.chunk_size, router=router,
                               keep_full_kv=cfg.keep_full_kv, full_layers=self.full_layers,
                               batch_tokens=cfg.batch_tokens or _default_batch_tokens(lm),
                               kv_frame=self.kv_frame.head if self.kv_frame else (),
                               query_dtype=query_copy_dtype(cfg.routing_query_dtype, lm))
        self.lock = threading.RLock()  # one writer/reader at a time over space, index, caches
        # chunk spans and words of memory texts read as chunks (excerpt, kv_chunks, bridge)
        self._layouts = functools.lru_cache(maxsize=CHUNK_LAYOUTS)(self._layout_of)
        self._question_summaries: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._summaries_lock = threading.Lock()
        self.fusion = fusion_of(cfg)
        self.index = self._empty_index()
        self._generation: tuple[Any, ...] | None = None  # a reader's: what its index holds
        self._indexed_at: dict[str, int] = {}  # a reader's: memory id -> its first chunk row
        self.kv_cache = {kind: _kv_tiers(kind, lm, cfg) for kind in ("pooled", "full")}
        self.prefetcher = Prefetcher(self.lock, space, self.kv_cache)  # thread: lazy

    # ---------------------------------------------------------------- lifecycle
    @classmethod
    def open(cls, path: str | Path | RemoteLocation, lm: LoadedModel, cfg: MemoryConfig,
             read_only: bool = False) -> Engine:
        """Open (or create) the space at ``path`` for ``lm`` and load its routing index.

        Picks the router per ``cfg.routing`` (warning when falling back to the model's own
        Q/K) and re-encodes stored routing keys that another router made. ``read_only``: an
        existing space, opened without its writer's lock (another process may write it
        meanwhile) and never written: its index follows the writer's commits.
        """
        layers = resolve_msa_layers(ModelShape.of(lm.model), cfg.msa_layers)
        router = pick_router(lm, cfg, layers)
        fp, specs = space_fingerprint(lm, cfg, layers), array_specs(lm, cfg, layers)
        where = path if isinstance(path, RemoteLocation) else Path(path)
        space = Space.open(where, fp, read_only=True) if read_only else \
            Space.open_or_create(where, fp, specs)
        try:
            engine = cls(lm, cfg, router, space)
            if read_only:
                engine._attach_reader()
            else:
                engine._attach()
                space.set_setting("config", stored_config(cfg, lm))
        except BaseException:  # a failed open must not keep the space locked
            space.close()
            raise
        return engine

    @property
    def read_only(self) -> bool:
        return self._space.read_only

    def close(self) -> None:
        self.prefetcher.close()  # joined first: its reads need the space, it takes the lock
        with self.lock:
            self._space.close()

    @property
    def path(self) -> Path | RemoteLocation:
        return self._space.path

    @property
    def routing_mode(self) -> str:
        return "learned" if self.router is not None else OWN_QK

    @property
    def router_id(self) -> str:
        return self.router.router_id if self.router is not None else OWN_QK

    def _attach(self) -> None:
        """Load routing keys into the resident index, re-encoding them if the router changed."""
        space, live = self._space, self._space.live_chunks()
        if space.get_setting(POOLED_K_SETTING) is None:
            space.set_setting(POOLED_K_SETTING, POOLED_K_ROPE)
        if self.kv_frame is not None:  # the frame its K/V were encoded in, kept with it
            head = space.get_setting(KV_FRAME_SETTING)
            if head is None:
                space.set_setting(KV_FRAME_SETTING, self.kv_frame.head)
            else:
                self.kv_frame.head = self.encoder.kv_frame = list(head)
        if live and space.get_setting("router_id") not in (None, self.router_id):
            self._reencode(live)
        space.set_setting("router_id", self.router_id)
        self._load_index(live)

    def _attach_reader(self) -> None:
        """A reader's attach: the space's own frame and router, no write, the index loaded."""
        space = self._space
        if self.kv_frame is not None and space.get_setting(KV_FRAME_SETTING) is not None:
            self.kv_frame.head = self.encoder.kv_frame = list(space.get_setting(KV_FRAME_SETTING))
        stored = space.get_setting("router_id")
        if stored not in (None, self.router_id):
            raise InvalidInputError(
                f"this space's routing keys were made by router {stored!r}, not "
                f"{self.router_id!r}: open it once for writing (it re-encodes them), or open "
                "it read-only with the router it uses")
        self.follow_writer()

    def follow_writer(self) -> None:
        """A reader: bring the routing index up to the writer's last commit, if it committed
        since the last load; a writer's index is always current. The first load (and one
        after a compaction, which moves every row) reads every key; later ones read only the
        keys of memories added or updated since, and drop those forgotten or replaced."""
        if not self.read_only:
            return
        with self.lock:
            for _ in range(5):  # a commit between reading the rows and the keys: again
                before = self._space.generation()
                if before == self._generation:
                    return
                try:
                    live = self._space.live_chunks()
                    if self._generation is None or before[0] != self._generation[0]:
                        self._load_index(live)
                        gone = list(self._indexed_at)
                    else:
                        gone = self._sync_index(live)
                except (StoreError, RuntimeError):  # rows and keys from two commits
                    if self._space.generation() == before:
                        raise  # nothing moved: a real error
                    self._generation = None  # the index may be half-synced: reload it all
                    continue
                if self._space.generation() == before:
                    self._generation = before
                    self._indexed_at = {m.id: m.chunk_start for m in live}
                    self._forget_cached(gone)  # an update keeps its id, not rows
                    return
                self._generation = None
            raise SpaceBusyError("the writer kept committing while this reader loaded the "
                                 "routing index; try again")

    def _empty_index(self) -> RoutingIndex:
        """A resident routing index as this space's settings lay it out."""
        return RoutingIndex(self.lm.device, top_tokens=self.cfg.route_top_tokens,
                            key_dtype=self.cfg.routing_key_dtype,
                            layer_weight=None if self.router is None
                            else self.router.layer_weight_for(self.layers))

    def _load_index(self, live: Sequence[StoredMemory]) -> None:
        self.index = self._empty_index()
        if live:
            keys, _owner = self._space.read_all("route_k")  # [N, L, H, D], store dtype
            self.index.add_rows([m.id for m in live], [m.namespace for m in live],
                                torch.from_numpy(keys), [m.n_chunks for m in live],
                                summary=self._summaries_of(live))

    def _summaries_of(self, live: Sequence[StoredMemory]) -> torch.Tensor | None:
        """The summary vectors ``[len(live), hidden]`` of every live memory (each one's first
        chunk row; every row of a memory holds it), None in a space without them."""
        if self.summary_layer is None:
            return None
        rows, owner = self._space.read_all(SUMMARY)  # [N chunks, hidden]
        first = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]]) if len(owner) else owner
        return torch.from_numpy(np.ascontiguousarray(rows[first]))

    def _sync_index(self, live: Sequence[StoredMemory]) -> list[str]:
        """Apply the writer's commits since the last load to the index: drop memories gone
        or moved (an update writes new rows under the same id), append the new ones in array
        order (so the index keeps a fresh load's order); ids dropped, for the K/V tier."""
        have, now = self._indexed_at, {m.id: m.chunk_start for m in live}
        gone = [i for i, start in have.items() if now.get(i) != start]
        new = [m for m in live if have.get(m.id) != m.chunk_start]
        dropped = set(gone)
        kept_end = max((start for i, start in have.items() if i not in dropped), default=-1)
        if any(m.chunk_start < kept_end for m in new):  # not appended after: reload in order
            self._load_index(live)
            return list(have)
        self.index.remove(gone)
        if new:
            keys = self._space.read("route_k", new)  # each [C_i, L, H, D]
            summary = None if self.summary_layer is None else torch.from_numpy(
                np.stack([r[0] for r in self._space.read(SUMMARY, new)]))
            self.index.add([m.id for m in new], [m.namespace for m in new],
                           [torch.from_numpy(np.ascontiguousarray(k)) for k in keys], summary)
        return gone

    # ---------------------------------------------------------------- writes
    def add(self, docs: Sequence[NewDoc]) -> list[str]:
        """Split, encode (batched) and store ``docs`` in one atomic write; one id per doc.

        A text longer than ``max_doc_tokens`` becomes several parts linked by ``source_id``
        (the first part's id, which is the id returned). A doc may instead update a source
        (``replaces``, or its ``key`` names one) or return a duplicate's id (``dedupe``):
        ``msa_agent.runtime.targets``. Updates and adds of one call commit together.
        """
        planned = [self._plan(d) for d in docs]
        with self.lock:
            targets = resolve(self._space, docs, planned)
        router = self.router  # encoded outside the lock: other threads read meanwhile
        encoded = self._encode(planned, targets)
        with self.lock:
            again = resolve(self._space, docs, planned)
            if self.router is not router or again != targets:  # changed meanwhile: redo
                targets, encoded = again, self._encode(planned, again)
            self._write(docs, planned, targets, encoded)
        return [t.id for t in targets]

    def _encode(self, planned: Sequence[Plan], targets: Sequence[Target]
                ) -> dict[int, list[EncodedDoc]]:
        """Encoded parts of the docs whose target needs new rows, by doc index."""
        todo = [i for i, t in enumerate(targets) if t.encode]
        parts = [ids for i in todo for ids, _ in planned[i]]
        flat = self.encoder.encode(parts) if todo else []
        if self.summary_layer is not None and parts:
            vectors = self.encoder.last_states(
                [summary_ids(self.tokenizer, ids) for ids in parts], self.summary_layer)
            flat = [replace(e, summary=v) for e, v in zip(flat, vectors)]
        out, at = {}, 0
        for i in todo:
            out[i], at = flat[at:at + len(planned[i])], at + len(planned[i])
        return out

    def _write(self, docs: Sequence[NewDoc], planned: Sequence[Plan],
               targets: Sequence[Target], encoded: dict[int, list[EncodedDoc]]) -> None:
        memories: list[NewMemory] = []
        arrays: list[dict[str, np.ndarray]] = []
        for i, t in enumerate(targets):
            if t.action == "same":
                continue
            if t.reuse:
                rows = [self._space.read(name, t.old) for name in self._space.arrays]
                arrays += [{n: np.ascontiguousarray(r[k]) for n, r in zip(self._space.arrays, rows)}
                           for k in range(len(t.old))]
                memories += [_kept(docs[i], p) for p in t.old]
                continue
            when = docs[i].created_at or (t.old[0].created_at if t.old else None)
            memories += [replace(m, n_tokens=e.n_tokens, n_chunks=e.n_chunks, source_id=t.id,
                                 id=t.id if m.part == 0 else m.id, created_at=when)
                         for (_, m), e in zip(planned[i], encoded[i])]
            arrays += [self._arrays(e) for e in encoded[i]]
        if memories:
            self._store(memories, arrays, [t for t in targets if t.action == "replace"])

    def _plan(self, d: NewDoc) -> list[tuple[list[int], NewMemory]]:
        parts = split_text(self.tokenizer, d.text, self.cfg.max_doc_tokens)
        first = uuid.uuid4().hex
        return [(p.ids, NewMemory(
            text=p.text, namespace=d.namespace, kind=d.kind, metadata=dict(d.metadata or {}),
            session_id=d.session_id, user_id=d.user_id, agent_id=d.agent_id, source_id=first,
            part=p.part, n_tokens=len(p.ids), id=first if p.part == 0 else uuid.uuid4().hex,
            created_at=d.created_at, key=d.key if p.part == 0 else None, expires_at=d.expires_at,
        )) for p in parts]

    def _store(self, memories: Sequence[NewMemory], arrays: Sequence[dict[str, np.ndarray]],
               replaced: Sequence[Target] = ()) -> list[str]:
        """One atomic space write (deleting the ``replaced`` sources in it), then index what
        was stored (store dtype, so a reopened space ranks identically)."""
        with self.lock:
            ids = self._space.add(memories, arrays, replace=[t.id for t in replaced])
            if replaced:
                self._drop([p.id for t in replaced for p in t.old])
            keys = [torch.from_numpy(np.ascontiguousarray(a["route_k"])) for a in arrays]
            summary = torch.from_numpy(np.stack([a[SUMMARY][0] for a in arrays])) \
                if self.summary_layer is not None else None
            self.index.add(ids, [m.namespace for m in memories], keys, summary)
        return ids

    def _drop(self, ids: list[str]) -> None:
        """Forget deleted memories' resident routing rows and cached K/V."""
        self.index.remove(ids)
        self._forget_cached(ids)

    def _forget_cached(self, ids: Sequence[str]) -> None:
        """Drop what the caches derived from memories ``ids``: their K/V in every tier, and
        the chunk layouts (keyed by text, so all of them go: no deleted text stays held)."""
        for cache in self.kv_cache.values():
            cache.evict(ids)
        if ids:
            self._layouts.cache_clear()

    def remove(self, ids: Sequence[str]) -> int:
        """Delete memories (rows gone, array rows zeroed), drop them from the index and the
        host tier; compact once enough rows are dead. Returns how many were deleted."""
        with self.lock:
            n = self._space.delete(list(ids))
            self._drop(list(ids))
            limit = self.cfg.compact_dead_fraction
            if n and limit is not None and self._space.dead_fraction() >= limit:
                self.compact()
            return n

    def compact(self, now: datetime | None = None) -> tuple[int, int, int]:
        """Delete what has expired by ``now`` (None: nothing), then rewrite the arrays without
        dead rows; returns how many expired and the bytes on disk before and after."""
        with self.lock:
            before = self._space.stats()["bytes_on_disk"]
            expired = [] if now is None else self._space.expired(now)
            if expired:
                self._space.delete(expired)
                self._drop(expired)
            self._space.compact()
            for cache in self.kv_cache.values():  # rows moved: in-flight prefetches are void
                cache.new_epoch()
            self._load_index(self._space.live_chunks())  # drop the index's dead rows too
            return len(expired), before, self._space.stats()["bytes_on_disk"]

    def refresh_routing(self, router: Router | None | str = "keep") -> int:
        """Switch to ``router`` (unless "keep"), re-encode every stored memory's routing keys
        with it and rebuild the resident index; K/V stay. Returns the number re-encoded."""
        with self.lock:
            if router != "keep":
                if router is not None and sorted(router.layer_ids) != self.layers:
                    raise InvalidInputError(f"router covers layers {router.layer_ids}, "
                                            f"this space uses {self.layers}")
                self.router = self.encoder.router = router  # type: ignore[assignment]
                self._space.set_setting("config", stored_config(self.cfg, self.lm))
            live = self._space.live_chunks()
            if live:
                self._reencode(live)
            self._space.set_setting("router_id", self.router_id)
            self._load_index(live)
            return len(live)

    def switch_router(self, path: str | Path) -> int:
        """Route with the router file at ``path`` (it must belong to this model) from now on,
        recorded in the space's config; re-encodes every routing key. Returns how many."""
        router = Router.load(path, model_fingerprint(self.lm)).to(self.lm.device)
        with self.lock:
            self.cfg.router_path, self.cfg.routing = str(path), "learned"
            return self.refresh_routing(router)

    def _reencode(self, live: Sequence[StoredMemory]) -> None:
        reencode_routing(self._space, self.encoder, self.tokenizer, self.cfg.max_doc_tokens,
                         live, self.router_id, self._np)

    # ---------------------------------------------------------------- export / import
    def export(self, dest: str | Path, namespaces: Sequence[str] | None,
               progress: Callable[[int], None] | None) -> bundle.ExportReport:
        with self.lock:
            return bundle.export_space(self._space, self.router_id, dest, namespaces, progress)

    def import_bundle(self, src: str | Path, progress: Callable[[int], None] | None,
                      namespace: str | None = None) -> bundle.ImportReport:
        """Add a bundle's memories (ids kept; ids already here skipped), re-encoding their
        routing keys when the bundle's router differs from this space's. ``namespace``: the
        one they all land in (None: each keeps the bundle's). The whole bundle is checked
        when ``memory_batches`` is entered, before the first write."""
        manifest = bundle.read_manifest(src)
        with self.lock:
            bundle.check_compatible(manifest, self._space)
            reencode = manifest.router_id != self.router_id
            done = skipped = 0
            with bundle.memory_batches(src, manifest, self._space.workdir, namespace) as batches:
                if manifest.space_config.get(POOLED_K_SETTING) != self._space.get_setting(
                        POOLED_K_SETTING):
                    self._space.set_setting(POOLED_K_SETTING, "mixed")  # pooled reading refused
                for memories, rows in batches:
                    added = self._import_batch(memories, rows, reencode)
                    done, skipped = done + added, skipped + len(memories) - added
                    if progress:
                        progress(len(memories))
        return bundle.ImportReport(done, skipped, reencode and done > 0)

    def _import_batch(self, memories: list[NewMemory], rows: list[dict[str, np.ndarray]],
                      reencode: bool) -> int:
        present = {m.id for m in self._space.get_many([m.id or "" for m in memories])}
        keep = [i for i, m in enumerate(memories) if m.id not in present]
        if not keep:
            return 0
        if reencode:  # the bundle's keys came from another router: encode ours first
            parts = [memories[i] for i in keep]
            ids = original_ids(self.tokenizer, self.cfg.max_doc_tokens, parts)
            encoded = self.encoder.encode([ids[m.id or ""] for m in parts])
            for i, e in zip(keep, encoded):
                rows[i] = {**rows[i], "route_k": self._np(e.route_k)}
        return len(self._store([memories[i] for i in keep], [rows[i] for i in keep]))

    # ---------------------------------------------------------------- reads
    def get(self, id: str) -> StoredMemory | None:
        with self.lock:
            return self._space.get(id)

    def find(self, namespace: str | None, where: Mapping[str, Any] | None = None,
             **kwargs: Any) -> list[StoredMemory]:
        """Stored memories of ``namespace`` (None = all) matching ``where``; as ``Space.find``."""
        with self.lock:
            return self._space.find(namespace, where, **kwargs)

    def source(self, namespace: str, sid: str) -> list[StoredMemory]:
        """Every part of the source ``sid`` of ``namespace``, in order ([] if none)."""
        with self.lock:
            return source_parts(self._space, namespace, sid)

    def history(self, sid: str) -> list[HistoryEvent]:
        """The source ``sid``'s adds, updates and forgets, oldest first (``Space.history``)."""
        with self.lock:
            return self._space.history(sid)

    def namespaces(self) -> list[str]:
        with self.lock:
            return self._space.namespaces()

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return self._space.stats()

    def host_cache_stats(self) -> dict[str, dict[str, float]]:
        """Per host tier (pooled, full): its counters and hit rate (0 before any read)."""
        with self.lock:
            out = {}
            for kind, top in self.kv_cache.items():
                tier: HostKVCache | None = top
                while tier is not None:  # the GPU tier as "<kind>_gpu", the host tier as kind
                    c: dict[str, float] = dict(tier.counters)
                    reads = c["hits"] + c["misses"]
                    c["hit_rate"] = c["hits"] / reads if reads else 0.0
                    out[kind if tier.home.type == "cpu" else f"{kind}_gpu"] = c
                    tier = tier.below
            return out

    def read_kv(self, kind: str, memories: Sequence[StoredMemory], widen: bool = True,
                rows: Sequence[tuple[int, int]] | None = None
                ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``kind`` ("pooled" or "full") K/V of ``memories`` on the model's device, in order:
        from the host tier when cached (one gather launch), else from the store; float32,
        or the stored dtype without ``widen``. ``rows``: per memory, only its token rows
        ``[a, b)``."""
        with self.lock:
            return self.kv_cache[kind].fetch(self._space, memories, self.lm.device, widen,
                                             rows)

    def prefetch(self, kind: str, candidates: Candidates, keep: Iterable[str]) -> None:
        """Load ``kind`` K/V of ``candidates()`` (called on the worker thread) into the tiers
        in the background, so that their next :meth:`read_kv` is a hit; ``keep``: the ids the
        request read (a prefetch never evicts them). Returns at once. Off with
        ``prefetch=0``; never under Memory Parallel, whose routing and reads are collectives
        every rank calls in one order (a subclass's own ``read_kv``)."""
        if kind not in self.kv_cache:
            raise InvalidInputError(f"kind must be one of {sorted(self.kv_cache)}, got {kind!r}")
        if self.prefetch_depth and type(self).read_kv is Engine.read_kv:
            self.prefetcher.submit(kind, candidates, keep)

    @property
    def kv_reads_like_text(self) -> bool:
        """Stored K/V that a model not trained for MSA reads like its text: encoded in the
        chat frame and kept in every layer (``full_kv_layers="all"``), so reading it is
        prefilling the frame with the text (tests/test_kv_frame.py)."""
        return self.kv_frame is not None and len(self.full_layers) == self.shape.n_layers

    def kv_first_sooner(self, k: int) -> bool:
        """Whether reading ``k`` memories' chunk windows as stored K/V reaches the first
        token sooner than re-reading them as text. Always on a CPU, where the windows'
        prefill is what costs (k = 2: 0.95x against 5.89x the no-memory time). On CUDA the
        prefill of a few windows is nearly free and the K/V read's per-layer work is not:
        text is sooner below ``KV_SOONER_CUDA_K`` memories (H200, bfloat16, every layer:
        k = 2 and 4 1.16-1.24x against 1.26-1.33x, level at 8, K/V sooner at 16;
        docs/answering.md, "`auto` on a GPU"), and never where the read re-encodes tokens in
        context (``kv_blend``: a second forward, ~50 ms on an H200 at k = 2 and 16)."""
        if self.lm.device.type != "cuda":
            return True
        return self.cfg.kv_blend == 0 and k >= KV_SOONER_CUDA_K

    @property
    def prefetch_depth(self) -> int:
        """How many candidates a read prefetches (``MemoryConfig.prefetch``; None: 2 on CUDA,
        0 on CPU); read at each request, so a change of the config applies at once."""
        n = self.cfg.prefetch
        return n if n is not None else PREFETCH_CUDA if self.lm.device.type == "cuda" else 0

    def framed_read(self, question: str, memories: Sequence[StoredMemory],
                    rows: Sequence[tuple[int, int]] | None = None
                    ) -> tuple[MemoryKV, int, list[int]] | None:
        """A ``full`` read of a chat-framed space (``kv_chunks``: of each memory's ``rows``):
        (memory K/V, start, prompt ids); None for a bare space
        (``msa_agent.runtime.kv_frame``)."""
        if self.kv_frame is None:
            return None
        fetched = self.read_kv("full", memories, widen=False, rows=rows)  # widened in the frame
        every = list(range(self.shape.n_layers))
        framed = self.kv_frame.read(self.lm.model, lambda: self.encoder.frame_kv(every),
                                    self.tokenizer, question, fetched, self.full_layers)
        if self.cfg.kv_blend > 0 and self.kv_frame.positions == "sequential" and memories:
            blend_share(self.lm.model, framed[0], self.laid_ids(memories, rows),
                        len(self.kv_frame.head), self.cfg.kv_blend)
        return framed

    def laid_ids(self, memories: Sequence[StoredMemory],
                 rows: Sequence[tuple[int, int]] | None = None) -> list[list[int]]:
        """The token ids of the stored rows a sequential framed read lays out (each memory's
        ``rows``, every row when None), best memory last as :class:`KVFrame` orders them."""
        spans = rows if rows is not None else [(0, m.n_tokens) for m in memories]
        return [query_ids(self.tokenizer, m.text, m.n_tokens)[a:b]
                for m, (a, b) in zip(memories, spans)][::-1]

    @property
    def pooled_layout(self) -> str | None:
        """How pooled K were stored ("rope", or "pre-rope"/"mixed" for spaces that can't be
        read pooled)."""
        return self._space.get_setting(POOLED_K_SETTING)

    # ---------------------------------------------------------------- helpers
    def _np(self, t: torch.Tensor) -> np.ndarray:
        return t.to(torch.float32).numpy().astype(self.cfg.store_dtype)

    def _arrays(self, d: EncodedDoc) -> dict[str, np.ndarray]:
        out = {"route_k": self._np(d.route_k), "pooled_k": self._np(d.pooled_k),
               "pooled_v": self._np(d.pooled_v)}
        if self.cfg.keep_full_kv:
            out["full_k"], out["full_v"] = self._np(d.full_k), self._np(d.full_v)
        if self.summary_layer is not None:  # a chunk-unit array: each chunk row holds it
            assert d.summary is not None
            out[SUMMARY] = self._np(d.summary[None].expand(d.n_chunks, -1))
        return out


def fusion_of(cfg: MemoryConfig) -> Fusion:
    """How ``cfg`` fuses hybrid recall's channels (MSA routing weighs 1)."""
    return Fusion(cfg.fusion, cfg.rrf_k, ((MSA, 1.0), (LEXICAL, cfg.lexical_weight),
                                          (SUMMARY, cfg.summary_weight)),
                  cfg.recency_weight, cfg.newer_within, cfg.newer_gap_s, cfg.newer_subject_max,
                  cfg.newer_cover, cfg.more_words_within, ((SUMMARY, cfg.summary_norm),))


def space_fingerprint(lm: LoadedModel, cfg: MemoryConfig, layers: list[int]) -> dict[str, Any]:
    """What a space's arrays depend on; a different one cannot share the space (its weights
    by the dtype-exact hash: the arrays were computed in one dtype)."""
    model = {k: v for k, v in model_fingerprint(lm).items() if k != "weights_sample"}
    fp = {**model, "msa_layers": layers, "chunk_size": cfg.chunk_size,
          "store_dtype": cfg.store_dtype, "keep_full_kv": cfg.keep_full_kv}
    if cfg.keep_full_kv and cfg.full_kv_layers != "msa":
        fp["full_kv_layers"] = cfg.full_kv_layers
    if cfg.keep_full_kv and cfg.kv_frame != "bare":
        fp["kv_frame"] = cfg.kv_frame
    summary = resolve_summary_layer(ModelShape.of(lm.model), cfg.summary_layer)
    if summary is not None:
        fp["summary_layer"] = summary
    return fp


def array_specs(lm: LoadedModel, cfg: MemoryConfig, layers: list[int]) -> list[ArraySpec]:
    s, dt = ModelShape.of(lm.model), cfg.store_dtype
    kv = (len(layers), s.n_kv_heads, s.head_dim)
    specs = [ArraySpec(n, "chunk", kv, dt) for n in ("route_k", "pooled_k", "pooled_v")]
    if cfg.keep_full_kv:
        full = (len(_full_layers(s, layers, cfg)), s.n_kv_heads, s.head_dim)
        specs += [ArraySpec(n, "token", full, dt) for n in ("full_k", "full_v")]
    if cfg.summary_layer is not None:
        specs.append(ArraySpec(SUMMARY, "chunk", (s.hidden,), dt))
    return specs


def resolve_summary_layer(shape: ModelShape, layer: int | None) -> int | None:
    """``summary_layer`` as a layer index (negative counts from the top); None stays None."""
    if layer is None:
        return None
    if not -shape.n_layers <= layer < shape.n_layers:
        raise InvalidInputError(f"summary_layer {layer} is out of range for a "
                                f"{shape.n_layers}-layer model")
    return layer % shape.n_layers


def stored_config(cfg: MemoryConfig, lm: LoadedModel) -> dict[str, Any]:
    """The ``config`` setting of a space: its model, layout and routing choice."""
    return {"model": lm.name, **SpaceLayout.of(cfg).to_json(),
            **{k: getattr(cfg, k) for k in ROUTING_SETTINGS}}


def _full_layers(shape: ModelShape, layers: list[int], cfg: MemoryConfig) -> list[int]:
    return list(range(shape.n_layers)) if cfg.full_kv_layers == "all" else layers


def _host_cache_bytes(lm: LoadedModel, cfg: MemoryConfig) -> int:
    mb = cfg.host_cache_mb
    if mb is None:
        mb = HOST_CACHE_MB_CUDA if lm.device.type == "cuda" else HOST_CACHE_MB_CPU
    return mb << 20


def _kv_tiers(kind: str, lm: LoadedModel, cfg: MemoryConfig) -> HostKVCache:
    """The tiers ``kind``'s K/V are read through, top first: on CUDA a GPU tier
    (``gpu_cache_mb``) above the pinned host tier (``host_cache_mb``), else the host tier."""
    cuda = lm.device.type == "cuda"
    host = HostKVCache((f"{kind}_k", f"{kind}_v"), _host_cache_bytes(lm, cfg), cuda)
    mb = cfg.gpu_cache_mb if cfg.gpu_cache_mb is not None else GPU_CACHE_MB
    if not cuda or mb == 0:
        return host
    return HostKVCache(host.names, mb << 20, False, home=lm.device, below=host)


def _default_batch_tokens(lm: LoadedModel) -> int:
    """Padded tokens per pass: small on CPU (bigger batches were slower there), large on GPU."""
    return CUDA_BATCH_TOKENS if lm.device.type == "cuda" else CPU_BATCH_TOKENS
