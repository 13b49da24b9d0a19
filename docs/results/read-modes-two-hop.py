"""Issue 14, two-hop questions through ``Memory.answer``'s defaults (k = ``answer_k``,
newest versions only, extractive answers) read as text chunks and as their stored K/V, on a
chat-framed space with K/V in every layer: the layout on which ``read="auto"`` picks
``kv_chunks``. ``hops="auto"`` (and, for sessions, one round too); the same questions and
memories for both reads.

    python docs/results/read-modes-two-hop.py sessions val WORK OUT.json
"""

import sys
import time
from pathlib import Path

from answer_runs import accuracy, write

from msa_agent import Memory
from msa_agent.bench import metrics
from msa_agent.bench.answers import default_reader, pick
from msa_agent.bench.kv_reading import remember
from msa_agent.bench.tasks import build

MODES = ("chunks", "kv_chunks")


def main(task_name: str, split: str, work: Path, out: Path) -> None:
    reader = default_reader()
    task = build(task_name, "full")
    two = [q for q in task.stages[-1].queries if q.hops == 2]
    qs = [q for q in pick(two, 30) if q.split == split]
    items = [m for m in task.stages[-1].memories if m.namespace in {q.namespace for q in qs}]
    path = work / f"{task_name}-full" / "chat-all"
    remember(path, reader.lm, items, {"kv_frame": "chat"})  # full_kv_layers="all"
    hops_settings = ("auto", 1) if task_name == "sessions" else ("auto",)
    rows = []
    with Memory.open(path, reader.lm) as mem:
        assert mem._engine.kv_reads_like_text  # noqa: SLF001 - what auto reads as K/V
        for q in qs:
            for hops in hops_settings:
                for mode in MODES:
                    started = time.perf_counter()
                    ans = mem.answer(q.text, namespace=q.namespace, read=mode, hops=hops)
                    rows.append({"qid": q.qid, "kind": q.kind, "read": mode, "hops": hops,
                                 "answer": ans.text, "gold": q.answer,
                                 "correct": metrics.answer_hit(ans.text, q.answer),
                                 "read_keys": [h.metadata.get("key") for r in ans.rounds
                                               for h in r.memories],
                                 "s": time.perf_counter() - started})
            print(q.qid, [(r["hops"], r["read"], r["correct"]) for r in rows[-len(MODES)
                                                                              * len(hops_settings):]],
                  flush=True)
    summary = {f"{mode} hops={hops}": accuracy(rows, lambda r, m=mode, h=hops:
                                               r["read"] == m and r["hops"] == h)
               for hops in hops_settings for mode in MODES}
    write(out, task_name, split, summary, rows)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4]))
