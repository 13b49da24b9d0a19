"""Fixtures of the store tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from store_helpers import FP, SPECS

from msa_agent.store import Space


@pytest.fixture
def space_path(tmp_path: Path) -> Path:
    return tmp_path / "space"


@pytest.fixture
def space(space_path: Path) -> Iterator[Space]:
    with Space.create(space_path, FP, SPECS, durable=False) as s:
        yield s
