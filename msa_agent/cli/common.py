"""Shared plumbing of the ``msa`` commands: paths, KEY=VALUE parsing, errors, output."""

from __future__ import annotations

import json
import os
import shutil
import sys
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from typer.core import TyperGroup

from msa_agent.errors import InvalidInputError, MsaError

try:  # recent typer vendors click
    from typer._click.exceptions import ClickException
except ImportError:  # pragma: no cover - older typer uses click itself
    from click import ClickException

if TYPE_CHECKING:
    from msa_agent.memory import Memory
    from msa_agent.serve.client import MemoryClient

USAGE_EXIT, RUNTIME_EXIT = 2, 1


def default_path() -> Path:
    """``$XDG_DATA_HOME/msa-agent/default`` (``~/.local/share/msa-agent/default``)."""
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "msa-agent" / "default"


def space_path(path: Path | None) -> Path:
    """The space folder: ``--path``/``MSA_PATH`` (Typer reads the env var) or the default."""
    return (path or default_path()).expanduser()


def err_console() -> Console:
    """Console on stderr: warnings, progress and status never mix into ``--json`` output."""
    return Console(stderr=True)


def out_console() -> Console:
    return Console()


def print_json(data: Any) -> None:
    """Machine-readable output on stdout."""
    typer.echo(json.dumps(data, indent=2, default=str, ensure_ascii=False))


def parse_pairs(pairs: list[str] | None, what: str) -> dict[str, Any]:
    """``["a=b", "n:=3", "a=c"]`` -> ``{"a": ["b", "c"], "n": 3}`` (a repeated key means IN)."""
    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, value = _parse_pair(pair, what)
        if key in out:
            prev = out[key] if isinstance(out[key], list) else [out[key]]
            value = [*prev, value]
        out[key] = value
    return out


def _parse_pair(pair: str, what: str) -> tuple[str, Any]:
    key, sep, value = pair.partition("=")
    if not sep or not key:
        raise typer.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint=what)
    if key.endswith(":"):
        try:
            return key[:-1], json.loads(value)
        except json.JSONDecodeError:
            raise typer.BadParameter(f"{key}{value}: not JSON", param_hint=what) from None
    return key, value


def progress_bar(*extra: ProgressColumn) -> Progress:
    """A rich progress bar on stderr (description, bar, done/total, ``extra``, elapsed)."""
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    *extra, TimeElapsedColumn(), console=err_console())


class CliError(MsaError):
    """A command refused before doing anything (exit code 1); the message says why."""


class NoSpaceError(CliError):
    """No memory space at the path a read command was given.

    The CLI's own error, so that refusing a mistyped ``--path`` imports neither the store nor
    the model (``msa_agent.store.SpaceNotFoundError`` is what the SDK raises).
    """


def require_space(path: Path | None) -> Path:
    """The space folder of a command that reads one; a missing space is refused at once."""
    target = space_path(path)
    if target.is_dir():
        from msa_agent.store import Space

        if Space.is_space(target):
            return target
    raise NoSpaceError(f"no memory space at {target}; create one with `msa init` or pass --path")


def server_client(namespace: str | None = None) -> MemoryClient | None:
    """A client of the running ``msa serve`` at ``$MSA_SERVER_URL`` (key ``$MSA_API_KEY``),
    or None when none is configured. The read commands, ``forget`` and ``compact`` use it
    to answer in one HTTP request, with no model load (the server's space is used; ``--path``
    is not)."""
    if not os.environ.get("MSA_SERVER_URL", "").strip():
        return None
    from msa_agent.serve.client import MemoryClient

    return MemoryClient.from_env(namespace)


@contextmanager
def read_memory(path: Path | None, namespace: str | None = None, *, write: bool = False
                ) -> Iterator[Memory | MemoryClient]:
    """What a command works on: the running server (:func:`server_client`) when one is
    configured (the space's one writer), else the space opened here, read-only unless
    ``write``. Both have ``Memory``'s methods."""
    remote = server_client(namespace)
    if remote is not None:
        with remote:
            yield remote
        return
    with open_memory(path, namespace=namespace, read_only=not write) as mem:
        yield mem


def require_text(value: str, what: str) -> str:
    """A query or question that is not blank (checked before the model loads)."""
    if not value.strip():
        raise InvalidInputError(f"{what} is empty")
    return value


