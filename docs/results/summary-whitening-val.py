"""Probe (val only): whitened summary vectors. Cosine between raw LM states is dominated by a
few directions every text shares (anisotropy); whitening (BERT-whitening, Su et al. 2021)
subtracts the mean and rescales the principal directions to unit variance, keeping the top
``k``. Memories keep the vectors their space stores (the runtime's readout); questions are
read through the runtime's own path. The whitening is fitted on memory vectors, without
labels, either on the space itself ("self": transductive, as adapting to a space would be)
or on the other tasks' spaces ("other": a fixed map, as one shipped with the model would be).

    python docs/results/summary-whitening-val.py WORK OUT.json [TASK ...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from msa_agent.bench.summary_channel import cached_space, swapped_rows
from msa_agent.model.loader import load_model
from msa_agent.runtime.routing import unit

WEIGHTS = (0.09375, 0.1875, 0.375)
DIMS = (64, 128, 256)


def whitening(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean ``[h]``, map ``[h, k]``) that whitens ``x`` ``[N, h]`` onto its top ``k``."""
    mu = x.mean(0)
    u, s, _ = torch.linalg.svd(torch.cov((x - mu).T.double()))
    return mu, (u[:, :k] / s[:k].sqrt()).float()


def main(work: Path, out: Path, tasks: list[str]) -> None:
    lm = load_model(None, dtype="float32")
    stored: dict[str, torch.Tensor] = {}
    for name in tasks:  # every space's memory vectors first: "other" fits on the rest
        with cached_space(name, "val", -1, work, lm) as (mem, _, _):
            stored[name] = mem._engine.index._summary.view().clone()
    report: dict = {}
    for name in tasks:
        other = torch.cat([v for n, v in stored.items() if n != name])
        fits = {"raw": None} | {f"{src} k={k}": whitening(stored[name] if src == "self"
                                                          else other, k)
                                for src in ("self", "other") for k in DIMS}
        with cached_space(name, "val", -1, work, lm) as (mem, queries, _):
            eng = mem._engine
            texts = [q.text for q in queries]
            routes = [eng.query(t) for t in texts]
            asked = eng.summary_vectors(texts).clone()
            for fname, fit in fits.items():
                tf = (lambda v: v) if fit is None else (lambda v, f=fit: unit((v - f[0]) @ f[1]))
                report.setdefault(name, {}).update(swapped_rows(
                    mem, queries, routes, tf(stored[name]), tf(asked), WEIGHTS, fname))
            out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:] or ["wiki", "sessions", "facts"])
