"""End-to-end ``ParallelMemory.recall`` over a real space, one rank per GPU (issue 15, "Scale"):
what a user of Memory Parallel gets, against world size and memory size.

    torchrun --nproc-per-node 1 -m msa_agent.bench.parallel_recall --out DIR --work W \\
        --sizes 1e7,1e8 --key-dtype bfloat16 --model-dir .gpu-model --check 5
    torchrun --nproc-per-node 2 -m msa_agent.bench.parallel_recall --out DIR --work W \\
        --sizes 1e7,1e8 --key-dtype bfloat16 --model-dir .gpu-model --check 5
    python -m torch.distributed.run --nproc-per-node 2 -m msa_agent.bench.parallel_recall \\
        --out DIR --device cpu --sizes 20000 --check 2        # gloo smoke test

**The space** (rank 0 only; the other ranks wait for its manifest file, no collective is
pending meanwhile): ``gpu_recall``'s synthetic fill (seeded pseudo-word texts written through
``Space.add`` with random model-shaped routing keys, ``synthetic_fill.py``) into
``WORK/<size>/space``, the random-weight backbone of ``--model-dir``'s config and a random
router of the shipped router's form (``gpu_recall.random_model`` / ``random_router``). A larger
size starts from a copy of the previous size's folder and grows it. ``WORK/<size>/manifest.json``
records the fill, the queries (``gpu_recall.pick_queries``: 6 words of a stored document) and
the **reference hits**: the ``--check`` first timed queries recalled by a single-process
``Memory.open`` of that space on rank 0 (the open ``synthetic_grow`` makes after filling).
A later run with the same ``--work`` reuses the space and its manifest (fill once, then run
world 1 and world 2 on it); ``--prepare-only`` fills and exits.

**Every rank** builds the same random weights (same seed), opens the space with
``ParallelMemory.open`` (this rank's shard of the routing keys resident; timed), and makes the
same calls (SPMD). Per recall mode (``msa``, ``hybrid``), k = 16:

- ``warm-up``: the ``--warmup`` first queries, plus one timed query of each padded query length
  not yet seen (the fused kernel compiles and autotunes per power-of-two query length);
- ``plain``: ``ParallelMemory.recall`` wall clock per query, after a barrier (all ranks start
  together) and with the device synchronised, nothing instrumented (rank 0's times; every
  rank's p50/p95 too);
- ``stages``: the same queries again with the engine's calls wrapped (``gpu_recall.Probe``:
  device synchronised at each entry and exit, times exclusive of wrapped calls inside), rank
  0's times: ``forward`` (tokenize + backbone + router-Q, rank 0 only), ``broadcast`` (the
  router queries to every rank), ``mask`` (scope), ``local_rank`` (``RoutingIndex.rank`` on the
  shard, of which ``kernel``: the fused ``route_topk``), ``gather_merge`` (all-gather of the
  local top-k, merge), ``owner_rows`` (the selected memories' key rows from their owners),
  ``evidence`` (per-layer scores over those rows), ``lexical`` (BM25, each rank alike),
  ``fetch`` (SQLite records), ``fusion`` and ``other``. Waiting for another rank lands in the
  collective that waits;
- ``check``: the ``--check`` first timed queries' hits (ids in order, scores) against the
  manifest's single-process reference (rank 0 compares; trivial at world 1, except that it
  runs the sharded code path).

One JSON per size, ``OUT/parallel-recall-w<world>-<size>.json`` (saved after each part), with
the machine (``gpu_recall.environment``), keys per rank (rows, bytes, dtype), open times and
peak GPU memory per rank. ``recall_many`` batches are not timed: ``ShardedEngine`` routes a
batch one query at a time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from msa_agent.bench import gpu_recall as gr
from msa_agent.bench import synthetic_fill as sf

MODES = ("msa", "hybrid")
MANIFEST = "manifest.json"
WAIT_S = 3600.0  # the other ranks wait this long for rank 0's fill at most
# reported groups of rank 0's stages (sums per query, then percentiles)
GROUPS = {
    "forward": ("tokenize", "backbone", "router_q"),
    "broadcast": ("broadcast",),
    "mask": ("mask",),
    "local_rank": ("local_rank", "kernel"),
    "kernel": ("kernel",),
    "gather_merge": ("gather_merge", "sharded_top"),
    "owner_rows": ("owner_rows",),
    "evidence": ("evidence", "evidence_lookup"),
    "lexical": ("lexical",),
    "fetch": ("fetch",),
    "fusion": ("fusion", "completed", "results"),
    "other": ("other",),
}


# ---------------------------------------------------------------------------- options
@dataclass
class Run:
    """What one launch does, besides the fill's options (``gpu_recall.Options``)."""

    out: Path
    work: Path
    model_dir: Path
    device: torch.device
    check: int = 0
    prepare_only: bool = False
    commit: str | None = None


