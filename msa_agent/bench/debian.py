"""Real text from Debian packages: the Jargon File and the King James Bible.

The packages are fetched once with ``apt-get download`` (no root needed) into
``$MSA_CACHE_DIR/data/debian`` (default ``~/.cache/msa-agent/data/debian``), unpacked with
``dpkg-deb -x`` and parsed there; nothing is committed. Versions are pinned so that the task
built from them is the same on every machine (Debian bookworm):

- ``jargon-text`` 4.4.7-4.1: the Jargon File 4.4.7 as plain text, ~2,300 entries
  (``:term: ...`` followed by its paragraphs).
- ``bible-kjv-text`` 4.38 with ``bible-kjv`` 4.38: 31,102 addressed verses, stored compressed;
  its ``bible`` program dumps them once to ``kjv.txt`` (one ``Ge1:1 text`` line per verse).
"""

from __future__ import annotations

import gzip
import re
import shutil
import subprocess
from functools import lru_cache
from pathlib import Path

from msa_agent.bench.cache import data_dir

PINNED = {"jargon-text": "4.4.7-4.1", "bible-kjv-text": "4.38", "bible-kjv": "4.38"}
_ENTRY = re.compile(r"^   :(?P<term>[^:\n]+):(?P<rest>.*)$")
_BRACES = re.compile(r"\{([^{}]*)\}")
_VERSE = re.compile(r"^(?P<ref>\d?[A-Za-z]+\d+:\d+) (?P<text>.+)$")


def _root() -> Path:
    return data_dir() / "debian"


def unpacked(package: str) -> Path:
    """The folder that ``package`` (pinned version) is unpacked into, fetching it once."""
    version = PINNED[package]
    out = _root() / f"{package}_{version}"
    if out.exists():
        return out
    for tool in ("apt-get", "dpkg-deb"):
        if shutil.which(tool) is None:
            raise RuntimeError(
                f"the {package} text needs Debian's {tool} (or a copy of "
                f"{package}_{version}*.deb unpacked with dpkg-deb -x into {out})")
    debs = _root() / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    deb = next(debs.glob(f"{package}_{version}_*.deb"), None)
    if deb is None:
        subprocess.run(["apt-get", "download", f"{package}={version}"], cwd=debs, check=True,
                       capture_output=True)
        deb = next(debs.glob(f"{package}_{version}_*.deb"))
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp)], check=True)
    tmp.replace(out)
    return out


def cached() -> bool:
    """Whether both texts are already in the cache (tests skip otherwise: no network)."""
    return (_root() / "kjv.txt").exists() and (_root() / f"jargon-text_{PINNED['jargon-text']}"
                                               ).exists()


def parse_jargon(text: str) -> list[tuple[str, str]]:
    """``(term, definition)`` per glossary entry of the Jargon File's plain text.

    An entry starts at a line ``   :term: pronunciation, part of speech`` and runs to the next
    one; its paragraphs are joined into one line and the ``{cross-reference}`` braces are
    dropped. Entries of under 200 characters (pure cross-references) are dropped.
    """
    out: list[tuple[str, str]] = []
    term, body = None, []
    for line in text.splitlines() + ["   :end:"]:
        m = _ENTRY.match(line)
        if m:
            flat = _BRACES.sub(r"\1", " ".join(" ".join(body).split()))
            if term is not None and len(flat) >= 200:
                out.append((term, flat))
            term, body = m["term"].strip(), []
        elif term is not None:
            body.append(line)
    return out


@lru_cache(maxsize=1)
def jargon() -> tuple[tuple[str, str], ...]:
    """The Jargon File's entries, in file order (see :func:`parse_jargon`)."""
    path = unpacked("jargon-text") / "usr/share/doc/jargon-text/jargon.txt.gz"
    text = gzip.decompress(path.read_bytes()).decode("utf-8")
    glossary = text[text.index("   :0:"):]  # the front matter has no entries
    return tuple(parse_jargon(glossary))


def parse_kjv(text: str) -> list[tuple[str, str]]:
    """``(reference, verse)`` per line of ``bible -f`` output (``Ge1:1 In the beginning``)."""
    return [(m["ref"], m["text"].strip()) for line in text.splitlines()
            if (m := _VERSE.match(line.strip()))]


@lru_cache(maxsize=1)
def kjv() -> tuple[tuple[str, str], ...]:
    """All 31,102 KJV verses in canonical order."""
    dump = _root() / "kjv.txt"
    if not dump.exists():
        lib = unpacked("bible-kjv-text") / "usr/lib"
        program = unpacked("bible-kjv") / "usr/bin/bible"
        run = subprocess.run([str(program), "-f", "-p", str(lib), "gen1:1-rev22:21"],
                             check=True, capture_output=True, text=True)
        tmp = dump.with_suffix(".tmp")
        tmp.write_text(run.stdout)
        tmp.replace(dump)
    return tuple(parse_kjv(dump.read_text()))
