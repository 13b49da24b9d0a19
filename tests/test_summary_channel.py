"""The summary channel (``summary_layer``): each memory's summary vector is the template's last
state, kept with the memory through reopen, forget, compaction, a reader following its writer
and export/import; a question with a memory's own text finds it by that channel; weight 0 routes
exactly as a space without summaries; bad settings are clear errors."""

from __future__ import annotations

import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from msa_agent import Memory
from msa_agent.errors import InvalidInputError, MsaError
from msa_agent.model.text import summary_ids
from msa_agent.runtime import recall as recall_module
from msa_agent.runtime.engine import fusion_of
from msa_agent.runtime.routing import RoutingIndex
from msa_testing import make_llama, make_tokenizer

pytestmark = pytest.mark.filterwarnings("ignore::msa_agent.errors.RoutingQualityWarning")
# rank fusion, the summary channel weighing most: a random model's cosines are too alike for
# the score sum to let them decide, its ranks are not
BY_SUMMARY = {"summary_weight": 50.0, "fusion": "rrf"}
TEXTS = [f"note {i}: the {w} of {n} is kept at {p}" for i, (w, n, p) in enumerate(
    [("violin", "Kelvarth", "Brakel"), ("garage", "Orvande", "Lisbon"), ("tea", "Acme", "Oslo"),
     ("lamp", "Stirkvon", "Tuesday"), ("map", "Ulvmark", "the port"), ("key", "Zorblax", "home")])]


def open_mem(path: Path, **kw) -> Memory:  # noqa: ANN003
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Memory.open(path, (make_llama(), make_tokenizer()), **kw)


def filled(path: Path, **kw) -> tuple[Memory, list[str]]:  # noqa: ANN003
    mem = open_mem(path, **kw)
    return mem, mem.remember_many(TEXTS)


def own_text_first(mem: Memory, ids: list[str]) -> None:
    for text, id in zip(TEXTS, ids):
        if id in {h.id for h in mem.list(limit=None)}:
            hit = mem.recall(text, k=1, routing="msa", explain=True)[0]
            assert hit.id == id
            assert hit.explanation.channels["summary"] == pytest.approx(1.0, abs=1e-3)


def test_stored_vector_is_the_templates_last_state(tmp_path: Path) -> None:
    mem, ids = filled(tmp_path / "s", summary_layer=-1)
    with mem:
        eng = mem._engine
        ids_of = eng.tokenizer(TEXTS[2], add_special_tokens=False)["input_ids"]
        want = eng.encoder.last_states([summary_ids(eng.tokenizer, ids_of)], eng.summary_layer)
        got = eng.index.summary_scores(want, eng.index.mask_for(None))[0]
        assert int(got.argmax()) == eng.index.positions([ids[2]])[0]
        assert float(got.max()) == pytest.approx(1.0, abs=1e-3)  # float16 on disk


def test_own_text_found_by_summary_through_reopen_forget_compact(tmp_path: Path) -> None:
    mem, ids = filled(tmp_path / "s", summary_layer=-1, **BY_SUMMARY)
    with mem:
        own_text_first(mem, ids)
        mem.forget(ids[1])
        mem.compact()
        assert len(mem._engine.index.doc_ids) == len(TEXTS) - 1
        own_text_first(mem, ids)
    with open_mem(tmp_path / "s", **BY_SUMMARY) as again:  # layout kept from the space
        assert again._engine.index.has_summary
        own_text_first(again, ids)


def test_reader_follows_writer_with_summaries(tmp_path: Path) -> None:
    mem, ids = filled(tmp_path / "s", summary_layer=-1, **BY_SUMMARY)
    with mem, open_mem(tmp_path / "s", read_only=True, **BY_SUMMARY) as reader:
        more = mem.remember_many(["an extra note about a blue kettle"])
        assert reader.recall("an extra note about a blue kettle", k=1,
                             routing="msa")[0].id == more[0]
        own_text_first(reader, ids)


