"""Benchmark tasks, each seeded and deterministic, each with a val and a test split.

``build(name, mode)`` returns a :class:`~msa_agent.bench.tasks.base.Task` at the ``quick``
(CPU, minutes) or ``full`` size. The sizes live in :data:`PARAMS` so that the docs and the
JSON results can name exactly what ran.
"""

from __future__ import annotations

from typing import Any

from msa_agent.bench.tasks import facts, longmemeval, needles, sessions, wiki
from msa_agent.bench.tasks.base import MemoryItem, Query, Stage, Task

BUILDERS = {"facts": facts.build, "wiki": wiki.build, "sessions": sessions.build,
            "longmemeval": longmemeval.build, "needles": needles.build}
TASKS = tuple(BUILDERS)
PARAMS: dict[str, dict[str, dict[str, Any]]] = {
    "quick": {
        "facts": {"n_chains": 100},
        "wiki": {"n_bank": 300, "n_per_split": 50},
        "sessions": {"n_users": 6, "n_sessions": 8},
        "longmemeval": {"per_kind": 1, "group_size": 6},
        "needles": {"sizes": ("16K",), "n_queries": 20},
    },
    "full": {
        "facts": {"n_chains": 500},
        "wiki": {"n_bank": 2000, "n_per_split": 200},
        "sessions": {"n_users": 30, "n_sessions": 10},
        "longmemeval": {"per_kind": 5, "group_size": 30},
        "needles": {"sizes": ("16K", "64K", "256K"), "n_queries": 40},
    },
}


def build(name: str, mode: str = "quick", **overrides: Any) -> Task:
    """The task ``name`` at ``mode``'s size; ``overrides`` replace builder arguments."""
    if name not in BUILDERS:
        raise ValueError(f"unknown task {name!r}; choose from {', '.join(TASKS)}")
    return BUILDERS[name](**{**PARAMS[mode][name], **overrides})


__all__ = ["PARAMS", "TASKS", "MemoryItem", "Query", "Stage", "Task", "build"]