def size_tag(tokens: int) -> str:
    """``10_000_000`` -> ``1e7``, ``20_000`` -> ``2e4``."""
    mant, _, exp = f"{tokens:.3g}".partition("e")
    return f"{mant}e{int(exp)}" if exp else mant


def parse(argv: Sequence[str] | None) -> tuple[Run, gr.Options]:
    ap = argparse.ArgumentParser(prog="msa_agent.bench.parallel_recall",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("bench-out"))
    ap.add_argument("--work", type=Path, default=Path("parallel-recall-work"),
                    help="Where the spaces are built and reused (one folder per size).")
    ap.add_argument("--sizes", default="1e7,1e8", help="Tokens of memory, commas.")
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--queries", type=int, default=30, help="Timed queries per size and mode.")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--check", type=int, default=0,
                    help="Queries whose hits rank 0 compares with a single process's.")
    ap.add_argument("--batch-docs", type=int, default=4096)
    ap.add_argument("--device", default="auto", help="auto, cuda or cpu.")
    ap.add_argument("--model-dir", type=Path, default=None,
                    help="config.json + tokenizer (no weights; random weights are made).")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dtype", default="float32", help="Backbone dtype.")
    ap.add_argument("--key-dtype", default="bfloat16",
                    help="MemoryConfig.routing_key_dtype: float32, bfloat16, float16, float8.")
    ap.add_argument("--pooled", default="zeros", choices=sf.POOLED,
                    help="Synthetic fill: pooled K/V random or zeros (recall never reads them).")
    ap.add_argument("--prefetch", action="store_true", help="Synthetic fill: batches in a thread.")
    ap.add_argument("--prepare-only", action="store_true", help="Fill (rank 0) and exit.")
    ap.add_argument("--commit", default=None, help="Commit to record (no .git on the GPU box).")
    a = ap.parse_args(argv)
    auto = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(auto if a.device == "auto" else a.device)
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    run = Run(a.out, a.work, a.model_dir or gr.default_model_dir(), device, a.check,
              a.prepare_only, a.commit)
    opts = gr.Options(sizes=[int(float(s)) for s in a.sizes.split(",")],
                      modes=a.modes.split(","), k=a.k, queries=a.queries, warmup=a.warmup,
                      batch_docs=a.batch_docs, seed=a.seed, dtype=a.dtype, fill="synthetic",
                      pooled=a.pooled, prefetch=a.prefetch, key_dtype=a.key_dtype, batches=[])
    if run.check > opts.queries:
        ap.error("--check must not exceed --queries")
    return run, opts


# ---------------------------------------------------------------------------- rank 0: spaces
def what_for(opts: gr.Options, run: Run) -> dict[str, Any]:
    """The settings a reused space must have been made with."""
    return {"seed": opts.seed, "dtype": opts.dtype, "key_dtype": opts.key_dtype,
            "pooled": opts.pooled, "model": run.model_dir.name, "k": opts.k,
            "warmup": opts.warmup, "queries": opts.queries, "check": run.check}


