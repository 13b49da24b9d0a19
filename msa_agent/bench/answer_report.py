"""Tables of the answer stage (``doc["answers"]``): rich for ``msa bench``, markdown for docs."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from msa_agent.bench import tables

COLUMNS = [
    ("task", "task"),
    ("system", "system"),
    ("val_n", "n val"),
    ("val_accuracy", "val acc"),
    ("val_f1", "val F1"),
    ("test_n", "n test"),
    ("test_accuracy", "test acc"),
    ("test_f1", "test F1"),
    ("test_gold_in_context", "test gold in ctx"),
    ("skipped", "skipped"),
    ("truncated", "cut"),
    ("test_prompt_tokens", "test prompt tok"),
    ("test_p50_ms", "test p50 ms"),
    ("test_p95_ms", "test p95 ms"),
]


def summary(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (task, system): per-split accuracy, F1, latency; skips over both splits."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for r in doc.get("answers", []):
        if r["kind"] != "all":
            continue
        row = out.setdefault(
            (r["task"], r["system"]),
            {"task": r["task"], "system": r["system"], "skipped": 0, "truncated": 0},
        )
        row["skipped"] += r["skipped"]
        row["truncated"] += r["truncated"]
        for key in ("n", "accuracy", "f1", "gold_in_context", "prompt_tokens", "p50_ms", "p95_ms"):
            row[f"{r['split']}_{key}"] = r[key]
    return list(out.values())


def _cell(key: str, v: Any) -> str:
    if v is None:
        return "-"
    if key.endswith(("_ms", "_tokens")):
        return f"{v:,.0f}"
    if isinstance(v, float):
        return f"{v:.2f}"
    return str(v)


def rich_table(doc: dict[str, Any]) -> Table:
    """The answer summary as a rich table."""
    s = doc.get("answer_settings") or {}
    title = (f"msa bench ({doc['mode']}) answers: {s.get('model', '?')}, "
             f"k={s.get('k', '?')}, greedy, max {s.get('max_new_tokens', '?')} tokens")
    return tables.rich_table(title, COLUMNS, summary(doc), _cell)


def markdown(doc: dict[str, Any]) -> str:
    """The answer summary as a markdown table."""
    return tables.markdown_table(COLUMNS, summary(doc), _cell)


def markdown_kinds(doc: dict[str, Any], task: str, split: str = "test") -> str:
    """Per-kind accuracy / F1 of one task and split, systems as columns."""
    rows = [r for r in doc.get("answers", []) if r["task"] == task and r["split"] == split]
    systems = list(dict.fromkeys(r["system"] for r in rows))
    kinds = list(dict.fromkeys(r["kind"] for r in rows))
    lines = ["| kind | " + " | ".join(systems) + " |", "|---|" + "---|" * len(systems)]
    for kind in kinds:
        cells = []
        for s in systems:
            r = next((x for x in rows if (x["kind"], x["system"]) == (kind, s)), None)
            cells.append(
                "-"
                if r is None or r["accuracy"] is None
                else f"{r['accuracy']:.2f} / {r['f1']:.2f} ({r['answered']})"
            )
        lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown_all(doc: dict[str, Any]) -> str:
    """The summary, then per-kind test and val tables of every task with answers."""
    if not doc.get("answers"):
        return ""
    parts = [
        "**Answers** (accuracy = normalised gold in the answer; token F1; "
        "latency includes retrieval)",
        "",
        markdown(doc),
    ]
    for task in dict.fromkeys(r["task"] for r in doc["answers"]):
        for split in ("test", "val"):
            parts += [
                "",
                f"**{task} answers, {split}** (accuracy / F1 (answered) per kind)",
                "",
                markdown_kinds(doc, task, split),
            ]
    return "\n".join(parts)
