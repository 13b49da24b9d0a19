"""Reading stored K/V against re-reading text, at equal retrieval (issue 14).

    python -m msa_agent.bench.kv_reading --per-split 30 --split val --out kv-reading-val.json

Remembers a quick task's memories (facts, sessions; those of the chosen questions'
namespaces) once per K/V layout, in spaces under ``--work`` that keep per-token K/V in every
layer (``full_kv_layers="all"``): bare documents (the paper's encoding) and the chat frame
(``kv_frame="chat"``, ``msa_agent.runtime.kv_frame``). Routing keys come from the bare
documents in both, so every space recalls the same memories. For each single-hop question
the top 5 are recalled once and read in every variant with the embedded SmolLM2-135M-Instruct
(greedy, 32 new tokens, ``bench.answers``' reader; every variant decoded in one answer
format, ``MemoryConfig.answer_format`` unless ``--answer-format`` says): re-read as text
(``Memory.answer``'s frame), and as stored K/V (bare; chat, parallel; chat, sequential).
Two sparse variants read, per memory, only its matched chunk and one chunk on each side (the window
``read="chunks"`` picks, ``msa_agent.runtime.excerpt``): as text (``read="chunks"``), and
as those tokens' stored K/V (chat, sequential; the rows of the window only). Accuracy = the
normalised gold answer inside the answer. ``--mode full`` runs the full-size task (90
single-hop questions a split instead of 18 for sessions); ``--variant`` (repeatable) reads
only the variants named, and only the spaces they read are made. Diagnostic variants
(``VARIANTS``' comments) read the windows encoded alone, the windows' text in the K/V
layout, every stored row in the windows' layout, and memory keys scaled.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import typer

from msa_agent.bench import metrics
from msa_agent.bench.answers import MAX_NEW_TOKENS, default_reader, pick
from msa_agent.bench.reading import summary
from msa_agent.bench.tasks import build
from msa_agent.bench.tune import remember_items
from msa_agent.config import ANSWER_FORMATS, MemoryConfig

K = 5
SPACES = {"bare": {"kv_frame": "bare"}, "chat": {"kv_frame": "chat"}}
# variant -> (space, kv_positions, window); None = a text read (whole, or its chunks). The
# window: "" the whole memory; "rows" the window's rows of the memory's stored K/V; "alone"
# the window's tokens encoded after the frame's head by themselves (what per-window K/V
# stored at ingest would give); "chunks alone" each of its chunks encoded so, one by one;
# "text" the windows' tokens prefilled as text in the same layout (no K/V read: each window
# then attends to the ones before it, which no stored K/V can).
# "whole" all of the memory's rows, laid out as "rows" lays out windows. The key scale A
# (the "memory keys xA" variants) multiplies the memories' keys (not the head's): the
# reader's logits on memory tokens are then A times sharper, a temperature 1/A on them
# alone, as APE (adaptive parallel encoding) does for contexts encoded apart from each other.
KEY_SCALES = (0.8, 1.25, 1.5)
VARIANTS: dict[str, tuple[str, str, str, float] | None] = {
    "text (re-read)": None,
    "text chunks (read=chunks)": None,
    "full K/V, bare": ("bare", "parallel", "", 1.0),
    "full K/V, chat, parallel": ("chat", "parallel", "", 1.0),
    "full K/V, chat, sequential": ("chat", "sequential", "", 1.0),
    "chunk K/V, chat, sequential": ("chat", "sequential", "rows", 1.0),
    "window K/V encoded alone, chat, sequential": ("chat", "sequential", "alone", 1.0),
    "chunk K/V encoded alone, chat, sequential": ("chat", "sequential", "chunks alone", 1.0),
    "window text, unmarked, as K/V is laid out": ("chat", "sequential", "text", 1.0),
    **{f"full K/V, chat, sequential, memory keys x{a}": ("chat", "sequential", "whole", a)
       for a in KEY_SCALES},
    **{f"chunk K/V, chat, sequential, memory keys x{a}": ("chat", "sequential", "rows", a)
       for a in KEY_SCALES},
    **{f"chunk K/V, chat, sequential, {rule} re-encoded": ("chat", "sequential", "rows", 1.0)
       for rule in ("all", "last", "deviating 0.05", "deviating 0.1", "deviating 0.15",
                    "deviating 0.3")},
    **{f"full K/V, chat, sequential, {rule} re-encoded": ("chat", "sequential", "whole", 1.0)
       for rule in ("deviating 0.15",)},
}
# the "re-encoded" variants' rule (``runtime.kv_blend``): which memory tokens are re-encoded in
# the reader's context after the layout: "all", the "last" memory laid out (the best), or the
# "deviating S" share S whose layer-1 K/V change most in context (CacheBlend's choice)
BLEND = {name: name.rsplit(", ", 1)[1].removesuffix(" re-encoded")
         for name in VARIANTS if name.endswith(" re-encoded")}


def remember(path: Path, lm: Any, items: list[Any], frame: dict[str, Any]) -> None:
    """Remember ``items`` whose namespace the space does not hold yet: a later run with the
    other split adds that split's namespaces (an interrupted ingest is not resumed)."""
    from msa_agent import Memory

    with Memory.open(path, lm, keep_full_kv=True, full_kv_layers="all", **frame) as mem:
        held = set(mem.namespaces())
        remember_items(mem, [m for m in items if m.namespace not in held])