class Builder:
    """Rank 0's spaces: each size's folder filled (or grown from the previous size's copy, or
    reused), its queries and single-process reference hits in its manifest."""

    def __init__(self, pair: tuple[Any, Any], run: Run, opts: gr.Options) -> None:
        self.pair, self.run, self.opts = pair, run, opts
        self.gen = gr.TextGen(seed=opts.seed)
        self.per_word = self.gen.calibrate(pair[1])
        self.corpus = gr.Corpus()
        self.last: Path | None = None  # the folder this process filled last (corpus = it)

    def context(self, folder: Path) -> gr.Context:
        return gr.Context(self.pair, self.run.device, self.opts, folder, self.gen,
                          self.per_word)

    def prepare(self, target: int) -> Path:
        """``WORK/<size>``, with its manifest (made now unless there)."""
        folder = self.run.work / size_tag(target)
        manifest = folder / MANIFEST
        if manifest.exists():
            made = json.loads(manifest.read_text())["made_with"]
            if made != what_for(self.opts, self.run):
                raise SystemExit(f"{folder} was made with {made}: use another --work")
            return folder
        shutil.rmtree(folder, ignore_errors=True)  # a fill cut short
        if self.last is not None:
            shutil.copytree(self.last, folder, ignore=shutil.ignore_patterns(MANIFEST))
        else:
            self.corpus = gr.Corpus()
        ctx = self.context(folder)
        mem, grown = gr.synthetic_grow(ctx.open(), ctx, self.corpus, target)
        try:
            data = self.manifest(mem, ctx, grown, target)
        finally:
            gr.release(mem, self.run.device)
        tmp = folder / (MANIFEST + ".tmp")
        tmp.write_text(json.dumps(data))
        tmp.rename(manifest)
        self.last = folder
        return folder

    def manifest(self, mem: Any, ctx: gr.Context, grown: dict[str, Any], target: int
                 ) -> dict[str, Any]:
        opts = self.opts
        queries = gr.pick_queries(self.gen, self.corpus, opts.warmup + opts.queries,
                                  opts.seed + target)
        checked = [q for q, _ in queries[opts.warmup:opts.warmup + self.run.check]]
        facts = gr.index_facts(mem, self.run.device)
        return {"made_with": what_for(opts, self.run), "tokens_target": target,
                "tokens": self.corpus.tokens, "memories": self.corpus.docs, "fill": grown,
                "single_process": facts, "queries": queries,
                "text": {"words_per_doc": self.gen.words_per_doc, "tokens_per_word":
                         self.per_word},
                "reference": {m: reference_hits(mem, checked, m, opts.k) for m in opts.modes}}


def hit_list(hits: Sequence[Any]) -> list[dict[str, Any]]:
    return [{"id": h.id, "score": h.score} for h in hits]


def reference_hits(mem: Any, texts: Sequence[str], mode: str, k: int
                   ) -> list[list[dict[str, Any]]]:
    """A single process's hits for ``texts`` (``Memory.recall``)."""
    return [hit_list(mem.recall(t, k=k, routing=mode)) for t in texts]


def wait_for(path: Path, timeout_s: float = WAIT_S, poll_s: float = 0.5) -> None:
    """Block until ``path`` exists (rank 0 writes it when the space is ready)."""
    end = time.monotonic() + timeout_s
    while not path.exists():
        if time.monotonic() > end:
            raise TimeoutError(f"no {path} after {timeout_s:.0f} s")
        time.sleep(poll_s)