@contextmanager
def open_memory(path: Path | None, model: str | None = None, namespace: str | None = None,
                *, create: bool = False, **overrides: Any) -> Iterator[Memory]:
    """Open the space (model load behind a spinner); warnings become one ``warning:`` line.

    Without ``create``, a missing space is an error rather than a new empty space. With it, a
    space this call creates is removed again if the command fails while it is still empty.
    """
    from msa_agent.model.hub import require_fetchable

    target = space_path(path) if create else require_space(path)
    require_fetchable(model)  # an uncached model offline fails now, not after a minute
    existed = target.exists()
    new = create and (not existed or (target.is_dir() and not any(target.iterdir())))
    try:
        mem = _load(target, model, namespace, **overrides)
    except BaseException:
        if create and not existed:
            _drop_failed_open(target)
        raise
    with mem:
        try:
            yield mem
        except BaseException:
            if new and _is_empty(mem):
                mem.close()
                _remove_new_space(target, existed)
            raise


def _is_empty(mem: Memory) -> bool:
    try:
        return mem.stats().memories == 0
    except Exception:  # noqa: BLE001 - a space we cannot read back is not removed
        return False


def _drop_failed_open(target: Path) -> None:
    """After an open that failed, remove a space left at ``target`` (which was not there
    before) if it holds no memory and no other process has it open; else leave it."""
    from msa_agent.store import Space

    if not target.exists():
        return
    try:
        with Space.open(target) as space:
            empty = space.stats()["memories"] == 0
    except Exception:  # noqa: BLE001 - not a space, or in use by another process: leave it
        return
    if empty:
        shutil.rmtree(target, ignore_errors=True)


def _remove_new_space(target: Path, existed: bool) -> None:
    """Remove what this command created: the folder, or only its contents if it was there."""
    if not existed:
        shutil.rmtree(target, ignore_errors=True)
    elif target.is_dir():
        for child in target.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)


def _load(target: Path, model: str | None, namespace: str | None, **overrides: Any) -> Memory:
    from transformers.utils import logging as hf_logging

    from msa_agent.memory import Memory

    hf_logging.disable_progress_bar()
    console = err_console()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with console.status("opening memory (loading the model)..."):
            mem = Memory.open(target, model=model, namespace=namespace or "default",
                              **overrides)
    for w in caught:
        if w.category.__name__ == "RoutingQualityWarning":
            console.print(f"[yellow]warning:[/] {w.message}", highlight=False, soft_wrap=True)
    return mem


def record_dict(obj: Any) -> dict[str, Any]:
    """A pydantic result as JSON-ready data."""
    return obj.model_dump(mode="json")


def preview(text: str, width: int = 70) -> str:
    """One line of at most ``width`` characters."""
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 1] + "…"


def source_of(metadata: Mapping[str, Any], width: int = 24) -> str:
    """Where a memory came from, for a table: the file name of its ``source`` metadata (what
    ``msa ingest`` stores: the path read, or ``stdin``), its end kept if longer than ``width``.
    The full path is in ``msa show`` and ``--json``."""
    name = PurePath(str(metadata.get("source") or "")).name
    return name if len(name) <= width else "…" + name[-(width - 1):]


class MsaGroup(TyperGroup):
    """Root group: SDK errors become one readable line and exit code (1, or 2 for bad input).

    The traceback is shown only with ``msa --debug``.
    """

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (ClickException, typer.Exit, typer.Abort):
            raise
        except Exception as e:  # noqa: BLE001 - the CLI's one error boundary
            if ctx.meta.get("msa_debug"):
                raise
            _report(e)
            raise typer.Exit(USAGE_EXIT if _is_usage(e) else RUNTIME_EXIT) from None


def _is_usage(e: Exception) -> bool:
    from msa_agent.errors import InvalidInputError

    return isinstance(e, InvalidInputError)


def _report(e: Exception) -> None:
    message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    print(f"error: {message}", file=sys.stderr)


def _print_version(value: bool) -> None:
    if value:
        from msa_agent import __version__

        typer.echo(f"msa-agent {__version__}")
        raise typer.Exit()


def root(
    ctx: typer.Context,
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors."),
    version: bool = typer.Option(False, "--version", "-V", is_eager=True,
                                 callback=_print_version,
                                 help="Print the version and exit."),
) -> None:
    """msa-agent: lifelong memory for LLM agents, built on Memory Sparse Attention."""
    ctx.meta["msa_debug"] = debug


def as_mapping(value: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """``{}`` -> None (no filter)."""
    return dict(value) if value else None
