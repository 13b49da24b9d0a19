"""Router training on a frozen backbone (MSA's routing loss, with cached hidden states).

- :func:`train_router`: pairs in, a router file bound to the model fingerprint out;
- pair sources: :func:`read_pairs_jsonl` (labelled), :func:`inverse_cloze`,
  :func:`entity_pairs` and :func:`memory_pairs` (self-supervised, from any texts or a
  memory space);
- pieces: :class:`HiddenCache`, :class:`TrainableRouter`, :func:`train`, :func:`save_router`.
"""

from __future__ import annotations

from msa_agent.train.api import TrainResult, memory_pairs, train_router
from msa_agent.train.cache import HiddenCache, Packed
from msa_agent.train.export import save_router
from msa_agent.train.pairs import (
    Pair,
    dedupe,
    entity_pairs,
    inverse_cloze,
    name_spans,
    read_pairs_jsonl,
    split_sentences,
)
from msa_agent.train.score import TrainableRouter
from msa_agent.train.trainer import (
    Dataset,
    TrainConfig,
    TrainReport,
    build_dataset,
    mine_hard_negatives,
    pair_loss,
    recall_at,
    train,
)

__all__ = [
    "Dataset", "HiddenCache", "Packed", "Pair", "TrainConfig", "TrainReport", "TrainResult",
    "TrainableRouter", "build_dataset", "dedupe", "entity_pairs", "inverse_cloze",
    "memory_pairs", "mine_hard_negatives", "name_spans", "pair_loss", "read_pairs_jsonl",
    "recall_at", "save_router", "split_sentences", "train", "train_router",
]