# ---------------------------------------------------------------------------- every rank
def open_parallel(pair: tuple[Any, Any], run: Run, opts: gr.Options, folder: Path
                  ) -> tuple[Any, float]:
    """``ParallelMemory.open`` of ``folder/space`` as ``gpu_recall.open_memory`` opens it (the
    random router, the key dtype), and the seconds it took (every rank's, after a barrier
    when the group exists)."""
    from msa_agent.parallel import ParallelMemory

    if dist.is_initialized():
        dist.barrier()
    t0 = time.perf_counter()
    pm = ParallelMemory.open(folder / "space", model=pair, device=str(run.device),
                             routing="learned", router_path=str(folder / "router.safetensors"),
                             dtype=opts.dtype, routing_key_dtype=opts.key_dtype)
    gr.sync(run.device)
    return pm, time.perf_counter() - t0


def together(device: torch.device) -> None:
    """Every rank here, the device idle: the start line of a timed query."""
    gr.sync(device)
    dist.barrier()


def padded_length(pm: Any, text: str) -> int:
    """The power of two the fused kernel pads ``text``'s router queries to."""
    from msa_agent.model.text import query_ids

    n = len(query_ids(pm._engine.tokenizer, text, pm.config.max_doc_tokens))
    return 1 << max(0, n - 1).bit_length()


def warm_texts(pm: Any, queries: Sequence[tuple[str, str]], warmup: int) -> list[str]:
    """The ``warmup`` first queries, then one timed query of each padded length not seen."""
    chosen = [t for t, _ in queries[:warmup]]
    seen = {padded_length(pm, t) for t in chosen}
    for text, _ in queries[warmup:]:
        n = padded_length(pm, text)
        if n not in seen:
            seen.add(n)
            chosen.append(text)
    return chosen


def parallel_targets(pm: Any) -> list[tuple[Any, str, str]]:
    """The calls ``ParallelMemory.recall`` makes, as (object, attribute, stage)."""
    import msa_agent.kernels as kernels
    import msa_agent.runtime.parallel as par
    from msa_agent.runtime.routing import RoutingIndex

    eng = pm._engine
    return [(eng, "query", "tokenize"), (eng.encoder, "query_vectors_many", "router_q"),
            (eng.encoder, "_forward", "backbone"), (eng.comm, "broadcast", "broadcast"),
            (eng, "_mask", "mask"), (par, "sharded_top", "sharded_top"),
            (par, "local_top", "local_rank"), (kernels, "route_topk", "kernel"),
            (par, "gather_top", "gather_merge"), (par, "gather_rows", "owner_rows"),
            (RoutingIndex, "_evidence", "evidence"), (eng, "_explain_ids", "evidence_lookup"),
            (eng, "_lexical", "lexical"), (eng._space, "get_many", "fetch"),
            (eng._space, "created_times", "fetch"), (eng, "_fused", "fusion"),
            (eng, "_completed", "completed"), (eng, "_recalled_in", "results")]  # fmt: skip


def staged_pass(pm: Any, queries: Sequence[tuple[str, str]], mode: str, k: int,
                device: torch.device) -> list[dict[str, float]]:
    """Exclusive ms per stage, one dict per query, this rank's."""
    probe, out = gr.Probe(device), []
    top = probe.wrap("other", pm.recall)
    with gr.patched(parallel_targets(pm), probe):
        for text, _ in queries:
            together(device)
            top(text, k=k, routing=mode)
            out.append(probe.take())
    return out


def every_rank(value: Any) -> list[Any]:
    """``value`` of every rank, by rank (on every rank)."""
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, value)
    return out


def measure_mode(pm: Any, queries: Sequence[tuple[str, str]], mode: str, opts: gr.Options,
                 device: torch.device) -> dict[str, Any]:
    """Warm-up, one plain pass, one staged pass (rank 0's stages; every rank's totals)."""
    warm = warm_texts(pm, queries, opts.warmup)
    for text in warm:
        pm.recall(text, k=opts.k, routing=mode)
    timed = queries[opts.warmup:]
    plain, found = gr.plain_run(pm, timed, mode, opts.k, device,
                                before=lambda: together(device))
    staged = gr.summarise_stages(staged_pass(pm, timed, mode, opts.k, device), GROUPS)
    ranks = every_rank(gr.latency(plain))
    return {"plain": gr.latency(plain), "plain_ms": plain, "plain_by_rank": ranks,
            "warmup_queries": len(warm), "source_in_top_k": found, **staged}


