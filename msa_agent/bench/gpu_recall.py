"""End-to-end ``Memory.recall`` on one GPU (issue 15): p50/p95 at 1M, 10M (and, with the
synthetic fill, 100M) tokens of memory, split into the engine's stages, against the routing
kernel alone on the same index; one query at a time and in batches (``Memory.recall_many``).

    python -m msa_agent.bench.gpu_recall --out DIR                     # on a CUDA machine
    python -m msa_agent.bench.gpu_recall --out DIR --device cpu --sizes 20000   # smoke test
    python -m msa_agent.bench.gpu_recall --out DIR --fill synthetic \
        --sizes 1e6,1e7,1e8 --key-dtype bfloat16                        # 100M tokens

**Random weights, model-shaped.** The backbone is the embedded default model's *config*
(SmolLM2-135M-Instruct: Llama, 30 layers, hidden 576, 9 / 3 heads of 64) with random weights,
and the tokenizer is the real one (``--model-dir``: a folder with ``config.json`` and the
tokenizer files; default the converted default model's folder). The router is a random one of
the shipped router's shape (MSA layers 15-29), saved for that model, so the runtime runs its
learned-router code paths; its scores mean nothing, so only the times are readings here.

**Text-like documents.** Seeded random word sequences from a fixed pseudo-word vocabulary
(Zipf frequencies, ~480 tokens a document, under ``max_doc_tokens``), growing one space from
one size to the next. A query is 6 distinct words of one stored document, leaving out the
vocabulary's most frequent words (stop-word-like), so the lexical channel has work to do.

**Two fills** (``--fill``):

- ``encode`` (default): the documents are stored through ``Memory.remember_many`` in large
  batches (the backbone encodes them); the ingest rate and its stages are reported.
- ``synthetic``: the same texts are written through the store's own ``Space.add`` with
  **random** arrays of the space's layout (routing keys, pooled K/V) instead of encoded ones,
  ``n_tokens`` estimated from the calibrated tokens per word (``synthetic_fill.py``); then the
  space is opened again with ``Memory.open``, which loads its routing index from the store
  as a user's open does (timed: ``open_seconds``). Routing scores over random keys mean
  nothing; the times are those of an index of that many chunks. The fill's rate and the
  space's bytes on disk are reported.

``--key-dtype`` is ``MemoryConfig.routing_key_dtype`` (the resident keys: float32, bfloat16,
float16 or float8).

**What is timed, per size and recall mode** (``msa``, ``hybrid``), ``k`` = 16:

- ``plain``: ``Memory.recall`` wall clock per query, synchronised, nothing instrumented;
- ``stages``: the same queries again with the engine's internal calls wrapped (a
  ``torch.cuda.synchronize()`` and ``time.perf_counter()`` at each entry and exit), times
  exclusive of the wrapped calls inside them: ``forward`` = ``tokenize`` (``Engine.query``
  itself) + ``backbone`` (``Encoder._forward``: the decoder up to the last MSA layer, with the
  taps) + ``router_q`` (the router-Q projections of the 15 layers), ``mask`` (scope mask), ``rank``
  (``RoutingIndex.rank`` minus what is listed next), ``kernel`` (the fused ``route_topk``),
  ``explain`` (per-layer scores of the selected documents), ``evidence_lookup``
  (``RoutingIndex.explain``'s own part, hybrid), ``lexical`` (BM25 over SQLite FTS5),
  ``fetch`` (SQLite reads of the selected records and the pool's times), ``fusion`` (the
  fusion and result objects) and ``other`` (the rest of ``Memory.recall``: validation,
  interleave, formatting);
- ``kernel_alone`` / ``rank_alone``: ``route_topk`` and ``RoutingIndex.rank`` on the query
  vectors of the same questions, called directly on the space's own index (the figure
  ``docs/results/gpu-routing.json`` gives for random keys, at the nearest sizes, is copied
  alongside);
- ``batches``: ``Memory.recall_many`` on batches of ``--batches`` sizes (one warm-up batch,
  then at least ``MIN_ROUNDS`` batches, about ``--batch-queries`` queries a size), timed per
  batch: batch and per-query ms (p50/p95) and queries per second.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import json
import math
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import typer

from msa_agent.bench import synthetic_fill as sf

ROOT = Path(__file__).resolve().parents[2]
ROUTING_JSON = ROOT / "docs" / "results" / "gpu-routing.json"
SIZES = (1_000_000, 10_000_000)
MODES = ("msa", "hybrid")
STOP_LIKE = 100  # the vocabulary's most frequent words: never asked about (like stop words)
QUERY_WORDS = 6
DOC_TOKENS = 480  # target tokens a document (the runtime splits past max_doc_tokens = 512)
# reported groups of the stages (sums per query, then percentiles)
GROUPS = {
    "forward": ("tokenize", "backbone", "router_q"),
    "routing": ("mask", "rank", "kernel"),
    "kernel": ("kernel",),
    "evidence": ("explain", "evidence_lookup"),
    "lexical": ("lexical",),
    "fetch": ("fetch",),
    "fusion": ("fusion", "results"),
    "other": ("other",),
}
INGEST_STAGES = ("plan", "encode", "store", "index", "other")
FILLS = ("encode", "synthetic")
BATCHES = (1, 8, 32)
MIN_ROUNDS = 3  # timed batches of each size, at least


# ---------------------------------------------------------------------------- environment
def ensure_packages() -> None:
    """Map ``kernels/`` and ``store/`` as ``msa_agent.kernels`` / ``msa_agent.store`` on a
    checkout that is not pip-installed (what setuptools' package-dir mapping does)."""
    import msa_agent

    for name in ("kernels", "store"):
        full = f"msa_agent.{name}"
        if full in sys.modules or importlib.util.find_spec(full) is not None:
            continue
        src = ROOT / name
        spec = importlib.util.spec_from_file_location(
            full, src / "__init__.py", submodule_search_locations=[str(src)])
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        sys.modules[full] = mod
        spec.loader.exec_module(mod)
        setattr(msa_agent, name, mod)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def git_commit() -> str | None:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True, check=True,
                              cwd=ROOT).stdout.strip()
    try:
        head = git("rev-parse", "--short", "HEAD")
        return head + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def environment(device: torch.device, commit: str | None) -> dict[str, Any]:
    env: dict[str, Any] = {
        "torch": torch.__version__, "python": sys.version.split()[0],
        "commit": commit or git_commit(), "device": str(device),
        "command": "python -m msa_agent.bench.gpu_recall " + shlex.join(sys.argv[1:]),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
    }  # fmt: skip
    with contextlib.suppress(ImportError):
        import triton

        env["triton"] = triton.__version__
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        env |= {"machine": torch.cuda.get_device_name(device), "gpu_memory_bytes": p.total_memory,
                "sms": p.multi_processor_count}  # fmt: skip
    return env


