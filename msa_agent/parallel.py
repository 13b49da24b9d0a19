"""``ParallelMemory``: recall over a space whose routing keys are sharded across ranks (Memory
Parallel, ``msa_agent.runtime.parallel``; docs/scale.md).

Run one process per rank with torchrun; every rank opens the same space and makes the same
calls in the same order (SPMD); every rank gets the same results::

    torchrun --nproc-per-node 2 -m msa_agent.parallel ./mem "Where is Ada?" --k 5 --routing msa

Results equal a single process's ``Memory.recall`` (ids, order, scores, evidence) for
``routing`` ``"msa"``, ``"hybrid"`` and ``"lexical"``, with any ``namespace`` / ``where`` /
``since`` / ``until``, ``hops`` and paging. The space is opened read-only, as it stood when
opened; writes raise ``SpaceReadOnlyError``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from msa_agent.config import MemoryConfig
from msa_agent.errors import InvalidInputError
from msa_agent.memory import Memory
from msa_agent.model.loader import LoadedModel
from msa_agent.runtime.parallel import ShardedEngine, init_from_env
from msa_agent.runtime.setup import resolve_config, resolve_model

__all__ = ["ParallelMemory"]


class ParallelMemory(Memory):
    """A read-only :class:`Memory` holding one rank's shard of the routing keys; ``recall``
    and ``answer`` (not ``read="pooled"``) are collectives: call them on every rank alike."""

    @classmethod
    def open(cls, path: str | Path, model: str | LoadedModel | tuple[Any, Any] | None = None,
             namespace: str = "default", *, config: MemoryConfig | None = None,
             read_only: bool = True, **overrides: Any) -> ParallelMemory:
        """Join torchrun's process group (unless joined) and open the existing space at
        ``path`` read-only, this rank's shard resident; arguments as :meth:`Memory.open`."""
        if read_only is not True:
            raise InvalidInputError("ParallelMemory opens a space read-only only")
        cfg, explicit = resolve_config(config, namespace, overrides)
        lm, cfg = resolve_model(Path(path), model, cfg, explicit)
        init_from_env(lm.device)
        return cls(ShardedEngine.open(path, lm, cfg, read_only=True), cfg)


def main(argv: list[str] | None = None) -> None:
    """``torchrun ... -m msa_agent.parallel SPACE QUERY``: rank 0 prints the hits as JSON."""
    ap = argparse.ArgumentParser(prog="msa_agent.parallel", description=__doc__.split("\n")[0])
    ap.add_argument("path")
    ap.add_argument("query")
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--routing", default="msa", choices=["msa", "hybrid", "lexical"])
    ap.add_argument("--namespace", default=None)
    args = ap.parse_args(argv)
    import torch.distributed as dist

    with ParallelMemory.open(args.path) as mem:
        hits = mem.recall(args.query, k=args.k, namespace=args.namespace, routing=args.routing)
        if dist.get_rank() == 0:
            print(json.dumps([{"id": h.id, "score": h.score, "text": h.text} for h in hits],
                             indent=1))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
