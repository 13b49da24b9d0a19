"""msa-agent: lifelong memory for LLM agents, built on Memory Sparse Attention (MSA).

Public names are imported lazily so that ``import msa_agent.kernels`` or
``import msa_agent.store`` stays light (no model or transformers import).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "AsyncMemory": "msa_agent.async_memory",
    "Memory": "msa_agent.memory",
    "MemoryConfig": "msa_agent.config",
    "MemoryRecord": "msa_agent.types",
    "RecallHit": "msa_agent.types",
}

if TYPE_CHECKING:
    from msa_agent.async_memory import AsyncMemory
    from msa_agent.config import MemoryConfig
    from msa_agent.memory import Memory
    from msa_agent.types import MemoryRecord, RecallHit

__all__ = ["AsyncMemory", "Memory", "MemoryConfig", "MemoryRecord", "RecallHit", "__version__"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'msa_agent' has no attribute {name!r}")
