"""The Memory facade on a tiny random model: persistence, isolation, deletion, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from msa_agent import Memory
from msa_agent.errors import InvalidInputError, UnknownMemoryError
from msa_agent.model.encoder import chunk_mean
from msa_agent.store import FingerprintMismatchError, Space
from tests_helpers import make_llama, make_tokenizer

pytestmark = pytest.mark.filterwarnings("ignore::msa_agent.runtime.engine.RoutingQualityWarning")

FACTS = [
    "Paris is the capital of France.",
    "Alice works for Acme in Lisbon.",
    "Bob likes green tea and quick brown foxes.",
    "Memory sparse attention routes a query to a few documents.",
]


def open_mem(path: Path, pair, **kw) -> Memory:  # noqa: ANN001
    return Memory.open(path, model=pair, **{"chunk_size": 8, "max_doc_tokens": 64, **kw})


def test_remember_close_reopen_recall_identical(tmp_path: Path, tiny_pair) -> None:
    with open_mem(tmp_path / "m", tiny_pair) as mem:
        ids = mem.remember_many(FACTS)
        before = [(h.id, h.score) for h in mem.recall("capital of France", k=3)]
    with open_mem(tmp_path / "m", tiny_pair) as mem:
        after = [(h.id, h.score) for h in mem.recall("capital of France", k=3)]
        assert [mem.get(i).text for i in ids] == FACTS
    assert [i for i, _ in after] == [i for i, _ in before]
    np.testing.assert_allclose([s for _, s in after], [s for _, s in before], rtol=1e-5)


def test_stored_routing_keys_equal_naive_recomputation(tmp_path: Path, tiny_pair) -> None:
    model, tok = tiny_pair
    with open_mem(tmp_path / "m", tiny_pair, msa_layers=[2, 3]) as mem:
        mid = mem.remember(FACTS[1] * 3)
    with Space.open(tmp_path / "m") as space:
        row = space.get(mid)
        (route_k,) = space.read("route_k", [row])
    ids = tok(FACTS[1] * 3)["input_ids"]
    out = model(input_ids=torch.tensor([ids]), output_hidden_states=True)
    for j, layer in enumerate([2, 3]):
        dec = model.model.layers[layer]
        h = dec.input_layernorm(out.hidden_states[layer][0])
        k = dec.self_attn.k_proj(h).view(len(ids), -1, dec.self_attn.head_dim)
        want = chunk_mean(k, len(ids), 8).detach().numpy()
        np.testing.assert_allclose(route_k[:, j], want, rtol=2e-3, atol=2e-3)  # float16 store


def test_namespaces_and_where_filter_before_topk(tmp_path: Path, tiny_pair) -> None:
    with open_mem(tmp_path / "m", tiny_pair) as mem:
        a = mem.remember(FACTS[0], namespace="alice", metadata={"topic": "geo"})
        mem.remember(FACTS[0], namespace="bob")
        c = mem.remember(FACTS[1], namespace="alice", metadata={"topic": "work"})
        hits = mem.recall(FACTS[0], k=10, namespace="alice")
        assert {h.id for h in hits} == {a, c}
        assert [h.id for h in mem.recall(FACTS[0], k=10, namespace="alice",
                                         where={"topic": "work"})] == [c]
        assert mem.recall("anything", k=3, namespace="nobody") == []


def test_forget_really_deletes_and_split_parts_go_together(tmp_path: Path, tiny_pair) -> None:
    long_text = " ".join(FACTS * 20)  # several documents at max_doc_tokens=64
    with open_mem(tmp_path / "m", tiny_pair) as mem:
        keep = mem.remember(FACTS[2])
        src = mem.remember(long_text, kind="session", session_id="s1")
        parts = mem.list(where={"source_id": src})
        assert len(parts) > 1 and "".join(p.text for p in parts) == long_text
        assert mem.forget(src) == len(parts)
        assert {h.id for h in mem.recall(FACTS[0], k=10)} == {keep}
        with pytest.raises(UnknownMemoryError):
            mem.get(src)
    with open_mem(tmp_path / "m", tiny_pair) as mem:
        assert [r.id for r in mem.list()] == [keep]


def test_forget_where(tmp_path: Path, tiny_pair) -> None:
    with open_mem(tmp_path / "m", tiny_pair) as mem:
        mem.remember_many([{"text": t, "session_id": "s1" if i % 2 else "s2"}
                           for i, t in enumerate(FACTS)])
        assert mem.forget(where={"session_id": "s1"}) == 2
        assert {r.session_id for r in mem.list()} == {"s2"}


@pytest.mark.parametrize("bad", ["", "   \n", b"bytes", "bin\x00ary", "\x01\x02\x03\x04 x", 42])
def test_bad_text_is_refused_and_changes_nothing(tmp_path: Path, tiny_pair, bad) -> None:
    with open_mem(tmp_path / "m", tiny_pair) as mem:
        mem.remember(FACTS[0])
        with pytest.raises(InvalidInputError):
            mem.remember(bad)
        with pytest.raises(InvalidInputError):
            mem.remember_many([FACTS[1], bad])  # one bad item rejects the whole batch
        assert mem.stats().memories == 1


def test_bad_recall_arguments(tmp_path: Path, tiny_pair) -> None:
    with open_mem(tmp_path / "m", tiny_pair) as mem:
        assert mem.recall("empty space", k=3) == []
        mem.remember(FACTS[0])
        for kwargs in ({"k": 0}, {"k": -1}, {"k": 2.5}):
            with pytest.raises(InvalidInputError):
                mem.recall("q", **kwargs)
        with pytest.raises(InvalidInputError):
            mem.recall("")
        with pytest.raises(UnknownMemoryError):
            mem.forget("no-such-id")
        with pytest.raises(InvalidInputError):
            mem.forget()


def test_list_limits_past_sqlite_integers_are_refused(tmp_path: Path, tiny_pair) -> None:
    """SQLite's INTEGER stops at 2**63 - 1: past it, our error, not sqlite3's OverflowError
    (a case the API fuzz test found)."""
    with open_mem(tmp_path / "m", tiny_pair) as mem:
        mem.remember(FACTS[0])
        assert len(mem.list(limit=2**63 - 1, offset=0)) == 1
        for kwargs in ({"limit": 2**63}, {"offset": 2**63}, {"limit": -1}):
            with pytest.raises(InvalidInputError, match="2\\*\\*63 - 1"):
                mem.list(**kwargs)
        assert len(mem.list()) == 1


def test_huge_text_is_split_not_crashed(tmp_path: Path) -> None:
    sentence = "All work and no play makes Jack a dull boy. "
    text = (sentence * 23_000)[:1_000_000]  # 1M characters
    pair = (make_llama(layers=2, vocab=400), make_tokenizer(corpus=[sentence] * 8, vocab_size=400))
    with open_mem(tmp_path / "m", pair, max_doc_tokens=512, batch_tokens=16384) as mem:
        src = mem.remember(text)
        parts = mem.list(where={"source_id": src}, limit=None)
        assert len(parts) > 100
        assert "".join(p.text for p in parts) == text
        assert all(p.n_tokens <= 512 for p in parts)


def test_wrong_model_is_refused_and_space_untouched(tmp_path: Path, tiny_pair, tokenizer) -> None:
    with open_mem(tmp_path / "m", tiny_pair) as mem:
        mid = mem.remember(FACTS[0])
    other = (make_llama(seed=7), tokenizer)
    with pytest.raises(FingerprintMismatchError, match="weights_hash"):
        open_mem(tmp_path / "m", other)
    with open_mem(tmp_path / "m", tiny_pair) as mem:
        assert [r.id for r in mem.list()] == [mid]


def test_path_that_is_a_file_is_refused(tmp_path: Path, tiny_pair) -> None:
    f = tmp_path / "file"
    f.write_text("not a space")
    with pytest.raises(Exception, match="(?i)not a directory|exists|folder|space"):
        open_mem(f, tiny_pair)
    assert f.read_text() == "not a space"


def test_missing_parent_folders_are_created(tmp_path: Path, tiny_pair) -> None:
    with open_mem(tmp_path / "a" / "b" / "m", tiny_pair) as mem:
        assert mem.remember(FACTS[0])


def test_explain_names_layers_and_chunk(tmp_path: Path, tiny_pair) -> None:
    with open_mem(tmp_path / "m", tiny_pair, msa_layers=[1, 3]) as mem:
        mem.remember(" ".join(FACTS))
        (hit,) = mem.recall("green tea", k=1, explain=True)
    assert set(hit.explanation.layer_scores) == {1, 3}
    assert hit.explanation.best_chunk_text and hit.explanation.best_chunk_text in hit.text


def test_recall_hops_records_rounds_without_duplicates(tmp_path: Path, tiny_pair) -> None:
    with open_mem(tmp_path / "m", tiny_pair, hop_routing="same") as mem:
        mem.remember_many(FACTS)
        hits = mem.recall("Where does Alice work?", k=2, hops=2, routing="msa")
        assert len({h.id for h in hits}) == len(hits) == 2
        assert {h.round for h in hits} == {1, 2}
        first = next(h for h in hits if h.round == 1)
        assert all(h.via == [first.id] for h in hits if h.round == 2)
        with pytest.raises(InvalidInputError):
            mem.recall("q", hops=0)


def test_hop_min_score_ends_rounds(tmp_path: Path, tiny_pair) -> None:
    """A cosine score never exceeds 1, so a floor above it leaves round 1 alone (MSA routing
    in every round: the floor is on the later rounds' own scores)."""
    kw = dict(hop_routing="same")
    with open_mem(tmp_path / "m", tiny_pair, hop_min_score=1.01, **kw) as mem:
        mem.remember_many(FACTS)
        hits = mem.recall("Where does Alice work?", k=3, hops=3, routing="msa")
        assert {h.round for h in hits} == {1}
    with open_mem(tmp_path / "m", tiny_pair, hop_min_score=-1.01, **kw) as mem:
        hits = mem.recall("Where does Alice work?", k=3, hops=2, routing="msa")
        assert {h.round for h in hits} == {1, 2}


def test_forget_compacts_past_the_dead_fraction(tmp_path: Path, tiny_pair) -> None:
    """Deleted rows are reclaimed on disk once compact_dead_fraction of them are dead, and
    recall of what is left is unchanged by the compaction."""
    texts = [" ".join(f"tok{i}w{j}" for j in range(300)) for i in range(8)]
    with Memory.open(tmp_path / "s", tiny_pair, compact_dead_fraction=0.5) as mem:
        ids = mem.remember_many(texts)
        full = mem.stats().bytes_on_disk
        mem.forget(ids[0])  # 1/8 dead: below the threshold, nothing reclaimed yet
        assert mem._engine._space.dead_fraction() > 0
        before = [h.id for h in mem.recall(texts[7][:40], k=100)]
        for i in ids[1:4]:
            mem.forget(i)  # the 4th of 8 reaches 1/2: compacted
        assert mem._engine._space.dead_fraction() == 0
        assert mem.stats().bytes_on_disk < full
        gone = {r.id for r in mem.list(limit=None)} ^ set(before)  # parts of deleted sources
        kept = [i for i in before if i not in gone]
        assert [h.id for h in mem.recall(texts[7][:40], k=100)] == kept
        assert {r.source_id for r in mem.list(limit=None)} == set(ids[4:])


def test_a_held_model_keeps_its_dtype_and_a_different_dtype_is_refused(tmp_path: Path) -> None:
    model, tok = make_llama().to(torch.bfloat16), make_tokenizer()
    with Memory.open(tmp_path / "a", model=(model, tok)) as mem:
        assert mem.config.dtype == "bfloat16"  # the config tells what actually runs
    with pytest.raises(InvalidInputError, match="cast the model"):
        Memory.open(tmp_path / "b", model=(model, tok), dtype="float32")
    assert next(model.parameters()).dtype == torch.bfloat16  # never cast behind our back
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("bad_id", [["a"], {"a": 1}, 3, b"abc"])
def test_forget_and_get_of_a_non_string_id_are_refused(tmp_path: Path, tiny_pair,
                                                       bad_id: object) -> None:
    """Found by the API fuzz: forget([...]) raised a raw TypeError before checking the id."""
    with open_mem(tmp_path / "m", tiny_pair) as mem:
        mem.remember(FACTS[0])
        with pytest.raises(InvalidInputError):
            mem.forget(bad_id)
        with pytest.raises(InvalidInputError):
            mem.get(bad_id)
        assert mem.stats().memories == 1


def test_bad_settings_name_each_field_and_create_nothing(tmp_path: Path, tiny_pair) -> None:
    with pytest.raises(InvalidInputError) as err:
        Memory.open(tmp_path / "s", tiny_pair, top_k=0, fusion_pool="many")
    message = str(err.value)
    assert "\n" not in message  # one line: the CLI prints only the first
    assert "top_k: " in message and "(got 0)" in message
    assert "fusion_pool: " in message and "(got 'many')" in message
    assert not (tmp_path / "s").exists()
