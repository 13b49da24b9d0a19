"""``msa export`` and ``msa import``: move a space between machines as a portable bundle."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from msa_agent.cli.common import open_memory, out_console, print_json, progress_bar, space_path
from msa_agent.cli.options import JsonOpt, ModelOpt, PathOpt
from msa_agent.errors import InvalidInputError


def export(
    dest: Annotated[Path, typer.Argument(
        help="New bundle path: a folder, or a .zip file.", show_default=False)],
    path: PathOpt = None,
    namespace: Annotated[list[str] | None, typer.Option(
        "--namespace", "-n", help="Only these namespaces (default: all). Repeatable.")] = None,
    json_: JsonOpt = False,
) -> None:
    """Write text, metadata, routing keys and KV of the space to a versioned bundle."""
    if dest.exists():  # refused before the model loads
        raise InvalidInputError(f"{dest} already exists; choose a new bundle path")
    with open_memory(path, read_only=True) as mem, progress_bar() as bar:
        total = sum(mem.stats().namespaces.get(ns, 0) for ns in namespace) if namespace \
            else mem.stats().memories
        task = bar.add_task("exporting", total=total)
        report = mem.export(dest, namespace or None, lambda n: bar.advance(task, n),
                            all_namespaces=not namespace)
    if json_:
        print_json(vars(report))
    else:
        out_console().print(f"exported {report.memories} memories to {report.path} "
                            f"({report.bytes:,} bytes)")


def import_(
    src: Annotated[Path, typer.Argument(help="Bundle folder or .zip.", show_default=False)],
    path: PathOpt = None,
    model: ModelOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Add a bundle's memories to the space (ids kept); a bundle of another model is refused.

    A new space is created with the bundle's model and layout unless --model says otherwise;
    the bundle is checked first, and a space made for it is removed if the import fails.
    """
    if not src.exists():  # refused before the SDK (and torch) is imported
        raise InvalidInputError(f"no bundle at {src}")
    from msa_agent.memory import Memory

    manifest = Memory.read_bundle(src)
    fresh = not Memory.exists(space_path(path))
    layout = manifest.layout() if fresh else {}
    with open_memory(path, model=model or (manifest.model if fresh else None), create=True,
                     **layout) as mem, progress_bar() as bar:
        task = bar.add_task("importing", total=manifest.memories)
        report = mem.import_(src, lambda n: bar.advance(task, n), keep_namespaces=True)
    if json_:
        print_json(vars(report))
    else:
        note = " (routing keys re-encoded for this space's router)" if report.reencoded else ""
        out_console().print(f"imported {report.imported} memories, skipped {report.skipped} "
                            f"already present{note}")
