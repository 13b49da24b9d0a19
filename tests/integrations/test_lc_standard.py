"""The ``langchain-tests`` standard suites: retriever and key-value ``BaseStore``."""
# ruff: noqa: F811 - pytest fixtures imported from lc_fixtures are parameters here

from __future__ import annotations

import uuid
from typing import Any

import pytest
from langchain_tests.integration_tests import (
    BaseStoreAsyncTests,
    BaseStoreSyncTests,
    RetrieversIntegrationTests,
)
from lc_fixtures import memory  # noqa: F401

from msa_agent.integrations import MsaKVStore, MsaRetriever
from msa_agent.memory import Memory


@pytest.fixture(autouse=True, scope="class")
def _attach_memory(request: pytest.FixtureRequest, memory: Memory) -> None:
    request.cls.memory = memory


class TestMsaRetrieverStandard(RetrieversIntegrationTests):
    memory: Memory

    @property
    def retriever_constructor(self) -> type[MsaRetriever]:
        return MsaRetriever

    @property
    def retriever_constructor_params(self) -> dict[str, Any]:
        return {"memory": self.memory, "k": 2}

    @property
    def retriever_query_example(self) -> str:
        return "What is the capital of France?"


class _KVStoreFixtures:
    """The fixtures both key-value suites ask for: a fresh namespace per test."""

    memory: Memory

    @pytest.fixture
    def kv_store(self) -> MsaKVStore:
        return MsaKVStore(self.memory, namespace=("kv", uuid.uuid4().hex))

    @pytest.fixture
    def three_values(self) -> tuple[Any, Any, Any]:
        return "value1", {"nested": [1, 2]}, 3


class TestMsaKVStoreSync(_KVStoreFixtures, BaseStoreSyncTests[Any]):
    pass


class TestMsaKVStoreAsync(_KVStoreFixtures, BaseStoreAsyncTests[Any]):
    pass
