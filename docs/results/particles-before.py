"""A bench with the stop list before 2026-12-02 (verb particles dropped from queries), for
an A/B on the same spaces: ``python docs/results/particles-before.py BENCH ARGS...`` runs
``python -m msa_agent.bench.BENCH ARGS...`` (``tune``, ``answer_hops``). For ``tune``, move a
space's ``pools-*``, ``matched-*`` and ``msa-completed-*`` caches aside first: they hold the
other list's candidates.
"""
import importlib
import sys

import typer

from msa_agent.store import lexical

lexical.STOP_WORDS = lexical.STOP_WORDS | lexical.PARTICLES  # query_terms reads it per call

if __name__ == "__main__":
    bench = sys.argv.pop(1)
    typer.run(importlib.import_module(f"msa_agent.bench.{bench}").main)
