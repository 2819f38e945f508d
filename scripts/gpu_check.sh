#!/usr/bin/env bash
# The GPU machine's one prepared check (issue "GPU speed and scale"): CUDA-marked tests, benchmarks/gpu.py,
# benchmarks/attack_overhead.py on CUDA, and the main job on CUDA. Run from the repo root on a machine with torch 2.11 + CUDA; the GPU image lacks
# torchattacks and ART, so put their wheels in .whl/ first (scripts/gpu_wheels.sh; CONTRIBUTING.md, "GPU checks").
# Writes everything it prints under ${OUT:-benchmarks/results}.
set -uo pipefail
out="${OUT:-benchmarks/results}"
mkdir -p "$out"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}" || exit 1
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" MMROBUST_HOME=/tmp/mmrobust-runs
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu-nvidia-smi.txt"
name=$(python3 -c "import torch; print(torch.cuda.get_device_name().replace(' ', '-'))")
python3 -m pytest -q -m cuda -p no:cacheprovider tests/test_cuda.py tests/test_smoothing.py tests/test_public_api.py 2>&1 | tail -15 | tee "$out/gpu-pytest-cuda-$name.txt"
python3 benchmarks/gpu.py --compile --out "$out/gpu-$name.json" 2>"$out/gpu-bench-stderr-$name.txt" | tail -5
# adapter overhead and the batched R = 10 radius sweep (its <= 2x one radius target is for a GPU)
python3 benchmarks/attack_overhead.py --device cuda --repeats 9 > "$out/attack_overhead-$name.json" \
  2>"$out/attack_overhead-stderr-$name.txt"; tail -c 600 "$out/attack_overhead-$name.json"
{ time python3 -m mmrobust_bench.cli run --defense crmt_at --attack pgd_l2 --modality a --device cuda --no-progress; } \
  2>&1 | tail -20 | tee "$out/gpu-main-job-$name.txt"
