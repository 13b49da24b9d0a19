"""Growable resident rows: appends copy only new rows (amortised) and an index grown one
memory at a time, with removals between, is the index built at once."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from msa_agent.runtime.routing import RoutingIndex
from msa_agent.runtime.rows import GrowableRows


def test_appends_equal_cat_and_reallocate_rarely() -> None:
    rows, ref = GrowableRows(torch.empty(0)), torch.empty(0, 3)
    buffers = set()
    gen = torch.Generator().manual_seed(0)
    for _ in range(1000):
        new = torch.randn(int(torch.randint(1, 4, (1,), generator=gen)), 3, generator=gen)
        rows.append(new)
        ref = torch.cat([ref, new])
        buffers.add(rows.view().data_ptr())
    assert torch.equal(rows.view(), ref) and len(rows) == ref.shape[0]
    assert len(buffers) < 40  # geometric growth: ~log_1.25(rows) copies, not one per append
    held = rows.view()
    before = held.clone()
    rows.append(torch.ones(1, 3))  # a view taken earlier keeps its rows
    assert torch.equal(held, before)
    rows.replace(ref[:5])
    assert torch.equal(rows.view(), ref[:5])


def _doc(seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(int(torch.randint(1, 4, (1,), generator=gen)), 2, 2, 8, generator=gen)


@settings(max_examples=25, deadline=None)
@given(ops=st.lists(st.tuples(st.booleans(), st.integers(0, 30)), min_size=1, max_size=40),
       key_dtype=st.sampled_from(["float32", "bfloat16", "float8"]))
def test_grown_index_equals_one_built_at_once(ops: list[tuple[bool, int]],
                                              key_dtype: str) -> None:
    index = RoutingIndex("cpu", use_kernel=False, top_tokens=2, key_dtype=key_dtype)
    live: dict[str, int] = {}
    for n, (add, seed) in enumerate(ops):
        name = f"m{seed}"
        if add and name not in live:
            index.add([name], ["ns"], [_doc(seed)])
            live[name] = n
        elif not add and name in live:
            index.remove([name])
            del live[name]
    order = sorted(live, key=live.get)  # insertion order, as the index keeps it
    fresh = RoutingIndex("cpu", use_kernel=False, top_tokens=2, key_dtype=key_dtype)
    fresh.add(order, ["ns"] * len(order), [_doc(int(m[1:])) for m in order])
    assert index.doc_ids == fresh.doc_ids
    assert torch.equal(index.chunk_doc, fresh.chunk_doc)
    if not order:  # all removed: no row resident (a fresh index has no row shape yet)
        assert index.rows == 0 and len(index) == 0
        return
    assert torch.equal(index.keys.view(torch.uint8), fresh.keys.view(torch.uint8))
    q = torch.randn(3, 2, 4, 8, generator=torch.Generator().manual_seed(7))
    a, b = index.rank(q, 5, index.mask_for(None)), fresh.rank(q, 5, fresh.mask_for(None))
    assert a.docs == b.docs and a.scores == b.scores


def test_reserve_keeps_rows_and_makes_appends_copy_only_their_own() -> None:
    rows = GrowableRows(torch.empty(0))
    rows.reserve(10, (2, 3))
    buf = rows._buf
    for i in range(5):
        rows.append(torch.full((2, 2, 3), float(i)))
    assert rows._buf is buf  # no growth copy within the reservation
    assert torch.equal(rows.view()[::2, 0, 0], torch.arange(5.0))
    rows.reserve(20, (2, 3))  # growing keeps what is held
    assert torch.equal(rows.view()[::2, 0, 0], torch.arange(5.0)) and rows._buf.shape[0] == 20
    rows.reserve(21, (2, 3))  # rows held: grown by GROWTH, so small reserves stay amortised
    assert rows._buf.shape[0] == 25


@settings(max_examples=20, deadline=None)
@given(seeds=st.lists(st.integers(0, 30), min_size=1, max_size=12, unique=True),
       block=st.integers(1, 8), key_dtype=st.sampled_from(["float32", "bfloat16", "float8"]))
def test_bulk_add_in_blocks_equals_add(seeds: list[int], block: int, key_dtype: str) -> None:
    """``add_rows`` (a space opened from the store: one tensor, normalised a block of whole
    documents at a time) holds the same bytes and ranks exactly as ``add``."""
    names, docs = [f"m{s}" for s in seeds], [_doc(s) for s in seeds]
    one = RoutingIndex("cpu", use_kernel=False, top_tokens=2, key_dtype=key_dtype)
    one.add(names, ["ns"] * len(names), docs)
    bulk = RoutingIndex("cpu", use_kernel=False, top_tokens=2, key_dtype=key_dtype)
    bulk.add_rows(names, ["ns"] * len(names), torch.cat(docs).half(),
                  [d.shape[0] for d in docs], block_rows=block)
    ref = RoutingIndex("cpu", use_kernel=False, top_tokens=2, key_dtype=key_dtype)
    ref.add(names, ["ns"] * len(names), [d.half() for d in docs])  # as stored: float16
    assert bulk.doc_ids == one.doc_ids and torch.equal(bulk.chunk_doc, one.chunk_doc)
    assert torch.equal(bulk.keys.view(torch.uint8), ref.keys.view(torch.uint8))
    q = torch.randn(3, 2, 4, 8, generator=torch.Generator().manual_seed(7))
    a, b = bulk.rank(q, 5, bulk.mask_for(None)), ref.rank(q, 5, ref.mask_for(None))
    assert a.docs == b.docs and a.scores == b.scores