def kv_answer(mem: Any, positions: str, question: str, hits: list[Any], answer_format: str,
              windows: str = "", key_scale: float = 1.0, blend: str = ""
              ) -> tuple[str, int]:
    """Greedy answer reading the hits' stored K/V, as ``Memory.answer(read="full")`` with
    ``kv_positions=positions``, decoded under ``answer_format`` as ``Memory.answer`` does (an
    extractive answer copies from the memories read, or from their windows' text);
    ``windows``: only each hit's chunk window (a chat-framed space), as ``VARIANTS`` says."""
    from msa_agent.runtime.answer import Reader, stop_ids
    from msa_agent.runtime.extract import decoding
    from msa_agent.runtime.generate import greedy

    engine = mem._engine  # noqa: SLF001 - the dev script drives the runtime's own pieces
    if engine.kv_frame is not None:
        engine.kv_frame.positions = positions
    model, tok = engine.lm.model, engine.tokenizer
    with engine.lock:
        if windows == "text":
            from msa_agent.runtime.kv_frame import tail_ids

            memory, start = None, 0
            prompt = [*engine.kv_frame.head, *(i for h, (a, b) in reversed(list(zip(
                hits, (window_rows(engine, h, question) for h in hits))))
                for i in doc_ids(engine, h)[a:b]), *tail_ids(tok, question)]
        elif windows:
            fetched = [(k * key_scale, v) for k, v in window_kv(engine, hits, question, windows)]
            every = list(range(engine.shape.n_layers))
            memory, start, prompt = engine.kv_frame.read(
                model, lambda: engine.encoder.frame_kv(every), tok, question, fetched,
                engine.full_layers)
            if blend:
                reencode_rule(engine, memory, hits, question, windows, blend)
        else:
            r = Reader(engine, question, [h.memory for h in hits], "full")
            memory, start, prompt = r.memory, r.start, r.prompt
    shown = ([engine.excerpt(h, question) for h in hits] if windows not in ("", "whole")
             else [h.memory.text for h in hits])
    how = decoding(tok, answer_format, shown, question)
    out = list(greedy(model, prompt, MAX_NEW_TOKENS, stop_ids(model, tok), memory, start,
                      how.copy))
    return how.fix(tok.decode(out, skip_special_tokens=True)).strip(), len(prompt)


def reencode_rule(engine: Any, memory: Any, hits: list[Any], question: str, how: str,
                  rule: str) -> None:
    """Re-encode the laid-out memory tokens ``rule`` picks (``BLEND``) in context."""
    from msa_agent.runtime.kv_blend import blend, blend_share

    laid = engine.laid_ids([h.memory for h in hits], laid_rows(engine, hits, question, how))
    at = len(engine.kv_frame.head)
    if rule == "last":
        start = at + sum(len(part) for part in laid[:-1])
        blend(engine.lm.model, memory, laid[-1], range(start, start + len(laid[-1])))
    else:
        share = 1.0 if rule == "all" else float(rule.split()[1])
        blend_share(engine.lm.model, memory, laid, at, share)


