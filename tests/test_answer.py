"""Memory.answer on a tiny random model: read modes, streaming, rounds, bad input."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from msa_agent import Memory
from msa_agent.errors import InvalidInputError
from msa_agent.model.attention import MemoryKV, rotate_memory
from msa_agent.runtime.answer import prompt_ids
from msa_agent.runtime.engine import Engine
from msa_agent.runtime.generate import greedy

pytestmark = pytest.mark.filterwarnings("ignore::msa_agent.runtime.engine.RoutingQualityWarning")

FACTS = ["Alice works for Acme.", "Acme is based in Lisbon.", "Bob likes green tea."]


def open_mem(path: Path, pair, **kw) -> Memory:  # noqa: ANN001
    # free answers: these tests compare generation with a naive forward token for token
    # (the answer formats have their own tests, tests/runtime/test_extract.py)
    return Memory.open(path, model=pair, **{"chunk_size": 8, "answer_format": "free", **kw})


def test_text_read_answers_with_rounds_and_costs(tmp_path: Path, tiny_pair) -> None:
    with open_mem(tmp_path / "m", tiny_pair) as mem:
        mem.remember_many(FACTS)
        ans = mem.answer("Where does Alice work?", k=2, hops=2, read="text", max_new_tokens=5)
        bare = mem.answer("Where does Alice work?", k=1, read="text", max_new_tokens=5)
        auto = mem.answer("Where does Alice work?", k=1, max_new_tokens=5)
    assert auto.read == "chunks"  # the default for a model not trained for MSA
    assert ans.read == "text" and ans.generated_tokens == 5
    assert [r.round for r in ans.rounds] == [1, 2]
    assert ans.prompt_tokens > bare.prompt_tokens  # two memories inlined vs one
    assert {"route_ms", "read_ms", "generate_ms"} <= set(ans.timings_ms)


@pytest.mark.parametrize("layout", [{"msa_layers": [0, 1, 2, 3]}, {"full_kv_layers": "all"}])
def test_full_read_generates_what_a_manual_memory_forward_generates(
        tmp_path: Path, tiny_pair, layout: dict) -> None:
    """Memory K/V in every layer: through MSA layers = all, or full_kv_layers="all" with the
    default MSA layers (the upper half route; every layer reads)."""
    model, tok = tiny_pair
    with open_mem(tmp_path / "m", tiny_pair, keep_full_kv=True, kv_frame="bare", **layout) as mem:
        mem.remember_many(FACTS)
        ans = mem.answer("Alice?", k=3, read="full", max_new_tokens=6)
        hits = [m.text for r in ans.rounds for m in r.memories]
        docs = mem._engine.encoder.encode([tok(t)["input_ids"] for t in hits])
    mkv, device = MemoryKV(), next(model.parameters()).device  # the model's device (GPU too)
    for layer in range(4):
        mkv.k[layer] = rotate_memory(model, [d.full_k[:, layer].to(device) for d in docs],
                                     [torch.arange(d.n_tokens) for d in docs])
        mkv.v[layer] = torch.cat([d.full_v[:, layer] for d in docs]).transpose(0, 1)[None].to(
            device)
    prompt = prompt_ids(tok, "Alice?", [])  # no memory text: memory is read through K/V
    want = list(greedy(model, prompt, 6, set(), mkv, max(d.n_tokens for d in docs)))
    assert ans.read == "full" and ans.memory_tokens == sum(d.n_tokens for d in docs)
    assert tok.decode(want, skip_special_tokens=True).strip() == ans.text


def test_stream_yields_the_answer_text(tmp_path: Path, tiny_pair) -> None:
    with open_mem(tmp_path / "m", tiny_pair) as mem:
        mem.remember_many(FACTS)
        stream = mem.answer("tea?", k=1, max_new_tokens=6, stream=True)
        pieces = list(stream)
    assert stream.answer is not None
    assert "".join(pieces).strip() == stream.answer.text


def test_default_k_is_answer_k_not_top_k(tmp_path: Path, tiny_pair) -> None:
    with open_mem(tmp_path / "m", tiny_pair) as mem:
        mem.remember_many(FACTS)
        assert mem.config.answer_k == 2 and mem.config.top_k > 2
        read = mem.answer("Alice?", read="text", max_new_tokens=2).rounds[0].memories
        assert len(read) == 2
        assert len(mem.recall("Alice?")) == 3  # recall keeps top_k
    with open_mem(tmp_path / "m", tiny_pair, answer_k=3) as mem:
        assert len(mem.answer("Alice?", read="text", max_new_tokens=2).rounds[0].memories) == 3


def test_bad_input_and_empty_space(tmp_path: Path, tiny_pair) -> None:
    with open_mem(tmp_path / "m", tiny_pair) as mem:
        empty = mem.answer("anything?", max_new_tokens=3)
        assert empty.rounds == [] and empty.memory_tokens == 0
        mem.remember(FACTS[0])
        for kwargs in ({"k": 0}, {"read": "telepathy"}, {"read": "full"},
                       {"max_new_tokens": 0}, {"hops": 0}):
            with pytest.raises(InvalidInputError):
                mem.answer("q", **kwargs)
        with pytest.raises(InvalidInputError):
            mem.answer("  ")


def test_pooled_read_refuses_spaces_with_other_pooled_keys(tmp_path: Path, tiny_pair) -> None:
    """Pooled K not stored as post-RoPE chunk means (a bundle of another layout was imported)
    would be read silently wrong: pooled reading is refused."""
    with open_mem(tmp_path / "new", tiny_pair) as mem:
        mem.remember_many(FACTS)
        assert mem.answer("Alice?", k=2, read="pooled", max_new_tokens=2).read == "pooled"
        mem.export(tmp_path / "bundle")
        mem._engine._space.set_setting("pooled_k", "pre-rope")  # another layout's space
        with pytest.raises(InvalidInputError, match="post-RoPE"):
            mem.answer("Alice?", k=2, read="pooled")
        assert mem.answer("Alice?", k=2, read="text", max_new_tokens=2).read == "text"
        mem.export(tmp_path / "old-bundle")
    with open_mem(tmp_path / "fresh", tiny_pair) as mem:
        mem.import_(tmp_path / "bundle")  # same layout: pooled reading still works
        assert mem.answer("Alice?", k=2, read="pooled", max_new_tokens=2).read == "pooled"
        mem.import_(tmp_path / "old-bundle")  # different layout: the space is now mixed
        with pytest.raises(InvalidInputError, match="post-RoPE"):
            mem.answer("Alice?", k=2, read="pooled")



def test_full_kv_layers_all_is_remembered_by_the_space(tmp_path: Path, tiny_pair) -> None:
    with open_mem(tmp_path / "m", tiny_pair, keep_full_kv=True, full_kv_layers="all") as mem:
        mem.remember_many(FACTS)
        first = mem.answer("Alice?", k=2, read="full", max_new_tokens=3).text
    with Memory.open(tmp_path / "m", model=tiny_pair, answer_format="free") as mem:  # layout
        assert mem.config.full_kv_layers == "all" and mem._engine.full_layers == [0, 1, 2, 3]
        assert mem.answer("Alice?", k=2, read="full", max_new_tokens=3).text == first


@pytest.mark.parametrize(("settings", "picked"), [
    ({}, "chunks"),  # no stored per-token K/V: the windows as text
    # chat-framed K/V (the default frame) in every layer: it reads like the text
    ({"keep_full_kv": True, "full_kv_layers": "all"}, "kv_chunks"),
    ({"keep_full_kv": True}, "chunks"),  # K/V in the MSA layers only
    ({"keep_full_kv": True, "full_kv_layers": "all", "kv_frame": "bare"}, "chunks"),  # paper's
])
def test_auto_reads_the_windows_as_kv_where_chat_framed_kv_is_stored(
        tmp_path: Path, tiny_pair, settings: dict, picked: str) -> None:
    with open_mem(tmp_path / "m", tiny_pair, **settings) as mem:
        mem.remember_many(FACTS)
        if picked == "kv_chunks" and not mem._engine.kv_first_sooner(2):
            picked = "chunks"  # on CUDA re-reading two windows as text is sooner
        auto = mem.answer("Where does Alice work?", k=2, max_new_tokens=3)
        explicit = mem.answer("Where does Alice work?", k=2, read=picked, max_new_tokens=3)
    assert auto.read == picked
    assert (auto.text, auto.prompt_tokens, auto.memory_tokens) == \
        (explicit.text, explicit.prompt_tokens, explicit.memory_tokens)


@pytest.mark.parametrize(("device", "k", "blend", "sooner"), [
    ("cpu", 1, 0.0, True), ("cpu", 16, 0.0, True), ("cpu", 2, 0.15, True),
    ("cuda", 2, 0.0, False), ("cuda", 7, 0.0, False), ("cuda", 8, 0.0, True),
    ("cuda", 16, 0.0, True), ("cuda", 16, 0.15, False)])
def test_kv_is_sooner_on_a_cpu_and_from_eight_memories_on_cuda(device: str, k: int,
                                                              blend: float,
                                                              sooner: bool) -> None:
    """On CUDA a K/V read that re-encodes tokens in context is never the sooner one."""
    engine = SimpleNamespace(lm=SimpleNamespace(device=torch.device(device)),
                             cfg=SimpleNamespace(kv_blend=blend))
    assert Engine.kv_first_sooner(engine, k) is sooner  # type: ignore[arg-type]


def test_auto_rereads_the_windows_as_text_where_that_is_sooner(
        tmp_path: Path, tiny_pair, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a space whose K/V reads like text, ``auto`` still reads ``chunks`` where the engine
    says re-reading is sooner (a GPU with a few memories), and answers as ``chunks`` does."""
    monkeypatch.setattr(Engine, "kv_first_sooner", lambda self, k: False)
    with open_mem(tmp_path / "m", tiny_pair, keep_full_kv=True, full_kv_layers="all") as mem:
        mem.remember_many(FACTS)
        auto = mem.answer("Where does Alice work?", k=2, max_new_tokens=3)
        explicit = mem.answer("Where does Alice work?", k=2, read="chunks", max_new_tokens=3)
    assert auto.read == "chunks"
    assert (auto.text, auto.prompt_tokens) == (explicit.text, explicit.prompt_tokens)
