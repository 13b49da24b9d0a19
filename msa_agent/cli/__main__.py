"""``python -m msa_agent.cli``: the same as the ``msa`` script."""

from msa_agent.cli import main

main()
