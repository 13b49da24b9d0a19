"""``msa train-router``: train the router projections of a frozen backbone, save them.

    msa train-router --pairs labelled.jsonl --texts notes.txt --memory ./mem --out r.safetensors

Pairs come from labelled JSONL (``{"query", "positive", "negatives"?}``) and, self-supervised,
from inverse cloze over text files (blank-line-separated passages, or JSONL with "text") and
over the texts already stored in a memory space, plus entity-keyed questions ("Tell me about
<name>.") for names found in them. ``--init shipped`` continues from the model's shipped
router instead of random weights: adapting it to your own memories. ``--reencode`` then
switches a space to the new router (its routing keys are recomputed; K/V stay).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

if TYPE_CHECKING:
    from msa_agent.model.router import Router
    from msa_agent.train import Pair, TrainResult


def _passages(path: Path) -> list[str]:
    """Passages of a text file (split on blank lines) or a JSONL file (its "text" fields)."""
    raw = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        rows = [json.loads(line) for line in raw.splitlines() if line.strip()]
        return [r["text"] for r in rows if isinstance(r, dict) and isinstance(r.get("text"), str)]
    return [p.strip() for p in raw.split("\n\n") if p.strip()]


def _collect(pairs: list[Path], texts: list[Path], memory: Path | None, seed: int,
             entities: int) -> list[Pair]:
    from msa_agent.train import entity_pairs, inverse_cloze, memory_pairs, read_pairs_jsonl

    out = [p for f in pairs for p in read_pairs_jsonl(f)]
    passages = [p for f in texts for p in _passages(f)]
    groups = [f"text-{i}" for i in range(len(passages))]
    out += inverse_cloze(passages, seed=seed, groups=groups)
    if entities:
        out += entity_pairs(passages, per_passage=entities, seed=seed, groups=groups)
    if memory is not None:
        out += memory_pairs(memory, seed=seed, entities=entities)
    return out


def _init_router(init: str | None, lm: Any, layers: list[int] | None) -> Router | None:
    """The router to continue from: a file, or "shipped" (the package's for this model)."""
    from msa_agent.model.loader import model_fingerprint
    from msa_agent.model.router import Router, shipped_router
    from msa_agent.model.shape import ModelShape, resolve_msa_layers

    if init is None:
        return None
    fp = model_fingerprint(lm)
    path: Path | None = Path(init)
    if init == "shipped":
        path = shipped_router(fp, resolve_msa_layers(ModelShape.of(lm.model), layers))
        if path is None:
            raise typer.BadParameter(f"no router is shipped for {lm.name}", param_hint="--init")
    return Router.load(path, fp)


def _split(pairs: list[Pair], held_out: float, seed: int) -> tuple[list[Pair], list[Pair]]:
    """Shuffle (seeded) and hold out a fraction for evaluation (none under 20 pairs)."""
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    n = int(round(held_out * len(pairs))) if len(pairs) >= 20 else 0
    return [pairs[i] for i in order[n:]], [pairs[i] for i in order[:n]]


def train_router(
    out: Annotated[Path, typer.Option(help="Router file to write (.safetensors).")],
    pairs: Annotated[list[Path], typer.Option("--pairs", help="Labelled JSONL.")] = [],  # noqa: B006
    texts: Annotated[list[Path], typer.Option("--texts", help="Texts for inverse cloze.")] = [],  # noqa: B006
    memory: Annotated[Path | None, typer.Option(help="Memory space: inverse cloze on it.")] = None,
    model: Annotated[str | None, typer.Option(help="HF id or path; default: embedded.")] = None,
    layers: Annotated[str | None, typer.Option(help="MSA layers, e.g. 15,16.")] = None,
    steps: int = 600,
    batch_size: int = 64,
    lr: float = 2e-3,
    rank: Annotated[int, typer.Option(help="Low rank of each projection; 0 = full rank.")] = 64,
    mlp_width: Annotated[int, typer.Option(
        help="Width of a residual MLP before each projection (a deeper router); 0 = none.")] = 0,
    layer_weights: Annotated[bool, typer.Option(
        help="Learn a weight per MSA layer in the routing rule (equal weights otherwise).")
    ] = False,
    hard_negatives: Annotated[int, typer.Option(help="Mined per pair.")] = 2,
    held_out: Annotated[float, typer.Option(help="Held-out fraction.")] = 0.1,
    seed: int = 0,
    device: str = "auto",
    dtype: Annotated[str, typer.Option(help="Weights dtype in the file.")] = "float16",
    cache: Annotated[Path | None, typer.Option(help="Hidden-state cache folder.")] = None,
    reencode: Annotated[Path | None, typer.Option(help="Space to re-encode.")] = None,
    init: Annotated[str | None, typer.Option(
        help="Continue from this router file, or 'shipped' (adapt the model's own).")] = None,
    entities: Annotated[int, typer.Option(
        help="Entity-keyed questions per text or memory (0 = none).")] = 2,
) -> None:
    """Train learned routing (MSA's router projections) on a frozen backbone."""
    from msa_agent.model.loader import load_model
    from msa_agent.train import TrainConfig
    from msa_agent.train import train_router as run

    console = Console()
    collected = _collect(pairs, texts, memory, seed, entities)
    if mlp_width < 0:
        raise typer.BadParameter("--mlp-width must be 0 (none) or a positive width")
    if len(collected) < 2:
        raise typer.BadParameter("need at least 2 training pairs (--pairs, --texts or --memory)")
    fit, held = _split(collected, held_out, seed)
    cfg = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, rank=rank or None,
                      hard_negatives=hard_negatives, seed=seed)
    with console.status("loading the model..."):
        lm = load_model(model, device=device)
    chosen = [int(x) for x in layers.split(",")] if layers else None
    with _Stages(console) as (bar, tasks):
        def step(tag: str, done: int, total: int) -> None:
            if tag not in tasks:
                tasks[tag] = bar.add_task(tag, total=total)
            bar.update(tasks[tag], completed=done, total=total)

        result = run(lm, fit, out=out, layers=chosen, config=cfg, held_out=held,
                     cache_root=cache, dtype=dtype, progress=step,
                     init=_init_router(init, lm, chosen),
                     mlp={"q": mlp_width, "k": mlp_width} if mlp_width else None,
                     layer_weights=layer_weights)
    _print(console, result, len(fit), len(held))
    if reencode is not None:
        from msa_agent import Memory

        with Memory.open(reencode, model=lm) as mem:
            n = mem.reencode_routing(out)
        console.print(f"re-encoded the routing keys of {n} memories in {reencode}")


