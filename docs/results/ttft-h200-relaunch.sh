# H200: the memory attention's host time per layer and time to first token, the code before
# (.gpu-old: `git archive 72fcaa1 msa_agent store kernels pyproject.toml`, its routers a link to
# ../../msa_agent/routers) and after (this tree), in alternating processes. Carry .whl
# .gpu-model .gpu-old. GPU tests of the changed kernel path first.
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl 2>/dev/null
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
ln -sfn "$PWD/kernels" msa_agent/kernels; ln -sfn "$PWD/store" msa_agent/store
ln -sfn "$PWD/.gpu-old/kernels" .gpu-old/msa_agent/kernels; ln -sfn "$PWD/.gpu-old/store" .gpu-old/msa_agent/store
python3 -m pytest -q -m gpu -p no:cacheprovider tests/kernels/test_memory_attention.py \
  tests/model/test_attention_gpu.py 2>&1 | tail -4
python3 -m pytest -q -m gpu -p no:cacheprovider tests/test_memory_gpu.py -k "memory_on_cuda" 2>&1 | tail -2
echo "| tree | path | µs per layer, median | min |"
for r in a b; do
  (cd .gpu-old && PYTHONPATH=$PWD:$PYTHONPATH python3 ../docs/results/attention-host-h200.py 72fcaa1)
  PYTHONPATH=$PWD:$PYTHONPATH python3 docs/results/attention-host-h200.py new
done
M=$PWD/.gpu-model
run() {  # tree tag rep
  (cd $1 && python3 -m msa_agent.bench.ttft --model-dir $M --device cuda --dtype bfloat16 \
    --memories 16 --tokens 1000 --repeats ${REPEATS:-30} --k 16 --full-kv-layers all --modes none,full,kv_chunks \
    --commit $2 --out "$OUT/ttft-h200-relaunch-$2-$3.json" 2>&1 | tail -4 | cut -c1-160)
}
for r in ${ROUNDS:-a b}; do run .gpu-old 72fcaa1 $r; run . new $r; done
