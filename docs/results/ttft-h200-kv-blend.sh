# H200 time to first token of K/V reads with kv_blend (share of memory tokens re-encoded in
# context) 0, 0.15 and 1, at k = 2 and 16, every layer's K/V, bfloat16, random model-shaped
# weights. Carry .whl and .gpu-model (config and tokenizer only). Alternating processes.
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl 2>/dev/null
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
ln -sfn "$PWD/kernels" msa_agent/kernels; ln -sfn "$PWD/store" msa_agent/store
for r in ${ROUNDS:-a}; do
  for k in ${KS:-2 16}; do
    for b in ${BLENDS:-0 0.15 1}; do
      python3 -m msa_agent.bench.ttft --model-dir .gpu-model --device cuda --dtype bfloat16 \
        --memories 16 --tokens 1000 --repeats ${REPEATS:-20} --k $k --full-kv-layers all \
        --modes none,chunks,kv_chunks --kv-blend $b --commit ${COMMIT:-new} \
        --out "$OUT/ttft-h200-kv-blend-k$k-b$b-$r.json" 2>&1 | tail -7 | cut -c1-160
    done
  done
done
