"""The benchmark runner: tasks x systems -> quality rows, cost rows, one JSON document.

For each task, each system is created once, and at each stage ingests only the stage's new
memories (timed), then answers every query with each of its variants (timed). Quality is
scored per (split, kind) by :mod:`msa_agent.bench.metrics`; costs per (system, stage):
ingest tokens/s (tokens counted with the default model's tokenizer for every system, so the
rates compare), recall latency p50/p95, index bytes per token, and the peak RSS the process
reached above its level when the system was created (sampled every 50 ms).

With ``answers`` > 0, each task then runs the answer stage
(:mod:`msa_agent.bench.answer_stage`) on that many questions per split, reusing the recall
stage's rankings and msa-agent space.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from msa_agent.bench import answer_stage, metrics
from msa_agent.bench.systems import BM25, MiniLM, MsaAgent, System
from msa_agent.bench.tasks import Task
from msa_agent.bench.tasks import build as build_task
from msa_agent.bench.tasks.base import MemoryItem, Query

SYSTEMS = ("bm25", "minilm", "minilm-windows", "mem0", "msa")
K = 5
MULTIHOP_ONLY = "multihop_only"  # a variant option read by the runner, not passed to recall


@dataclass
class RunConfig:
    """What to run. ``msa_variants``: row name -> ``recall`` kwargs (None: per routing mode)."""

    tasks: Sequence[str]
    mode: str = "quick"
    systems: Sequence[str] = SYSTEMS
    msa_variants: dict[str, dict[str, Any]] | None = None
    workdir: Path = Path("bench-out/work")
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    log: Callable[[str], None] = print
    on_task: Callable[[dict[str, Any]], None] | None = None  # called with the partial document
    answers: int = 0  # answer-stage questions per split (0: no answer stage)


class PeakRss:
    """Peak resident memory above the starting level, sampled in a thread (MB)."""

    def __init__(self, interval: float = 0.05) -> None:
        import psutil

        self._proc, self.interval = psutil.Process(), interval
        self.base = self.peak = self._proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self._proc.memory_info().rss)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)

    @property
    def added_mb(self) -> float:
        return (self.peak - self.base) / 2**20


@lru_cache(maxsize=1)
def _tokenizer() -> Any:
    from transformers import AutoTokenizer

    from msa_agent.model.loader import ensure_default_model

    return AutoTokenizer.from_pretrained(str(ensure_default_model()))


def count_tokens(texts: Sequence[str]) -> int:
    """Tokens of ``texts`` under the default model's (SmolLM2) tokenizer."""
    tok = _tokenizer()
    return sum(len(ids) for ids in tok(list(texts), add_special_tokens=False)["input_ids"])


def make_system(name: str, workdir: Path, msa_variants: dict[str, dict[str, Any]] | None
                ) -> System:
    """A fresh system by its CLI name, with its scratch folder under ``workdir``."""
    if name == "bm25":
        return BM25()
    if name in ("minilm", "minilm-windows"):
        return MiniLM(windowed=name == "minilm-windows")
    if name == "mem0":
        from msa_agent.bench.systems import Mem0

        return Mem0(workdir / "mem0")
    if name == "msa":
        return MsaAgent(workdir / "msa", msa_variants)
    raise ValueError(f"unknown system {name!r}; choose from {', '.join(SYSTEMS)}")


def _queries_for(queries: Sequence[Query], opts: dict[str, Any]) -> list[Query]:
    """All queries, or only the multi-hop ones for a variant marked :data:`MULTIHOP_ONLY`
    (e.g. ``hops="auto"``, which costs extra forwards and only matters there)."""
    if opts.get(MULTIHOP_ONLY):
        return [q for q in queries if q.hops > 1]
    return list(queries)


def _ingest(system: System, items: Sequence[MemoryItem]) -> float:
    start = time.perf_counter()
    system.add(items)
    if isinstance(system, BM25):
        system.build_all()
    return time.perf_counter() - start


def _timed_search(system: System, queries: Sequence[Query], opts: dict[str, Any]
                  ) -> tuple[list[list[str]], list[float]]:
    """Each query's top-``K`` keys and its wall time in seconds."""
    rankings, lat = [], []
    for q in queries:
        start = time.perf_counter()
        rankings.append(system.search(q, K, opts))
        lat.append(time.perf_counter() - start)
    return rankings, lat


Rows = list[dict[str, Any]]