# ---------------------------------------------------------------------------- statistics
def pct(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (linear interpolation), ``q`` in [0, 100]."""
    s = sorted(values)
    pos = (len(s) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def latency(ms: Sequence[float]) -> dict[str, float]:
    return {"p50_ms": pct(ms, 50), "p95_ms": pct(ms, 95), "mean_ms": sum(ms) / len(ms),
            "min_ms": min(ms), "n": len(ms)}  # fmt: skip


# ---------------------------------------------------------------------------- probes
class Probe:
    """Wraps callables; records each one's time exclusive of wrapped calls inside it (ms),
    synchronising the device at every entry and exit."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._stack: list[float] = []
        self.excl: dict[str, float] = defaultdict(float)

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def go(*args: Any, **kwargs: Any) -> Any:
            sync(self.device)
            self._stack.append(0.0)
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                sync(self.device)
                dt = (time.perf_counter() - t0) * 1e3
                inner = self._stack.pop()
                self.excl[name] += dt - inner
                if self._stack:
                    self._stack[-1] += dt

        return go

    def take(self) -> dict[str, float]:
        out, self.excl = dict(self.excl), defaultdict(float)
        return out


@contextlib.contextmanager
def patched(targets: Sequence[tuple[Any, str, str]], probe: Probe) -> Iterator[None]:
    """Wrap ``obj.attr`` as stage ``name`` for each target; restored on exit (instance
    attributes are deleted again, module attributes put back)."""
    saved: list[tuple[Any, str, Any, bool]] = []
    try:
        for obj, attr, name in targets:
            own = attr in vars(obj)
            saved.append((obj, attr, vars(obj).get(attr), own))
            setattr(obj, attr, probe.wrap(name, getattr(obj, attr)))
        yield
    finally:
        for obj, attr, old, own in reversed(saved):
            if own:
                setattr(obj, attr, old)
            else:
                delattr(obj, attr)


def recall_targets(mem: Any) -> list[tuple[Any, str, str]]:
    """The engine calls ``Memory.recall`` makes, as (object, attribute, stage)."""
    import msa_agent.kernels as kernels

    eng = mem._engine
    return [(eng, "query", "tokenize"), (eng.encoder, "query_vectors_many", "router_q"),
            (eng.encoder, "_forward", "backbone"), (eng, "_mask", "mask"),
            (eng.index, "rank_many", "rank"),
            (kernels, "route_topk", "kernel"), (eng.index, "_explain", "explain"),
            (eng.index, "explain", "evidence_lookup"), (eng, "_lexical", "lexical"),
            (eng._space, "get_many", "fetch"), (eng._space, "created_times", "fetch"),
            (eng, "_fused", "fusion"), (eng, "_recalled", "results")]  # fmt: skip


def ingest_targets(mem: Any) -> list[tuple[Any, str, str]]:
    eng = mem._engine
    return [(eng, "_plan", "plan"), (eng.encoder, "encode", "encode"),
            (eng._space, "add", "store"), (eng.index, "add", "index")]


# ---------------------------------------------------------------------------- text
def vocabulary(n: int, seed: int) -> list[str]:
    """``n`` distinct pseudo-words of 1-3 syllables (seeded)."""
    rng = np.random.default_rng(seed)
    onsets = [*"bcdfghjklmnprstvwz", "ch", "sh", "th", "br", "st", "tr", "gl", "pl"]
    vowels = ["a", "e", "i", "o", "u", "ai", "ou", "ea", "io"]
    codas = ["", "", "n", "r", "s", "l", "m", "t", "nd", "st", "rk"]
    words: dict[str, None] = {}
    while len(words) < n:
        parts = rng.integers(0, [len(onsets), len(vowels), len(codas)], size=(3, 3))
        syllables = int(rng.integers(1, 4))
        words["".join(onsets[o] + vowels[v] + codas[c] for o, v, c in parts[:syllables])] = None
    return list(words)


@dataclass
class TextGen:
    """Seeded documents and queries over a Zipf-weighted pseudo-word vocabulary."""

    vocab_size: int = 20_000
    seed: int = 0
    words_per_doc: int = 360
    vocab: list[str] = field(init=False)
    p: np.ndarray = field(init=False)
    rng: np.random.Generator = field(init=False)

    def __post_init__(self) -> None:
        self.vocab = vocabulary(self.vocab_size, self.seed)
        w = 1.0 / np.arange(1, self.vocab_size + 1)
        self.p = w / w.sum()
        self.rng = np.random.default_rng(self.seed + 1)

    def draw(self, n: int, words: int | None = None) -> np.ndarray:
        """Word indices ``[n, words]`` of ``n`` new documents."""
        size = (n, words or self.words_per_doc)
        return self.rng.choice(self.vocab_size, size=size, p=self.p).astype(np.int32)

    def text(self, row: np.ndarray, sentence: int = 12) -> str:
        words = [self.vocab[i] for i in row]
        parts = [" ".join(words[s:s + sentence]) for s in range(0, len(words), sentence)]
        return ". ".join(p.capitalize() for p in parts) + "."

    def query(self, row: np.ndarray, rng: np.random.Generator) -> str:
        """``QUERY_WORDS`` distinct words of a document, none of the most frequent."""
        pool = np.unique(row[row >= STOP_LIKE])
        pick = rng.choice(pool, size=min(QUERY_WORDS, len(pool)), replace=False)
        return " ".join(self.vocab[i] for i in pick) + "?"

    def calibrate(self, tokenizer: Any, target: int = DOC_TOKENS, sample: int = 64) -> float:
        """Set ``words_per_doc`` so a document has about ``target`` tokens; returns tokens
        per word (drawn from a separate generator, so the corpus does not depend on it)."""
        rng, self.rng = self.rng, np.random.default_rng(self.seed + 2)
        texts = [self.text(r) for r in self.draw(sample, 100)]
        self.rng = rng
        n = sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)
        per_word = n / (100 * sample)
        self.words_per_doc = max(8, int(target / per_word))
        return per_word