class _Stages:
    """A rich progress bar with one task per stage (queries, documents, steps)."""

    def __init__(self, console: Console) -> None:
        self.bar = Progress(TextColumn("{task.description}"), BarColumn(),
                            TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                            console=console, transient=True)

    def __enter__(self) -> tuple[Progress, dict[str, TaskID]]:
        self.bar.__enter__()
        return self.bar, {}

    def __exit__(self, *exc: object) -> None:
        self.bar.__exit__(*exc)


def _print(console: Console, result: TrainResult, n_fit: int, n_held: int) -> None:
    """One table: data, cost, and the held-out scores before and after training."""
    table = Table(title=f"router -> {result.path}")
    table.add_column("what")
    table.add_column("value", justify="right")
    rep = result.report
    rows = [("training pairs", n_fit), ("held-out pairs", n_held),
            ("caching s (backbone)", f"{result.cache_seconds:.1f}"),
            ("training s", f"{rep.seconds:.1f}"), ("peak RSS MB", f"{rep.peak_rss_mb:.0f}"),
            ("final train loss", f"{rep.losses[-1]:.3f}")]
    rows += [(f"held-out {k}", f"{v:.3f}") for k, v in result.held_out.items()]
    for k, v in rows:
        table.add_row(k, str(v))
    console.print(table)
