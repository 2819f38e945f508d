"""The example plugin, installed for real: its defense is found through the entry point and runs."""
import importlib.util
import json
import math
import os
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import pandas as pd
import pytest
import torch
from packaging.version import Version
from torch import nn

from mmrobust_bench.contracts import ModelOutput
from mmrobust_bench.defenses import apply_overrides
from mmrobust_bench.registry import Registry

PLUGIN = Path(__file__).resolve().parents[1] / "examples" / "mmrobust_example_plugin"
DIST = "mmrobust-example-plugin"
GROUP = "mmrobust_bench.defenses"


def _installed_from_this_checkout() -> bool:
    try:
        dist = distribution(DIST)
    except PackageNotFoundError:
        return False
    return json.loads(dist.read_text("direct_url.json") or "{}").get("url") == PLUGIN.as_uri()


def _isolation_flags() -> list[str]:
    """Build offline with the setuptools already here when it can (it needs ``wheel`` before 70.1);
    otherwise let pip fetch the build requirements into an isolated environment."""
    if importlib.util.find_spec("setuptools") is None:
        return []
    import setuptools

    if Version(setuptools.__version__) < Version("70.1") and importlib.util.find_spec("wheel") is None:
        return []
    return ["--no-build-isolation"]


@pytest.fixture(scope="session")
def plugin_installed() -> None:
    if _installed_from_this_checkout():
        return
    if subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True).returncode != 0:
        pytest.skip("pip is not available in this environment, so the example plugin cannot be installed")
    result = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", *_isolation_flags(), "-e",
                             str(PLUGIN)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    return subprocess.run([sys.executable, "-m", "mmrobust_bench.cli", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=300)


class FixedLogits(nn.Module):
    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = logits

    def forward(self, batch):
        return ModelOutput(logits=self.logits)


def test_entry_point_gives_the_defense_with_label_smoothed_loss(plugin_installed, monkeypatch):
    monkeypatch.syspath_prepend(str(PLUGIN))  # an install made by this session is not on sys.path yet
    registry: Registry = Registry("defense", GROUP)
    cls = registry.get("label_smoothing_jt")
    (row,) = [r for r in registry.describe() if r["name"] == "label_smoothing_jt"]
    assert row["provider"].startswith(f"{DIST} (entry point ") and row["status"] == "ok"
    config, rest = apply_overrides(cls.Config(), {"smoothing": "0.2"}, "plugin")
    assert cls.Config().smoothing == 0.1 and config.smoothing == 0.2 and not rest
    # logits (2, 0, 0), label 0, s = 0.2: (1 − s)(log Z − 2) + s·(3 log Z − 2)/3 with Z = e² + 2
    loss = cls(config).loss(FixedLogits(torch.tensor([[2.0, 0.0, 0.0]])), {}, torch.tensor([0]), None)
    log_z = math.log(math.exp(2) + 2)
    assert loss.item() == pytest.approx(0.8 * (log_z - 2) + 0.2 * (3 * log_z - 2) / 3, rel=1e-6)


@pytest.mark.slow
def test_cli_lists_and_runs_the_plugin_defense(plugin_installed, tmp_path):
    listed = cli("list", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    (line,) = [ln for ln in listed.stdout.splitlines() if ln.split()[:1] == ["label_smoothing_jt"]]
    assert DIST in line and "broken" not in line

    run = cli("run", "--defense", "label_smoothing_jt", "--attack", "fgm", "--modality", "a", "--root", str(tmp_path),
              "--set", "epochs=1", "--set", "smoothing=0.2", "--eps", "0.5", "--dataset-set", "n_train=256",
              "--dataset-set", "n_test=64", "--no-progress", cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = pd.read_csv(tmp_path / "results.csv")
    assert list(rows["attack"]) == ["clean", "fgm"] and list(rows["eps"]) == [0.0, 0.5]
    assert set(rows["defense"]) == {"label_smoothing_jt"} and (rows["n"] == 64).all()
    assert rows["accuracy"].between(0, 1).all()
    (config,) = (tmp_path / "checkpoints" / "synthav" / "label_smoothing_jt").glob("*/config.json")
    assert json.loads(config.read_text())["defense_config"] == {"smoothing": 0.2}
