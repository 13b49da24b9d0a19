"""The suite's LongMemEval task at three times its full size (15 questions of each kind per
split instead of 5; the test split has 13 preference questions), every system on the same
memories and questions: a less noisy reading of the cells where 30 questions decide by one.

    python docs/results/bench-lme-15.py docs/results/bench-lme-15.json /tmp/lme15
"""
import sys
from pathlib import Path

from msa_agent.bench import suite

out, work = Path(sys.argv[1]), Path(sys.argv[2])
cfg = suite.RunConfig(tasks=["longmemeval"], mode="full", workdir=work,
                      overrides={"longmemeval": {"per_kind": 15}})
doc = suite.run(cfg)
doc["command"] = "python docs/results/bench-lme-15.py " + " ".join(sys.argv[1:])
suite.write(doc, out)
