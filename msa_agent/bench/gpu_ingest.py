"""GPU ingest (issue 15): the encoder's throughput against the backbone's own forward speed,
per batch size, on one GPU.

    python -m msa_agent.bench.gpu_ingest --out DIR/gpu-ingest.json --model-dir .gpu-model \
        --dtype float32,bfloat16                                          # on a CUDA machine
    python -m msa_agent.bench.gpu_ingest --device cpu --batch-tokens 1024 --pool-docs 64 \
        --e2e-docs 16                                                     # smoke test

**Model and text** as :mod:`msa_agent.bench.gpu_recall` (whose helpers this imports): the
default model's config (SmolLM2-135M-Instruct) with random weights and the real tokenizer, a
random router of the shipped router's form (MSA layers 15-29), seeded pseudo-word documents
of ~480 tokens (cut at ``max_doc_tokens`` = 512, as the runtime splits). Only times are
readings here.

**What is timed**, per dtype and batch size ``B`` (padded tokens a forward): the documents are
cut into batches of ``B // longest`` documents, so that each ``Encoder.encode`` call makes
exactly one forward, as the engine's ``length_batches`` would; ``warmup`` untimed batches, then
``batches`` timed, each synchronised:

- ``encoder``: ``Encoder.encode`` of the space's engine (the call ``Engine`` makes: the
  decoder up to the last MSA layer with taps, router-K, pooled K/V, copied to the host; full
  K/V off, the default), and a second, instrumented pass splitting it into ``forward``
  (``Encoder._forward``) and the rest (pooling and host copies);
- ``decoder``: the bare decoder (``model.model``: every layer, no hooks, ``use_cache=False``)
  on the same right-padded ids and mask, inputs already on the device;
- ``lm``: the whole causal LM ``model(input_ids, attention_mask)``, logits of every token;
- ``e2e`` (optional): ``Memory.remember_many`` of ``e2e_docs`` texts at the encoder's best
  batch size, tokenising, store writes and index included.

Tokens/s count real (unpadded) tokens; ratios are encoder over decoder on the same batches.
"""

from __future__ import annotations

import json
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import typer

from msa_agent.bench import gpu_recall as gr

BATCH_TOKENS = (4096, 16384, 65536, 262144)
MAX_DOC_TOKENS = 512
Batch = list[list[int]]


@dataclass
class Options:
    batch_tokens: Sequence[int] = BATCH_TOKENS
    dtypes: Sequence[str] = ("float32",)
    batches: int = 5  # timed batches per size
    warmup: int = 2
    split_batches: int = 3  # instrumented encoder batches (forward / rest)
    pool_docs: int = 4096  # distinct documents, reused across sizes
    e2e_docs: int = 2048  # 0 = no remember_many run
    seed: int = 0
    vocab: int = 20_000
    budget_s: float = 0.0  # 0 = no limit; else skip sizes once past this (per dtype)


# ---------------------------------------------------------------------------- documents
def documents(tokenizer: Any, n: int, seed: int, vocab: int = 20_000
              ) -> tuple[list[str], Batch]:
    """``n`` seeded pseudo-word texts of ~480 tokens and their ids (cut at 512)."""
    gen = gr.TextGen(vocab_size=vocab, seed=seed)
    gen.calibrate(tokenizer)
    texts = [gen.text(r) for r in gen.draw(n)]
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return texts, [list(x[:MAX_DOC_TOKENS]) for x in ids]


