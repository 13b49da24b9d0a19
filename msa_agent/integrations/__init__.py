"""LangChain and LangGraph plug-ins (``pip install 'msa-agent[langchain]'``).

* :class:`MsaRetriever`: a LangChain retriever (query -> Documents with id, score, kind);
* :class:`MsaChatMessageHistory`: a conversation kept as session memories;
* :class:`MsaStore`: a LangGraph ``BaseStore`` for long-term memory;
* :class:`MsaKVStore`: a LangChain key-value ``BaseStore`` over the same mapping.

Names are imported lazily so that a missing extra fails with an install hint, on use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_LAZY = {
    "MsaRetriever": "msa_agent.integrations.retriever",
    "MsaChatMessageHistory": "msa_agent.integrations.history",
    "MsaStore": "msa_agent.integrations.langgraph_store",
    "MsaKVStore": "msa_agent.integrations.kv_store",
}

if TYPE_CHECKING:
    from msa_agent.integrations.history import MsaChatMessageHistory
    from msa_agent.integrations.kv_store import MsaKVStore
    from msa_agent.integrations.langgraph_store import MsaStore
    from msa_agent.integrations.retriever import MsaRetriever

__all__ = ["MsaChatMessageHistory", "MsaKVStore", "MsaRetriever", "MsaStore"]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'msa_agent.integrations' has no attribute {name!r}")
    try:
        module = importlib.import_module(_LAZY[name])
    except ModuleNotFoundError as e:
        if e.name and e.name.split(".")[0] in ("langchain_core", "langgraph"):
            raise ImportError(f"{name} needs {e.name.split('.')[0]}: "
                              "pip install 'msa-agent[langchain]'") from e
        raise
    return getattr(module, name)
