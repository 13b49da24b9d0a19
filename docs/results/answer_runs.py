"""What the read-mode answer scripts beside this file share: accuracy per group of rows,
and the JSON they leave (command, task, split, machine, summary, rows).
Imported by ``read-modes-runtime.py`` and ``read-modes-two-hop.py`` (run as
``python docs/results/SCRIPT.py``, so this folder is on the path)."""

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from msa_agent.bench.suite import machine_info


def accuracy(rows: list[dict[str, Any]], keep: Callable[[dict[str, Any]], bool]
             ) -> dict[str, float]:
    sel = [r for r in rows if keep(r)]
    return {"n": len(sel), "accuracy": sum(r["correct"] for r in sel) / len(sel)}


def write(out: Path, task_name: str, split: str, summary: dict[str, Any],
          rows: list[dict[str, Any]]) -> None:
    out.write_text(json.dumps({"command": " ".join(["python", *sys.argv]), "task": task_name,
                               "split": split, "machine": machine_info(), "summary": summary,
                               "rows": rows}, indent=1, default=str))
    print(json.dumps(summary, indent=1))