def laid_rows(engine: Any, hits: list[Any], question: str, how: str) -> list[tuple[int, int]]:
    """Each hit's rows ``[a, b)`` of its stored K/V that a ``how`` read lays out."""
    return [(0, h.memory.n_tokens) if how == "whole" else window_rows(engine, h, question)
            for h in hits]


def window_kv(engine: Any, hits: list[Any], question: str, how: str
              ) -> list[tuple[Any, Any]]:
    """Each hit's window K/V ``(K, V)`` ``[S, F, Hkv, D]``: its rows of the stored K/V
    (``rows``; every row with ``whole``), or its tokens encoded after the frame's head, whole
    (``alone``) or chunk by chunk (``chunks alone``)."""
    import torch

    rows = laid_rows(engine, hits, question, how)
    if how in ("rows", "whole"):
        return [(k[a:b], v[a:b]) for (k, v), (a, b) in zip(
            engine.read_kv("full", [h.memory for h in hits]), rows)]
    step = engine.cfg.chunk_size if how == "chunks alone" else None
    out = []
    for h, (a, b) in zip(hits, rows):
        ids = doc_ids(engine, h)[a:b]
        parts = [encode_alone(engine, ids[s:s + (step or len(ids))])
                 for s in range(0, len(ids), step or len(ids))]
        out.append(tuple(torch.cat([p[x] for p in parts]) for x in (0, 1)))
    return out


def doc_ids(engine: Any, hit: Any) -> list[int]:
    """The token ids of ``hit``'s text, as its stored rows hold them (prefix counted)."""
    from msa_agent.model.text import query_ids

    return query_ids(engine.tokenizer, hit.memory.text, hit.memory.n_tokens)


def encode_alone(engine: Any, ids: list[int]) -> tuple[Any, Any]:
    """``ids`` encoded after the frame's head: their pre-RoPE full-layer K/V ``[S, F, Hkv, D]``."""
    import torch

    enc = engine.encoder
    with torch.inference_mode():
        taps = enc._framed_full([ids])  # noqa: SLF001 - a dev bench's diagnostic
    return tuple(torch.stack([taps[x][i][0, :len(ids)] for i in enc.full_layers], 1).float()
                 .to(engine.lm.device) for x in ("k", "v"))


def window_rows(engine: Any, hit: Any, question: str) -> tuple[int, int]:
    """Token rows ``[a, b)`` of ``hit``'s chunk window (what ``read="chunks"`` reads as
    text, and ``read="kv_chunks"`` as K/V): ``Engine.kv_window``'s."""
    return engine.kv_window(hit, question)[1]


