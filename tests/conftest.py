"""Shared fixtures: a tiny byte-level BPE tokenizer and tiny random decoders (fast, offline)."""

from __future__ import annotations

import pytest
import torch
from transformers import PreTrainedTokenizerFast

from msa_testing import make_llama, make_tokenizer


@pytest.fixture(scope="session")
def tokenizer() -> PreTrainedTokenizerFast:
    return make_tokenizer()


@pytest.fixture(scope="session")
def tiny_llama() -> torch.nn.Module:
    return make_llama()


@pytest.fixture()
def tiny_pair(tiny_llama, tokenizer):  # noqa: ANN001, ANN201
    return (tiny_llama, tokenizer)
