"""Turning a result document into a rich table, markdown tables and PNG plots."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.table import Table

from msa_agent.bench import tables


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def quality_rows(doc: dict[str, Any], kind: str = "all") -> list[dict[str, Any]]:
    """The quality rows of one kind (``"all"`` = every question of the split)."""
    return [r for r in doc["quality"] if r["kind"] == kind]


def summary(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (task, stage, system): val and test R@1/R@5 and the costs."""
    costs = {(c["task"], c["stage"], c["system"]): c for c in doc["costs"]}
    out = []
    for key, c in costs.items():
        row: dict[str, Any] = {"task": key[0], "stage": key[1], "system": key[2]}
        for r in doc["quality"]:
            if (r["task"], r["stage"], r["system"]) == key and r["kind"] == "all":
                row[f"{r['split']}_r1"], row[f"{r['split']}_r5"] = r["r1"], r["r5"]
                row[f"{r['split']}_n"] = r["n"]
        row.update({k: c[k] for k in ("ingest_tok_s", "p50_ms", "p95_ms", "bytes_per_token",
                                      "peak_ram_mb")})
        out.append(row)
    return out


COLUMNS = [("task", "task"), ("stage", "size"), ("system", "system"), ("val_r1", "val R@1"),
           ("val_r5", "val R@5"), ("test_r1", "test R@1"), ("test_r5", "test R@5"),
           ("ingest_tok_s", "ingest tok/s"), ("p50_ms", "p50 ms"), ("p95_ms", "p95 ms"),
           ("bytes_per_token", "B/token"), ("peak_ram_mb", "peak RAM MB")]


def _cell(key: str, v: Any) -> str:
    if key in ("ingest_tok_s", "bytes_per_token", "peak_ram_mb"):
        return _fmt(v, 0)
    if key in ("p50_ms", "p95_ms"):
        return _fmt(v, 1)
    return _fmt(v)


def rich_table(doc: dict[str, Any]) -> Table:
    """The summary as a rich table (printed by ``msa bench``)."""
    title = f"msa bench ({doc['mode']}), recall@k of all gold, k=5"
    return tables.rich_table(title, COLUMNS, summary(doc), _cell)


def markdown_summary(doc: dict[str, Any]) -> str:
    """The summary as a markdown table (for docs/benchmarks.md)."""
    return tables.markdown_table(COLUMNS, summary(doc), _cell)


def markdown_kinds(doc: dict[str, Any], task: str, split: str = "test") -> str:
    """Per-kind R@1 / R@5 (and newest-first) of one task and split, systems as columns."""
    rows = [r for r in doc["quality"] if r["task"] == task and r["split"] == split]
    systems = list(dict.fromkeys(r["system"] for r in rows))
    keys = list(dict.fromkeys((r["stage"], r["kind"]) for r in rows))
    lines = ["| size | kind | n | " + " | ".join(systems) + " |",
             "|---|---|---|" + "---|" * len(systems)]
    for stage, kind in keys:
        found = {x["system"]: x for x in rows if (x["stage"], x["kind"]) == (stage, kind)}
        n = max(x["n"] for x in found.values())
        cells = [_kind_cell(found.get(s), n) for s in systems]
        lines.append(f"| {stage} | {kind} | {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _kind_cell(r: dict[str, Any] | None, n: int) -> str:
    """R@1 / R@5 (newest-first); a system scored on fewer questions (a multi-hop-only
    variant's "all") says on how many."""
    if r is None:
        return "-"
    cell = f"{r['r1']:.2f} / {r['r5']:.2f}"
    if "newest_first" in r:
        cell += f" (newest {r['newest_first']:.2f})"
    return cell + (f" (n={r['n']})" if r["n"] != n else "")


def plots(doc: dict[str, Any], out_dir: Path, prefix: str) -> list[Path]:
    """PNG plots: test R@5 per task and system; for multi-stage tasks R@5 and p50 vs size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    rows = summary(doc)
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    systems = list(dict.fromkeys(r["system"] for r in rows))
    fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(tasks), 4.6))
    width = 0.8 / max(1, len(systems))
    for j, s in enumerate(systems):
        vals = []
        for t in tasks:
            last = [r for r in rows if r["task"] == t and r["system"] == s]
            vals.append(last[-1].get("test_r5", 0.0) if last else 0.0)  # largest size
        ax.bar([i + j * width for i in range(len(tasks))], vals, width, label=s)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(tasks))], tasks)
    ax.set_ylabel("test R@5 (all gold in top 5)")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=7, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.1))
    ax.set_title(f"msa bench {doc['mode']}: test R@5 (largest size)")
    fig.tight_layout()
    written.append(_save(fig, out_dir / f"{prefix}-r5.png"))
    for t in tasks:
        stages = list(dict.fromkeys(r["stage"] for r in rows if r["task"] == t))
        if len(stages) > 1:
            written.append(_scale_plot(doc, t, stages, systems, out_dir / f"{prefix}-{t}.png"))
    plt.close("all")
    return written


def _scale_plot(doc: dict[str, Any], task: str, stages: Sequence[str], systems: Sequence[str],
                path: Path) -> Path:
    import matplotlib.pyplot as plt

    tokens = {s["label"]: s["tokens"] for s in doc["tasks"][task]["stages"]}
    rows = [r for r in summary(doc) if r["task"] == task]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    for s in systems:
        pts = [(tokens[r["stage"]], r.get("test_r5"), r["p50_ms"]) for r in rows
               if r["system"] == s]
        if not pts:
            continue
        xs = [p[0] for p in pts]
        a.plot(xs, [p[1] for p in pts], marker="o", label=s)
        b.plot(xs, [p[2] for p in pts], marker="o", label=s)
    for ax, label in ((a, "test R@5"), (b, "recall p50 ms")):
        ax.set_xscale("log")
        ax.set_xlabel("memory size (tokens)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    b.set_yscale("log")
    a.set_ylim(0, 1.05)
    a.legend(fontsize=7)
    fig.suptitle(f"{task}: quality and latency against memory size")
    fig.tight_layout()
    return _save(fig, path)


def _save(fig: Any, path: Path) -> Path:
    fig.savefig(path, dpi=110)
    return path


def markdown_all(doc: dict[str, Any]) -> str:
    """Summary table, then per-kind test and val tables of every task (for the docs)."""
    parts = [f"Command: `{doc['command']}` (mode {doc['mode']}, started {doc['started']}, "
             f"commit {doc['machine'].get('git_commit', '?')})", "", markdown_summary(doc)]
    for task in doc["tasks"]:
        for split in ("test", "val"):
            parts += ["", f"**{task}, {split}** (R@1 / R@5 per kind)", "",
                      markdown_kinds(doc, task, split)]
    if doc.get("answers"):
        from msa_agent.bench import answer_report

        parts += ["", answer_report.markdown_all(doc)]
    return "\n".join(parts)


if __name__ == "__main__":  # python -m msa_agent.bench.report RESULTS.json
    import json
    import sys

    print(markdown_all(json.loads(Path(sys.argv[1]).read_text())))
