#!/usr/bin/env bash
# One-step set-up on a fresh machine: a virtual environment in .venv with mmrobust-bench, its test
# extras, and the pinned torch / torchvision / torchaudio trio (constraints/pinned.txt).
#
# torchattacks 3.5.1 declares `requests~=2.25.1` and torchvision without importing either; installed
# normally it would downgrade requests behind the user's back. We install it with --no-deps, and
# pyproject.toml declares what it really imports (torch, numpy, scipy, tqdm).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -c constraints/pinned.txt -e '.[test]'
.venv/bin/python -m pip install --quiet --no-deps -c constraints/pinned.txt torchattacks==3.5.1
.venv/bin/python -m pip check || true  # informational: torchattacks' unused pins are reported here
