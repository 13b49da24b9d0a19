"""Resident routing keys in a narrower dtype (``MemoryConfig.routing_key_dtype``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from msa_agent.errors import InvalidInputError
from msa_agent.runtime.routing import KEY_DTYPES, RoutingIndex, narrow_keys

NARROW = ["bfloat16", "float16", "float8"]
TOL = {"bfloat16": 2e-2, "float16": 3e-3, "float8": 6e-2}  # on a cosine in [-1, 1]


def _docs(seed: int, n: int = 40, layers: int = 3, kv: int = 2, d: int = 16
          ) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(int(torch.randint(1, 5, (1,), generator=gen)), layers, kv, d,
                        generator=gen) for _ in range(n)]


def _index(docs: list[torch.Tensor], key_dtype: str, top: int = 2) -> RoutingIndex:
    index = RoutingIndex("cpu", use_kernel=False, top_tokens=top, key_dtype=key_dtype)
    index.add([f"m{i}" for i in range(len(docs))], ["ns"] * len(docs), docs)
    return index


@pytest.mark.parametrize("key_dtype", NARROW)
def test_narrow_keys_rank_close_to_float32(key_dtype: str) -> None:
    docs = _docs(0)
    exact, narrow = _index(docs, "float32"), _index(docs, key_dtype)
    assert narrow.keys.dtype == KEY_DTYPES[key_dtype]
    assert narrow.keys.element_size() < exact.keys.element_size()
    q = torch.randn(5, 3, 4, 16, generator=torch.Generator().manual_seed(1))
    mask = exact.mask_for(None)
    a, b = exact.rank(q, 40, mask), narrow.rank(q, 40, mask)
    by_doc = dict(zip(a.docs, a.scores))
    err = max(abs(by_doc[d] - s) for d, s in zip(b.docs, b.scores))
    assert err < TOL[key_dtype], err
    top_a, top_b = set(a.docs[:5]), set(narrow.rank(q, 5, mask).docs)
    assert len(top_a & top_b) >= 4  # near-ties may swap at the edge, no more


@pytest.mark.parametrize("key_dtype", NARROW)
def test_evidence_uses_the_same_keys_as_the_ranking(key_dtype: str) -> None:
    """A document's explained score (``explain``, hybrid's evidence) equals its ranked score:
    both read the same widened keys."""
    index = _index(_docs(2), key_dtype)
    q = torch.randn(3, 3, 4, 16, generator=torch.Generator().manual_seed(3))
    ranked = index.rank(q, 6, index.mask_for(None))
    again = index.explain([index.doc_ids[d] for d in ranked.docs], q)
    assert again.scores == pytest.approx(ranked.scores, abs=1e-6)
    assert again.best_chunk == ranked.best_chunk


@pytest.mark.parametrize("key_dtype", ["float32", *NARROW])
def test_widened_rows_narrow_back_exactly(key_dtype: str) -> None:
    """What a shard sends (``unit_rows``, float32) is stored by the receiver bit for bit as
    the sender held it: sharded ranking sees the same keys as one process."""
    index = _index(_docs(4), key_dtype)
    rows = index.unit_rows()
    again, scale = narrow_keys(rows, key_dtype)
    assert torch.equal(again.view(torch.uint8), index.keys.view(torch.uint8))
    if key_dtype == "float8":
        assert torch.equal(rows, again.float() * scale.reshape(-1, 1, 1, 1))
    if key_dtype == "float32":
        assert index.unit_rows().data_ptr() == index.keys.data_ptr()  # no copy at fp32


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), drop=st.sets(st.integers(0, 11), max_size=8),
       key_dtype=st.sampled_from(["float32", *NARROW]))
def test_remove_keeps_scales_aligned(seed: int, drop: set[int], key_dtype: str) -> None:
    """After ``remove``, the index ranks exactly as one built without those documents."""
    docs = _docs(seed, n=12)
    index = _index(docs, key_dtype)
    index.remove([f"m{i}" for i in drop])
    keep = [i for i in range(12) if i not in drop]
    fresh = RoutingIndex("cpu", use_kernel=False, top_tokens=2, key_dtype=key_dtype)
    fresh.add([f"m{i}" for i in keep], ["ns"] * len(keep), [docs[i] for i in keep])
    q = torch.randn(2, 3, 4, 16, generator=torch.Generator().manual_seed(seed))
    if not keep:
        assert len(index) == 0
        return
    a = index.rank(q, 5, index.mask_for(None))
    b = fresh.rank(q, 5, fresh.mask_for(None))
    assert [index.doc_ids[d] for d in a.docs] == [fresh.doc_ids[d] for d in b.docs]
    assert a.scores == b.scores and a.best_chunk == b.best_chunk


def test_unknown_dtype_is_refused() -> None:
    with pytest.raises(ValueError, match="key_dtype"):
        RoutingIndex("cpu", key_dtype="int4")


def test_memory_setting(tmp_path: Path, tiny_pair) -> None:  # noqa: ANN001
    from msa_agent import Memory

    texts = [f"note {i}: the {w} is kept in room {i}" for i, w in
             enumerate(["anvil", "kettle", "ledger", "violin", "compass", "lantern"])]
    hits = {}
    for key_dtype in ("float32", "float8"):
        with Memory.open(tmp_path / key_dtype, tiny_pair, routing="own_qk",
                         routing_key_dtype=key_dtype) as mem:
            mem.remember_many(texts)
            assert mem._engine.index.keys.dtype == KEY_DTYPES[key_dtype]
            hits[key_dtype] = mem.recall("where is the violin", k=6, routing="msa")
    assert {h.text for h in hits["float8"]} == set(texts)  # every memory, none lost
    exact = {h.text: h.score for h in hits["float32"]}
    assert max(abs(exact[h.text] - h.score) for h in hits["float8"]) < TOL["float8"]
    with pytest.raises(InvalidInputError, match="routing_key_dtype"):
        Memory.open(tmp_path / "bad", tiny_pair, routing_key_dtype="int4")
