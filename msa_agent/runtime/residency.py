"""The host tier of memory K/V: a (pinned) host cache, gathered onto the GPU in one launch.

MSA keeps routing keys resident on the GPU and memory K/V in host DRAM; only the selected
memories' K/V move to the GPU for an answer. :class:`HostKVCache` is that DRAM tier for one
pair of arrays (``pooled_k``/``pooled_v`` or ``full_k``/``full_v``): rows of memories read once
from the store stay in one pinned host buffer ``[rows, L, Hkv, D]``, and the rows of the
selected memories reach the device through ``kernels.gather_to_device`` (one zero-copy
launch per array on CUDA, no copy per chunk). Entries are keyed by memory id: ids are never
reused and a memory's K/V never change, so entries cannot go stale; forgotten memories are
evicted and their rows zeroed. Past its byte budget the least recently used memories not in
the current request are evicted and the rest compacted to the front of the buffer; a request
whose own memories exceed the budget is read from the store directly. ``counters`` reports
hits, misses and evictions (``Memory.stats().host_cache``).

The same class is the **GPU tier** above it: with ``home`` a CUDA device and ``below`` the
host tier, its rows live in GPU memory, a hit is one ``index_select`` there, and misses come
from the host tier (one gather launch) instead of the store; eviction cascades down, so a
forgotten memory leaves neither tier.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence

import numpy as np
import torch

from msa_agent.kernels import gather_to_device
from msa_agent.store import Space, StoredMemory


class HostKVCache:
    """Host rows of one K/V array pair, by memory id; see the module docstring."""

    def __init__(self, names: tuple[str, str], budget_bytes: int, pin: bool,
                 home: torch.device | None = None, below: HostKVCache | None = None) -> None:
        """``home``: where the rows live (host memory by default); ``below``: the tier that
        serves misses (None: the store)."""
        self.names, self.budget, self.pin = names, budget_bytes, pin
        self.home, self.below = home or torch.device("cpu"), below
        self.k: torch.Tensor | None = None  # [capacity, L, Hkv, D]
        self.v: torch.Tensor | None = None
        # memory id -> (first row, n rows), least recently used first
        self.rows: OrderedDict[str, tuple[int, int]] = OrderedDict()
        self.used = 0  # rows up to here may hold data (live spans, or zeroed holes)
        self.hits = self.misses = self.evictions = 0

    @property
    def counters(self) -> dict[str, int]:
        """Memories served from the cache (hits), read from the store (misses), dropped for
        room (evictions); bytes held; memories cached."""
        return {"hits": self.hits, "misses": self.misses, "evictions": self.evictions,
                "bytes": self.nbytes, "memories": len(self.rows)}

    @property
    def nbytes(self) -> int:
        return 0 if self.k is None else 2 * self.k.numel() * self.k.element_size()

    def fetch(self, space: Space, memories: Sequence[StoredMemory], device: torch.device,
              widen: bool = True) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Each memory's ``(K, V)`` ``[S_i, L, Hkv, D]`` on ``device``, in order: float32, or
        with ``widen`` False the stored dtype (a reader that copies them anyway widens
        there, without a float32 temporary of every row)."""
        if not memories:
            return []
        unique = list({m.id: m for m in memories}.values())
        missing = [m for m in unique if m.id not in self.rows]
        self.hits += len(unique) - len(missing)
        self.misses += len(missing)
        for m in unique:
            if m.id in self.rows:
                self.rows.move_to_end(m.id)  # most recently used
        if missing and not self._add(space, missing, {m.id for m in unique}):
            return self._direct(space, memories, device, widen)
        spans = [self.rows[m.id] for m in memories]
        idx = torch.cat([torch.arange(s, s + n) for s, n in spans])
        assert self.k is not None and self.v is not None
        k, v = self._take(self.k, idx, device), self._take(self.v, idx, device)
        if widen:
            k, v = k.float(), v.float()
        sizes = [n for _, n in spans]
        return list(zip(k.split(sizes), v.split(sizes)))

    def _take(self, buf: torch.Tensor, idx: torch.Tensor, device: torch.device) -> torch.Tensor:
        """Rows ``idx`` of ``buf`` on ``device``: a gather from a host buffer (one launch),
        an ``index_select`` where the buffer lives on a device."""
        if buf.device.type != "cpu":  # the GPU tier: select there
            return buf.index_select(0, idx.to(buf.device)).to(device)
        return gather_to_device(buf, idx, device)

    def evict(self, ids: Iterable[str]) -> None:
        """Forget these memories' rows and zero them, here and in the tiers below (erasure:
        a forgotten memory's K/V do not stay in memory; the rows are reused at the next
        compaction)."""
        ids = list(ids)
        if self.below is not None:
            self.below.evict(ids)
        for i in ids:
            span = self.rows.pop(i, None)
            if span is not None and self.k is not None and self.v is not None:
                self.k[span[0]:span[0] + span[1]] = 0
                self.v[span[0]:span[0] + span[1]] = 0

    def _add(self, space: Space, memories: Sequence[StoredMemory], request: set[str]) -> bool:
        """Read ``memories`` from the store into the cache, evicting the least recently used
        memories outside ``request`` for room; False (nothing added) if the request's own
        memories exceed the budget."""
        ks, vs = self._load(space, memories)
        need = sum(k.shape[0] for k in ks)
        row_bytes = 2 * ks[0][0].numel() * ks[0].element_size()
        most = self.budget // row_bytes
        kept = sum(n for i, (_, n) in self.rows.items() if i in request)
        if kept + need > most:
            return False
        if self.used + need > most:
            self._make_room(most - need, request)
        self._reserve(self.used + need, ks[0], most)
        assert self.k is not None and self.v is not None
        for m, k, v in zip(memories, ks, vs):
            n = k.shape[0]
            self.k[self.used : self.used + n] = k
            self.v[self.used : self.used + n] = v
            self.rows[m.id] = (self.used, n)
            self.used += n
        return True

    def _make_room(self, target: int, request: set[str]) -> None:
        """Evict least recently used memories outside ``request`` until the live rows fit in
        ``target``, then compact the live rows to the front (zeroing the rows left behind, so
        no copy of a later-forgotten memory stays)."""
        live = sum(n for _, n in self.rows.values())
        for i in list(self.rows):
            if live <= target:
                break
            if i not in request:
                live -= self.rows.pop(i)[1]
                self.evictions += 1
        assert self.k is not None and self.v is not None
        top = 0
        for i, (start, n) in sorted(self.rows.items(), key=lambda item: item[1][0]):
            if start != top:  # moving down: copy through a clone (the ranges may overlap)
                self.k[top : top + n] = self.k[start : start + n].clone()
                self.v[top : top + n] = self.v[start : start + n].clone()
                self.rows[i] = (top, n)  # same key: its place in the LRU order is kept
            top += n
        self.k[top : self.used] = 0
        self.v[top : self.used] = 0
        self.used = top

    def _load(self, space: Space, memories: Sequence[StoredMemory]
              ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The K and V rows of ``memories``, from the tier below (onto ``home``, stored dtype)
        or from the store."""
        if self.below is not None:
            fetched = self.below.fetch(space, memories, self.home, widen=False)
            return [k for k, _ in fetched], [v for _, v in fetched]
        ks, vs = (space.read(name, memories) for name in self.names)
        return [torch.from_numpy(k) for k in ks], [torch.from_numpy(v) for v in vs]

    def _reserve(self, rows: int, like: torch.Tensor, most: int) -> None:
        """Grow the buffers (doubling, at most ``most`` rows) to hold ``rows`` rows, keeping
        what they hold."""
        have = 0 if self.k is None else self.k.shape[0]
        if rows <= have:
            return
        cap = max(rows, min(max(2 * have, 64), most))
        pin = self.pin and self.home.type == "cpu"
        new = [torch.empty((cap, *like.shape[1:]), dtype=like.dtype, device=self.home,
                           pin_memory=pin) for _ in range(2)]
        if self.k is not None and self.v is not None:
            new[0][: self.used] = self.k[: self.used]
            new[1][: self.used] = self.v[: self.used]
        self.k, self.v = new

    def _direct(self, space: Space, memories: Sequence[StoredMemory], device: torch.device,
                widen: bool = True) -> list[tuple[torch.Tensor, torch.Tensor]]:
        if self.below is not None:  # too big for this tier: straight from the one below
            return self.below.fetch(space, memories, device, widen)
        ks, vs = (space.read(name, memories) for name in self.names)

        def put(a: np.ndarray) -> torch.Tensor:
            t = torch.from_numpy(a)
            return (t.float() if widen else t).to(device)
        return [(put(k), put(v)) for k, v in zip(ks, vs)]
