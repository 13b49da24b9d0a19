# H200: a framed K/V read's layout and paging, before (.gpu-old: `git archive 72fcaa1 msa_agent
# store kernels pyproject.toml`) and after (this tree), alternating; then the GPU tests of the
# paths that changed. Carry .whl .gpu-model .gpu-old.
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl 2>/dev/null
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
ln -sfn "$PWD/kernels" msa_agent/kernels; ln -sfn "$PWD/store" msa_agent/store
ln -sfn "$PWD/.gpu-old/kernels" .gpu-old/msa_agent/kernels; ln -sfn "$PWD/.gpu-old/store" .gpu-old/msa_agent/store
echo "| tree | ms per read, median | min | peak MiB over the inputs |"
for r in a b; do
  (cd .gpu-old && PYTHONPATH=$PWD:$PYTHONPATH python3 ../docs/results/kv-layout-pages-h200.py 72fcaa1)
  PYTHONPATH=$PWD:$PYTHONPATH python3 docs/results/kv-layout-pages-h200.py new
done
python3 -m pytest -q -p no:cacheprovider tests/model/test_attention_gpu.py tests/runtime/test_kv_blend.py \
  tests/test_kv_frame.py tests/model/test_attention.py -m "gpu or not gpu" -k "not slow" 2>&1 | tail -3
python3 -m pytest -q -m gpu -p no:cacheprovider tests/test_memory_gpu.py -k "memory_on_cuda" 2>&1 | tail -2