def test_export_import_carries_summaries(tmp_path: Path) -> None:
    mem, ids = filled(tmp_path / "a", summary_layer=-1)
    with mem:
        mem.export(tmp_path / "bundle")
    with open_mem(tmp_path / "b", summary_layer=-1, **BY_SUMMARY) as other:
        report = other.import_(tmp_path / "bundle")
        assert report.imported == len(TEXTS) and other._engine.index.has_summary
        own_text_first(other, ids)


def test_weight_zero_routes_as_without_summaries(tmp_path: Path) -> None:
    mem, _ = filled(tmp_path / "with", summary_layer=-1, summary_weight=0.0)
    plain, _ = filled(tmp_path / "without")
    with mem, plain:
        for q in ("where is the violin?", "Zorblax key", "tea at Oslo"):
            for mode in ("msa", "hybrid"):
                a = [(h.text, round(h.score, 5)) for h in mem.recall(q, k=4, routing=mode)]
                b = [(h.text, round(h.score, 5)) for h in plain.recall(q, k=4, routing=mode)]
                assert a == b


def test_a_recall_reads_both_channels_in_one_forward(tmp_path: Path) -> None:
    """The question's routing queries and its summary template share one forward, and the
    summary vector it keeps is the one the template alone gives."""
    mem, _ = filled(tmp_path / "s", summary_layer=-1)
    with mem:
        eng = mem._engine
        forwards = []
        embed = eng.lm.model.get_input_embeddings()
        handle = embed.register_forward_hook(lambda *_: forwards.append(1))
        try:
            for mode in ("msa", "hybrid"):
                forwards.clear()
                assert mem.recall("where is the violin kept?", k=2, routing=mode)
                assert len(forwards) == 1, mode
            forwards.clear()
            assert len(mem.recall_many(["tea at Oslo", "the Zorblax key"], k=2)) == 2
            assert len(forwards) == 1
        finally:
            handle.remove()
        kept = eng.summary_vectors(["tea at Oslo"])
        alone = eng.encoder.last_states([eng._summary_ids("tea at Oslo")], eng.summary_layer)
        torch.testing.assert_close(kept, alone, atol=1e-4, rtol=1e-4)


def test_concurrent_recalls_keep_each_questions_summary(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    """Recalls from several threads at once (each question's packed forward under the model
    lock, the kept vectors under their own) rank as the same recalls one by one, with a kept
    window of two questions: a question pushed out is read again and ranks the same."""
    monkeypatch.setattr(recall_module, "QUESTION_SUMMARIES", 2)
    mem, _ = filled(tmp_path / "s", summary_layer=-1, **BY_SUMMARY)
    with mem:
        questions = [f"{t} ?" for t in TEXTS] * 3
        alone = [[h.id for h in mem.recall(q, k=3, routing="msa")] for q in questions]
        mem._engine._question_summaries.clear()
        with ThreadPoolExecutor(4) as pool:
            together = list(pool.map(
                lambda q: [h.id for h in mem.recall(q, k=3, routing="msa")], questions))
        assert together == alone
        assert len(mem._engine._question_summaries) == 2


def test_explain_shows_the_summary_channel_in_hybrid(tmp_path: Path) -> None:
    mem, _ = filled(tmp_path / "s", summary_layer=-1)
    with mem:
        ch = mem.recall("Kelvarth violin", k=1, explain=True)[0].explanation.channels
        assert {"summary", "summary_rank", "msa", "lexical"} <= set(ch)


def test_z_scores_let_bunched_cosines_decide_a_score_sum(tmp_path: Path) -> None:
    """A random model's cosines are too alike for the score sum over the pool's best; as
    z-scores within the pool (``summary_norm="z"``) the memory's own text stands out."""
    found = {}
    for norm in ("max", "z"):
        mem, ids = filled(tmp_path / norm, summary_layer=-1, fusion="sum",
                          summary_weight=10.0, summary_norm=norm)
        with mem:
            assert fusion_of(mem.config).norms == (("summary", norm),)
            top = [mem.recall(t, k=1, routing="msa")[0].id for t in TEXTS]
            found[norm] = sum(a == b for a, b in zip(top, ids))
            spread = [h.explanation.channels["summary"] for h in
                      mem.recall(TEXTS[0], k=len(TEXTS), routing="msa", explain=True)]
        assert max(spread) - min(spread) < 0.1  # the raw cosines: one narrow band
    assert found["z"] == len(TEXTS) > found["max"]


def test_bad_summary_settings_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="summary_layer"):
        open_mem(tmp_path / "a", summary_layer=99)
    with pytest.raises(MsaError):
        open_mem(tmp_path / "b", summary_weight=-1.0)
    with pytest.raises(MsaError, match="summary_norm"):
        open_mem(tmp_path / "b", summary_norm="l2")
    mem, _ = filled(tmp_path / "c", summary_layer=-1)
    mem.close()
    with pytest.raises(MsaError):  # another layout than the space's
        open_mem(tmp_path / "c", summary_layer=-2)