# ---------------------------------------------------------------------------- the space
def random_model(model_dir: Path, device: torch.device, seed: int, dtype: str = "float32"
                 ) -> tuple[Any, Any]:
    """The model of ``model_dir``'s config with random weights, and its tokenizer."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    cfg = AutoConfig.from_pretrained(model_dir)
    with device:
        model = AutoModelForCausalLM.from_config(cfg, dtype=getattr(torch, dtype))
    return model.eval(), AutoTokenizer.from_pretrained(model_dir)


def random_router(pair: tuple[Any, Any], device: torch.device, path: Path, seed: int) -> Path:
    """A random router of the shipped router's form (latter-half MSA layers) for this model,
    saved with the model's fingerprint so that ``Memory.open`` accepts it."""
    from msa_agent.model.loader import model_fingerprint, wrap_model
    from msa_agent.model.router import Router
    from msa_agent.model.shape import ModelShape, resolve_msa_layers

    shape = ModelShape.of(pair[0])
    torch.manual_seed(seed + 7)
    router = Router(shape, resolve_msa_layers(shape, None), {"note": "random (benchmark)"})
    return router.save(path, model_fingerprint(wrap_model(*pair, device=str(device))))


def open_memory(pair: tuple[Any, Any], device: torch.device, work: Path, seed: int,
                dtype: str = "float32", key_dtype: str = "float32") -> Any:
    """The space at ``work/space`` (new or not) on the random model (``dtype``: what the model
    was made in; recorded) with its random router (made once, kept in ``work``), resident
    routing keys in ``key_dtype``."""
    from msa_agent import Memory

    router = work / "router.safetensors"
    if not router.exists():
        router = random_router(pair, device, router, seed)
    return Memory.open(work / "space", model=pair, device=str(device), routing="learned",
                       router_path=str(router), dtype=dtype, routing_key_dtype=key_dtype)


@dataclass
class Corpus:
    """What has been stored so far: tokens, and (id, word indices) of every 4th document."""

    tokens: int = 0
    docs: int = 0
    kept: list[tuple[str, np.ndarray]] = field(default_factory=list)
    keep_every: int = 4

    def add(self, ids: Sequence[str], rows: np.ndarray) -> None:
        for j in range(len(ids)):
            if (self.docs + j) % self.keep_every == 0:
                self.kept.append((ids[j], rows[j]))
        self.docs += len(ids)


