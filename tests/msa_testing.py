"""Tiny offline models for tests: a byte-level BPE tokenizer and small random decoders.

Importable from any test (``tests/`` is on pytest's ``pythonpath``); the name is unique so it
never collides with another folder's helper modules.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoModelForCausalLM, LlamaConfig, PreTrainedTokenizerFast

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Paris is the capital of France; Berlin is the capital of Germany.",
    "Alice works for Acme. Acme is based in Lisbon. Bob likes green tea.",
    "Memory sparse attention routes a query to a few documents and attends to them.",
    "0123456789 abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ .,;:!?'\"()-",
]


def make_tokenizer(
    vocab_size: int = 300, corpus: list[str] | None = None, prefix_space: bool = False
) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=prefix_space)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator((corpus or []) + CORPUS * 4, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>")


def make_llama(layers: int = 4, seed: int = 0, vocab: int = 300) -> torch.nn.Module:
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab, hidden_size=48, intermediate_size=96, num_hidden_layers=layers,
        num_attention_heads=6, num_key_value_heads=2, max_position_embeddings=4096,
    )
    return AutoModelForCausalLM.from_config(cfg).eval()


def reader_logits(model: torch.nn.Module, reader: object) -> torch.Tensor:
    """Logits of a runtime ``Reader``'s prompt over its memory K/V (the ``msa`` attention),
    at the positions the reader starts from: what its first generated token is chosen from."""
    from msa_agent.runtime.generate import msa_attention

    device = next(model.parameters()).device
    ids = torch.tensor([reader.prompt], device=device)  # type: ignore[attr-defined]
    start = reader.start  # type: ignore[attr-defined]
    pos = torch.arange(start, start + ids.shape[1], device=device)[None]
    with torch.inference_mode(), msa_attention(model):
        return model(input_ids=ids, position_ids=pos,
                     msa_memory=reader.memory).logits  # type: ignore[attr-defined]


def save_tiny_model(folder: Path, seed: int = 0) -> Path:
    """A tiny Llama and its tokenizer saved with ``save_pretrained`` into ``folder``: what a
    model name or ``--model`` takes as a local path."""
    make_llama(seed=seed).save_pretrained(folder)
    make_tokenizer().save_pretrained(folder)
    return folder