def test_index_refuses_documents_with_and_without_summaries() -> None:
    index = RoutingIndex()
    keys = [torch.randn(2, 1, 1, 4)]
    index.add(["a"], ["n"], keys, torch.randn(1, 8))
    with pytest.raises(ValueError, match="summary"):
        index.add(["b"], ["n"], keys)
    with pytest.raises(ValueError, match="summary vectors"):
        index.add(["b", "c"], ["n", "n"], keys * 2, torch.randn(1, 8))


@settings(max_examples=30, deadline=None)
@given(ops=st.lists(st.tuples(st.booleans(), st.integers(0, 9)), min_size=1, max_size=25))
def test_index_summaries_stay_aligned_with_documents(ops: list[tuple[bool, int]]) -> None:
    """Whatever adds and removes happen, each live document's own vector scores 1 against
    itself at its own position, and a scope mask hides the others."""
    torch.manual_seed(0)
    vec = torch.nn.functional.normalize(torch.randn(10, 16), dim=-1)
    index = RoutingIndex()
    for add, i in ops:
        if add and f"d{i}" not in index.positions([f"d{i}"]) and f"d{i}" not in index.doc_ids:
            index.add([f"d{i}"], ["ns" if i % 2 else "other"],
                      [torch.randn(1 + i % 3, 1, 1, 4)], vec[i:i + 1])
        elif not add:
            index.remove([f"d{i}"])
    for doc in index.doc_ids:
        i = int(doc[1:])
        s = index.summary_scores(vec[i:i + 1], index.mask_for(None))[0]
        assert int(s.argmax()) == index.positions([doc])[0]
        scoped = index.summary_scores(vec[i:i + 1], index.mask_for("ns"))[0]
        assert bool(torch.isfinite(scoped).any()) == any(int(d[1:]) % 2 for d in index.doc_ids)
        assert all(torch.isinf(scoped[index.positions([d])[0]]) for d in index.doc_ids
                   if int(d[1:]) % 2 == 0)


def test_channel_pools_hold_each_memory_once(tmp_path: Path) -> None:
    """A memory that the lexical and the summary channels both found is completed into the
    MSA channel once: fusion sums each channel's score of a memory once."""
    from msa_agent.runtime.results import Scope

    mem, _ = filled(tmp_path / "s", summary_layer=-1)
    with mem:
        eng = mem._engine
        for mode in ("msa", "hybrid"):
            pools, _ = eng.channel_pools(["Kelvarth violin at Brakel"], 2, Scope("default"),
                                         set(), [None], mode)
            for ranking in pools[0].values():
                ids = [i for i, _ in ranking]
                assert len(ids) == len(set(ids))
            assert (mode == "hybrid") == ("lexical" in pools[0])


def test_bundle_without_summaries_is_refused_by_a_summary_space(tmp_path: Path) -> None:
    """A bundle has no summary rows to give: importing it where every memory needs one is a
    clear layout error, and the space keeps what it held."""
    from msa_agent.store import FingerprintMismatchError

    plain, _ = filled(tmp_path / "plain")
    with plain:
        plain.export(tmp_path / "bundle")
    mem, ids = filled(tmp_path / "s", summary_layer=-1, **BY_SUMMARY)
    with mem:
        with pytest.raises(FingerprintMismatchError, match="summary_layer"):
            mem.import_(tmp_path / "bundle")
        assert len(mem.list(limit=None)) == len(TEXTS)
        own_text_first(mem, ids)
