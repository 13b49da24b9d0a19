"""On-disk cache of the frozen backbone's hidden states, so router projections train fast.

The backbone runs once per distinct text (the expensive part, a few ms per token on CPU).
What the router reads is kept, per MSA layer, as fp16:
- a query: per-token attention inputs ``[T, L, hidden]`` (tokenised as ``recall`` does);
- a document: chunk means of the attention inputs ``[C, L, hidden]`` over the pieces
  ``remember`` would cut it into (tokenised as ``remember`` does). ``router_k_proj`` is linear
  and bias-free, so projecting a chunk mean equals the chunk mean of the projected keys that
  the encoder stores: scores computed from this cache equal the runtime's.

Texts are keyed by a hash, appended in shards (``<kind>-NNNNN.safetensors``), and reused by
later runs with the same model, layers and chunk size.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from msa_agent.errors import InvalidInputError
from msa_agent.model.encoder import Encoder
from msa_agent.model.loader import LoadedModel, model_fingerprint
from msa_agent.model.text import query_ids, split_text

QUERY, DOC = "query", "doc"
_SHARD_TEXTS = 256


def text_key(text: str) -> str:
    """Stable key of a text in the cache."""
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


@dataclass
class Packed:
    """Variable-length rows packed in one tensor: row ``i`` is ``data[offsets[i]:offsets[i+1]]``."""

    data: torch.Tensor  # [sum n_i, L, hidden]
    offsets: torch.Tensor  # [n + 1] int64

    def __len__(self) -> int:
        return self.offsets.numel() - 1

    def lengths(self) -> torch.Tensor:
        return self.offsets[1:] - self.offsets[:-1]

    def to(self, device: torch.device | str) -> Packed:
        """A copy with the data on ``device`` (offsets stay on the CPU)."""
        return Packed(self.data.to(device), self.offsets)

    def row(self, i: int) -> torch.Tensor:
        return self.data[int(self.offsets[i]) : int(self.offsets[i + 1])]

    @classmethod
    def of(cls, rows: Sequence[torch.Tensor]) -> Packed:
        lengths = torch.tensor([r.shape[0] for r in rows], dtype=torch.long)
        offsets = torch.zeros(len(rows) + 1, dtype=torch.long)
        offsets[1:] = lengths.cumsum(0)
        return cls(torch.cat(list(rows)) if rows else torch.empty(0), offsets)


class HiddenCache:
    """Hidden states of queries and documents for one (model, layers, chunk size, max tokens)."""

    def __init__(self, root: str | Path, lm: LoadedModel, layers: list[int], *,
                 chunk_size: int = 64, max_doc_tokens: int = 512, batch_tokens: int = 4096,
                 fingerprint: dict[str, Any] | None = None) -> None:
        self.lm, self.layers = lm, list(layers)
        self.chunk_size, self.max_doc_tokens = chunk_size, max_doc_tokens
        self.encoder = Encoder(lm, self.layers, chunk_size=chunk_size, batch_tokens=batch_tokens)
        ident = {"fingerprint": fingerprint or model_fingerprint(lm), "layers": self.layers,
                 "chunk_size": chunk_size, "max_doc_tokens": max_doc_tokens}
        tag = hashlib.sha1(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()
        self.root = Path(root) / tag[:12]
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "identity.json").write_text(json.dumps(ident, indent=1, default=str))
        self._rows: dict[str, dict[str, torch.Tensor]] = {QUERY: {}, DOC: {}}
        self._loaded: set[str] = set()

    # ------------------------------------------------------------------ public
    def ensure(self, texts: Sequence[str], kind: str,
               progress: Callable[[int, int], None] | None = None) -> None:
        """Encode (once) every text not cached yet, in shards written as they complete."""
        self._load(kind)
        todo = list(dict.fromkeys(t for t in texts if text_key(t) not in self._rows[kind]))
        for s in range(0, len(todo), _SHARD_TEXTS):
            part = todo[s : s + _SHARD_TEXTS]
            rows = self._encode(part, kind)
            self._write_shard(kind, {text_key(t): r for t, r in zip(part, rows)})
            if progress is not None:
                progress(min(s + _SHARD_TEXTS, len(todo)), len(todo))

    def packed(self, texts: Sequence[str], kind: str) -> Packed:
        """Cached rows of ``texts`` (in order), packed; every text must be cached."""
        self._load(kind)
        return Packed.of([self._rows[kind][text_key(t)] for t in texts])

    def __contains__(self, item: tuple[str, str]) -> bool:
        text, kind = item
        self._load(kind)
        return text_key(text) in self._rows[kind]

    # ------------------------------------------------------------------ internals
    def _encode(self, texts: Sequence[str], kind: str) -> list[torch.Tensor]:
        tok = self.lm.tokenizer
        if kind == QUERY:
            ids = [query_ids(tok, t, self.max_doc_tokens) for t in texts]
            return [h.half() for h in self.encoder.hidden_states(ids, pooled=False)]
        pieces = [split_text(tok, t, self.max_doc_tokens) for t in texts]
        flat = [p.ids for ps in pieces for p in ps]
        pooled = iter(self.encoder.hidden_states(flat, pooled=True))
        return [torch.cat([next(pooled) for _ in ps]).half() for ps in pieces]

    def _write_shard(self, kind: str, rows: dict[str, torch.Tensor]) -> None:
        n = len(list(self.root.glob(f"{kind}-*.safetensors")))
        keys = list(rows)
        packed = Packed.of([rows[k] for k in keys])
        path = self.root / f"{kind}-{n:05d}.safetensors"
        tmp = path.with_suffix(".tmp")
        save_file({"data": packed.data.contiguous(), "offsets": packed.offsets}, str(tmp),
                  metadata={"keys": json.dumps(keys)})
        tmp.rename(path)
        self._rows[kind].update(rows)

    def _load(self, kind: str) -> None:
        if kind not in (QUERY, DOC):
            raise InvalidInputError(f"kind must be {QUERY!r} or {DOC!r}, got {kind!r}")
        if kind in self._loaded:
            return
        from safetensors import safe_open

        for path in sorted(self.root.glob(f"{kind}-*.safetensors")):
            with safe_open(str(path), framework="pt") as f:
                keys = json.loads((f.metadata() or {})["keys"])
            t = load_file(str(path))
            packed = Packed(t["data"], t["offsets"])
            self._rows[kind].update({k: packed.row(i) for i, k in enumerate(keys)})
        self._loaded.add(kind)
