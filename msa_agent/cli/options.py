"""Reusable ``Annotated`` option aliases shared by the ``msa`` commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

PathOpt = Annotated[
    Path | None,
    typer.Option("--path", "-p", envvar="MSA_PATH", show_default=False,
                 help="Memory space folder (default: $MSA_PATH, else "
                      "$XDG_DATA_HOME/msa-agent/default).")]
ModelOpt = Annotated[
    str | None,
    typer.Option("--model", "-m", help="HF model id or local path (default: the space's "
                                       "own model, or the embedded SmolLM2-135M-Instruct).")]
NamespaceOpt = Annotated[
    str | None, typer.Option("--namespace", "-n", help="Namespace (default: 'default').")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
WhereOpt = Annotated[
    list[str] | None,
    typer.Option("--where", "-w", help="Filter KEY=VALUE (KEY:=JSON for numbers/booleans); "
                                       "repeat a key for IN. Repeatable.")]
MetaOpt = Annotated[
    list[str] | None,
    typer.Option("--meta", help="Metadata KEY=VALUE (KEY:=JSON) on every memory. Repeatable.")]
KOpt = Annotated[int, typer.Option("-k", "--k", min=1, help="How many memories to return.")]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]
HopsOpt = Annotated[str, typer.Option(
    help="Retrieval rounds (memory interleave): a number, or 'auto'.")]
