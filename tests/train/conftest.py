"""Fixtures shared by the router-training tests: the tiny model wrapped, and a hidden-state
cache of the module's ``LAYERS`` (a module that defines its own fixture of the same name
keeps it)."""

from __future__ import annotations

import pytest

from msa_agent.model.loader import wrap_model
from msa_agent.train import HiddenCache


@pytest.fixture(scope="module")
def lm(tiny_llama, tokenizer):  # noqa: ANN001, ANN201
    return wrap_model(tiny_llama, tokenizer, name="tiny")


@pytest.fixture(scope="module")
def cache(lm, tmp_path_factory, request) -> HiddenCache:  # noqa: ANN001
    return HiddenCache(tmp_path_factory.mktemp("cache"), lm, request.module.LAYERS,
                       chunk_size=8, max_doc_tokens=512)
