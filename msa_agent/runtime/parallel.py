"""Memory Parallel: routing keys sharded by memory over torch.distributed ranks, the model
replicated on each (the paper's scale-out; docs/scale.md, "Memory Parallel").

- **Shard.** Memory ``i`` of the space's live order (``Space.live_chunks``, the order of the
  single-process :class:`~msa_agent.runtime.routing.RoutingIndex`) lives on rank
  ``i % world``: round-robin, so each namespace spreads over every rank. A rank keeps only its
  memories' unit routing keys resident, plus the list of every live id (a few bytes each).
- **Per query** (every rank calls it, same arguments, same order: SPMD, as torchrun runs it):
  rank 0 runs the backbone and **broadcasts** the router queries ``[T, L, Hq, D]``; each rank
  ranks its shard with ``RoutingIndex.rank`` (the one rule, unchanged) and **all-gathers**
  its local top-k as (global position, score) pairs; every rank merges them by score, equal
  scores by position (``routing.top_docs``'s order, so the merge equals the single-process
  top-k); the **owners** of the selected memories all-gather those memories' routing-key rows,
  from which every rank computes the per-layer evidence exactly as one process would.
- **Collectives** are tensors only (NCCL-ready): ``broadcast`` and ``all_gather`` with
  padding to the largest contribution. The backend follows the model's device (``nccl`` on
  CUDA, ``gloo`` on CPU), initialised from torchrun's environment (``env://``).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence

import numpy as np
import torch
import torch.distributed as dist

from msa_agent.config import MemoryConfig
from msa_agent.errors import InvalidInputError
from msa_agent.model.loader import LoadedModel
from msa_agent.model.router import Router
from msa_agent.runtime.engine import Engine
from msa_agent.runtime.fusion import LEXICAL, MSA
from msa_agent.runtime.residency import take_rows
from msa_agent.runtime.results import Recalled, Scope
from msa_agent.runtime.routing import Ranked, RoutingIndex
from msa_agent.store import Space, SpaceBusyError, StoredMemory

__all__ = ["Comm", "ShardedEngine", "gather_rows", "gather_top", "init_from_env", "local_top",
           "merge_top", "shard_of", "sharded_top"]

Candidate = tuple[int, float]  # (global position, routing score)
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.long, torch.int32]


def backend_for(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


def init_from_env(device: torch.device) -> None:
    """Join torchrun's process group (``env://``: RANK, WORLD_SIZE, MASTER_ADDR/PORT) unless
    already joined; on CUDA each rank takes GPU ``LOCAL_RANK``."""
    if dist.is_initialized():
        return
    if device.type == "cuda":
        gpu = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(gpu)
        dist.init_process_group("nccl", device_id=gpu)
    else:
        dist.init_process_group("gloo")


def shard_of(n: int, rank: int, world: int) -> range:
    """Global positions held by ``rank``: ``rank, rank + world, ...`` below ``n``."""
    return range(rank, n, world)


def merge_top(candidates: Sequence[Candidate], k: int) -> list[Candidate]:
    """The ``k`` best of every shard's local top-k: score descending, equal scores by
    ascending position (``routing.top_docs``'s order). Exact: a global top-k member is in its
    shard's local top-k, since a shard's order restricts the global one."""
    return sorted(candidates, key=lambda c: (-c[1], c[0]))[:k]


class Comm:
    """The process group's tensor collectives, on the device its backend needs."""

    def __init__(self, device: torch.device, group: dist.ProcessGroup | None = None) -> None:
        self.group = group
        self.rank, self.world = dist.get_rank(group), dist.get_world_size(group)
        self.device = device if backend_for(device) == "nccl" else torch.device("cpu")

    def broadcast(self, t: torch.Tensor | None, src: int = 0) -> torch.Tensor:
        """``t`` (float32, given on ``src`` only) on every rank: its shape, then its data."""
        shape = torch.zeros(8, dtype=torch.long, device=self.device)  # [ndim, dims...]
        if self.rank == src:
            assert t is not None
            shape[0], shape[1:1 + t.dim()] = t.dim(), torch.tensor(t.shape)
        dist.broadcast(shape, src, self.group)
        dims = shape[1:1 + int(shape[0])].tolist()
        out = t.to(self.device, torch.float32).contiguous() if self.rank == src else \
            torch.empty(dims, dtype=torch.float32, device=self.device)
        dist.broadcast(out, src, self.group)
        return out

    def all_gather_rows(self, rows: torch.Tensor) -> list[torch.Tensor]:
        """Every rank's ``rows`` ``[n_r, *tail]`` (one tail everywhere, ``n_r`` free, at most
        5 dims; an empty rank may send any empty tensor), indexed by rank, in the dtype of
        the rank sending most: shapes first, then the rows padded to the largest ``n_r``."""
        shape = torch.zeros(8, dtype=torch.long, device=self.device)  # [dtype, n_r, *tail, 0..]
        shape[0] = DTYPES.index(rows.dtype)
        shape[1:1 + rows.dim()] = torch.tensor(rows.shape)
        shapes = [torch.empty_like(shape) for _ in range(self.world)]
        dist.all_gather(shapes, shape, self.group)
        sizes = [int(s[1]) for s in shapes]
        widest = shapes[sizes.index(max(sizes))].tolist()
        dtype, tail = DTYPES[widest[0]], widest[2:]
        tail = tail[:tail.index(0)] if 0 in tail else tail
        if not max(sizes):
            return [rows.new_zeros((0, *tail), dtype=dtype) for _ in sizes]
        padded = torch.zeros((max(sizes), *tail), dtype=dtype, device=self.device)
        if rows.numel():
            padded[: rows.shape[0]] = rows.to(self.device)
        out = [torch.empty_like(padded) for _ in range(self.world)]
        dist.all_gather(out, padded, self.group)
        return [o[:s] for o, s in zip(out, sizes)]


def sharded_top(index: RoutingIndex, comm: Comm, q: torch.Tensor, k: int, mask: torch.Tensor,
                combine: str) -> list[Candidate]:
    """Global top-``k`` of a sharded index: local ``rank`` (no evidence), all-gather of the
    ``[k', 2]`` float64 (position, score) pairs (float32 scores and positions < 2^53 exact),
    merge. ``index`` holds this rank's shard; ``mask`` is over its local positions."""
    return gather_top(comm, local_top(index, comm.rank, comm.world, q, k, mask, combine), k)


def gather_top(comm: Comm, mine: Sequence[Candidate], k: int) -> list[Candidate]:
    """Every rank's candidates, all-gathered as ``[k', 2]`` float64, merged."""
    pairs = torch.tensor(mine, dtype=torch.float64).reshape(-1, 2)  # [k', 2]
    every = torch.cat(comm.all_gather_rows(pairs)).cpu().tolist()
    return merge_top([(int(p), s) for p, s in every], k)


def local_top(index: RoutingIndex, rank: int, world: int, q: torch.Tensor, k: int,
              mask: torch.Tensor, combine: str) -> list[Candidate]:
    """This shard's top-``k`` (``RoutingIndex.rank``, no evidence) at global positions."""
    local = index.rank(q, k, mask, combine, explain=False)
    return [(rank + d * world, s) for d, s in zip(local.docs, local.scores)]


def gather_rows(index: RoutingIndex, comm: Comm, positions: Sequence[int], ids: Sequence[str]
                ) -> RoutingIndex:
    """An index of the memories at global ``positions`` (ids: every live id, by position) in
    ascending position, with their owners' unit routing rows: the rows ``_explain`` reads in
    one process, in the same order, so the evidence is bit-identical."""
    wanted = sorted(set(positions))
    local = [p // comm.world for p in wanted if p % comm.world == comm.rank]
    hit = torch.isin(index.chunk_doc, torch.tensor(local, dtype=torch.long, device=index.device))
    counts = torch.bincount(index.chunk_doc[hit], minlength=len(index.doc_ids))[local]
    rows = comm.all_gather_rows(index.unit_rows(hit))  # per rank [C_r, L, H, D] float32
    sizes = comm.all_gather_rows(counts.to(torch.long))  # per rank [n_r]
    parts: list[tuple[int, torch.Tensor]] = []
    for r, (block, count) in enumerate(zip(rows, sizes)):
        owned = [p for p in wanted if p % comm.world == r]
        if owned:
            parts += zip(owned, block.to(index.device).split(count.tolist()))
    parts.sort(key=lambda part: part[0])
    out = RoutingIndex(index.device, use_kernel=index.use_kernel, top_tokens=index.top_tokens,
                       key_dtype=index.key_dtype, layer_weight=index.layer_weight)
    if parts:
        out.add_unit([ids[p] for p, _ in parts], [""] * len(parts),
                     torch.cat([r for _, r in parts]), [r.shape[0] for _, r in parts])
    return out


class ShardedEngine(Engine):
    """An :class:`Engine` over a read-only space whose routing index holds this rank's shard;
    ``route`` (modes ``msa``, ``hybrid``, ``lexical``) and ``query`` are collectives.

    The index is the space's snapshot when opened (every rank checks that it loaded the same
    memories): a writer's later commits are not followed, as ranks could load different ones.
    """

    def __init__(self, lm: LoadedModel, cfg: MemoryConfig, router: Router | None,
                 space: Space) -> None:
        if cfg.summary_layer is not None:
            raise InvalidInputError("Memory Parallel does not route with a summary channel: "
                                    "open this space in one process (summary_layer is set)")
        self.ids: list[str] = []  # every live memory's id, by global position
        self._gpos: dict[str, int] = {}
        super().__init__(lm, cfg, router, space)
        self.comm = Comm(self.lm.device)  # the index loads after this (open's attach)

    def follow_writer(self) -> None:
        if self._generation is None:  # once, at open
            super().follow_writer()

    def _load_index(self, live: Sequence[StoredMemory]) -> None:
        comm = self.comm
        self.ids, self._gpos = [m.id for m in live], {m.id: i for i, m in enumerate(live)}
        mine = [live[i] for i in shard_of(len(live), comm.rank, comm.world)]
        self.index = self._empty_index()
        if mine:
            keys = self._space.read("route_k", mine)  # each [C_i, L, H, D], store dtype
            self.index.add([m.id for m in mine], [m.namespace for m in mine],
                           [torch.from_numpy(np.ascontiguousarray(k)) for k in keys])
        _check_same_snapshot(comm, self.ids)

    def query(self, text: str) -> torch.Tensor:
        """Router queries ``[T, L, Hq, D]``: rank 0's forward, broadcast (bit-identical)."""
        q = super().query(text) if self.comm.rank == 0 else None
        return self.comm.broadcast(q).to(self.lm.device)

    def query_many(self, texts: Sequence[str]) -> list[torch.Tensor]:
        """One :meth:`query` (rank 0's forward, broadcast) per text, as a single process
        computes a lone query: every rank scores with the same bits."""
        return [self.query(t) for t in texts]

    def route(self, text: str, k: int, scope: Scope, exclude: set[str] | None = None,
              q: torch.Tensor | None = None, mode: str | None = None,
              evidence: bool = True) -> list[Recalled]:
        """The collective route; the hits always carry their evidence (a sharded rank's merge
        explains its picks, ``evidence`` is not needed to skip anything here)."""
        mode, exclude = mode or self.cfg.recall_mode, exclude or set()
        if mode == LEXICAL:  # no routing keys: every rank reads the shared space alike
            return super().route(text, k, scope, exclude, q, mode, evidence)
        pool = k if mode == MSA else max(k, self.cfg.fusion_pool)
        lexical = self._lexical(text, pool, scope, exclude) if mode != MSA else []
        q = self.query(text) if q is None else q
        with self.lock:
            top = sharded_top(self.index, self.comm, q, pool, self._mask(scope, exclude),
                              self.cfg.layer_combine)
            if mode == MSA:
                return self._explained(top, q)
        msa = [(self.ids[p], s) for p, s in top]
        return self._fused({LEXICAL: lexical, MSA: self._completed(msa, lexical, q)}, k, q,
                           text)

    def _explained(self, top: list[tuple[int, float]], q: torch.Tensor) -> list[Recalled]:
        """``msa`` mode's results: the merged top with each memory's evidence."""
        if not top:  # nothing in scope, on any rank alike
            return []
        sub = gather_rows(self.index, self.comm, [p for p, _ in top], self.ids)
        at = {p: i for i, p in enumerate(sorted(p for p, _ in top))}  # sub holds them ascending
        ranked = sub.evidence([at[p] for p, _ in top], [s for _, s in top], q,
                              self.cfg.layer_combine)
        return self._recalled_in(sub, ranked)

    def _recalled_in(self, sub: RoutingIndex, ranked: Ranked) -> list[Recalled]:
        by_id = {m.id: m for m in self._space.get_many([sub.doc_ids[d] for d in ranked.docs])}
        out = []
        for d, score, per_layer, chunk in zip(ranked.docs, ranked.scores, ranked.layer_scores,
                                              ranked.best_chunk):
            m = by_id.get(sub.doc_ids[d])
            if m is not None:
                out.append(Recalled(m, score, layer_scores=dict(zip(self.layers, per_layer)),
                                    best_chunk=chunk, channels={MSA: score}))
        return out

    def _explain_ids(self, ids: list[str], q: torch.Tensor, evidence: bool = True
                     ) -> tuple[Ranked, list[str]]:
        """``RoutingIndex.explain`` over the owners' rows (hybrid's evidence and completed
        scores), with the gathered index's ids."""
        sub = gather_rows(self.index, self.comm, [self._gpos[i] for i in ids if i in self._gpos],
                          self.ids)
        return sub.explain(ids, q, self.cfg.layer_combine, evidence), sub.doc_ids

    def read_kv(self, kind: str, memories: Sequence[StoredMemory], widen: bool = True,
                rows: Sequence[tuple[int, int]] | None = None
                ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``kind`` K/V of ``memories`` (each ``[S_i, L, Hkv, D]``, always float32: the rows
        travel widened), in order, on every rank: each owner reads its own memories (from
        its host tier) and sends them, all-gathered; ``rows`` then cut each memory to its
        token rows ``[a, b)``. A collective."""
        owner = [self._gpos.get(m.id, 0) % self.comm.world for m in memories]
        mine = [m for m, r in zip(memories, owner) if r == self.comm.rank]
        fetched = super().read_kv(kind, mine)
        kv = [self.comm.all_gather_rows(torch.cat([t[j] for t in fetched]) if fetched
                                        else torch.empty(0)) for j in (0, 1)]
        sizes = self.comm.all_gather_rows(torch.tensor([t[0].shape[0] for t in fetched],
                                                       dtype=torch.long))
        got: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for r in range(self.comm.world):
            ms = [m for m, o in zip(memories, owner) if o == r]
            if ms:
                parts = zip(kv[0][r].split(sizes[r].tolist()), kv[1][r].split(sizes[r].tolist()))
                got.update({m.id: (k.to(self.lm.device), v.to(self.lm.device))
                            for m, (k, v) in zip(ms, parts)})
        return take_rows([got[m.id] for m in memories], rows)

    def route_per_layer(self, text: str, k: int, scope: Scope, q: torch.Tensor | None = None
                        ) -> dict[int, list[StoredMemory]]:
        raise InvalidInputError("per-layer selection (answer with read='pooled') is not "
                                "supported under Memory Parallel")


def _check_same_snapshot(comm: Comm, ids: Sequence[str]) -> None:
    """Every rank loaded the same live memories (else positions would disagree)."""
    digest = hashlib.sha256("\n".join(ids).encode()).digest()
    mine = torch.tensor([[len(ids), int.from_bytes(digest[:6], "big")]], dtype=torch.float64)
    every = torch.cat(comm.all_gather_rows(mine))
    if not bool((every == every[0]).all()):
        raise SpaceBusyError("the ranks loaded different memories (the space was written "
                             "while they opened it): open it again")
