# H200 A/B of the fusion reads: .gpu-old holds `git archive 2df383f msa_agent store kernels pyproject.toml` (its routers a link to ../../msa_agent/routers); carry .whl .gpu-model .gpu-old and this script (as .gpu-fr.sh); ROUNDS="a b", then "c d".
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl 2>/dev/null
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
ln -sfn "$PWD/kernels" msa_agent/kernels; ln -sfn "$PWD/store" msa_agent/store
ln -sfn "$PWD/.gpu-old/kernels" .gpu-old/msa_agent/kernels; ln -sfn "$PWD/.gpu-old/store" .gpu-old/msa_agent/store
M=$PWD/.gpu-model
run() {  # tree tag rep
  (cd $1 && python3 -m msa_agent.bench.ttft --model-dir $M --device cuda --dtype bfloat16 \
    --memories 16 --tokens 1000 --repeats ${REPEATS:-30} --k 16 --full-kv-layers all --modes none,full,kv_chunks \
    --commit $2 --out "$OUT/ttft-h200-fusion-reads-$2-$3.json" 2>&1 | tail -5 | cut -c1-160)
}
for r in ${ROUNDS:-a b c}; do run .gpu-old 2df383f $r; run . new $r; done