def evaluate(task_name: str, work: Path, per_split: int, split: str,
             answer_format: str | None = None, mode: str = "quick",
             variants: Sequence[str] = tuple(VARIANTS), dtype: str = "float32", k: int = K
             ) -> list[dict[str, Any]]:
    """Every ``variants`` answer of ``split``'s first ``per_split`` single-hop questions of
    the ``mode``-size task; the spaces only those variants read are made (computed in
    ``dtype``, the backbone's, in a folder of their own unless float32)."""
    from msa_agent import Memory
    from msa_agent.runtime.results import Scope

    reader = default_reader(dtype)
    if answer_format is not None:
        reader = replace(reader, answer_format=answer_format)
    task = build(task_name, mode)
    single = [q for q in task.stages[-1].queries if q.hops == 1]
    qs = [q for q in pick(single, per_split) if q.split == split]
    items = [m for m in task.stages[-1].memories if m.namespace in {q.namespace for q in qs}]
    # the K/V layouts the variants read; text reads need only a space to recall from, and
    # every layout recalls the same (routing keys come from the bare document)
    spaces = {v[0] for n in variants if (v := VARIANTS[n]) is not None} or {"bare"}
    base = "bare" if "bare" in spaces else min(spaces)
    root = work / "-".join([task_name, *([mode] if mode != "quick" else []),
                            *([dtype] if dtype != "float32" else [])])
    for name in sorted(spaces):
        remember(root / name, reader.lm, items, SPACES[name])
    mems = {name: Memory.open(root / name, reader.lm) for name in sorted(spaces)}
    out = []
    try:
        for q in qs:
            found = {name: m._engine.recall(q.text, k, Scope(namespace=q.namespace), 1)  # noqa: SLF001
                     for name, m in mems.items()}
            ids = {tuple(h.memory.metadata["key"] for h in hits) for hits in found.values()}
            hits = found[base]
            for name in variants:
                variant = VARIANTS[name]
                if variant is None:
                    notes = ([mems[base]._engine.excerpt(h, q.text) for h in hits]  # noqa: SLF001
                             if "chunks" in name else [h.memory.text for h in hits])
                    prompt = reader.prompt(q.text, notes, [h.memory.created_at for h in hits])
                    text, n_prompt = reader.generate(prompt, notes, q.text), len(prompt)
                else:
                    space, positions, windows, scale = variant
                    text, n_prompt = kv_answer(mems[space], positions, q.text, found[space],
                                               reader.answer_format, windows, scale,
                                               BLEND.get(name, ""))
                out.append({"task": task_name, "variant": name, "qid": q.qid, "kind": q.kind,
                            "answer": text, "gold": q.answer, "prompt_tokens": n_prompt,
                            "same_retrieval": len(ids) == 1,
                            "correct": metrics.answer_hit(text, q.answer or ""),
                            "f1": metrics.token_f1(text, q.answer or "")})
            print(q.qid, {o["variant"]: o["correct"] for o in out[-len(variants):]}, flush=True)
    finally:
        for m in mems.values():
            m.close()
    return out


def main(work: Path = typer.Option(Path("bench-out/kv-reading"), help="Spaces, reused."),
         out: Path = typer.Option(Path("kv-reading-val.json")),
         tasks: list[str] = typer.Option(["facts", "sessions"], "--task"),
         per_split: int = typer.Option(30, help="single-hop questions per split"),
         split: str = typer.Option("val", help="val to choose; test only to report a choice"),
         answer_format: str | None = typer.Option(
             None, help=f"every variant's, one of {', '.join(ANSWER_FORMATS)}; default: "
             "MemoryConfig's"),
         mode: str = typer.Option("quick", help="task size: quick or full"),
         variants: list[str] = typer.Option(list(VARIANTS), "--variant",
                                            help="variants to read (default: all)"),
         dtype: str = typer.Option("float32", help="the backbone's compute dtype"),
         k: int = typer.Option(K, help="memories recalled and read per question"),
         ) -> None:
    if answer_format is not None and answer_format not in ANSWER_FORMATS:
        raise typer.BadParameter(f"--answer-format must be one of {ANSWER_FORMATS}")
    if unknown := [v for v in variants if v not in VARIANTS]:
        raise typer.BadParameter(f"unknown --variant {unknown}; one of {list(VARIANTS)}")
    rows = [r for t in tasks
            for r in evaluate(t, work, per_split, split, answer_format, mode, variants, dtype,
                              k)]
    table = summary(rows)
    fmt = answer_format or MemoryConfig().answer_format
    out.write_text(json.dumps({
        "command": "python -m msa_agent.bench.kv_reading "
                   + "".join(f"--task {t} " for t in tasks)
                   + f"--per-split {per_split} --split {split} --answer-format {fmt} "
                   + f"--mode {mode}" + "".join(f" --variant '{v}'" for v in variants)
                   + (f" --dtype {dtype}" if dtype != "float32" else "")
                   + (f" --k {k}" if k != K else ""),
        "dtype": dtype,
        "split": split, "k": k, "answer_format": fmt, "summary": table,
        "same_retrieval": all(r["same_retrieval"] for r in rows), "answers": rows}, indent=1))
    for r in table:
        print(f"{r['task']:9} {r['kind']:18} {r['variant']:28} n={r['n']:3} "
              f"acc {r['accuracy']:.2f} F1 {r['f1']:.2f} prompt {r['prompt_tokens']:.0f}")


if __name__ == "__main__":
    typer.run(main)