def counting(fn: Callable[..., Any], corpus: Corpus) -> Callable[..., Any]:
    """``Encoder.encode`` that adds the tokens it encoded to ``corpus``."""
    def go(*args: Any, **kwargs: Any) -> Any:
        out = fn(*args, **kwargs)
        corpus.tokens += sum(e.n_tokens for e in out)
        return out

    return go


def ingest(mem: Any, gen: TextGen, corpus: Corpus, target: int, batch_docs: int,
           device: torch.device) -> dict[str, Any]:
    """Store documents until ``corpus.tokens`` reaches ``target``; the rate and its stages."""
    probe, start, docs0 = Probe(device), corpus.tokens, corpus.docs
    per_doc = DOC_TOKENS
    eng = mem._engine
    t0 = time.perf_counter()
    eng.encoder.encode = counting(eng.encoder.encode, corpus)  # under the probe's wrapper
    try:
        with patched(ingest_targets(mem), probe):
            while corpus.tokens < target:
                n = min(batch_docs, max(1, math.ceil((target - corpus.tokens) / per_doc)))
                rows = gen.draw(n)
                ids = probe.wrap("other", mem.remember_many)([gen.text(r) for r in rows])
                corpus.add(ids, rows)
                per_doc = max(1, (corpus.tokens - start) // max(1, corpus.docs - docs0))
    finally:
        del eng.encoder.encode
    sync(device)
    seconds = time.perf_counter() - t0
    stages = {k: v / 1e3 for k, v in probe.take().items()}
    return {"tokens_added": corpus.tokens - start, "docs_added": corpus.docs - docs0,
            "seconds": seconds, "tokens_per_s": (corpus.tokens - start) / seconds,
            "stage_seconds": stages,
            "text_seconds": seconds - sum(stages.values())}  # fmt: skip


def release(mem: Any, device: torch.device) -> None:
    """Close ``mem`` and drop its resident index (so the next open's peak is its own)."""
    mem.close()
    mem._engine.index = mem._engine._empty_index()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def synthetic_grow(mem: Any, ctx: Context, corpus: Corpus, target: int) -> tuple[Any, dict]:
    """Close the space, write memories through ``Space.add`` up to ``target`` tokens with
    random arrays, and open it again as a user would (the routing index loaded from the
    store; timed as ``open_seconds``)."""
    opts, gen = ctx.opts, ctx.gen
    release(mem, ctx.device)
    fopts = sf.FillOptions(batch_docs=opts.batch_docs, namespace=mem.config.namespace,
                        pooled=opts.pooled, device=str(ctx.device), seed=opts.seed + corpus.docs,
                        prefetch=opts.prefetch)

    def stored(ids: Sequence[str], docs: sf.Docs) -> None:
        corpus.add(ids, docs.rows)
        corpus.tokens += sum(docs.n_tokens)

    per_doc = sf.estimate_tokens(gen.words_per_doc, ctx.per_word)
    grown = sf.fill(ctx.work / "space", corpus.tokens, target, per_doc,
                    sf.texts_of(gen, ctx.per_word), stored, fopts)
    t0 = time.perf_counter()
    mem = ctx.open()
    sync(ctx.device)
    grown["open_seconds"] = time.perf_counter() - t0
    return mem, grown


def encode_grow(mem: Any, ctx: Context, corpus: Corpus, target: int) -> tuple[Any, dict]:
    """``Memory.remember_many`` up to ``target`` tokens (the backbone encodes)."""
    return mem, {"how": "encode",
                 **ingest(mem, ctx.gen, corpus, target, ctx.opts.batch_docs, ctx.device)}


# ---------------------------------------------------------------------------- queries
def pick_queries(gen: TextGen, corpus: Corpus, n: int, seed: int) -> list[tuple[str, str]]:
    """``n`` (query text, source id) pairs from uniformly chosen stored documents."""
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(corpus.kept), size=n, replace=len(corpus.kept) < n)
    return [(gen.query(corpus.kept[i][1], rng), corpus.kept[i][0]) for i in chosen]


def plain_run(mem: Any, queries: Sequence[tuple[str, str]], mode: str, k: int,
              device: torch.device, before: Callable[[], None] | None = None
              ) -> tuple[list[float], float]:
    """ms per ``recall`` call, and the share of queries whose source is in the top k.
    ``before`` runs ahead of each call (default: a device sync; Memory Parallel's bench
    waits there for every rank, so that all start the collective together)."""
    times, found = [], 0
    for text, src in queries:
        (before or (lambda: sync(device)))()
        t0 = time.perf_counter()
        hits = mem.recall(text, k=k, routing=mode)
        sync(device)
        times.append((time.perf_counter() - t0) * 1e3)
        found += found_in(hits, src)
    return times, found / max(1, len(queries))


def staged_run(mem: Any, queries: Sequence[tuple[str, str]], mode: str, k: int,
               device: torch.device) -> list[dict[str, float]]:
    """Exclusive ms per stage, one dict per query (wrapped engine calls)."""
    probe, out = Probe(device), []
    top = probe.wrap("other", mem.recall)
    with patched(recall_targets(mem), probe):
        for text, _ in queries:
            top(text, k=k, routing=mode)
            out.append(probe.take())
    return out


