"""Recompute stored memories' routing keys (after a router change); their K/V stay."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np
from rich.progress import Progress

from msa_agent.model.encoder import Encoder
from msa_agent.model.text import query_ids, split_text
from msa_agent.store import Space, StoredMemory

BATCH = 64


class Part(Protocol):
    """What ``original_ids`` needs of a memory (a stored one, or one about to be stored)."""

    @property
    def id(self) -> str | None: ...
    @property
    def text(self) -> str: ...
    @property
    def part(self) -> int: ...
    @property
    def source_id(self) -> str | None: ...
    @property
    def n_tokens(self) -> int: ...


ToRows = Callable[..., np.ndarray]  # torch tensor -> numpy rows in the store dtype


def reencode_routing(space: Space, encoder: Encoder, tokenizer: object, max_doc_tokens: int,
                     live: Sequence[StoredMemory], router_id: str, to_rows: ToRows) -> None:
    """Overwrite the ``route_k`` rows of ``live`` with keys from ``encoder``'s router.

    The space is marked ``partial:`` first: keys of two routers may then be mixed, so a run
    cut short (a killed process) is re-encoded at the next open, whatever the router. The
    caller records the final router id once every memory is done.
    """
    space.set_setting("router_id", f"partial:{router_id}")
    ids = original_ids(tokenizer, max_doc_tokens, live)
    with Progress(transient=True) as bar:
        task = bar.add_task("re-encoding routing keys", total=len(live))
        for s in range(0, len(live), BATCH):
            batch = live[s : s + BATCH]
            docs = encoder.encode([ids[m.id] for m in batch])
            for m, d in zip(batch, docs):
                space.overwrite("route_k", m, to_rows(d.route_k))
            bar.advance(task, len(batch))


def original_ids(tokenizer: object, max_doc_tokens: int, live: Sequence[Part]
                 ) -> dict[str, list[int]]:
    """Token ids each memory was first encoded from.

    A long text was cut into parts by token position; re-tokenising one part alone can
    differ at its edges, so the parts of a source are joined and split again the same way.
    A source whose parts no longer split back the same way falls back to each part's text.
    """
    by_source: dict[str, list[Part]] = {}
    for m in live:
        by_source.setdefault(m.source_id or m.id or "", []).append(m)
    out: dict[str, list[int]] = {}
    for parts in by_source.values():
        parts.sort(key=lambda m: m.part)
        pieces = split_text(tokenizer, "".join(m.text for m in parts),
                            max_doc_tokens) if len(parts) > 1 else []
        same = [p.text for p in pieces] == [m.text for m in parts]
        for i, m in enumerate(parts):
            out[m.id or ""] = (pieces[i].ids if same
                         else _fit(query_ids(tokenizer, m.text, 1 << 30), m.n_tokens))
    return out


def _fit(ids: list[int], n: int) -> list[int]:
    """Best effort for a part whose source cannot be re-split: keep its stored length."""
    return ids[:n] + ids[-1:] * max(0, n - len(ids))
