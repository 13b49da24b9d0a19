"""The test tune with routing queries from the float32 backbone (routing_query_dtype="same"),
for attributing the query copy's effect on test (reported, never used to choose).

    python docs/results/fusion-test-full-query-same.py --tasks facts --tasks sessions --tasks wiki \
        --tasks longmemeval --mode full --work /tmp/tune-same --split test --out OUT.json

(/tmp/tune-same: copies of /tmp/tune/*-full-test without their pools-, matched- and
msa-completed-test.json caches.)"""
import sys
import msa_agent.runtime.engine as engine
engine.query_copy_dtype = lambda setting, lm: None  # "same": the backbone, its adapter hooked on
from msa_agent.bench.tune import main  # noqa: E402
import typer  # noqa: E402
sys.argv = ["tune", *sys.argv[1:]]
typer.run(main)
