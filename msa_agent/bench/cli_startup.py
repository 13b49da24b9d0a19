"""How long `msa` takes to answer help, version and refused input, next to ``python -c pass``.

    python -m msa_agent.bench.cli_startup [--runs 5] [--out docs/results/cli-startup.json]

Each command runs ``--runs`` times in a fresh process (wall clock, from spawn to exit); the
median and every run are written as JSON and printed as a markdown table. Nothing loads a
model: these are the paths that must answer before one would. The offline row sets
``HF_HUB_OFFLINE=1`` so an uncached model id is refused the same way with or without network.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path


def commands(scratch: Path) -> list[tuple[str, list[str], dict[str, str]]]:
    """``(label, argv, extra env)`` rows; ``msa`` is the installed script when there is one."""
    msa = [shutil.which("msa") or sys.executable, *([] if shutil.which("msa") else
                                                    ["-m", "msa_agent.cli"])]
    missing = str(scratch / "nope")
    rows = [
        ("python -c pass", [sys.executable, "-c", "pass"], {}),
        ("msa --help", [*msa, "--help"], {}),
        ("msa --version", [*msa, "--version"], {}),
        ("msa recall '' --path x", [*msa, "recall", "", "--path", str(scratch / "x")], {}),
        ("msa stats --path nope", [*msa, "stats", "--path", missing], {}),
        ("msa ingest /missing --path typo",
         [*msa, "ingest", str(scratch / "missing"), "--path", str(scratch / "typo")], {}),
        ("msa init --model uncached/id (offline)",
         [*msa, "init", "--model", "uncached-org/uncached-model", "--path",
          str(scratch / "new")], {"HF_HUB_OFFLINE": "1"}),
    ]
    if shutil.which("hf"):
        rows.append(("hf --help (reference)", ["hf", "--help"], {}))
    return rows


def time_once(argv: list[str], env: dict[str, str]) -> tuple[float, int]:
    """Seconds from spawn to exit, and the exit code."""
    start = time.perf_counter()
    done = subprocess.run(argv, env={**os.environ, **env}, capture_output=True, check=False)
    return time.perf_counter() - start, done.returncode


def measure(runs: int) -> list[dict[str, object]]:
    out = []
    with tempfile.TemporaryDirectory(prefix="msa-cli-startup-") as tmp:
        for label, argv, env in commands(Path(tmp)):
            times, codes = zip(*(time_once(argv, env) for _ in range(runs)))
            out.append({"command": label, "median_s": round(statistics.median(times), 3),
                        "runs_s": [round(t, 3) for t in times], "exit_codes": sorted(set(codes))})
    return out


def table(rows: list[dict[str, object]]) -> str:
    lines = ["| command | median (s) | runs (s) | exit |", "|---|---:|---|---|"]
    for r in rows:
        runs = ", ".join(f"{t:.2f}" for t in r["runs_s"])  # type: ignore[attr-defined]
        lines.append(f"| `{r['command']}` | {r['median_s']:.2f} | {runs} | "
                     f"{','.join(map(str, r['exit_codes']))} |")  # type: ignore[call-overload]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("docs/results/cli-startup.json"))
    args = parser.parse_args()
    load = [round(x, 2) for x in os.getloadavg()]  # the machine may be shared: say how busy
    rows = measure(args.runs)
    doc = {"when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                       "platform": platform.platform(),
                       "load_average_before": load},
           "runs": args.runs, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(table(rows))
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
