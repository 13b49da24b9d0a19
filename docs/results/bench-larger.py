"""One suite task at a larger size than ``--full``, every system on the same memories and
questions: a less noisy reading of the cells that 15 to 30 questions decide.

    python docs/results/bench-larger.py OUT.json WORK TASK NAME=INT [NAME=INT ...]
    e.g. python docs/results/bench-larger.py docs/results/bench-sessions-90.json \
        /tmp/sessions90 sessions n_users=90
"""
import sys
from pathlib import Path

from msa_agent.bench import suite

out, work, task = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
sizes = {k: int(v) for k, v in (a.split("=") for a in sys.argv[4:])}
cfg = suite.RunConfig(tasks=[task], mode="full", workdir=work, overrides={task: sizes})
doc = suite.run(cfg)
doc["command"] = "python docs/results/bench-larger.py " + " ".join(sys.argv[1:])
suite.write(doc, out)
