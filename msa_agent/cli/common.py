"""Shared plumbing of the ``msa`` commands: paths, KEY=VALUE parsing, errors, output."""

from __future__ import annotations

import json
import os
import sys
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from typer.core import TyperGroup

try:  # recent typer vendors click
    from typer._click.exceptions import ClickException
except ImportError:  # pragma: no cover - older typer uses click itself
    from click import ClickException

if TYPE_CHECKING:
    from msa_agent.memory import Memory

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


def progress_bar() -> Progress:
    """A rich progress bar on stderr (description, bar, done/total, elapsed)."""
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=err_console())


@contextmanager
def open_memory(path: Path | None, model: str | None = None, namespace: str | None = None,
                *, create: bool = False, **overrides: Any) -> Iterator[Memory]:
    """Open the space (model load behind a spinner); warnings become one ``warning:`` line.

    Without ``create``, a missing space is an error rather than a new empty space.
    """
    from transformers.utils import logging as hf_logging

    from msa_agent.memory import Memory
    from msa_agent.store import SpaceNotFoundError

    if not create and not Memory.exists(space_path(path)):
        raise SpaceNotFoundError(f"no memory space at {space_path(path)}; create one with "
                                 "`msa init` or pass --path")
    hf_logging.disable_progress_bar()
    console = err_console()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with console.status("opening memory (loading the model)..."):
            mem = Memory.open(space_path(path), model=model, namespace=namespace or "default",
                              **overrides)
    for w in caught:
        if w.category.__name__ == "RoutingQualityWarning":
            console.print(f"[yellow]warning:[/] {w.message}", highlight=False, soft_wrap=True)
    with mem:
        yield mem


def record_dict(obj: Any) -> dict[str, Any]:
    """A pydantic result as JSON-ready data."""
    return obj.model_dump(mode="json")


def preview(text: str, width: int = 70) -> str:
    """One line of at most ``width`` characters."""
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 1] + "…"


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


def root(
    ctx: typer.Context,
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors."),
) -> None:
    """msa-agent: lifelong memory for LLM agents, built on Memory Sparse Attention."""
    ctx.meta["msa_debug"] = debug


def as_mapping(value: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """``{}`` -> None (no filter)."""
    return dict(value) if value else None
