"""examples/own_model.py runs as a user would run it (a subprocess, nothing imported from the tests) and
prints the table: both modalities attacked with torchattacks.PGDL2 and ART's FastGradientMethod, and dropped."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "own_model.py"


@pytest.mark.slow
def test_own_model_example_runs_and_prints_the_table(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", MMROBUST_HOME=str(tmp_path))
    out = subprocess.run(
        [sys.executable, str(EXAMPLE), "--quick"], capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env
    )
    assert out.returncode == 0, out.stderr[-4000:]
    rows = re.findall(r"^\| my-av-net \| (.+?) \| (\w+) \| (\S+) \| ([0-9.]+) \| (\d+) \|", out.stdout, re.M)
    table = {(config.split("(")[0], modality, eps): float(acc) for config, modality, eps, acc, _ in rows}
    clean = table[("clean", "none", "0")]
    assert clean > 0.6  # the model learned something in its few seconds of training
    for modality in ("audio", "video"):
        for attack in ("torchattacks:PGDL2", "art:FastGradientMethod"):
            curve = [table[(attack, modality, eps)] for eps in ("0.25", "0.5", "1", "2")]
            assert curve[-1] < clean  # the attacks bite
        assert (("missing", modality, "—")) in table
    assert not list(tmp_path.glob("*.csv"))  # the example writes no files unless asked