def check_hits(pm: Any, manifest: dict[str, Any], n: int, opts: gr.Options
               ) -> dict[str, Any]:
    """The first ``n`` timed queries' hits against the single-process reference (every rank
    recalls; rank 0's hits are compared)."""
    texts = [q for q, _ in manifest["queries"][opts.warmup:opts.warmup + n]]
    out: dict[str, Any] = {}
    for mode in opts.modes:
        want = manifest["reference"][mode][:n]
        got = reference_hits(pm, texts, mode, opts.k)
        same = [[h["id"] for h in g] == [h["id"] for h in w] for g, w in zip(got, want)]
        diff = max((abs(a["score"] - b["score"]) for g, w in zip(got, want)
                    for a, b in zip(g, w)), default=0.0)
        out[mode] = {"queries": len(want), "ids_equal": sum(same), "max_score_diff": diff,
                     "first_mismatch": next(({"query": texts[i], "got": got[i], "want": want[i]}
                                             for i, s in enumerate(same) if not s), None)}
    return out


def shard_facts(pm: Any, device: torch.device, open_s: float) -> list[dict[str, Any]]:
    """Every rank's resident shard: rows, memories, key bytes, open time, peak GPU memory."""
    facts = gr.index_facts(pm, device)
    facts["open_seconds"] = open_s
    facts["rank"] = dist.get_rank()
    return every_rank(facts)


# ---------------------------------------------------------------------------- one size
def measure_size(pair: tuple[Any, Any], run: Run, opts: gr.Options, folder: Path,
                 data: dict[str, Any], save: Callable[[], None]) -> None:
    """Open the space sharded and time every mode into ``data`` (rank 0 saves)."""
    manifest = json.loads((folder / MANIFEST).read_text())
    data |= {key: manifest[key] for key in ("tokens_target", "tokens", "memories", "fill",
                                            "single_process", "text")}
    queries = [tuple(q) for q in manifest["queries"]]
    data["query_example"] = queries[0][0]
    pm, open_s = open_parallel(pair, run, opts, folder)
    try:
        data["ranks"] = shard_facts(pm, run.device, open_s)
        save()
        for mode in opts.modes:
            data[mode] = measure_mode(pm, queries, mode, opts, run.device)
            save()
        if run.check:
            data["check"] = check_hits(pm, manifest, run.check, opts)
        if run.device.type == "cuda":
            data["peak_gpu_bytes_by_rank"] = every_rank(torch.cuda.max_memory_allocated())
        data["complete"] = True
        save()
    finally:
        gr.release(pm, run.device)


