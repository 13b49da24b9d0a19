"""A small random checkpoint in the public MSA format: loads, and routes as the paper says."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, Qwen3Config

from msa_agent import Memory
from msa_agent.errors import InvalidInputError, ModelLoadError
from msa_agent.model.attention import MemoryKV
from msa_agent.model.msa_checkpoint import parse_settings
from msa_agent.runtime.answer import prompt_ids, stop_ids
from msa_agent.runtime.generate import greedy
from msa_agent.runtime.results import Scope

LAYERS = [2, 3]
DOCS = ["Paris is the capital of France.", "Alice works for Acme in Lisbon.",
        "Bob likes green tea.", "The quick brown fox jumps over the lazy dog. " * 3]


def write_checkpoint(folder: Path, tokenizer) -> dict[str, torch.Tensor]:  # noqa: ANN001
    torch.manual_seed(5)
    cfg = Qwen3Config(vocab_size=300, hidden_size=48, intermediate_size=96, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=16)
    model = AutoModelForCausalLM.from_config(cfg)
    state = {k: v.clone().contiguous() for k, v in model.state_dict().items()}
    for i in LAYERS:  # nn.Sequential(Linear) naming, as in the public checkpoint
        state[f"model.layers.{i}.self_attn.router_q_proj.0.weight"] = torch.randn(4 * 16, 48)
        state[f"model.layers.{i}.self_attn.router_k_proj.0.weight"] = torch.randn(2 * 16, 48)
    folder.mkdir()
    save_file(state, str(folder / "model.safetensors"))
    raw = {**cfg.to_dict(), "model_type": "msa", "architectures": ["MSAForCausalLM"],
           "msa_config": {"pooling_kernel_size": 8, "top_k_docs": 2, "router_layer_idx": LAYERS,
                          "decouple_router": True, "head_reduce_method": "mean",
                          "query_reduce_method": "max", "chunk_reduce_method": "max",
                          "aux_loss_method": "infonce"}}
    (folder / "config.json").write_text(json.dumps(raw))
    tokenizer.save_pretrained(folder)
    return state


def naive_layer_topk(ckpt: Path, state, tokenizer, query: str, k: int) -> dict[int, list[int]]:  # noqa: ANN001
    """Per layer: S = max_t mean_h cos(W_q h_t, mean_chunk W_k h); doc = max chunk; top-k."""
    from msa_agent.model.msa_checkpoint import load_msa_checkpoint

    model, _, _, _ = load_msa_checkpoint(ckpt)

    def hidden(text: str, layer: int) -> torch.Tensor:
        ids = tokenizer(text)["input_ids"]
        out = model(input_ids=torch.tensor([ids]), output_hidden_states=True)
        return model.model.layers[layer].input_layernorm(out.hidden_states[layer][0])

    result = {}
    for layer in LAYERS:
        wq = state[f"model.layers.{layer}.self_attn.router_q_proj.0.weight"]
        wk = state[f"model.layers.{layer}.self_attn.router_k_proj.0.weight"]
        q = (hidden(query, layer) @ wq.T).view(-1, 4, 16)
        scores = []
        for doc in DOCS:
            kt = (hidden(doc, layer) @ wk.T).view(-1, 2, 16)
            chunks = [kt[s : s + 8].mean(0) for s in range(0, kt.shape[0], 8)]
            scores.append(max(
                max(sum(float(torch.cosine_similarity(q[t, h], c[h // 2], dim=0))
                        for h in range(4)) / 4 for t in range(q.shape[0]))
                for c in chunks))
        result[layer] = sorted(range(len(DOCS)), key=lambda i: -scores[i])[:k]
    return result


@torch.no_grad()
def test_msa_checkpoint_loads_settings_and_routes_like_the_paper(tmp_path: Path,
                                                                 tokenizer) -> None:
    ckpt = tmp_path / "msa-ckpt"
    state = write_checkpoint(ckpt, tokenizer)
    with Memory.open(tmp_path / "space", model=str(ckpt)) as mem:
        assert (mem.config.chunk_size, mem.config.top_k, mem.config.msa_layers) == (8, 2, LAYERS)
        assert mem.stats().routing == "learned"
        ids = mem.remember_many(DOCS)
        query = "Where does Alice work?"
        got = mem._engine.route_per_layer(query, 2, Scope("default"))
        pos = {d: i for i, d in enumerate(ids)}
        got = {layer: [pos[m.id] for m in chosen] for layer, chosen in got.items()}
    assert got == naive_layer_topk(ckpt, state, tokenizer, query, 2)


def test_missing_untied_lm_head_is_refused(tmp_path: Path, tokenizer) -> None:
    """An untied checkpoint without lm_head would otherwise answer with random weights."""
    from safetensors.torch import load_file

    from msa_agent.model.msa_checkpoint import load_msa_checkpoint

    ckpt = tmp_path / "msa-ckpt"
    write_checkpoint(ckpt, tokenizer)
    state = load_file(str(ckpt / "model.safetensors"))
    save_file({k: v for k, v in state.items() if "lm_head" not in k},
              str(ckpt / "model.safetensors"))
    with pytest.raises(ModelLoadError, match="lm_head"):
        load_msa_checkpoint(ckpt)


def test_unsupported_reduce_method_is_refused() -> None:
    with pytest.raises(ModelLoadError, match="head_reduce_method"):
        parse_settings({"head_reduce_method": "max"}, 36)
    assert parse_settings({"router_layer_idx": "18..35"}, 36).layers == list(range(18, 36))


def naive_pooled_memory(model, tokenizer, docs: list[str], per_layer: dict[int, list[int]],  # noqa: ANN001
                        p: int) -> MemoryKV:
    """Each layer's selected documents: chunk means of the model's own cached (post-RoPE) K
    and V, each document run alone at positions 0..len-1."""
    mkv = MemoryKV()
    for layer, sel in per_layer.items():
        ks, vs = [], []
        for i in sel:
            out = model(input_ids=torch.tensor([tokenizer(docs[i])["input_ids"]]), use_cache=True)
            cache = out.past_key_values.layers[layer]
            for src, dst in ((cache.keys, ks), (cache.values, vs)):
                x = src[0].transpose(0, 1)  # [T, Hkv, D]
                dst.append(torch.stack([x[s : s + p].mean(0) for s in range(0, x.shape[0], p)]))
        mkv.k[layer] = torch.cat(ks).transpose(0, 1)[None]
        mkv.v[layer] = torch.cat(vs).transpose(0, 1)[None]
    return mkv


@torch.no_grad()
def test_pooled_read_attends_each_layers_own_selection(tmp_path: Path, tokenizer) -> None:
    from msa_agent.model.msa_checkpoint import load_msa_checkpoint

    ckpt = tmp_path / "msa-ckpt"
    state = write_checkpoint(ckpt, tokenizer)
    query = "Where does Alice work?"
    with Memory.open(tmp_path / "space", model=str(ckpt), store_dtype="float32",
                     answer_format="free") as mem:  # compared with naive greedy
        ids = mem.remember_many(DOCS)
        ans = mem.answer(query, k=2, read="auto", max_new_tokens=5)
    sel = naive_layer_topk(ckpt, state, tokenizer, query, 2)
    assert ans.read == "pooled"
    assert ans.rounds[0].per_layer == {layer: [ids[i] for i in s] for layer, s in sel.items()}
    model = load_msa_checkpoint(ckpt)[0].eval()
    mkv = naive_pooled_memory(model, tokenizer, DOCS, sel, 8)
    # the active context starts at position k = 2: one slot per selected document
    want = greedy(model, prompt_ids(tokenizer, query, []), 5, stop_ids(model, tokenizer), mkv, 2)
    assert tokenizer.decode(list(want), skip_special_tokens=True).strip() == ans.text


def test_generative_interleave_appends_what_the_model_asks_for(
        tmp_path: Path, tokenizer, monkeypatch: pytest.MonkeyPatch) -> None:
    ckpt = tmp_path / "msa-ckpt"
    write_checkpoint(ckpt, tokenizer)
    replies = iter(["<doc>1</doc>", "Lisbon"])
    calls: list[tuple[str, MemoryKV | None]] = []

    def scripted(model, prompt, max_new, stop, memory=None, start=0):  # noqa: ANN001, ANN202
        calls.append((tokenizer.decode(prompt), memory))
        yield from tokenizer(next(replies))["input_ids"]

    monkeypatch.setattr("msa_agent.runtime.stream.greedy", scripted)
    with Memory.open(tmp_path / "space", model=str(ckpt)) as mem:
        mem.remember_many(DOCS)
        ans = mem.answer("Where does Alice work?", k=2, hops="auto", max_new_tokens=8)
        first = mem.get(ans.rounds[0].per_layer[LAYERS[0]][0])
    assert ans.read == "pooled" and ans.text == "Lisbon"
    assert [r.asked for r in ans.rounds] == [[1], []]
    assert ans.rounds[0].appended == [first.id]
    assert f"Document [1]: {first.text}" in calls[1][0]  # its text re-read in round 2
    assert all(mkv is not None and set(mkv.k) == set(LAYERS) for _, mkv in calls)
    assert all(0 < h.score <= 1 for r in ans.rounds for h in r.memories)


def test_generative_interleave_on_an_empty_space_answers(tmp_path: Path, tokenizer) -> None:
    write_checkpoint(tmp_path / "ckpt", tokenizer)
    with Memory.open(tmp_path / "m", model=str(tmp_path / "ckpt")) as mem:
        ans = mem.answer("anything?", hops="auto", max_new_tokens=3)
        for bad in ({"question": "  "}, {"question": "q", "k": 0}, {"question": "q", "hops": 0}):
            with pytest.raises(InvalidInputError):
                mem.answer(**{"hops": "auto", **bad})
    assert ans.read == "pooled" and len(ans.rounds) == 1 and ans.rounds[0].memories == []
