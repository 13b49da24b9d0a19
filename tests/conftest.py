"""Shared fixtures: a tiny byte-level BPE tokenizer and tiny random decoders (fast, offline)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import torch

# Triton builds its language helpers for the interpreter only if TRITON_INTERPRET is set when
# ``triton.language`` is first imported; the root conftest runs before any test imports it.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
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


@pytest.fixture(autouse=True)
def tiny_back_on_cpu(request: pytest.FixtureRequest) -> Iterator[None]:
    """The session's tiny model goes back to the CPU after a test that used it: a ``Memory``
    on a GPU machine moves it to CUDA, and later tests build their tensors on the CPU."""
    yield
    if "tiny_llama" in request.fixturenames:
        model = request.getfixturevalue("tiny_llama")
        if next(model.parameters()).device.type != "cpu":
            model.to("cpu")


@pytest.fixture(autouse=True)
def one_thread(request: pytest.FixtureRequest) -> Iterator[None]:
    """One torch thread for tiny-model tests: several times faster on a busy 2-core machine.

    Tests on the real model (marked ``slow``) keep the default.
    """
    if request.node.get_closest_marker("slow"):
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
