"""Whether a model id can be loaded at all, answered in well under a second.

Light on purpose (no torch, no transformers): the CLI asks before it loads anything.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from huggingface_hub import constants, try_to_load_from_cache

from msa_agent.errors import ModelLoadError

DEFAULT_MODEL = "SmolLM2-135M-Instruct"  # the embedded model (see loader.py), not a Hub id
_PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY",
               "all_proxy")


def require_fetchable(model: str | None) -> None:
    """Refuse at once a Hub id that is not a local folder, not cached and not reachable
    (None or the embedded default always pass).

    Without this the Hub client retries for about a minute before failing offline. Behind a
    proxy the check is left to the client (a direct connection says nothing there).
    """
    if model is None or model == DEFAULT_MODEL or Path(model).expanduser().exists():
        return
    try:
        if isinstance(try_to_load_from_cache(model, "config.json"), str):
            return
    except ValueError:  # HFValidationError: neither a folder nor a possible Hub id
        raise ModelLoadError(f"model {model!r} is neither a local folder nor a Hugging Face "
                             "Hub id (org/name)") from None
    if constants.HF_HUB_OFFLINE or not _hub_reachable(constants.ENDPOINT):
        raise ModelLoadError(
            f"model {model!r} is neither a local folder nor in the Hugging Face cache "
            f"({constants.HF_HUB_CACHE}), and {constants.ENDPOINT} cannot be reached: fetch "
            f"it where there is network (`hf download {model}`, then copy the cache) or pass "
            "a local folder")


def _hub_reachable(endpoint: str, timeout: float = 1.0) -> bool:
    """Whether a TCP connection to the Hub opens (a proxy, if set, is trusted to reach it)."""
    if any(os.environ.get(v) for v in _PROXY_VARS):
        return True
    url = urlparse(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "", port), timeout=timeout):
            return True
    except OSError:
        return False
