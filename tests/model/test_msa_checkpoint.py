"""A small random checkpoint in the public MSA format: loads, and routes as the paper says."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, Qwen3Config

from msa_agent import Memory
from msa_agent.errors import ModelLoadError
from msa_agent.model.msa_checkpoint import parse_settings

LAYERS = [2, 3]
DOCS = ["Paris is the capital of France.", "Alice works for Acme in Lisbon.",
        "Bob likes green tea.", "The quick brown fox jumps over the lazy dog. " * 3]


def write_checkpoint(folder: Path, tokenizer) -> dict[str, torch.Tensor]:  # noqa: ANN001
    torch.manual_seed(5)
    cfg = Qwen3Config(vocab_size=300, hidden_size=48, intermediate_size=96, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=16)
    model = AutoModelForCausalLM.from_config(cfg)
    state = {k: v.contiguous() for k, v in model.state_dict().items() if "lm_head" not in k}
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


def test_msa_checkpoint_loads_settings_and_routes_like_the_paper(tmp_path: Path,
                                                                 tokenizer) -> None:
    ckpt = tmp_path / "msa-ckpt"
    state = write_checkpoint(ckpt, tokenizer)
    with Memory.open(tmp_path / "space", model=str(ckpt)) as mem:
        assert (mem.config.chunk_size, mem.config.top_k, mem.config.msa_layers) == (8, 2, LAYERS)
        assert mem.stats().routing == "learned"
        ids = mem.remember_many(DOCS)
        query = "Where does Alice work?"
        qids = mem._engine.tokenizer(query)["input_ids"]
        got = mem._engine.route_per_layer(qids, 2, "default")
        pos = {d: i for i, d in enumerate(ids)}
        got = {layer: [pos[mem._engine.index.doc_ids[d]] for d in docs]
               for layer, docs in got.items()}
    assert got == naive_layer_topk(ckpt, state, tokenizer, query, 2)


def test_unsupported_reduce_method_is_refused() -> None:
    with pytest.raises(ModelLoadError, match="head_reduce_method"):
        parse_settings({"head_reduce_method": "max"}, 36)
    assert parse_settings({"router_layer_idx": "18..35"}, 36).layers == list(range(18, 36))
