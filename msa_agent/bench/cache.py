"""Where downloaded benchmark data is cached (never committed)."""

from __future__ import annotations

import os
from pathlib import Path


def data_dir() -> Path:
    """``$MSA_CACHE_DIR/data`` or ``~/.cache/msa-agent/data``."""
    root = os.environ.get("MSA_CACHE_DIR") or Path.home() / ".cache" / "msa-agent"
    return Path(root) / "data"
