"""``msa doctor``: versions, device, model and the health of the space, without loading it."""

from __future__ import annotations

import platform
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from msa_agent.cli.common import out_console, print_json, space_path
from msa_agent.cli.options import JsonOpt, PathOpt

if TYPE_CHECKING:
    from msa_agent.store import Space

PACKAGES = ("msa-agent", "torch", "transformers", "zarr", "numcodecs", "sqlalchemy", "numpy",
            "pydantic", "typer", "triton", "langchain-core", "langgraph")
READ_BATCH = 512


@dataclass
class Check:
    """One line of the report: a name, a value, and whether it is healthy."""

    name: str
    value: str
    ok: bool = True


def doctor(path: PathOpt = None, json_: JsonOpt = False) -> None:
    """Check the install (versions, device) and the space (model, counts, readable arrays)."""
    checks = versions() + [device()] + space_checks(space_path(path))
    if json_:
        print_json([vars(c) for c in checks])
    else:
        out_console().print(_table(checks))
    if not all(c.ok for c in checks):
        raise typer.Exit(1)


def versions() -> list[Check]:
    """Python and the installed versions of the packages that matter (absent = optional)."""
    out = [Check("python", platform.python_version())]
    for name in PACKAGES:
        try:
            out.append(Check(name, metadata.version(name)))
        except metadata.PackageNotFoundError:
            out.append(Check(name, "not installed"))
    return out


def device() -> Check:
    """The device ``device='auto'`` picks."""
    import torch

    if torch.cuda.is_available():
        return Check("device", f"cuda ({torch.cuda.get_device_name(0)})")
    return Check("device", "cpu (no CUDA device)")


def space_checks(path: Path) -> list[Check]:
    """Open the space (no model load), report its model and counts, read every array row."""
    from msa_agent.store import Space, SpaceLockedError, SpaceNotFoundError, StoreError

    try:
        space = Space.open(path)
    except SpaceNotFoundError:
        return [Check("space", f"no space at {path} (create one with `msa init`)", False)]
    except SpaceLockedError:
        return [Check("space", f"{path} is open for writing by another process; "
                               "close it to run the checks", False)]
    except StoreError as e:
        return [Check("space", f"{path}: {e}", False)]
    with space:
        return _describe(space) + _read_arrays(space)


def _describe(space: Space) -> list[Check]:
    cfg = space.get_setting("config") or {}
    s = space.stats()
    return [Check("space", str(space.path)),
            Check("model", str(cfg.get("model") or space.fingerprint.get("model"))),
            Check("router", str(space.get_setting("router_id"))),
            Check("memories", f"{s['memories']} in {len(s['namespaces'])} namespace(s)"),
            Check("bytes on disk", f"{s['bytes_on_disk']:,}")]


def _read_arrays(space: Space) -> list[Check]:
    import numpy as np

    live = space.live_chunks()
    out = []
    for name in space.arrays:
        bad = 0
        try:
            for i in range(0, len(live), READ_BATCH):
                rows = space.read(name, live[i:i + READ_BATCH])
                bad += sum(int(not np.isfinite(r).all()) for r in rows)
        except Exception as e:  # noqa: BLE001 - report any read failure as unhealthy
            out.append(Check(f"array {name}", f"unreadable: {e}", False))
            continue
        out.append(Check(f"array {name}", "ok" if not bad else f"{bad} memories with NaN/inf",
                         not bad))
    return out


def _table(checks: list[Check]) -> Table:
    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    table.add_column()
    for c in checks:
        table.add_row(c.name, c.value, "[green]ok[/]" if c.ok else "[red]problem[/]")
    return table