def header(run: Run, opts: gr.Options, world: int) -> dict[str, Any]:
    env = gr.environment(run.device, run.commit)
    env["command"] = (f"torchrun --nproc-per-node {world} -m msa_agent.bench.parallel_recall "
                      + " ".join(sys.argv[1:]))
    if run.device.type == "cuda":
        env["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    what = ("end-to-end ParallelMemory.recall latency over a synthetic space (random keys, "
            "random-weight backbone and router of the model's shape), routing keys sharded "
            "over the ranks")
    return {"what": what, "world": world, "backend": dist.get_backend(), "env": env,
            "options": {**vars(opts), "check": run.check}, "complete": False}


def result_path(run: Run, world: int, target: int) -> Path:
    return run.out / f"parallel-recall-w{world}-{size_tag(target)}.json"


def saver(path: Path, data: dict[str, Any]) -> Callable[[], None]:
    """Rank 0 writes ``data`` to ``path`` (the other ranks write nothing)."""
    def save() -> None:
        if dist.get_rank() == 0:
            path.write_text(json.dumps(data, indent=1))

    return save


def run_size(pair: tuple[Any, Any], run: Run, opts: gr.Options, folder: Path, target: int
             ) -> dict[str, Any]:
    """Every rank: wait for the space's manifest, join the group, measure."""
    wait_for(folder / MANIFEST)
    if not dist.is_initialized():
        from msa_agent.runtime.parallel import init_from_env

        init_from_env(run.device)
    world = dist.get_world_size()
    data = header(run, opts, world)
    measure_size(pair, run, opts, folder, data, saver(result_path(run, world, target), data))
    return data


def run_sizes(pair: tuple[Any, Any], run: Run, opts: gr.Options,
              builder: Builder | None) -> list[dict[str, Any]]:
    """Every size: rank 0 prepares (or reuses) the space, then every rank measures it."""
    results = []
    for target in sorted(opts.sizes):
        folder = builder.prepare(target) if builder else run.work / size_tag(target)
        if not run.prepare_only:
            results.append(run_size(pair, run, opts, folder, target))
    return results


# ---------------------------------------------------------------------------- report
def gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB"


def cell(part: dict[str, Any] | None) -> str:
    return "n/a" if not part else f"{part['p50_ms']:.1f} / {part['p95_ms']:.1f}"


def checked(r: dict[str, Any]) -> str:
    c = r.get("check")
    if not c:
        return "-"
    return ", ".join(f"{m} {x['ids_equal']}/{x['queries']}" for m, x in c.items())


def table(results: Sequence[dict[str, Any]]) -> str:
    """Markdown: per world and size, keys per GPU, open, recall p50 / p95 ms per mode."""
    head = ("| GPUs | memory | memories | keys per GPU | open s | msa recall | hybrid recall "
            "| check (ids equal) |")
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for r in results:
        if "ranks" not in r:
            continue
        keys = max(x["resident_key_bytes"] for x in r["ranks"])
        dtype = r["ranks"][0]["resident_key_dtype"]
        open_s = max(x["open_seconds"] for x in r["ranks"])
        lines.append(f"| {r['world']} | {gr.mtok(r['tokens'])} | {r['memories']:,} "
                     f"| {gb(keys)} {dtype} | {open_s:.1f} "
                     f"| {cell(r.get('msa', {}).get('plain'))} "
                     f"| {cell(r.get('hybrid', {}).get('plain'))} | {checked(r)} |")
    return "\n".join(lines)


def stage_table(results: Sequence[dict[str, Any]]) -> str:
    """Markdown: rank 0's stage groups, p50 / p95 ms, per world, size and mode."""
    names = [g for g in GROUPS if g != "kernel"]
    head = "| GPUs | memory | mode | recall | " + " | ".join(names) + " |"
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for r in results:
        for mode in MODES:
            if mode not in r:
                continue
            g = r[mode]["groups"]
            lines.append(f"| {r['world']} | {gr.mtok(r['tokens'])} | {mode} "
                         f"| {cell(r[mode]['plain'])} | "
                         + " | ".join(cell(g.get(x)) for x in names) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    run, opts = parse(argv)
    gr.ensure_packages()
    if run.device.type == "cuda":
        torch.cuda.set_device(run.device)
    rank = int(os.environ.get("RANK", "0"))
    run.out.mkdir(parents=True, exist_ok=True)
    run.work.mkdir(parents=True, exist_ok=True)
    pair = gr.random_model(run.model_dir, run.device, opts.seed, opts.dtype)
    builder = Builder(pair, run, opts) if rank == 0 else None
    try:
        results = run_sizes(pair, run, opts, builder)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    if rank == 0 and results:
        env = results[0]["env"]
        print(f"\n{env.get('machine', run.device)} x{results[0]['world']}; torch "
              f"{env['torch']}; k={opts.k}; {opts.queries} queries; p50 / p95 ms")
        print(table(results))
        print()
        print(stage_table(results))


if __name__ == "__main__":
    main()