def summarise_stages(per_query: Sequence[dict[str, float]],
                     groups: dict[str, tuple[str, ...]] = GROUPS) -> dict[str, Any]:
    """Per stage and per group (sums of stages), p50/p95 over the queries."""
    names = sorted({n for q in per_query for n in q})
    totals = [sum(q.values()) for q in per_query]
    return {
        "total": latency(totals),
        "stages": {n: latency([q.get(n, 0.0) for q in per_query]) for n in names},
        "groups": {g: latency([sum(q.get(n, 0.0) for n in parts) for q in per_query])
                   for g, parts in groups.items()},
    }


def measure_mode(mem: Any, queries: Sequence[tuple[str, str]], mode: str, opts: Options,
                 device: torch.device) -> dict[str, Any]:
    """Warm-up, ``opts.repeats`` plain passes over the queries (pooled), one staged pass."""
    for text, _ in queries[:opts.warmup]:
        mem.recall(text, k=opts.k, routing=mode)
    timed = queries[opts.warmup:]
    passes = [plain_run(mem, timed, mode, opts.k, device) for _ in range(opts.repeats)]
    plain = [t for times, _ in passes for t in times]
    staged = summarise_stages(staged_run(mem, timed, mode, opts.k, device))
    return {"plain": latency(plain), "plain_passes": [latency(t) for t, _ in passes],
            "plain_ms_first_pass": passes[0][0], "source_in_top_k": passes[0][1],
            "queries_per_s_sequential": 1e3 / (sum(plain) / len(plain)), **staged}


def found_in(hits: Sequence[Any], src: str) -> bool:
    return any(src in (h.id, h.source_id) for h in hits)


def batch_run(mem: Any, queries: Sequence[tuple[str, str]], mode: str, size: int, k: int,
              device: torch.device) -> dict[str, Any]:
    """``Memory.recall_many`` over consecutive batches of ``size`` queries: the first one
    untimed, then ms per batch (synchronised) and per query, queries/s, hits returned."""
    groups = [queries[i:i + size] for i in range(0, len(queries) - size + 1, size)]
    mem.recall_many([q for q, _ in groups[0]], k=k, routing=mode)
    times, found, n_hits = [], 0, []
    for group in groups[1:]:
        sync(device)
        t0 = time.perf_counter()
        hits = mem.recall_many([q for q, _ in group], k=k, routing=mode)
        sync(device)
        times.append((time.perf_counter() - t0) * 1e3)
        found += sum(found_in(h, src) for h, (_, src) in zip(hits, group, strict=True))
        n_hits += [len(h) for h in hits]
    n = size * len(times)
    return {"batch_size": size, "batches": len(times), "queries": n,
            "batch": latency(times), "per_query": latency([t / size for t in times]),
            "queries_per_s": n / (sum(times) / 1e3), "batch_ms": times,
            "hits_min": min(n_hits), "source_in_top_k": found / n}


def batch_rounds(size: int, batch_queries: int) -> int:
    """Timed batches of ``size``: about ``batch_queries`` queries, at least ``MIN_ROUNDS``."""
    return max(MIN_ROUNDS, math.ceil(batch_queries / size))


def measure_batches(mem: Any, ctx: Context, corpus: Corpus, seed: int,
                    out: dict[str, dict[str, Any]], save: Callable[[], None]) -> None:
    """Into ``out[mode][size]``: :func:`batch_run` of each batch size on its own queries (the
    same for every mode); ``save()`` after each."""
    opts = ctx.opts
    for size in opts.batches:
        n = size * (batch_rounds(size, opts.batch_queries) + 1)
        queries = pick_queries(ctx.gen, corpus, n, seed + size)
        for mode in opts.modes:
            out.setdefault(mode, {})[str(size)] = batch_run(mem, queries, mode, size, opts.k,
                                                            ctx.device)
            save()


def routing_alone(mem: Any, queries: Sequence[tuple[str, str]], k: int, warmup: int,
                  device: torch.device) -> dict[str, Any]:
    """``route_topk`` and ``RoutingIndex.rank`` alone on the questions' router queries."""
    from msa_agent.bench.gpu_routing import kernel_fn, rank_fn, timed

    eng = mem._engine
    index = eng.index
    qs = [eng.query(text) for text, _ in queries]
    mask = index.mask_for(mem.config.namespace)
    t_kernel, _ = timed(kernel_fn(index, index.keys, k, mask), qs, warmup, device)
    t_rank, _ = timed(rank_fn(index, k, mask, index.use_kernel), qs, warmup, device)
    tokens = [int(q.shape[0]) for q in qs]
    return {"kernel_alone": latency(t_kernel), "rank_alone": latency(t_rank),
            "query_tokens_mean": sum(tokens) / len(tokens), "query_tokens": tokens}


