# H200: the GPU tests of the Memory path, the summary channel's packed question forward
# among them (float32 and bfloat16, both packed: the tiny model has no router, so no
# merged copy). Carry .whl (cp312 wheels: zarr, numcodecs, donfig, google-crc32c, msgspec,
# sqlalchemy, pydantic, pydantic-core, annotated-types, typing-inspection, hypothesis,
# sortedcontainers, gguf, safetensors, rich, markdown-it-py, mdurl, pygments).
# 2026-12-03: 7 passed in 42 s.
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl 2>/dev/null
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
ln -sfn "$PWD/kernels" msa_agent/kernels; ln -sfn "$PWD/store" msa_agent/store
nvidia-smi --query-gpu=name --format=csv,noheader
python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_memory_gpu.py 2>&1 | tail -15
