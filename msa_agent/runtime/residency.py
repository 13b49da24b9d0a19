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

:class:`Prefetcher` fills the tiers ahead of a read (``MemoryConfig.prefetch``): once a
request has read its memories, one worker thread ranks the candidates after them, reads
their rows from the store (no engine lock held), on CUDA moves them to the device on a side
stream (waited for by the worker, before any foreground op can see them), and admits them to
the tiers under the engine's lock as their least recently used entries (the first to go
when room is needed; never evicting what the request read). Every ``evict`` (a forget, an
update) and every compaction starts a new ``epoch``; rows read before it are dropped, so a
prefetch never brings back the K/V of a forgotten memory, nor rows read at offsets that
moved. Since the worker may write the pinned host buffer right after a foreground read
returned, every host write first waits for the device gathers still reading it (an event).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from msa_agent.kernels import gather_to_device
from msa_agent.store import Space, StoredMemory, StoreError

KV = tuple[torch.Tensor, torch.Tensor]  # one memory's (K, V) rows [S, L, Hkv, D]


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
        self.epoch = 0  # a new one at every evict or store compaction (see the module doc)
        self._reading: Any = None  # CUDA event: the last device gather from this host buffer
        self.prefetched: set[str] = set()  # held, loaded ahead by a prefetch, not read yet
        self.prefetch_issued = self.prefetch_used = self.prefetch_wasted = 0

    @property
    def counters(self) -> dict[str, int]:
        """Memories served from the cache (hits), read from the store (misses), dropped for
        room (evictions); bytes held; memories cached. Prefetch: memories loaded here ahead
        of a read (issued), later read (used), evicted or forgotten unread (wasted); the
        rest are held, not read yet."""
        return {"hits": self.hits, "misses": self.misses, "evictions": self.evictions,
                "bytes": self.nbytes, "memories": len(self.rows),
                "prefetch_issued": self.prefetch_issued, "prefetch_used": self.prefetch_used,
                "prefetch_wasted": self.prefetch_wasted}

    @property
    def nbytes(self) -> int:
        return 0 if self.k is None else 2 * self.k.numel() * self.k.element_size()

    def fetch(self, space: Space, memories: Sequence[StoredMemory], device: torch.device,
              widen: bool = True, rows: Sequence[tuple[int, int]] | None = None
              ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Each memory's ``(K, V)`` ``[S_i, L, Hkv, D]`` on ``device``, in order: float32, or
        with ``widen`` False the stored dtype (a reader that copies them anyway widens
        there, without a float32 temporary of every row). ``rows``: per memory, only its
        token rows ``[a, b)`` are copied (a ``kv_chunks`` read)."""
        if not memories:
            return []
        unique = list({m.id: m for m in memories}.values())
        missing = [m for m in unique if m.id not in self.rows]
        self.hits += len(unique) - len(missing)
        self.misses += len(missing)
        for m in unique:
            if m.id in self.rows:
                self.rows.move_to_end(m.id)  # most recently used
                if m.id in self.prefetched:
                    self.prefetched.discard(m.id)
                    self.prefetch_used += 1
        request = {m.id for m in unique}
        if missing and not (self._fits(space, missing, request)
                            and self._add(space, missing, request)):
            return self._direct(space, memories, device, widen, rows)
        spans = [self.rows[m.id] for m in memories]
        if rows is not None:
            spans = [(s + a, b - a) for (s, _), (a, b) in zip(spans, rows, strict=True)]
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
        out = gather_to_device(buf, idx, device)
        if out.is_cuda:  # the launch may still read ``buf`` when this returns: mark its end
            self._reading = torch.cuda.Event()
            self._reading.record(torch.cuda.current_stream(out.device))
        return out

    def _settle(self) -> None:
        """Wait for device gathers still reading this host buffer before the host writes it
        (zeroes, compaction, new rows): the prefetch worker may write it right after the
        foreground's read returned, its gather still in flight."""
        if self._reading is not None:
            self._reading.synchronize()
            self._reading = None

    def evict(self, ids: Iterable[str]) -> None:
        """Forget these memories' rows and zero them, here and in the tiers below (erasure:
        a forgotten memory's K/V do not stay in memory; the rows are reused at the next
        compaction)."""
        ids = list(ids)
        if self.below is not None:
            self.below.evict(ids)
        self.epoch += 1  # a prefetch that read rows before this must not admit them
        self._settle()
        for i in ids:
            span = self.rows.pop(i, None)
            self._unread(i)
            if span is not None and self.k is not None and self.v is not None:
                self.k[span[0]:span[0] + span[1]] = 0
                self.v[span[0]:span[0] + span[1]] = 0

    def new_epoch(self) -> None:
        """The store moved rows (a compaction): rows read before now are not admitted."""
        self.epoch += 1
        if self.below is not None:
            self.below.new_epoch()

    def held(self, id: str) -> KV:
        """A copy of the rows held for ``id`` (on ``home``, stored dtype)."""
        assert self.k is not None and self.v is not None
        start, n = self.rows[id]
        return self.k[start:start + n].clone(), self.v[start:start + n].clone()

    def admit(self, memories: Sequence[StoredMemory], rows: Mapping[str, KV],
              keep: set[str], count: bool = True) -> list[str]:
        """Add prefetched ``rows`` (on ``home``, stored dtype) of ``memories`` (best first)
        not held yet, as the least recently used entries (the worst coldest: a guess goes
        before any read memory), evicting only memories outside ``keep`` and these; the
        worst are left out if they do not all fit. ``count``: record them as prefetched
        (False for a tier that only passes them up). Returns the ids added."""
        new = [m for m in {m.id: m for m in memories}.values()
               if m.id not in self.rows and m.id in rows]
        if not new or self.budget <= 0:
            return []
        row_bytes = _row_bytes(rows[new[0].id][0])
        sizes = [rows[m.id][0].shape[0] for m in new]
        while new and not self._room_for(sum(sizes), row_bytes, keep):
            new, sizes = new[:-1], sizes[:-1]
        if not new:
            return []
        self._put(new, [rows[m.id][0] for m in new], [rows[m.id][1] for m in new],
                  keep | {m.id for m in new})
        for m in new:  # best first, each to the cold end: the worst ends up coldest
            self.rows.move_to_end(m.id, last=False)
        if count:
            self.prefetched |= {m.id for m in new}
            self.prefetch_issued += len(new)
        return [m.id for m in new]

    def _unread(self, id: str) -> None:
        """``id`` left this tier: a prefetched memory never read was wasted."""
        if id in self.prefetched:
            self.prefetched.discard(id)
            self.prefetch_wasted += 1

    def _fits(self, space: Space, memories: Sequence[StoredMemory], request: set[str]) -> bool:
        """Whether ``memories`` and the request's held rows fit the budget, judged from the
        records (row counts) and the array's row size: a request that cannot fit goes
        straight to :meth:`_direct` without reading its memories whole first."""
        spec = space.arrays[self.names[0]]
        row_bytes = 2 * int(np.prod(spec.row_shape)) * np.dtype(spec.dtype).itemsize
        need = sum(b - a for a, b in (m.rows(spec.unit) for m in memories))
        return self._room_for(need, row_bytes, request)

    def _room_for(self, need: int, row_bytes: int, request: set[str]) -> bool:
        """Whether ``need`` more rows fit beside the rows the request already holds (the
        rest can be evicted for them)."""
        kept = sum(n for i, (_, n) in self.rows.items() if i in request)
        return kept + need <= self.budget // row_bytes

    def _add(self, space: Space, memories: Sequence[StoredMemory], request: set[str]) -> bool:
        """Read ``memories`` from the store into the cache, evicting the least recently used
        memories outside ``request`` for room; False (nothing added) if the request's own
        memories exceed the budget."""
        ks, vs = self._load(space, memories)
        return self._put(memories, ks, vs, request)

    def _put(self, memories: Sequence[StoredMemory], ks: Sequence[torch.Tensor],
             vs: Sequence[torch.Tensor], request: set[str]) -> bool:
        """Write rows ``ks``/``vs`` (on ``home``) of ``memories`` (none held yet), making room
        as ``_add`` says; False (nothing added) if they and the request's held rows exceed
        the budget."""
        need = sum(k.shape[0] for k in ks)
        row_bytes = _row_bytes(ks[0])
        most = self.budget // row_bytes
        if not self._room_for(need, row_bytes, request):
            return False
        self._settle()
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
                self._unread(i)
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
                widen: bool = True, rows: Sequence[tuple[int, int]] | None = None
                ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        if self.below is not None:  # too big for this tier: straight from the one below
            return self.below.fetch(space, memories, device, widen, rows)
        # with ``rows`` only those rows leave the store (a kv_chunks read of memories too
        # big for the tier: its windows, not the whole memories)
        ks, vs = (space.read(name, memories, rows) for name in self.names)

        def put(a: np.ndarray) -> torch.Tensor:
            t = torch.from_numpy(a)
            return (t.float() if widen else t).to(device)
        return [(put(k), put(v)) for k, v in zip(ks, vs, strict=True)]


def _row_bytes(k: torch.Tensor) -> int:
    """Bytes one row of K/V (``k``'s row and its V twin) takes in a tier."""
    return 2 * k[0].numel() * k.element_size()


def take_rows(fetched: Sequence[tuple[Any, Any]], rows: Sequence[tuple[int, int]] | None
              ) -> list[tuple[Any, Any]]:
    """Each memory's K/V ``[S_i, ...]`` cut to its token rows ``[a, b)`` (``kv_chunks``);
    every row without ``rows``. Views: nothing is copied."""
    if rows is None:
        return list(fetched)
    return [(k[a:b], v[a:b]) for (k, v), (a, b) in zip(fetched, rows, strict=True)]


Candidates = Callable[[], Sequence[StoredMemory]]  # run on the worker: memories to load


@dataclass(frozen=True)
class _Job:
    kind: str  # which tier stack ("pooled" or "full")
    candidates: Candidates
    keep: frozenset[str]  # what the request read: never evicted for a guess


class Prefetcher:
    """Loads the K/V of memories likely to be read next into their tiers, on one worker.

    ``lock`` is the engine's: every tier is only touched under it, as by the foreground.
    The worker takes it only to rank (a job's ``candidates``, through the engine's own
    routing, with the request's router queries: never a forward, so never the model's lock),
    to look up (which memories still exist, which are held) and to admit rows already read;
    never while reading the store (the space serialises its own reads, one memory at a time
    here) or waiting for a device copy. :meth:`submit` never blocks: at most ``queued`` jobs
    wait, the oldest dropped (a newer request's guesses are better). Failures are counted
    (``failed``, ``last_error``), never raised: a lost guess costs a miss later, nothing
    else. :meth:`wait` must not be called holding ``lock``."""

    def __init__(self, lock: AbstractContextManager[Any], space: Space,
                 tiers: Mapping[str, HostKVCache], queued: int = 2) -> None:
        """``tiers``: each kind's top tier (its ``below`` chain is followed)."""
        self._lock, self._space, self._tiers = lock, space, tiers
        self._jobs: deque[_Job] = deque(maxlen=queued)
        self._wake = threading.Condition()
        self._busy = self._closed = False
        self._thread: threading.Thread | None = None
        self._stream: Any = None  # the CUDA side stream, made on first use
        self.failed = 0
        self.last_error: BaseException | None = None
        self.busy_s = 0.0  # time spent in jobs (ranking, reading, copying, admitting)

    def submit(self, kind: str, candidates: Candidates, keep: Iterable[str]) -> None:
        """Load ``candidates()``' ``kind`` K/V in the background (the worker starts on the
        first call); returns at once. Nothing after :meth:`close`."""
        with self._wake:
            if self._closed:
                return
            self._jobs.append(_Job(kind, candidates, frozenset(keep)))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="msa-kv-prefetch",
                                                daemon=True)
                self._thread.start()
            self._wake.notify_all()

    def wait(self, timeout: float | None = None) -> bool:
        """Until no job waits or runs (tests, benchmarks); False on timeout."""
        with self._wake:
            return self._wake.wait_for(lambda: not self._jobs and not self._busy, timeout)

    def close(self) -> None:
        """Drop waiting jobs, stop the worker and join it (a running job stops at its next
        step; the space must stay open until this returns). Idempotent."""
        with self._wake:
            self._closed = True
            self._jobs.clear()
            self._wake.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        while True:
            with self._wake:
                self._wake.wait_for(lambda: bool(self._jobs) or self._closed)
                if self._closed:
                    return
                job, self._busy = self._jobs.popleft(), True
            started = time.perf_counter()
            try:
                self._load(job)
            except Exception as exc:  # best effort: a lost guess is a miss later
                self.failed += 1
                self.last_error = exc
            finally:
                with self._wake:
                    self.busy_s += time.perf_counter() - started
                    self._busy = False
                    self._wake.notify_all()

    def _tiers_of(self, kind: str) -> list[HostKVCache]:
        out, tier = [], self._tiers[kind]
        while tier is not None:
            out.append(tier)
            tier = tier.below
        return out  # top first

    def _load(self, job: _Job) -> None:
        """Rank, look up, read the store (unlocked), admit to the host tier; on CUDA, copy
        to the device on the side stream (unlocked) and admit to the GPU tier."""
        tiers = self._tiers_of(job.kind)
        top, host = tiers[0], tiers[-1]
        wanted = list(job.candidates())  # routing: takes the engine's lock itself
        if not wanted or self._closed:
            return
        with self._lock:
            epochs = [t.epoch for t in tiers]
            alive = {m.id: m for m in self._space.get_many([m.id for m in wanted])}
            # current records (rows may have moved since ranking); forgotten ones are gone
            todo = [alive[i] for i in dict.fromkeys(m.id for m in wanted)
                    if i in alive and i not in top.rows]
            if not todo:
                return
            rows = {m.id: host.held(m.id) for m in todo if m.id in host.rows}
        for m in todo:  # one memory at a time: the space's own lock is held per read
            if m.id not in rows:
                if self._closed:
                    return
                try:
                    k, v = (torch.from_numpy(self._space.read(name, [m])[0])
                            for name in top.names)
                except StoreError:
                    with self._lock:  # rows moved or gone meanwhile: no error, no guess
                        if self._stale(tiers, epochs):
                            return
                    raise
                rows[m.id] = k, v
        with self._lock:
            if self._stale(tiers, epochs):
                return
            host.admit(todo, rows, set(job.keep), count=top is host)
        if top is host:
            return
        moved = self._to_home(rows, top.home)
        with self._lock:
            if self._stale(tiers, epochs):
                return
            top.admit(todo, moved, set(job.keep))

    def _stale(self, tiers: Sequence[HostKVCache], epochs: list[int]) -> bool:
        """Closed, or something was evicted (forgotten) or moved since the rows were read."""
        return self._closed or [t.epoch for t in tiers] != epochs

    def _to_home(self, rows: Mapping[str, KV], device: torch.device) -> dict[str, KV]:
        """``rows`` on ``device``; on CUDA copied on the side stream, which the worker waits
        for (an event) before the rows can reach a tier, so the foreground never sees them
        early; they are then marked used on the worker's current stream, where the admit's
        device copy runs (the foreground's stream too, the default one)."""
        if device.type != "cuda":
            return {i: (k.to(device), v.to(device)) for i, (k, v) in rows.items()}
        if self._stream is None:
            self._stream = torch.cuda.Stream(device)
        with torch.cuda.stream(self._stream):
            out = {i: (k.to(device, non_blocking=True), v.to(device, non_blocking=True))
                   for i, (k, v) in rows.items()}
            done = torch.cuda.Event()
            done.record(self._stream)
        done.synchronize()
        current = torch.cuda.current_stream(device)
        for k, v in out.values():
            k.record_stream(current)
            v.record_stream(current)
        return out