def kernel_reference(tokens: int, path: Path = ROUTING_JSON) -> dict[str, Any] | None:
    """``docs/results/gpu-routing.json``'s kernel and rank p50 at ``tokens`` (log-log
    interpolation between the nearest sizes when not measured there)."""
    if not path.exists():
        return None
    rows = sorted((r for r in json.loads(path.read_text())["rows"] if "kernel" in r),
                  key=lambda r: r["tokens"])
    below = [r for r in rows if r["tokens"] <= tokens]
    above = [r for r in rows if r["tokens"] >= tokens]
    if not below or not above:
        return None
    a, b = below[-1], above[0]
    w = 0.0 if a is b else math.log(tokens / a["tokens"]) / math.log(b["tokens"] / a["tokens"])

    def at(part: str) -> float:
        lo, hi = a[part]["p50_ms"], b[part]["p50_ms"]
        return math.exp(math.log(lo) + w * (math.log(hi) - math.log(lo)))

    how = "measured" if a is b else f"interpolated {a['tokens']:,}-{b['tokens']:,} (log-log)"
    return {"kernel_p50_ms": at("kernel"), "rank_p50_ms": at("rank"), "how": how,
            "doc_tokens": 4096, "note": "random keys, 4,096-token documents, 32 query tokens"}


# ---------------------------------------------------------------------------- one size
def index_facts(mem: Any, device: torch.device) -> dict[str, Any]:
    index = mem._engine.index
    scale = index.key_scale  # fp8's per-row scales
    facts = {"chunks": int(index.keys.shape[0]), "docs": len(index.doc_ids),
             "resident_key_dtype": str(index.keys.dtype).removeprefix("torch."),
             "resident_key_bytes": index.keys.numel() * index.keys.element_size()
             + (0 if scale is None else scale.numel() * scale.element_size()),
             "kernel_in_path": bool(index.use_kernel)}  # fmt: skip
    if device.type == "cuda":
        facts["peak_gpu_bytes"] = torch.cuda.max_memory_allocated(device)
    return facts


def measure_size(mem: Any, ctx: Context, corpus: Corpus, grown: dict[str, Any],
                 row: dict[str, Any], save: Callable[[], None]) -> dict[str, Any]:
    """The queries at one size into ``row`` (``tokens_target`` set), the space having
    ``grown`` (the fill's record) to it; ``save()`` after each part (a run cut short by a
    time limit keeps what it measured)."""
    opts, gen, device = ctx.opts, ctx.gen, ctx.device
    t0, target = time.perf_counter(), row["tokens_target"]
    row |= {"fill": grown["how"], "ingest": grown, "tokens": corpus.tokens,
            "memories": corpus.docs, **index_facts(mem, device)}
    save()
    queries = pick_queries(gen, corpus, opts.warmup + opts.queries, opts.seed + target)
    row["query_example"] = queries[0][0]
    for mode in opts.modes:
        row[mode] = measure_mode(mem, queries, mode, opts, device)
        save()
    row |= routing_alone(mem, queries, opts.k, opts.warmup, device)
    row["kernel_reference"] = kernel_reference(target)
    save()
    if opts.batches:
        row["batches"] = {}
        measure_batches(mem, ctx, corpus, opts.seed + target + 1, row["batches"], save)
    row["wall_s"] = (time.perf_counter() - t0 + grown["seconds"]
                     + grown.get("open_seconds", 0.0))
    row["complete"] = True
    save()
    return row


@dataclass
class Options:
    sizes: Sequence[int] = SIZES
    modes: Sequence[str] = MODES
    k: int = 16
    queries: int = 100
    warmup: int = 5
    batch_docs: int = 2048
    seed: int = 0
    repeats: int = 1  # plain passes over the queries per mode
    dtype: str = "float32"  # the backbone's (the runtime's default on every device)
    budget_s: float = 0.0  # 0 = no limit; else skip a size whose ingest would not fit
    fill: str = "encode"  # "encode" (remember_many) or "synthetic" (Space.add, random arrays)
    pooled: str = "random"  # synthetic fill: the arrays other than routing keys
    prefetch: bool = False  # synthetic fill: prepare the next batch while one is stored
    key_dtype: str = "float32"  # MemoryConfig.routing_key_dtype
    batches: Sequence[int] = BATCHES  # recall_many batch sizes (empty: no batched pass)
    batch_queries: int = 64  # about this many timed queries per batch size


@dataclass
class Context:
    """What every size of one run shares."""

    pair: tuple[Any, Any]
    device: torch.device
    opts: Options
    work: Path
    gen: TextGen
    per_word: float  # calibrated tokens per word

    def open(self) -> Any:
        return open_memory(self.pair, self.device, self.work, self.opts.seed, self.opts.dtype,
                           self.opts.key_dtype)


def fits(row: dict[str, Any] | None, corpus: Corpus, target: int, started: float,
         budget_s: float) -> bool:
    """Whether ingesting up to ``target`` (at the last measured rate, plus the last size's
    query time) fits in what is left of ``budget_s``."""
    if not budget_s or row is None:
        return True
    rate = row["ingest"]["tokens_per_s"]
    query_s = max(0.0, row["wall_s"] - row["ingest"]["seconds"])  # (with a reopen's time)
    need = (target - corpus.tokens) / rate + query_s
    return time.perf_counter() - started + need < budget_s