def batches_of(pool: Batch, budget: int, count: int) -> list[Batch]:
    """``count`` batches of ``budget // longest`` documents each, cycling through ``pool``."""
    per = max(1, budget // max(len(d) for d in pool))
    return [[pool[(b * per + j) % len(pool)] for j in range(per)] for b in range(count)]


def padded(batch: Batch, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids and mask, as ``Encoder._forward`` builds them, on ``device``."""
    ids = torch.zeros((len(batch), max(len(d) for d in batch)), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, d in enumerate(batch):
        ids[row, : len(d)] = torch.as_tensor(d)
        mask[row, : len(d)] = 1
    return ids.to(device), mask.to(device)


# ---------------------------------------------------------------------------- timing
def timed(fn: Callable[[Any], Any], items: Sequence[Any], warmup: int,
          device: torch.device) -> list[float]:
    """Seconds per call of ``fn`` on ``items[warmup:]`` (the first ``warmup`` untimed)."""
    for x in items[:warmup]:
        fn(x)
    times = []
    for x in items[warmup:]:
        gr.sync(device)
        t0 = time.perf_counter()
        fn(x)
        gr.sync(device)
        times.append(time.perf_counter() - t0)
    return times


def rate(times: Sequence[float], tokens: Sequence[int]) -> dict[str, float]:
    """Tokens/s over the timed calls (``tokens``: each call's real tokens) and the median
    call's."""
    per_call = sorted(n / t for n, t in zip(tokens, times, strict=True))
    return {"tokens_per_s": sum(tokens) / sum(times),
            "median_tokens_per_s": gr.pct(per_call, 50),
            "mean_ms": sum(times) / len(times) * 1e3, "n": len(times)}  # fmt: skip


def encoder_fn(encoder: Any, budget: int) -> Callable[[Batch], Any]:
    """``encoder.encode`` at ``budget`` padded tokens (each batch must make one forward)."""
    def go(batch: Batch) -> Any:
        encoder.batch_tokens = budget
        return encoder.encode(batch)

    return go


def decoder_fn(model: Any, device: torch.device, whole: bool) -> Callable[[Any], Any]:
    """The bare decoder (``whole=False``) or the causal LM with logits, on padded inputs."""
    inner = model.get_decoder() if hasattr(model, "get_decoder") else model.model
    net = model if whole else inner

    @torch.inference_mode()
    def go(inputs: tuple[torch.Tensor, torch.Tensor]) -> Any:
        return net(input_ids=inputs[0], attention_mask=inputs[1], use_cache=False)

    return go


def split_encoder(encoder: Any, batches: Sequence[Batch], budget: int,
                  device: torch.device) -> dict[str, float]:
    """Mean ms per batch in ``Encoder._forward`` and in the rest of ``encode``."""
    probe = gr.Probe(device)
    top = probe.wrap("rest", encoder_fn(encoder, budget))
    with gr.patched([(encoder, "_forward", "forward")], probe):
        for b in batches:
            top(b)
    ms = probe.take()
    return {k: ms.get(k, 0.0) / len(batches) for k in ("forward", "rest")}


# ---------------------------------------------------------------------------- one size
def measure_size(mem: Any, pool: Batch, budget: int, opts: Options,
                 device: torch.device) -> dict[str, Any]:
    eng = mem._engine
    n = opts.warmup + opts.batches
    batches = batches_of(pool, budget, n)
    tokens = [sum(len(d) for d in b) for b in batches][opts.warmup:]  # timed batches'
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    row: dict[str, Any] = {
        "batch_tokens": budget, "docs_per_batch": len(batches[0]),
        "tokens_per_batch": sum(tokens) / len(tokens),
        "padded_per_batch": len(batches[0]) * max(len(d) for d in batches[0]),
    }  # fmt: skip
    row["encoder"] = rate(timed(encoder_fn(eng.encoder, budget), batches, opts.warmup, device),
                          tokens)
    if device.type == "cuda":
        row["encoder_peak_gpu_bytes"] = torch.cuda.max_memory_allocated(device)
    row["encoder_split_ms"] = split_encoder(eng.encoder, batches[:opts.split_batches], budget,
                                            device)
    inputs = [padded(b, device) for b in batches]
    for name, whole in (("decoder", False), ("lm", True)):
        row[name] = backbone(eng.lm.model, inputs, whole, opts.warmup, device, tokens)
    row["encoder_over_decoder"] = (row["encoder"]["tokens_per_s"]
                                   / row["decoder"]["tokens_per_s"])
    return row


def backbone(model: Any, inputs: Sequence[Any], whole: bool, warmup: int,
             device: torch.device, tokens: Sequence[int]) -> dict[str, Any]:
    """Tokens/s of the decoder or the whole LM; ``{"error": ...}`` when it runs out of memory."""
    try:
        return rate(timed(decoder_fn(model, device, whole), inputs, warmup, device), tokens)
    except torch.OutOfMemoryError as exc:
        return {"error": f"out of memory: {str(exc).splitlines()[0]}"}
    finally:
        if device.type == "cuda":
            torch.cuda.empty_cache()


def best_size(rows: Sequence[dict[str, Any]]) -> int:
    return max(rows, key=lambda r: r["encoder"]["tokens_per_s"])["batch_tokens"]


def end_to_end(mem: Any, texts: Sequence[str], budget: int, device: torch.device
               ) -> dict[str, Any]:
    """``Memory.remember_many(texts)`` at ``budget`` tokens a forward (after a small warm-up)."""
    eng = mem._engine
    eng.encoder.batch_tokens = budget
    mem.remember_many([f"warm-up {i}. " + t for i, t in enumerate(texts[:8])])
    corpus = gr.Corpus()
    eng.encoder.encode = gr.counting(eng.encoder.encode, corpus)
    try:
        gr.sync(device)
        t0 = time.perf_counter()
        ids = mem.remember_many(list(texts))
        gr.sync(device)
        seconds = time.perf_counter() - t0
    finally:
        del eng.encoder.encode
    return {"batch_tokens": budget, "texts": len(texts), "memories": len(ids),
            "tokens": corpus.tokens, "seconds": seconds,
            "tokens_per_s": corpus.tokens / seconds}  # fmt: skip


# ---------------------------------------------------------------------------- one dtype
def run_dtype(pair: tuple[Any, Any], device: torch.device, dtype: str, opts: Options,
              work: Path) -> dict[str, Any]:
    """Every batch size on one space of the model ``pair`` (made in ``dtype``)."""
    texts, pool = documents(pair[1], opts.pool_docs, opts.seed, opts.vocab)
    mem = gr.open_memory(pair, device, work, opts.seed, dtype)
    out: dict[str, Any] = {"dtype": dtype, "model": gr.model_facts(mem), "rows": [],
                           "pool_tokens": sum(len(d) for d in pool)}  # fmt: skip
    started = time.perf_counter()
    try:
        for budget in sorted(opts.batch_tokens):
            if opts.budget_s and time.perf_counter() - started > opts.budget_s:
                out["rows"].append({"batch_tokens": budget, "skipped": "time budget"})
                continue
            row = measure_size(mem, pool, budget, opts, device)
            out["rows"].append(row)
            print(line(dtype, row), flush=True)
        done = [r for r in out["rows"] if "encoder" in r]
        if opts.e2e_docs and done:
            out["e2e"] = end_to_end(mem, texts[:opts.e2e_docs], best_size(done), device)
    finally:
        mem.close()
    return out


# ---------------------------------------------------------------------------- report
def tps(part: dict[str, Any]) -> str:
    return part["error"][:20] if "error" in part else f"{part['tokens_per_s']:,.0f}"


def line(dtype: str, row: dict[str, Any]) -> str:
    return (f"{dtype} B={row['batch_tokens']:,}: encoder {tps(row['encoder'])} tok/s, decoder "
            f"{tps(row['decoder'])}, lm {tps(row['lm'])}, ratio "
            f"{row['encoder_over_decoder']:.2f}")


def table(results: Sequence[dict[str, Any]]) -> str:
    """Markdown: per dtype and batch size, tokens/s of encoder, decoder and LM, and the split."""
    head = ("| dtype | batch tokens | docs / batch | encoder tok/s | decoder tok/s | lm tok/s "
            "| encoder / decoder | encoder ms: forward + rest |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for res in results:
        for r in res["rows"]:
            if "skipped" in r:
                lines.append(f"| {res['dtype']} | {r['batch_tokens']:,} | skipped |")
                continue
            s = r["encoder_split_ms"]
            lines.append(
                f"| {res['dtype']} | {r['batch_tokens']:,} | {r['docs_per_batch']} "
                f"| {tps(r['encoder'])} | {tps(r['decoder'])} | {tps(r['lm'])} "
                f"| {r['encoder_over_decoder']:.2f} | {s['forward']:.1f} + {s['rest']:.1f} |")
    return "\n".join(lines)


def e2e_lines(results: Sequence[dict[str, Any]]) -> list[str]:
    return [f"{res['dtype']} remember_many at {e['batch_tokens']:,}: {e['tokens']:,} tokens "
            f"in {e['seconds']:.1f} s = {e['tokens_per_s']:,.0f} tok/s"
            for res in results if (e := res.get("e2e"))]


def run(model_dir: Path, device: torch.device, opts: Options, out: Path,
        commit: str | None = None) -> dict[str, Any]:
    """Every dtype (a fresh random model each, same seed); writes ``out`` after each."""
    gr.ensure_packages()
    data: dict[str, Any] = {
        "what": "encoder (Encoder.encode) tokens/s against the bare decoder and the causal LM "
                "on the same padded batches; random-weight model of the embedded model's "
                "shape; seeded pseudo-word documents",
        "env": gr.environment(device, commit) | {
            "command": "python -m msa_agent.bench.gpu_ingest " + shlex.join(sys.argv[1:])},
        "options": {**vars(opts)}, "results": [],
    }  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    for dtype in opts.dtypes:
        pair = gr.random_model(model_dir, device, opts.seed, dtype)
        work = Path(tempfile.mkdtemp(prefix=f"gpu-ingest-{dtype}-"))
        try:
            data["results"].append(run_dtype(pair, device, dtype, opts, work))
        finally:
            shutil.rmtree(work, ignore_errors=True)
            del pair
            if device.type == "cuda":
                torch.cuda.empty_cache()
        out.write_text(json.dumps(data, indent=1))
    return data


def main(
    out: Path = typer.Option(Path("bench-out/gpu-ingest.json"), help="JSON file to write."),
    batch_tokens: str = typer.Option(",".join(map(str, BATCH_TOKENS)), help="Sizes, commas."),
    dtype: str = typer.Option("float32", help="Backbone dtypes, commas: float32,bfloat16."),
    batches: int = typer.Option(5, help="Timed batches per size."),
    warmup: int = typer.Option(2, help="Untimed batches first."),
    pool_docs: int = typer.Option(4096, help="Distinct documents (reused across sizes)."),
    e2e_docs: int = typer.Option(2048, help="Texts for remember_many at the best size; 0 = no."),
    device: str = typer.Option("auto", help="auto, cuda or cpu."),
    model_dir: Path | None = typer.Option(None, help="config.json + tokenizer (no weights)."),
    budget_s: float = typer.Option(0.0, help="Per dtype: skip sizes once past this."),
    seed: int = typer.Option(0),
    commit: str | None = typer.Option(None, help="Commit to record (the GPU box has no .git)."),
) -> None:
    """Encoder tokens/s against the backbone's forward, per batch size (random-weight model)."""
    dev = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if device == "auto"
                       else device)
    opts = Options(batch_tokens=[int(float(s)) for s in batch_tokens.split(",")],
                   dtypes=dtype.split(","), batches=batches, warmup=warmup,
                   pool_docs=pool_docs, e2e_docs=e2e_docs, seed=seed, budget_s=budget_s)
    data = run(model_dir or gr.default_model_dir(), dev, opts, out, commit)
    print(f"\n{data['env'].get('machine', dev)}; torch {data['env']['torch']}; "
          f"{batches} timed batches after {warmup}; real tokens/s")
    print(table(data["results"]))
    for s in e2e_lines(data["results"]):
        print(s)


if __name__ == "__main__":
    typer.run(main)
