#!/usr/bin/env bash
# One-step set-up on a fresh machine: a virtual environment in .venv with mmrobust-bench and the pinned
# torch / torchvision / torchaudio trio (constraints/pinned.txt). `bash scripts/install.sh` installs what the
# main job needs; `bash scripts/install.sh test` adds the test extras (pytest, hypothesis, Ray, OpenCV).
#
# torchattacks 3.5.1 declares `requests~=2.25.1` and torchvision without importing either; installed
# normally it would downgrade requests behind the user's back. We install it with --no-deps, and
# pyproject.toml declares what it really imports (torch, numpy, scipy, tqdm).
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
  "") EXTRAS="" ;;
  test) EXTRAS="[test]" ;;
  *) echo "install.sh: unknown argument '$1'; use no argument (the main job) or 'test' (the test suite)" >&2; exit 2 ;;
esac
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -c constraints/pinned.txt -e ".${EXTRAS}"
.venv/bin/python -m pip install --quiet --no-deps -c constraints/pinned.txt torchattacks==3.5.1
.venv/bin/python -m pip check || true  # informational: torchattacks' unused pins are reported here
