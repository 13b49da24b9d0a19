"""Which router a runtime routes with: a checkpoint's own, a given file, the shipped one, or
the model's own Q/K (with a warning, since that ranks documents at about chance level)."""

from __future__ import annotations

import warnings

from msa_agent.config import MemoryConfig
from msa_agent.errors import InvalidInputError, RoutingQualityWarning
from msa_agent.model.loader import LoadedModel, model_fingerprint
from msa_agent.model.router import Router, shipped_router

OWN_QK = "own_qk"


def pick_router(lm: LoadedModel, cfg: MemoryConfig, layers: list[int]) -> Router | None:
    """The router ``cfg.routing`` asks for, on ``lm``'s device; None = the model's own Q/K."""
    if cfg.routing == OWN_QK:
        return None
    if lm.router is not None and cfg.router_path is None and lm.router.layer_ids == layers:
        return lm.router  # an MSA checkpoint's own learned router
    fp = model_fingerprint(lm)
    path = cfg.router_path or shipped_router(fp, layers, cfg.chunk_size)
    if path is not None:
        return Router.load(path, fp).to(lm.device)
    if cfg.routing == "learned":
        raise InvalidInputError(
            f"routing='learned' but no router exists for {lm.name} on layers {layers}: "
            "train one with `msa train-router` and pass router_path=..."
        )
    warnings.warn(
        f"no trained router for {lm.name}: routing uses the model's own Q/K, which ranks "
        "documents at about chance level (docs/recall.md). Train one with `msa train-router`.",
        RoutingQualityWarning,
        stacklevel=4,
    )
    return None
