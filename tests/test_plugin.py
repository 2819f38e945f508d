"""The example plugin, installed for real: its defense is found through the entry point and runs."""

import importlib.util
import json
import math
import os
import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path
from urllib.parse import unquote, urlparse

import pandas as pd
import pytest
import torch
from packaging.version import Version
from torch import nn

from mmrobust_bench.contracts import ModelOutput
from mmrobust_bench.defenses import apply_overrides
from mmrobust_bench.registry import Registry

from helpers import SPECS, ReluNet, assert_invariants, make_batch

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


def _installed_location() -> str | None:
    """The checkout folder the plugin is installed (editable) from, or None when it is not installed."""
    try:
        url = json.loads(distribution(DIST).read_text("direct_url.json") or "{}").get("url", "")
    except PackageNotFoundError:
        return None
    return unquote(urlparse(url).path) or None


def _pip_install_editable(folder: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", *_isolation_flags(), "-e", str(folder)],
        capture_output=True,
        text=True,
    )


@pytest.fixture(scope="session")
def plugin_installed() -> Iterator[None]:
    """The plugin installed from this checkout for the session; afterwards the environment gets back what it had
    (a run from another checkout, e.g. a git worktree, must not leave it pointing at a folder that goes away)."""
    if _installed_from_this_checkout():
        yield
        return
    if subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True).returncode != 0:
        pytest.skip("pip is not available in this environment, so the example plugin cannot be installed")
    before = _installed_location()
    result = _pip_install_editable(PLUGIN)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    yield
    if before is not None and Path(before).is_dir():
        _pip_install_editable(Path(before))
    elif before is None:
        subprocess.run([sys.executable, "-m", "pip", "uninstall", "-y", DIST], capture_output=True)


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    return subprocess.run(
        [sys.executable, "-m", "mmrobust_bench.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=300,
    )


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

    run = cli(
        "run",
        "--defense",
        "label_smoothing_jt",
        "--attack",
        "fgm",
        "--modality",
        "a",
        "--root",
        str(tmp_path),
        "--set",
        "epochs=1",
        "--set",
        "smoothing=0.2",
        "--eps",
        "0.5",
        "--dataset-set",
        "n_train=256",
        "--dataset-set",
        "n_test=64",
        "--no-progress",
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    rows = pd.read_csv(tmp_path / "results.csv")
    assert list(rows["attack"]) == ["clean", "fgm"] and list(rows["eps"]) == [0.0, 0.5]
    assert set(rows["defense"]) == {"label_smoothing_jt"} and (rows["n"] == 64).all()
    assert rows["accuracy"].between(0, 1).all()
    (config,) = (tmp_path / "checkpoints" / "synthav" / "label_smoothing_jt").glob("*/config.json")
    assert json.loads(config.read_text())["defense_config"] == {"smoothing": 0.2}


# ------------------------------------------------------------------ the plugin's attack, dataset and encoder


def plugin_entry(kind: str, name: str, monkeypatch):
    """Look ``name`` up in a fresh registry of ``kind``'s entry-point group (as a new process would)."""
    monkeypatch.syspath_prepend(str(PLUGIN))
    registry: Registry = Registry(kind, f"mmrobust_bench.{kind}s")
    (row,) = [r for r in registry.describe() if r["name"] == name]
    assert row["provider"].startswith(f"{DIST} (entry point ") and row["status"] == "ok", row
    return registry.get(name)


@pytest.mark.parametrize("joint", [True, False])
def test_plugin_attack_puts_noise_of_norm_exactly_eps_on_each_ball(plugin_installed, monkeypatch, joint):
    from mmrobust_bench.contracts import ThreatModel, joint_l2_norm

    cls = plugin_entry("attack", "random_l2", monkeypatch)
    model, batch = ReluNet(0).eval(), make_batch(6, 0)
    labels = torch.zeros(6, dtype=torch.long)
    eps = torch.tensor([0.0, 0.1, 0.5, 1.0, 2.0, 3.0])
    # audio is unbounded: its noise keeps norm ε exactly; video's box may shorten it
    threat = ThreatModel(("a",), 1.0)
    adv = cls(SPECS, seed=3)(model, batch, labels, threat, eps)
    assert torch.allclose(joint_l2_norm({"a": adv["a"] - batch["a"]}, ("a",)), eps, atol=1e-5)
    assert torch.equal(adv["v"], batch["v"])
    both = ThreatModel(("v", "a"), 2.0, joint=joint)
    rng = torch.random.get_rng_state()
    adv = cls(SPECS, seed=3)(model, batch, labels, both)
    assert torch.equal(rng, torch.random.get_rng_state())
    if joint:
        assert_invariants(batch, adv, both, 2.0)
    else:  # one ball per modality: video inside its own (box-clamped), audio exactly on it
        delta = {m: adv[m] - batch[m] for m in ("v", "a")}
        assert bool((joint_l2_norm(delta, ("v",)) <= 2.0 + 1e-5).all())
        assert torch.allclose(joint_l2_norm(delta, ("a",)), torch.full((6,), 2.0), atol=1e-5)
        assert_invariants(batch, adv, ThreatModel(("v", "a"), 2.0 * math.sqrt(2)), 2.0 * math.sqrt(2))
    again = cls(SPECS, seed=3)(model, batch, labels, both)
    other = cls(SPECS, seed=4)(model, batch, labels, both)
    assert torch.equal(again["a"], adv["a"]) and not torch.equal(other["a"], adv["a"])
    with pytest.raises(ValueError, match="untargeted"):
        cls(SPECS)(model, batch, labels, threat, targets=labels)


def test_plugin_dataset_is_a_seeded_gaussian_mixture_whose_stronger_cue_is_audio(plugin_installed, monkeypatch):
    build = plugin_entry("dataset", "gaussian_av", monkeypatch)
    from mmrobust_example_plugin import GaussianAVConfig, bayes_predict
    from mmrobust_example_plugin.gaussian_av import class_means

    ds = build(n_train=400, n_test=2000)
    again = build(n_train=400, n_test=2000)
    assert all(torch.equal(ds.test.inputs[m], again.test.inputs[m]) for m in ("v", "a"))
    assert [s.name for s in ds.specs] == ["v", "a"] and all(not s.bounded for s in ds.specs)
    assert ds.encoders == {"v": "example_mlp", "a": "example_mlp"} and len(ds.train) == 400
    means = class_means(GaussianAVConfig(n_train=400, n_test=2000))
    x, y = ds.test.inputs, ds.test.labels
    for m, mu in means.items():  # class means of the data are the generating means (noise N(0, I))
        for k in range(ds.num_classes):
            assert torch.allclose(x[m][y == k].mean(0), mu[k], atol=4 / math.sqrt(int((y == k).sum())))
    accuracy = {
        key: float((bayes_predict({m: x[m] for m in key}, means) == y).float().mean())
        for key in (("v", "a"), ("a",), ("v",))
    }
    assert accuracy[("v", "a")] > accuracy[("a",)] > accuracy[("v",)] > 1 / ds.num_classes
    with pytest.raises(ValueError, match=r"unknown option.*separaton_a.*valid: dim_a"):
        build(separaton_a=1.0)


def test_plugin_encoder_maps_any_shape_to_non_negative_features(plugin_installed, monkeypatch):
    from mmrobust_bench.contracts import ModalitySpec

    factory = plugin_entry("encoder", "example_mlp", monkeypatch)
    encoder = factory(ModalitySpec("x", (2, 3, 4)), 7)
    features = encoder(torch.randn(5, 2, 3, 4))
    assert features.shape == (5, 7) and bool((features >= 0).all())


@pytest.mark.slow
def test_cli_runs_the_plugin_dataset_and_attack_and_jt_nearly_reaches_bayes(plugin_installed, tmp_path, monkeypatch):
    listed = cli("list", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    for name in ("random_l2", "gaussian_av", "example_mlp"):
        (line,) = [ln for ln in listed.stdout.splitlines() if ln.split()[:1] == [name]]
        assert DIST in line and "broken" not in line
    common = (
        "--dataset",
        "gaussian_av",
        "--defense",
        "jt",
        "--modality",
        "a",
        "--eps",
        "1,2",
        "--root",
        str(tmp_path),
        "--no-progress",
    )
    for attack in ("random_l2", "pgd_l2"):
        done = cli("run", "--attack", attack, *common, cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
    rows = pd.read_csv(tmp_path / "results.csv")
    assert set(rows["dataset"]) == {"gaussian_av"} and len(set(rows["checkpoint_sha256"])) == 1
    assert set(rows.loc[rows["attack"] == "random_l2", "library"]) == {DIST}
    acc = rows.drop_duplicates(["attack", "eps"]).set_index(["attack", "eps"])["accuracy"]
    build = plugin_entry("dataset", "gaussian_av", monkeypatch)
    from mmrobust_example_plugin import GaussianAVConfig, bayes_predict
    from mmrobust_example_plugin.gaussian_av import class_means

    test = build().test
    bayes = float((bayes_predict(test.inputs, class_means(GaussianAVConfig())) == test.labels).float().mean())
    assert acc[("clean", 0.0)] >= bayes - 0.05
    for eps in (1.0, 2.0):  # noise of radius ε is a far weaker attack than PGD at ε
        assert acc[("random_l2", eps)] >= acc[("pgd_l2", eps)] + 0.1
