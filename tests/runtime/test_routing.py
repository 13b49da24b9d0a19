"""Routing index: the paper's rule, against a loop-by-loop reimplementation (hypothesis)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from msa_agent.runtime.routing import Ranked, RoutingIndex


def naive_doc_score(q: torch.Tensor, keys: torch.Tensor, combine: str, top: int = 1) -> float:
    """q ``[T, L, Hq, D]``, one doc's keys ``[C, L, Hkv, D]`` -> its score, written as the paper
    (``top`` > 1: the mean of the ``top`` best query tokens instead of their max)."""
    t_n, n_layers, hq, _ = q.shape
    g = hq // keys.shape[2]

    def cos(a: torch.Tensor, b: torch.Tensor) -> float:
        return float(torch.dot(a, b) / (a.norm() * b.norm()))

    def over_tokens(per_token: list[float]) -> float:
        best = sorted(per_token, reverse=True)[:top]
        return sum(best) / len(best)

    def layer_chunk(layer: int, c: int) -> float:  # max_t mean_h cos
        return over_tokens([
            sum(cos(q[t, layer, h], keys[c, layer, h // g]) for h in range(hq)) / hq
            for t in range(t_n)
        ])

    if combine == "heads":
        return max(
            over_tokens([
                sum(cos(q[t, ly, h], keys[c, ly, h // g]) for ly in range(n_layers)
                    for h in range(hq)) / (hq * n_layers)
                for t in range(t_n)
            ])
            for c in range(keys.shape[0])
        )
    per_layer = [max(layer_chunk(ly, c) for c in range(keys.shape[0])) for ly in range(n_layers)]
    return sum(per_layer) / n_layers if combine == "mean" else max(per_layer)


@settings(max_examples=25, deadline=None)
@given(
    n_docs=st.integers(1, 6), layers=st.integers(1, 3), kv=st.sampled_from([1, 2]),
    group=st.sampled_from([1, 3]), t=st.integers(1, 4), seed=st.integers(0, 10_000),
    combine=st.sampled_from(["heads", "mean", "max"]), top=st.sampled_from([1, 1, 2, 3]),
)
def test_rank_matches_paper_formula(n_docs, layers, kv, group, t, seed, combine, top) -> None:
    gen = torch.Generator().manual_seed(seed)
    d = 8
    docs = [torch.randn(int(torch.randint(1, 4, (1,), generator=gen)), layers, kv, d,
                        generator=gen) for _ in range(n_docs)]
    q = torch.randn(t, layers, kv * group, d, generator=gen)
    index = RoutingIndex(top_tokens=top)
    index.add([f"m{i}" for i in range(n_docs)], ["ns"] * n_docs, docs)
    ranked = index.rank(q, n_docs, index.mask_for("ns"), combine)
    want = [naive_doc_score(q, k, combine, top) for k in docs]
    got = dict(zip(ranked.docs, ranked.scores))
    assert sorted(got) == list(range(n_docs))
    for i in range(n_docs):
        assert math.isclose(got[i], want[i], rel_tol=1e-4, abs_tol=1e-5)
    assert ranked.scores == sorted(ranked.scores, reverse=True)


@settings(max_examples=25, deadline=None)
@given(spaces=st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=12),
       k=st.integers(1, 12), seed=st.integers(0, 1000))
def test_namespace_never_leaks(spaces, k, seed) -> None:
    gen = torch.Generator().manual_seed(seed)
    index = RoutingIndex()
    ids = [f"m{i}" for i in range(len(spaces))]
    index.add(ids, spaces, [torch.randn(2, 1, 1, 4, generator=gen) for _ in spaces])
    index.remove(ids[:1])
    ranked = index.rank(torch.randn(2, 1, 1, 4, generator=gen), k, index.mask_for("a"))
    got = [index.doc_ids[d] for d in ranked.docs]
    allowed = {i for i, s in zip(ids, spaces) if s == "a"} - {ids[0]}
    assert set(got) <= allowed
    assert len(got) == min(k, len(allowed))


@settings(max_examples=30, deadline=None)
@given(
    n_docs=st.integers(1, 6), layers=st.integers(1, 3), kv=st.sampled_from([1, 2]),
    group=st.sampled_from([1, 3]), t=st.integers(1, 4), seed=st.integers(0, 10_000),
    combine=st.sampled_from(["heads", "mean", "max"]), top=st.sampled_from([1, 2]),
    asked=st.lists(st.integers(0, 7), max_size=8),  # 6 and 7: ids the index does not hold
)
def test_explain_scores_alone_equal_its_full_scores(n_docs, layers, kv, group, t, seed,
                                                    combine, top, asked) -> None:
    gen = torch.Generator().manual_seed(seed)
    docs = [torch.randn(int(torch.randint(1, 4, (1,), generator=gen)), layers, kv, 8,
                        generator=gen) for _ in range(n_docs)]
    q = torch.randn(t, layers, kv * group, 8, generator=gen)
    index = RoutingIndex(top_tokens=top)
    index.add([f"m{i}" for i in range(n_docs)], ["ns"] * n_docs, docs)
    ids = [f"m{i}" for i in asked]  # repeats and unknown ids, as a caller may pass them
    full = index.explain(ids, q, combine)
    alone = index.explain(ids, q, combine, evidence=False)
    assert alone.docs == full.docs == [i for i in asked if i < n_docs]
    assert alone.scores == full.scores  # bit-equal: the same scoring, less of it
    assert alone.layer_scores == [] and alone.best_chunk == []


@pytest.mark.parametrize("combine", ["heads", "mean", "max"])
@pytest.mark.parametrize("evidence", [True, False])
def test_explain_of_no_known_ids_is_empty(combine: str, evidence: bool) -> None:
    index = RoutingIndex()  # the per-layer rules once raised on an empty amax here
    index.add(["a"], ["n"], [torch.randn(2, 1, 1, 4)])
    for ids in ([], ["unknown"]):
        got = index.explain(ids, torch.randn(2, 1, 1, 4), combine, evidence)
        assert got == Ranked([], [], [], [])


def test_restrict_to_ids_and_empty() -> None:
    index = RoutingIndex()
    assert index.rank(torch.randn(1, 1, 1, 4), 3, index.mask_for(None)).docs == []
    index.add(["x", "y"], ["n", "n"], [torch.randn(1, 1, 1, 4), torch.randn(2, 1, 1, 4)])
    ranked = index.rank(torch.randn(3, 1, 1, 4), 5, index.mask_for("n", ["y", "zz"]))
    assert [index.doc_ids[d] for d in ranked.docs] == ["y"]
    assert len(ranked.layer_scores[0]) == 1 and 0 <= ranked.best_chunk[0] < 2


# --- rankings on a fixed random index: identical to the outputs recorded before the routing
# rule moved into msa_agent.kernels.route_topk.naive (routing_golden.json, written once by
# ``python tests/runtime/test_routing.py``) ---

GOLDEN = Path(__file__).with_name("routing_golden.json")


def fixed_index() -> tuple[RoutingIndex, list[torch.Tensor]]:
    """300 documents of 1-6 chunks, 3 layers, GQA 6/2, two namespaces, a few removed."""
    gen = torch.Generator().manual_seed(1234)
    docs = [torch.randn(int(torch.randint(1, 7, (1,), generator=gen)), 3, 2, 16, generator=gen)
            for _ in range(300)]
    index = RoutingIndex()
    index.add([f"m{i}" for i in range(300)], ["a" if i % 4 else "b" for i in range(300)], docs)
    index.remove([f"m{i}" for i in range(0, 300, 17)])
    queries = [torch.randn(t, 3, 6, 16, generator=gen) for t in (1, 5, 9)]
    return index, queries


def routing_outputs() -> dict:
    index, queries = fixed_index()
    out: dict = {}
    for qi, q in enumerate(queries):
        for ns in ("a", None):
            mask = index.mask_for(ns)
            for combine in ("heads", "mean", "max"):
                every = index.rank(q, len(index.doc_ids), mask, combine)
                top = index.rank(q, 12, mask, combine)
                out[f"{qi}/{ns}/{combine}"] = {
                    "docs": every.docs, "scores": _round(every.scores), "top": top.docs,
                    "layer_scores": [_round(s) for s in top.layer_scores],
                    "best_chunk": top.best_chunk,
                }
            out[f"{qi}/{ns}/per_layer"] = index.rank_per_layer(q, 10, mask)
    return out


def _round(xs: list[float]) -> list[float]:
    return [round(x, 7) for x in xs]


def test_rankings_identical_to_recorded() -> None:
    """Documents are compared by id: the recording's positions are ids ``m<p>`` (recorded
    while removed documents kept their positions; they are dropped now)."""
    want, got = json.loads(GOLDEN.read_text()), routing_outputs()
    names = fixed_index()[0].doc_ids
    assert got.keys() == want.keys()
    for key, w in want.items():
        g = got[key]
        if key.endswith("per_layer"):
            assert [[names[d] for d in sel] for sel in g] == [[f"m{d}" for d in sel]
                                                              for sel in w], key
            continue
        for field in ("docs", "top"):
            assert [names[d] for d in g[field]] == [f"m{d}" for d in w[field]], key
        assert g["best_chunk"] == w["best_chunk"], key
        torch.testing.assert_close(torch.tensor(g["scores"]), torch.tensor(w["scores"]),
                                   atol=1e-6, rtol=0)
        torch.testing.assert_close(torch.tensor(g["layer_scores"]),
                                   torch.tensor(w["layer_scores"]), atol=1e-6, rtol=0)


if __name__ == "__main__":
    GOLDEN.write_text(json.dumps(routing_outputs()))


def _kernel_setup(monkeypatch: pytest.MonkeyPatch, seed: int
                  ) -> tuple[list, torch.Generator, list[torch.Tensor], list[str], list[str]]:
    """Skip without the Triton interpreter; count ``route_topk_triton`` calls; 40 random
    documents of 1-4 chunks in namespaces "a" and "b"."""
    pytest.importorskip("triton")
    from msa_agent.kernels import _dispatch
    from msa_agent.kernels.route_topk import parallel

    if not _dispatch.interpret_mode():
        pytest.skip("needs TRITON_INTERPRET=1 (set by tests/conftest.py without CUDA)")
    calls: list = []
    real = parallel.route_topk_triton
    monkeypatch.setattr(parallel, "route_topk_triton", lambda *a: calls.append(a) or real(*a))
    gen = torch.Generator().manual_seed(seed)
    docs = [torch.randn(int(torch.randint(1, 5, (1,), generator=gen)), 2, 2, 16, generator=gen)
            for _ in range(40)]
    ids, spaces = [f"m{i}" for i in range(40)], ["a" if i % 3 else "b" for i in range(40)]
    return calls, gen, docs, ids, spaces


def test_fused_kernel_through_the_runtime(monkeypatch: pytest.MonkeyPatch) -> None:
    """``use_kernel=True`` on CPU runs the Triton ``route_topk`` (interpreter) from ``rank``
    and selects the same top-k, in the same order, as the torch rule."""
    calls, gen, docs, ids, spaces = _kernel_setup(monkeypatch, 7)
    assert RoutingIndex().use_kernel is False  # auto: the kernel only for keys on CUDA
    for top in (1, 3):
        kernel = RoutingIndex(use_kernel=True, top_tokens=top)
        torch_path = RoutingIndex(use_kernel=False, top_tokens=top)
        for index in (kernel, torch_path):
            index.add(ids, spaces, docs)
            index.remove(["m1"])
        check_same_ranking(kernel, torch_path, gen)
    assert len(calls) == 4


def test_layer_weights_through_the_fused_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    """A router's learned layer weights live in the resident rows, so the fused kernel ranks
    by the weighted rule with no change: the same picks as the torch rule."""
    calls, gen, docs, ids, spaces = _kernel_setup(monkeypatch, 11)
    weight = torch.tensor([0.4, 1.6])
    kernel = RoutingIndex(use_kernel=True, top_tokens=2, layer_weight=weight)
    torch_path = RoutingIndex(use_kernel=False, top_tokens=2, layer_weight=weight)
    for index in (kernel, torch_path):
        index.add(ids, spaces, docs)
    check_same_ranking(kernel, torch_path, gen)
    assert len(calls) == 2


@settings(max_examples=25, deadline=None)
@given(n_docs=st.integers(1, 6), layers=st.integers(1, 3), seed=st.integers(0, 10_000),
       key_dtype=st.sampled_from(["float32", "float16"]))
def test_layer_weights_give_the_weighted_mean_of_layer_scores(n_docs: int, layers: int,
                                                             seed: int, key_dtype: str) -> None:
    """Oracle, one query token and one chunk per memory: a weighted index's score is the
    mean over layers of weight times that layer's score in an unweighted index; the
    per-layer evidence is the weighted cosine; rows moved to another index (``add_unit``
    of ``unit_rows``, as shards do) are not weighted twice."""
    gen = torch.Generator().manual_seed(seed)
    docs = [torch.randn(1, layers, 2, 8, generator=gen) for _ in range(n_docs)]
    ids = [f"m{i}" for i in range(n_docs)]
    weight = torch.rand(layers, generator=gen) * 2
    weight = weight / weight.mean()
    plain = RoutingIndex(key_dtype=key_dtype)
    weighted = RoutingIndex(key_dtype=key_dtype, layer_weight=weight)
    for index in (plain, weighted):
        index.add(ids, ["a"] * n_docs, docs)
    moved = RoutingIndex(key_dtype=key_dtype, layer_weight=weight)
    moved.add_unit(ids, ["a"] * n_docs, weighted.unit_rows(), [1] * n_docs)
    q = torch.randn(1, layers, 4, 8, generator=gen)
    per_layer = torch.tensor(plain.explain(ids, q).layer_scores)  # [n, L]
    want = (per_layer * weight).mean(1)
    for index in (weighted, moved):
        got = index.explain(ids, q)
        torch.testing.assert_close(torch.tensor(got.scores), want, atol=2e-3, rtol=0)
        torch.testing.assert_close(torch.tensor(got.layer_scores), per_layer * weight,
                                   atol=2e-3, rtol=0)
    ranked = weighted.rank(q, n_docs, weighted.mask_for("a"))
    assert sorted(ranked.docs) == list(range(n_docs))


def check_same_ranking(kernel: RoutingIndex, torch_path: RoutingIndex,
                       gen: torch.Generator) -> None:  # fmt: skip
    for t in (1, 4):
        q = torch.randn(t, 2, 4, 16, generator=gen)
        got = kernel.rank(q, 8, kernel.mask_for("a"))
        want = torch_path.rank(q, 8, torch_path.mask_for("a"))
        # the kernel folds the query in bf16: its picks are the exact top-k to that precision
        # (near-ties may swap), and their exact scores and evidence are the torch path's
        exact = torch_path.explain([torch_path.doc_ids[d] for d in got.docs], q)
        assert exact.docs == got.docs
        torch.testing.assert_close(torch.tensor(exact.scores), torch.tensor(want.scores),
                                   atol=5e-3, rtol=0)
        torch.testing.assert_close(torch.tensor(got.scores), torch.tensor(exact.scores),
                                   atol=5e-3, rtol=0)
        assert got.best_chunk == exact.best_chunk and got.layer_scores == exact.layer_scores


def assert_same_ranked(got: Ranked, want: Ranked) -> None:
    """Same documents in the same order, same evidence; scores to the GEMM's rounding. Two
    documents whose scores are that close (a twin's, computed in another row of the GEMM,
    can differ by an ulp) may trade places, also across the top-k cut."""
    torch.testing.assert_close(torch.tensor(got.scores), torch.tensor(want.scores),
                               atol=1e-6, rtol=0)  # fmt: skip
    for i, (a, b) in enumerate(zip(got.docs, want.docs, strict=True)):
        if a != b:
            assert abs(got.scores[i] - want.scores[i]) <= 1e-6, (got.docs, want.docs)
            return  # past a near-tie swap the evidence lists are in another order
    assert got.best_chunk == want.best_chunk and got.layer_scores == want.layer_scores


@settings(max_examples=30, deadline=None)
@given(
    n_docs=st.integers(1, 8), layers=st.integers(1, 3), kv=st.sampled_from([1, 2]),
    group=st.sampled_from([1, 3]), lengths=st.lists(st.integers(1, 5), min_size=1, max_size=4),
    k=st.integers(1, 10), seed=st.integers(0, 10_000),
    combine=st.sampled_from(["heads", "mean", "max"]), top=st.sampled_from([1, 2, 3]),
    explain=st.booleans(), twin=st.booleans(), ns=st.sampled_from(["a", None]),
)
def test_rank_many_is_rank_per_query(n_docs, layers, kv, group, lengths, k, seed, combine,
                                     top, explain, twin, ns) -> None:  # fmt: skip
    """Queries of mixed lengths ranked together (one padded batch) give each query's own
    ``rank``: documents, order (``twin``: a duplicated document, when it ties exactly, comes
    after its original), scores and evidence."""
    gen = torch.Generator().manual_seed(seed)
    docs = [torch.randn(int(torch.randint(1, 4, (1,), generator=gen)), layers, kv, 8,
                        generator=gen) for _ in range(n_docs)]
    if twin:
        docs.append(docs[0].clone())
    index = RoutingIndex(top_tokens=top)
    index.add([f"m{i}" for i in range(len(docs))], ["a" if i % 3 else "b" for i in
                                                    range(len(docs))], docs)  # fmt: skip
    qs = [torch.randn(t, layers, kv * group, 8, generator=gen) for t in lengths]
    mask = index.mask_for(ns)
    many = index.rank_many(qs, k, mask, combine, explain)
    assert len(many) == len(qs)
    for q, got in zip(qs, many):
        assert_same_ranked(got, index.rank(q, k, mask, combine, explain))
        if twin and {0, len(docs) - 1} <= set(got.docs):
            a, b = got.docs.index(0), got.docs.index(len(docs) - 1)
            if got.scores[a] == got.scores[b]:  # CPU BLAS may round a twin's row an ulp apart
                assert a < b


def test_rank_many_empty() -> None:
    index = RoutingIndex()
    assert index.rank_many([], 3, index.mask_for(None)) == []
    q = torch.randn(2, 1, 1, 4)
    assert [r.docs for r in index.rank_many([q, q[:1]], 3, index.mask_for(None))] == [[], []]
    index.add(["x"], ["n"], [torch.randn(1, 1, 1, 4)])
    assert [r.docs for r in index.rank_many([q, q], 3, index.mask_for("other"))] == [[], []]
    assert [r.docs for r in index.rank_many([q, q[:1]], 0, index.mask_for("n"))] == [[], []]


def test_rank_many_through_the_fused_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    """``use_kernel=True`` (Triton interpreter on CPU): one ``route_topk`` call, with
    ``q_len``, ranks every query; each row is that query's own ``rank`` (ids, order and
    evidence; scores to 1e-6), also with fp8 keys."""
    calls, gen, docs, ids, spaces = _kernel_setup(monkeypatch, 11)
    qs = [torch.randn(t, 2, 4, 16, generator=gen) for t in (3, 1, 6, 3)]
    for top, key_dtype in ((1, "float32"), (2, "float32"), (2, "float8")):
        index = RoutingIndex(use_kernel=True, top_tokens=top, key_dtype=key_dtype)
        index.add(ids, spaces, docs)
        mask = index.mask_for("a")
        calls.clear()
        many = index.rank_many(qs, 12, mask)
        assert len(calls) == 1 and calls[0][-1] is not None  # one pass, with q_len
        for q, got in zip(qs, many):
            assert_same_ranked(got, index.rank(q, 12, mask))


@pytest.mark.parametrize("path", ["torch", "kernel", "kernel_torch_topk"])
def test_rank_many_exact_ties_by_position(monkeypatch: pytest.MonkeyPatch, path: str) -> None:
    """Documents of equal score come in ascending position (``top_docs``'s order), on every
    path: one-hot keys make the ties exact whatever the GEMM's tiling; ``kernel_torch_topk``
    is the kernel with torch.topk's merge (no order among ties of its own)."""
    if path != "torch":
        pytest.importorskip("triton")
        from msa_agent.kernels import _dispatch

        if not _dispatch.interpret_mode():
            pytest.skip("needs TRITON_INTERPRET=1 (set by tests/conftest.py without CUDA)")
    if path == "kernel_torch_topk":
        monkeypatch.setenv("MSA_ROUTE_TRITON_TOPK", "0")
    gen = torch.Generator().manual_seed(12)
    axis = torch.randint(0, 3, (30,), generator=gen)  # each document: one of 3 key directions
    docs = [torch.nn.functional.one_hot(a, 16).float().reshape(1, 1, 1, 16) for a in axis]
    index = RoutingIndex(use_kernel=path != "torch")
    index.add([f"m{i}" for i in range(30)], ["a"] * 30, docs)
    qs = [torch.randn(t, 1, 2, 16, generator=gen) for t in (2, 5)]
    for q, got in zip(qs, index.rank_many(qs, 30, index.mask_for("a"), explain=False)):
        assert got.docs == sorted(got.docs, key=lambda d: (-got.scores[got.docs.index(d)], d))
        assert len(set(got.scores)) == 3  # three exact ties of ~10 documents each
        assert got.docs == index.rank(q, 30, index.mask_for("a"), explain=False).docs


def test_remove_equals_an_index_built_without_them() -> None:
    """Removing documents drops their rows at once: keys, chunk owners and rankings equal
    those of an index that never held them (issue 16: dead rows stayed until reopen)."""
    gen = torch.Generator().manual_seed(3)
    docs = [torch.randn(int(torch.randint(1, 6, (1,), generator=gen)), 2, 2, 16, generator=gen)
            for _ in range(60)]
    ids, spaces = [f"m{i}" for i in range(60)], ["a" if i % 3 else "b" for i in range(60)]
    gone = set(ids[::7]) | {"m5", "m6"}
    index = RoutingIndex()
    index.add(ids, spaces, docs)
    index.remove(sorted(gone))
    index.remove(["m5", "never-added"])  # already gone / unknown: nothing happens
    live = [i for i in range(60) if ids[i] not in gone]
    fresh = RoutingIndex()
    fresh.add([ids[i] for i in live], [spaces[i] for i in live], [docs[i] for i in live])
    assert index.rows == fresh.rows == sum(docs[i].shape[0] for i in live)
    assert index.doc_ids == fresh.doc_ids and len(index) == len(live)
    assert torch.equal(index.keys, fresh.keys) and torch.equal(index.chunk_doc, fresh.chunk_doc)
    for t in (1, 4):
        q = torch.randn(t, 2, 4, 16, generator=gen)
        got, want = index.rank(q, 10, index.mask_for("a")), fresh.rank(q, 10, fresh.mask_for("a"))
        assert got.docs == want.docs and got.best_chunk == want.best_chunk