def run_task_system(task: Task, sys_name: str, cfg: RunConfig, stage_tokens: list[int],
                    keep: answer_stage.Rankings | None = None,
                    on_stage: Callable[[Rows, Rows], None] | None = None) -> tuple[Rows, Rows]:
    """Quality and cost rows of one system on one task, stage by stage.

    At each stage only the memories the previous stage lacked are ingested (timed); then every
    variant answers the stage's questions (timed per query). ``keep`` receives each row's
    rankings and search times of the last stage (for the answer stage); ``on_stage`` the rows
    so far after every stage (so a long run cut short keeps its finished stages).
    """
    work = cfg.workdir / task.name / sys_name
    shutil.rmtree(work, ignore_errors=True)
    quality: list[dict[str, Any]] = []
    costs: list[dict[str, Any]] = []
    with PeakRss() as rss:
        system = make_system(sys_name, work, cfg.msa_variants)
        try:
            seen, prev_tokens = 0, 0
            for stage, tokens in zip(task.stages, stage_tokens):
                ingest_s = _ingest(system, stage.memories[seen:])
                seen, new_tokens, prev_tokens = len(stage.memories), tokens - prev_tokens, tokens
                for row, opts in system.variants().items():
                    queries = _queries_for(stage.queries, opts)
                    if not queries:
                        continue
                    opts = {k: v for k, v in opts.items() if k != MULTIHOP_ONLY}
                    rankings, lat = _timed_search(system, queries, opts)
                    if keep is not None:
                        keep[row] = {q.qid: (r, t) for q, r, t in zip(queries, rankings, lat)}
                    where = {"task": task.name, "stage": stage.label, "system": row}
                    quality += [{**where, **r} for r in metrics.score(queries, rankings)]
                    idx = system.index_bytes()
                    costs.append({
                        **where, "memories": len(stage.memories), "tokens": tokens,
                        "ingest_s": ingest_s, "ingest_tok_s": new_tokens / max(ingest_s, 1e-9),
                        "p50_ms": 1000 * metrics.percentile(lat, 50),
                        "p95_ms": 1000 * metrics.percentile(lat, 95),
                        "bytes_per_token": None if idx is None else idx / tokens,
                        "peak_ram_mb": rss.added_mb, "opts": opts})
                    cfg.log(f"  {task.name}/{stage.label} {row}: "
                            f"ingest {ingest_s:.1f}s, p50 {costs[-1]['p50_ms']:.1f} ms")
                if on_stage is not None:
                    on_stage(quality, costs)
        finally:
            system.close()
    return quality, costs


def _answer_task(doc: dict[str, Any], task: Task, cfg: RunConfig,
                 rankings: answer_stage.Rankings) -> None:
    """The answer stage of one task, on the recall stage's msa-agent space if it ran."""
    ran_msa = "msa" in cfg.systems and "msa" not in doc["skipped"]
    # run_task_system's folder, then make_system's ``MsaAgent(workdir / "msa")``, its "space"
    space = cfg.workdir / task.name / "msa" / "msa" / "space" if ran_msa else None
    answer_stage.add_to(doc, task, rankings, space, cfg.answers, cfg.log)
    if cfg.on_task is not None:
        cfg.on_task(doc)


def machine_info() -> dict[str, Any]:
    """Where the numbers were measured."""
    import psutil
    import torch

    here = Path(__file__).resolve().parent  # the checkout's commit, from any working folder
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, check=False, cwd=here).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=False, cwd=here).stdout
        commit += "+dirty" if commit and dirty.strip() else ""
    except OSError:
        commit = ""
    return {"platform": platform.platform(), "processor": platform.processor(),
            "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "python": platform.python_version(), "torch": torch.__version__,
            "cuda": torch.cuda.is_available(), "git_commit": commit}


def run(cfg: RunConfig) -> dict[str, Any]:
    """Run every task on every system; the result document (also what gets written)."""
    doc: dict[str, Any] = {
        "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["msa", "bench", *sys.argv[2:]]) if "bench" in sys.argv[1:2]
        else " ".join(sys.argv), "mode": cfg.mode, "machine": machine_info(), "k": K,
        "tasks": {}, "quality": [], "costs": [], "skipped": {}}
    if cfg.answers:
        doc |= {"answer_settings": None, "answers": [], "answer_outputs": []}
    for name in cfg.tasks:
        task = build_task(name, cfg.mode, **cfg.overrides.get(name, {}))
        stage_tokens = [count_tokens([m.text for m in st.memories]) for st in task.stages]
        doc["tasks"][name] = {
            "description": task.description, "params": task.params,
            "fingerprint": task.fingerprint(),
            "stages": [{"label": st.label, "memories": len(st.memories), "tokens": t,
                        "queries": {s: sum(q.split == s for q in st.queries)
                                    for s in ("val", "test")}}
                       for st, t in zip(task.stages, stage_tokens)]}
        cfg.log(f"{name}: {doc['tasks'][name]['stages']}")
        rankings: answer_stage.Rankings = {}
        for sys_name in cfg.systems:
            try:
                quality, costs = run_task_system(task, sys_name, cfg, stage_tokens, rankings,
                                                 _partial_writer(doc, cfg))
            except ImportError as exc:  # an optional baseline that is not installed
                doc["skipped"][sys_name] = f"{type(exc).__name__}: {exc}"
                cfg.log(f"  skipped {sys_name}: {exc}")
                continue
            doc["quality"] += quality
            doc["costs"] += costs
            if cfg.on_task is not None:  # a partial result survives a run cut short
                cfg.on_task(doc)
        if cfg.answers:
            _answer_task(doc, task, cfg, rankings)
    doc["finished"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    return doc


def _partial_writer(doc: dict[str, Any], cfg: RunConfig) -> Callable[[Rows, Rows], None] | None:
    """Hands ``cfg.on_task`` the document with one system's unfinished rows added."""
    if cfg.on_task is None:
        return None
    on_task = cfg.on_task

    def write_partial(quality: Rows, costs: Rows) -> None:
        on_task({**doc, "quality": doc["quality"] + quality, "costs": doc["costs"] + costs})

    return write_partial


def write(doc: dict[str, Any], path: Path) -> Path:
    """Write the result document as indented JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1, default=str))
    return path
