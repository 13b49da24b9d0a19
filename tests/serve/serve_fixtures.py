"""Fixtures of the server tests: a tiny-model Memory behind a real uvicorn on loopback.

Test modules import them (a ``conftest.py`` here would shadow the root one). The servers are
module-scoped: starting one takes a fraction of a second, opening the Memory a few seconds.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from msa_agent import Memory
from msa_agent.serve.app import create_app
from msa_agent.serve.auth import AuthConfig
from msa_agent.serve.server import background_server
from msa_testing import make_llama, make_tokenizer

SETTINGS = {"chunk_size": 8, "max_doc_tokens": 64}
NOTES = ["Paris is the capital of France.", "Alice works for Acme in Lisbon.",
         "Bob likes green tea.", "The deploy host is called vrai-thorn-7."]
ADMIN, ALICE, BOB = "sk-admin-0123456789", "sk-alice-0123456789", "sk-bob-0123456789"
KEYS = AuthConfig.from_mapping({"keys": {ADMIN: ["*"], ALICE: ["alice"], BOB: ["bob"]}})


def open_memory(path: Path, **overrides: object) -> Memory:
    return Memory.open(path, (make_llama(), make_tokenizer()), **{**SETTINGS, **overrides})


@pytest.fixture(scope="module")
def memory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Memory]:
    with open_memory(tmp_path_factory.mktemp("serve") / "space") as mem:
        yield mem


@pytest.fixture(scope="module")
def open_url(memory: Memory) -> Iterator[str]:
    """A server without keys (loopback only)."""
    with background_server(create_app(memory)) as url:
        yield url


@pytest.fixture(scope="module")
def keyed_url(memory: Memory) -> Iterator[str]:
    """A server over the same Memory that requires API keys."""
    with background_server(create_app(memory, auth=KEYS)) as url:
        yield url


@pytest.fixture()
def api(open_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"{open_url}/v1", timeout=60) as client:
        yield client


def keyed(url: str, key: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=f"{url}/v1", headers=headers, timeout=60)
