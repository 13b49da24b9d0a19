"""Val (and, for the chosen map, test): the summary channel through a trained projection.

The maps come from ``summary-projection-h200.py`` (one H200; trained on the distillation
corpus's pairs only). Here each map is applied to the vectors the val spaces store (the
runtime's readout) and to the questions' (the runtime's own path), and the runtime fuses
them, MSA alone and hybrid (``swapped_rows``). The row "identity" is the runtime today.

    python docs/results/summary-projection-val.py WORK MAPS.pt[,MAPS2.pt] OUT.json SPLIT TASK...

WORK: the bench's spaces (``python -m msa_agent.bench.summary_channel ... --layer -1 --work
WORK``). SPLIT ``test`` reads the test questions against the val space of ``wiki`` (one
bank for both splits) and the test spaces of the others; ``ONLY=name,...`` limits the maps.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

from msa_agent import Memory
from msa_agent.bench.summary_channel import cached_space, space_path, split_queries, swapped_rows
from msa_agent.bench.tasks import build
from msa_agent.model.loader import load_model

WEIGHTS = (0.09375, 0.1875, 0.375)


def maps_of(files: str) -> dict[str, dict[str, torch.Tensor] | None]:
    out: dict[str, dict[str, torch.Tensor] | None] = {"identity": None}
    for f in files.split(","):
        out.update(torch.load(f))
    only = os.environ.get("ONLY")
    return {k: v for k, v in out.items() if not only or k in only.split(",")}


def opened(name: str, split: str, work: Path, lm):  # noqa: ANN001, ANN201
    if split == "val" or name != "wiki":
        return cached_space(name, split, -1, work, lm)
    # the wiki bank is one for both splits: test questions against the val space
    from contextlib import contextmanager

    @contextmanager
    def space():  # noqa: ANN202
        with Memory.open(space_path(work, name, "val", -1), lm) as mem:
            yield mem, split_queries(build(name, "full"), split), None
    return space()


def main(work: Path, files: str, out: Path, split: str, tasks: list[str]) -> None:
    lm = load_model(None, dtype="float32")
    maps = maps_of(files)
    report: dict = {}
    for name in tasks:
        with opened(name, split, work, lm) as (mem, queries, _):
            eng = mem._engine
            docs = eng.index._summary.view().clone()
            texts = [q.text for q in queries]
            routes = [eng.query(t) for t in texts]
            asked = eng.summary_vectors(texts).clone()
            for mname, m in maps.items():
                print(name, split, flush=True)
                d, a = (docs, asked) if m is None else (docs @ m["doc"].float(),
                                                         asked @ m["query"].float())
                report.setdefault(name, {}).update(
                    swapped_rows(mem, queries, routes, d, a, WEIGHTS, mname))
                out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), sys.argv[4], sys.argv[5:])
