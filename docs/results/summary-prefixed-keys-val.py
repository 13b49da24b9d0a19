"""Probe (val only): routing keys from the summary template's forward. With the summary
channel on, ingest runs two forwards per memory: the text alone (routing keys, K/V) and the
text inside PromptEOL's template (the summary vector), so it runs at 0.47-0.50x. One forward
would serve both if the keys could come from the templated text, whose states differ from
the bare text's by the prefix before it (``This text : "``). This probe computes every
memory's routing keys from the templated forward (the text's own token positions, the
prefix left out), swaps them into the open space's index (never on disk), and fuses
through the runtime (``swapped_rows``, the summary vectors unchanged). Rows: the bare keys
(the runtime's) and the templated ones, MSA alone and hybrid, the summary channel at the
shipped weight and off (weight 0).

    python docs/results/summary-prefixed-keys-val.py WORK OUT.json [TASK ...]
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from unittest import mock

import numpy as np
import torch

from msa_agent.bench.summary_channel import each_space, swapped_rows
from msa_agent.model.encoder import batch_chunk_mean, length_batches
from msa_agent.model.text import (
    SUMMARY_PREFIX,
    SUMMARY_SUFFIX,
    query_ids,
    special_prefix,
    split_text,
)

WEIGHTS = (0.0, 0.09375)
# PREFIXES='["Note: ", "\\n"]': other prefixes than the template's (their rows are named by them)
PREFIXES = json.loads(os.environ.get("PREFIXES", json.dumps([SUMMARY_PREFIX])))
# QPREFIX="\n": also route each question read after that text (its rows dropped from the
# routing queries), beside the bare question, with every set of keys
QPREFIX = os.environ.get("QPREFIX")


def prefixed_routes(eng, queries: list, prefix: str) -> list[torch.Tensor]:  # noqa: ANN001
    """Routing queries of each question read after ``prefix``, the prefix's rows dropped."""
    tok = eng.tokenizer
    lead = special_prefix(tok)
    pre = tok(prefix, add_special_tokens=False)["input_ids"]
    ids = [query_ids(tok, q.text, eng.cfg.max_doc_tokens) for q in queries]
    made = eng.encoder.query_vectors_many([[*lead, *pre, *i[len(lead):]] for i in ids])
    return [torch.cat([m[:len(lead)], m[len(lead) + len(pre):]]) for m in made]


def rows_of(mem, queries: list, routes: list, asked: torch.Tensor, label: str) -> dict:  # noqa: ANN001
    """``swapped_rows`` with the bare questions' routes and, with ``QPREFIX``, the prefixed."""
    docs = mem._engine.index._summary.view().clone()
    rows = swapped_rows(mem, queries, routes, docs, asked, WEIGHTS, label)
    if QPREFIX is not None:
        rows |= swapped_rows(mem, queries, prefixed_routes(mem._engine, queries, QPREFIX),
                             docs, asked, WEIGHTS, f"{label}, question after {QPREFIX!r}")
    return rows


@torch.inference_mode()
def templated_keys(enc, tok, docs: list[list[int]], bare: bool = False,  # noqa: ANN001
                   prefix: str = SUMMARY_PREFIX) -> list[torch.Tensor]:
    """Routing keys ``[C, L, Hkv, D]`` of each document (its ids, the special prefix first)
    from the forward of ``lead + PREFIX + body + SUFFIX``, at the document's own tokens
    (``bare``: of the document alone, the runtime's keys; a check of this path). ``prefix``:
    another text before the document instead of the template's (the suffix stays)."""
    router = enc.router
    assert router is not None and not router.keys_from_pooled and router.doc_adapter is None
    lead = special_prefix(tok)
    pre, post = ([] if bare else tok(t, add_special_tokens=False)["input_ids"]
                 for t in (prefix, SUMMARY_SUFFIX))
    out: list[torch.Tensor] = [torch.empty(0)] * len(docs)
    full = [[*lead, *pre, *d[len(lead):], *post] for d in docs]
    for batch in length_batches([len(f) for f in full], enc.batch_tokens):
        taps = enc._forward([full[i] for i in batch], ("hidden",), enc.layers)
        for row, i in enumerate(batch):
            n = len(docs[i])
            at = torch.tensor([*range(len(lead)), *range(len(lead) + len(pre),
                                                         len(pre) + n)])
            src = torch.stack([router[L].k(taps["hidden"][L][row, at]) for L in enc.layers],
                              1).float()  # [n, L, Hkv, D]
            out[i] = batch_chunk_mean(src[None], [n], enc.chunk_size)[0]
    return out


def swap_keys(eng, live, keys: np.ndarray, owner: np.ndarray,  # noqa: ANN001
              made: list[torch.Tensor]) -> int:
    """Reload the open engine's index with ``made`` as the memories' routing keys (a memory
    whose retokenised part has another chunk count keeps its own); how many kept theirs."""
    start = np.r_[0, np.cumsum([m.n_chunks for m in live])]
    new, kept = keys.copy(), 0
    for j, k in enumerate(made):
        if k.shape[0] == live[j].n_chunks:
            new[start[j]:start[j + 1]] = k.numpy().astype(keys.dtype)
        else:
            kept += 1
    real = eng._space.read_all

    def read_all(n: str):  # noqa: ANN202
        return (new, owner) if n == "route_k" else real(n)
    with mock.patch.object(eng._space, "read_all", read_all):
        eng._load_index(live)
    return kept


def main(work: Path, out: Path, tasks: list[str]) -> None:
    report: dict = {}
    for name, mem, queries, routes in each_space(work, tasks):
        eng = mem._engine
        texts = [q.text for q in queries]
        asked = eng.summary_vectors(texts).clone()
        rows = rows_of(mem, queries, routes, asked, "bare keys")
        live = eng._space.live_chunks()
        keys, owner = eng._space.read_all("route_k")
        t0 = time.perf_counter()
        ids = [split_text(eng.tokenizer, m.text, eng.cfg.max_doc_tokens)[0].ids for m in live]
        check = templated_keys(eng.encoder, eng.tokenizer, ids[:8], bare=True)
        err = max(float((k - torch.from_numpy(keys[start:start + len(k)]).float()).abs().max())
                  for k, start in zip(check, np.cumsum([0] + [m.n_chunks for m in live[:7]])))
        print(f"{name}: bare keys through this path, max |diff| {err:.4f}", flush=True)
        for prefix in PREFIXES:
            label = "templated keys" if prefix == SUMMARY_PREFIX else f"keys after {prefix!r}"
            made = templated_keys(eng.encoder, eng.tokenizer, ids, prefix=prefix)
            kept = swap_keys(eng, live, keys, owner, made)
            print(f"{name}: {len(live)} memories, {kept} kept their keys, "
                  f"{time.perf_counter() - t0:.0f} s", flush=True)
            rows |= rows_of(mem, queries, routes, asked, label)
        report[name] = {"rows": rows, "memories": len(live), "kept_own_keys": kept}
        out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:] or ["wiki", "sessions", "facts"])