def run(pair: tuple[Any, Any], device: torch.device, opts: Options, out: Path,
        work: Path, commit: str | None = None) -> dict[str, Any]:
    """Every size on one growing space; writes ``out/gpu-recall.json`` after each size."""
    ensure_packages()
    if opts.fill not in FILLS or opts.pooled not in sf.POOLED:
        raise ValueError(f"fill must be one of {FILLS} and pooled one of {sf.POOLED}")
    gen = TextGen(seed=opts.seed)
    ctx = Context(pair, device, opts, work, gen, gen.calibrate(pair[1]))
    grow = synthetic_grow if opts.fill == "synthetic" else encode_grow
    mem = ctx.open()
    data = header(mem, ctx, commit)
    out.mkdir(parents=True, exist_ok=True)
    corpus, started, last = Corpus(), time.perf_counter(), None

    def save() -> None:
        (out / "gpu-recall.json").write_text(json.dumps(data, indent=1))

    try:
        for target in sorted(opts.sizes):
            if not fits(last, corpus, target, started, opts.budget_s):
                data["rows"].append({"tokens_target": target, "skipped": "time budget"})
                break
            row: dict[str, Any] = {"tokens_target": target, "complete": False}
            data["rows"].append(row)
            mem, grown = grow(mem, ctx, corpus, target)
            last = measure_size(mem, ctx, corpus, grown, row, save)
            print(summary(last, opts.modes), flush=True)
    finally:
        mem.close()
        save()
    return data


def header(mem: Any, ctx: Context, commit: str | None) -> dict[str, Any]:
    """The JSON's fixed part: what was measured, how, on what."""
    gen, opts = ctx.gen, ctx.opts
    what = ("end-to-end Memory.recall latency; random-weight backbone and router of the "
            "embedded model's shape; documents are seeded random pseudo-word text")
    data: dict[str, Any] = {
        "what": what, "fill": opts.fill,
        "env": environment(ctx.device, commit), "options": {**vars(opts)},
        "model": model_facts(mem), "config": mem.config.model_dump(),
        "text": {"vocab": gen.vocab_size, "zipf_exponent": 1.0, "words_per_doc":
                 gen.words_per_doc, "tokens_per_word": ctx.per_word, "query_words": QUERY_WORDS,
                 "query_skips_top_words": STOP_LIKE},
        "rows": [],
    }  # fmt: skip
    if opts.fill == "synthetic":
        data["keys"] = "random"
        data["synthetic"] = (
            "memories written with Space.add, not encoded: routing keys are standard-normal "
            f"random fp16 rows, pooled K/V {opts.pooled}; n_tokens = round(words x "
            f"{ctx.per_word:.4f} calibrated tokens per word), n_chunks = ceil(n_tokens / "
            "chunk_size); the space is then opened with Memory.open, which loads the index "
            "from the store")
    return data


def model_facts(mem: Any) -> dict[str, Any]:
    eng = mem._engine
    return {"shape": dict(vars(eng.shape)), "msa_layers": eng.layers,
            "params": sum(p.numel() for p in eng.lm.model.parameters()),
            "dtype": eng.lm.dtype_name, "weights": "random",
            "router": "random, shipped router's form"}  # fmt: skip


# ---------------------------------------------------------------------------- report
def mtok(tokens: int) -> str:
    return f"{tokens / 1e6:.3g}M"


def summary(row: dict[str, Any], modes: Sequence[str]) -> str:
    """One line per size: ingest rate and each mode's p50."""
    i = row["ingest"]
    verb = "synthetic fill" if row["fill"] == "synthetic" else "ingest"
    parts = [f"{mtok(row['tokens'])} tokens, {row['docs']:,} docs: {verb} "
             f"{i['tokens_per_s']:,.0f} tok/s ({i['seconds']:.0f} s)"]
    if "open_seconds" in i:
        parts.append(f"open {i['open_seconds']:.1f} s")
    parts += [f"{m} p50 {row[m]['plain']['p50_ms']:.1f} ms" for m in modes]
    parts.append(f"kernel alone p50 {row['kernel_alone']['p50_ms']:.2f} ms")
    for mode, sizes in row.get("batches", {}).items():
        parts.append(f"{mode} batched " + ", ".join(
            f"{b}: {r['queries_per_s']:.1f} q/s" for b, r in sizes.items()))
    return "; ".join(parts)


def cell(part: dict[str, Any] | None) -> str:
    if not part:
        return "n/a"
    return f"{part['p50_ms']:.2f} / {part['p95_ms']:.2f}"


def table(rows: Sequence[dict[str, Any]], modes: Sequence[str]) -> str:
    """Markdown: per size and mode, p50 / p95 ms of the recall and of each group."""
    head = ("| memory | docs | mode | recall (plain) | forward | routing | of which kernel "
            "| evidence | lexical | fetch | fusion | other | kernel alone | json kernel p50 |")
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for r in rows:
        if "skipped" in r:
            lines.append(f"| {mtok(r['tokens_target'])} | skipped: {r['skipped']} |")
            continue
        ref = r.get("kernel_reference")
        ref_s = "n/a" if ref is None else f"{ref['kernel_p50_ms']:.2f}"
        for mode in modes:
            m, g = r[mode], r[mode]["groups"]
            lines.append(
                f"| {mtok(r['tokens'])} | {r['docs']:,} | {mode} | {cell(m['plain'])} | "
                + " | ".join(cell(g[x]) for x in GROUPS)
                + f" | {cell(r['kernel_alone'])} | {ref_s} |")
    return "\n".join(lines)


