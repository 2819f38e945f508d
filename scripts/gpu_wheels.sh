#!/usr/bin/env bash
# Before a GPU session's one device call: fetch the wheels the GPU image lacks into .whl/ (git-ignored),
# for Python 3.12 on x86-64. The image already has torch 2.11, pytest, hypothesis, pyyaml, safetensors,
# scipy, scikit-learn, tqdm and pandas; it lacks torchattacks and ART (whose own needs it has).
# Then: device run with carry [".whl"] and command "bash scripts/gpu_check.sh" (OUT is set there).
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
mkdir -p .whl
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform any -d .whl torchattacks==3.5.1 adversarial-robustness-toolbox==1.20.1
ls -l .whl
