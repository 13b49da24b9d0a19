"""The tune with the stop list before 2026-12-02 (verb particles dropped from queries), for
an A/B on the same spaces: ``python docs/results/particles-before.py TUNE-ARGS...`` takes
``python -m msa_agent.bench.tune``'s arguments. Move a space's ``pools-*``, ``matched-*``
and ``msa-completed-*`` caches aside first: they hold the other list's candidates.
"""
import typer

from msa_agent.bench.tune import main
from msa_agent.store import lexical

lexical.STOP_WORDS = lexical.STOP_WORDS | lexical.PARTICLES  # query_terms reads it per call

if __name__ == "__main__":
    typer.run(main)