def batch_table(rows: Sequence[dict[str, Any]], modes: Sequence[str]) -> str:
    """Markdown: per size, mode and batch size, ``recall_many`` ms (p50 / p95) and q/s."""
    head = ("| memory | mode | batch | batches | per query | per batch | queries/s "
            "| one-by-one queries/s |")
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for r in rows:
        for mode in modes:
            one = r[mode]["queries_per_s_sequential"] if mode in r else None
            for b, x in r.get("batches", {}).get(mode, {}).items():
                lines.append(f"| {mtok(r['tokens'])} | {mode} | {b} | {x['batches']} "
                             f"| {cell(x['per_query'])} | {cell(x['batch'])} "
                             f"| {x['queries_per_s']:.1f} | {one or 0:.1f} |")
    return "\n".join(lines)


def ingest_table(rows: Sequence[dict[str, Any]]) -> str:
    head = "| memory | tokens added | seconds | tokens/s | " + " | ".join(INGEST_STAGES) + " |"
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for r in rows:
        if r.get("fill") != "encode":
            continue
        i = r["ingest"]
        st = " | ".join(f"{i['stage_seconds'].get(s, 0.0):.1f}" for s in INGEST_STAGES)
        lines.append(f"| {mtok(r['tokens'])} | {i['tokens_added']:,} | {i['seconds']:.1f} "
                     f"| {i['tokens_per_s']:,.0f} | {st} |")
    return "\n".join(lines)


def default_model_dir() -> Path:
    from msa_agent.model.loader import DEFAULT_MODEL, cache_dir

    return cache_dir() / "models" / DEFAULT_MODEL


def main(
    out: Path = typer.Option(Path("bench-out"), help="Folder for gpu-recall.json."),
    sizes: str = typer.Option(",".join(str(s) for s in SIZES), help="Tokens, commas."),
    modes: str = typer.Option(",".join(MODES), help="Recall modes, commas."),
    queries: int = typer.Option(100, help="Timed queries per size and mode."),
    warmup: int = typer.Option(5, help="Untimed queries first."),
    k: int = typer.Option(16),
    batch_docs: int = typer.Option(2048, help="Documents per remember_many (encode) or "
                                   "Space.add (synthetic) call."),
    device: str = typer.Option("auto", help="auto, cuda or cpu."),
    model_dir: Path | None = typer.Option(None, help="config.json + tokenizer (no weights)."),
    work: Path | None = typer.Option(None, help="Where the space is built (default: temp)."),
    budget_s: float = typer.Option(0.0, help="Skip sizes whose ingest would end past this."),
    seed: int = typer.Option(0),
    repeats: int = typer.Option(1, help="Plain (uninstrumented) passes per mode."),
    dtype: str = typer.Option("float32", help="Backbone dtype: float32, bfloat16, float16."),
    commit: str | None = typer.Option(None, help="Commit to record (the GPU box has no .git)."),
    fill: str = typer.Option("encode", help="encode (remember_many) or synthetic (Space.add "
                             "with random arrays, then Memory.open)."),
    pooled: str = typer.Option("random", help="Synthetic fill: pooled K/V random or zeros."),
    prefetch: bool = typer.Option(False, help="Synthetic fill: prepare batches in a thread."),
    key_dtype: str = typer.Option("float32", help="Resident routing keys: float32, bfloat16, "
                                  "float16, float8 (MemoryConfig.routing_key_dtype)."),
    batches: str = typer.Option(",".join(map(str, BATCHES)),
                                help="recall_many batch sizes, commas ('' for none)."),
    batch_queries: int = typer.Option(64, help="About this many timed queries a batch size."),
) -> None:
    """Memory.recall p50/p95 per stage at growing memory sizes (random-weight model)."""
    dev = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if device == "auto"
                       else device)
    opts = Options(sizes=[int(float(s)) for s in sizes.split(",")], modes=modes.split(","),
                   k=k, queries=queries, warmup=warmup, batch_docs=batch_docs, seed=seed,
                   budget_s=budget_s, repeats=repeats, dtype=dtype, fill=fill, pooled=pooled,
                   prefetch=prefetch, key_dtype=key_dtype, batch_queries=batch_queries,
                   batches=[int(b) for b in batches.split(",") if b.strip()])
    pair = random_model(model_dir or default_model_dir(), dev, seed, dtype)
    folder = work or Path(tempfile.mkdtemp(prefix="gpu-recall-"))
    try:
        data = run(pair, dev, opts, out, folder, commit)
    finally:
        if work is None:
            shutil.rmtree(folder, ignore_errors=True)
    rows = data["rows"]
    print(f"\n{data['env'].get('machine', dev)}; torch {data['env']['torch']}; k={k}; "
          f"{queries} queries; p50 / p95 ms")
    print(sf.table(rows) if fill == "synthetic" else ingest_table(rows))
    print()
    print(table(rows, opts.modes))
    if opts.batches:
        print()
        print(batch_table(rows, opts.modes))


if __name__ == "__main__":
    typer.run(main)
