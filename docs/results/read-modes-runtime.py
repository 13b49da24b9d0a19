"""Issue 14, through the runtime's own defaults: ``Memory.answer(read=MODE)`` (k = the
memory's ``answer_k``, newest versions only, extractive answers) for each reading mode, on the
single-hop questions of the full-size task's split that ``bench.kv_reading`` reads, from its
chat-framed space (so every mode recalls the same memories: routing keys come from the bare
documents and the modes differ only in reading).

    python docs/results/read-modes-runtime.py sessions val /tmp/kvf/work OUT.json
"""

import sys
import time
from pathlib import Path

from answer_runs import accuracy, write

from msa_agent import Memory
from msa_agent.bench import metrics
from msa_agent.bench.answers import default_reader, pick
from msa_agent.bench.tasks import build

MODES = ("chunks", "kv_chunks", "full")


def main(task_name: str, split: str, work: Path, out: Path) -> None:
    reader = default_reader()
    task = build(task_name, "full")
    single = [q for q in task.stages[-1].queries if q.hops == 1]
    qs = [q for q in pick(single, 90) if q.split == split]
    rows = []
    with Memory.open(work / f"{task_name}-full" / "chat", reader.lm) as mem:
        for q in qs:
            for mode in MODES:
                started = time.perf_counter()
                ans = mem.answer(q.text, namespace=q.namespace, read=mode)
                rows.append({"qid": q.qid, "kind": q.kind, "read": mode, "answer": ans.text,
                             "gold": q.answer, "correct": metrics.answer_hit(ans.text, q.answer),
                             "read_keys": [h.metadata.get("key") for r in ans.rounds
                                           for h in r.memories],
                             "memory_tokens": ans.memory_tokens,
                             "s": time.perf_counter() - started})
            print(q.qid, {r["read"]: r["correct"] for r in rows[-len(MODES):]}, flush=True)
    summary = {f"{mode} {kind}": accuracy(rows, lambda r, m=mode, k=kind:
                                          r["read"] == m and k in (r["kind"], "all"))
               for mode in MODES for kind in sorted({r["kind"] for r in rows}) + ["all"]}
    write(out, task_name, split, summary, rows)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4]))
