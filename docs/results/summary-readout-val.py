"""Probe (val only): where the summary vector is read. The runtime reads the attention input
of the last layer (29 of SmolLM2-135M) at the template's last token. PromptEOL reads the
model's last hidden state: the output of the last layer after the final norm, one layer
further, the state the next word ("in one word:") is predicted from. This probe reads both
(and means of several) from one full forward per text, for the memories and the questions
alike, swaps them into each val space's routing index and fuses through the runtime's own
path, as `summary-query-template-val.py` does.

    python docs/results/summary-readout-val.py WORK OUT.json [TASK ...]

WORK: the bench's spaces (``python -m msa_agent.bench.summary_channel ... --layer -1 --work
WORK``). The row "in29" is the runtime's readout: it reproduced the committed val rows.
(Run once, on wiki: ``summary-readout-val.json``; its fusion loop has since moved into the
bench's ``swapped_rows``, the same steps.)
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

from msa_agent.bench.summary_channel import each_space, swapped_rows
from msa_agent.model.encoder import length_batches
from msa_agent.model.text import query_ids, split_text, summary_ids
from msa_agent.runtime.routing import unit

WEIGHTS = (0.09375, 0.1875, 0.375)
IN_LAYERS = (25, 26, 27, 28, 29)  # attention inputs kept; "final" is the normed last output


@torch.inference_mode()
def readouts(model, texts: list[list[int]], budget: int = 4096) -> dict[str, torch.Tensor]:  # noqa: ANN001
    """Unit states at each text's last token: ``in{L}`` (layer L's attention input) and
    ``final`` (the last hidden state after the final norm), each ``[N, hidden]``."""
    inner = model.model
    keep = {f"in{i}": [] for i in IN_LAYERS} | {"final": []}
    order: list[int] = []
    for batch in length_batches([len(t) for t in texts], budget):
        t = max(len(texts[i]) for i in batch)
        ids = torch.zeros(len(batch), t, dtype=torch.long)
        mask = torch.zeros(len(batch), t, dtype=torch.long)
        for r, i in enumerate(batch):
            ids[r, :len(texts[i])], mask[r, :len(texts[i])] = torch.tensor(texts[i]), 1
        hs = inner(input_ids=ids, attention_mask=mask, output_hidden_states=True,
                   use_cache=False).hidden_states  # [n_layers + 1] x [B, T, hidden]
        last = torch.tensor([len(texts[i]) - 1 for i in batch])
        rows = torch.arange(len(batch))
        for i in IN_LAYERS:
            keep[f"in{i}"].append(inner.layers[i].input_layernorm(hs[i][rows, last]))
        keep["final"].append(hs[-1][rows, last])
        order += batch
    back = torch.empty(len(order), dtype=torch.long)
    back[torch.tensor(order)] = torch.arange(len(order))
    return {k: unit(torch.cat(v).float())[back] for k, v in keep.items()}


def variants(r: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The readouts compared: one state, or the unit mean of several (their cosines' mean,
    up to a scale the z-scores remove)."""
    mean = lambda *ks: unit(torch.stack([r[k] for k in ks]).mean(0))  # noqa: E731
    return {"in29": r["in29"], "final": r["final"], "in28": r["in28"],
            "in29+final": mean("in29", "final"),
            "in27-29+final": mean("in27", "in28", "in29", "final"),
            "in25-29": mean(*[f"in{i}" for i in IN_LAYERS])}


def memory_ids(eng) -> list[list[int]]:  # noqa: ANN001
    """Each indexed memory's template ids, in index order (a part's text retokenised)."""
    out = []
    for i in eng.index.doc_ids:
        text = eng.get(i).text
        ids = split_text(eng.tokenizer, text, eng.cfg.max_doc_tokens)[0].ids
        out.append(summary_ids(eng.tokenizer, ids))
    return out


def main(work: Path, out: Path, tasks: list[str]) -> None:
    report: dict = {}
    for name, mem, queries, routes in each_space(work, tasks):
        eng = mem._engine
        model = eng.encoder.lm.model
        t0 = time.perf_counter()
        docs = variants(readouts(model, memory_ids(eng)))
        asked = variants(readouts(model, [
            summary_ids(eng.tokenizer, query_ids(eng.tokenizer, q.text, eng.cfg.max_doc_tokens))
            for q in queries]))
        print(f"{name}: {len(eng.index.doc_ids)} memories read in "
              f"{time.perf_counter() - t0:.0f} s", flush=True)
        for vname, dvec in docs.items():
            report.setdefault(name, {}).update(swapped_rows(
                mem, queries, routes, dvec, asked[vname], WEIGHTS, vname))
        out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:] or ["wiki", "sessions", "facts"])
