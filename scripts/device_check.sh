#!/usr/bin/env bash
# The bench's GPU path (CUDA, bf16 autocast) on a lent device machine, where nothing can be
# fetched: the Python packages the device image lacks or has too old travel as wheels in .whl/
# (huggingface_hub 2.4 with httpx2, httpcore2, hf-xet, click, truststore, h11, anyio, idna,
# typing_extensions; transformers 5.24 and regex, since the image's transformers pins
# huggingface_hub < 2; peft 0.21.2; jsonschema with referencing, jsonschema-specifications and
# rpds-py), fetched here with `pip download --no-deps --python-version 3.12 ...`. Runs the bench tests,
# which must then report device=cuda, precision=bf16-autocast; a failure is rerun once with
# warnings not fatal, to tell a library's new warning from a real break. Logs go to $OUT.
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1
OUT="${OUT:-/tmp/out}"
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 - <<'PY' | tee -a "$OUT/gpu.txt"
import huggingface_hub, peft, torch, transformers
print("torch", torch.__version__, "cuda", torch.cuda.is_available(), "bf16", torch.cuda.is_bf16_supported(),
      "peft", peft.__version__, "transformers", transformers.__version__, "huggingface_hub", huggingface_hub.__version__)
PY
tests="tests/test_bench_hub.py tests/test_bench.py"
if ! python3 -m pytest -q $tests 2>&1 | tee "$OUT/pytest.log"; then
    python3 -m pytest -q --lf -W ignore::DeprecationWarning -W ignore::UserWarning $tests 2>&1 \
        | tee "$OUT/pytest-rerun.log"
fi
