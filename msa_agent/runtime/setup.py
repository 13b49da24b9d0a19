"""What ``Memory.open`` loads: the model, and the config an existing space brings with it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from msa_agent.config import ROUTING_SETTINGS, MemoryConfig, SpaceLayout
from msa_agent.errors import InvalidInputError
from msa_agent.model.loader import DTYPES, LoadedModel, load_model, wrap_model
from msa_agent.store import FingerprintMismatchError, RemoteLocation, Space


def resolve_config(config: MemoryConfig | None, namespace: str, overrides: dict[str, Any]
                   ) -> tuple[MemoryConfig, set[str]]:
    """``config`` with ``overrides`` and ``namespace`` applied, and the names of the fields
    the caller set. Bad values raise ``InvalidInputError`` naming each field at fault (a
    pydantic ``ValidationError`` is not ours to raise)."""
    base = config or MemoryConfig()
    explicit = set(base.model_fields_set) | set(overrides)
    if namespace != "default":
        explicit.add("namespace")
    fields = {**base.model_dump(), **overrides, "namespace": namespace}
    try:
        return MemoryConfig.model_validate(fields), explicit
    except ValidationError as exc:
        raise InvalidInputError(f"invalid memory settings: {settings_faults(exc)}") from None


def settings_faults(exc: ValidationError) -> str:
    """One line naming each field at fault, what was wrong and the value given, e.g.
    ``dtype: Input should be 'float32' or 'bfloat16' (got 'int8')`` (pydantic's own text
    puts the field on a line of its own, which one-line error output loses)."""
    faults = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "settings"
        given = f" (got {err['input']!r})" if err["type"] != "missing" else ""
        faults.append(f"{field}: {err['msg']}{given}")
    return "; ".join(faults)


def space_location(path: str | Path, cfg: MemoryConfig) -> Path | RemoteLocation:
    """Where the space is: the folder ``path``, or, with ``cfg.meta_url``, the space named
    ``path`` in that PostgreSQL database with its arrays at ``cfg.arrays_url``."""
    if cfg.meta_url is None or cfg.arrays_url is None:
        return Path(path)
    return RemoteLocation(cfg.meta_url, cfg.arrays_url, name=str(path),
                          storage_options=cfg.storage_options)


def resolve_model(path: Path | RemoteLocation, model: Any, cfg: MemoryConfig,
                  explicit: set[str]) -> tuple[LoadedModel, MemoryConfig]:
    """Load the model; an existing space supplies its own model, compute dtype and layout
    unless overridden."""
    stored: dict[str, Any] = {}
    if Space.is_space(path):  # read without the writer's lock: the writer may be elsewhere
        with Space.open(path, read_only=True) as existing:
            stored = existing.get_setting("config") or {}
            cfg = _space_dtype(path, existing.fingerprint.get("dtype"), cfg, explicit)
    if "router_path" in explicit:  # naming a router overrides the space's stored routing
        explicit = explicit | {"routing"}
    # An existing space keeps its layout: a field its stored config lacks predates the field
    # and takes SpaceLayout's default, what such spaces used (kv_frame "bare").
    layout = SpaceLayout.from_json(stored).to_json() if stored else {}
    keep = {**layout, **{k: stored[k] for k in ROUTING_SETTINGS if k in stored}}
    keep = {k: v for k, v in keep.items() if k not in explicit}
    cfg = cfg.model_copy(update=keep)
    if isinstance(model, LoadedModel):
        return model, _held_dtype(model, cfg, explicit)
    if isinstance(model, Sequence) and not isinstance(model, str):
        lm = wrap_model(model[0], model[1], device=cfg.device)
        return lm, _held_dtype(lm, cfg, explicit)
    name = model or cfg.model or stored.get("model")
    lm = load_model(name, dtype=cfg.dtype, device=cfg.device)
    loaded = lm.dtype_name  # what "auto" became
    cfg = cfg.model_copy(update={"model": name, **({"dtype": loaded} if loaded in DTYPES else {})})
    if lm.msa is not None:  # an MSA checkpoint brings its own P, top-k, router layers, and
        # the rule its router was trained with: the paper's max over query tokens
        own = {"chunk_size": lm.msa.chunk_size, "top_k": lm.msa.top_k, "answer_k": lm.msa.top_k,
               "msa_layers": lm.msa.layers, "route_top_tokens": 1,
               "kv_positions": "parallel"}  # and the paper's K/V layout
        if not stored:  # a new space; an existing one keeps its own frame
            own["kv_frame"] = "bare"
        cfg = cfg.model_copy(update={k: v for k, v in own.items() if k not in explicit})
    return lm, cfg


def _space_dtype(path: Path | RemoteLocation, own: Any, cfg: MemoryConfig, explicit: set[str]
                 ) -> MemoryConfig:
    """An existing space is computed in one dtype (``own``, from its fingerprint): unset or
    ``auto`` takes it; another one asked for is refused before any model is loaded."""
    if own not in DTYPES:
        return cfg
    if "dtype" in explicit and cfg.dtype not in ("auto", own):
        raise FingerprintMismatchError(
            f"space {path} was computed in {own}, not {cfg.dtype}: open it with "
            f"dtype={own!r} or 'auto', or leave dtype unset", ["dtype"])
    return cfg.model_copy(update={"dtype": own})


def _held_dtype(lm: LoadedModel, cfg: MemoryConfig, explicit: set[str]) -> MemoryConfig:
    """A model the caller holds keeps its own dtype (it is never cast behind their back): the
    config records that dtype, and an explicit ``dtype`` that differs is refused."""
    held = lm.dtype_name
    if "dtype" in explicit and cfg.dtype not in ("auto", held):
        raise InvalidInputError(
            f"the model passed in is {held} but dtype={cfg.dtype!r} was asked; cast the model "
            f"yourself (model.to(torch.{cfg.dtype})) or leave dtype unset")
    return cfg.model_copy(update={"dtype": held}) if held in DTYPES else cfg
