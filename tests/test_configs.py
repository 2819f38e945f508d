"""The config objects the CLI, the sweep and the Python API share: one set of settings, one model, one row."""

from __future__ import annotations

import dataclasses

import pytest

from mmrobust_bench.bench.api import run, run_model
from mmrobust_bench.bench.configs import CertifyConfig, EvalConfig, ModelConfig
from mmrobust_bench.bench.sweep_config import parse_certify_block
from mmrobust_bench.certify.honesty import HonestyConfig
from mmrobust_bench.cli import main

SMALL = {"n_train": 160, "n_test": 40}


def test_configs_are_frozen_and_name_their_rows() -> None:
    model = ModelConfig(defense="jt", seed=2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        model.seed = 3  # type: ignore[misc]
    assert model.row_label == "jt" and ModelConfig(defense="jt", label="jt_b").row_label == "jt_b"
    assert EvalConfig().attack == "pgd_l2" and CertifyConfig().method == "empirical"


def test_a_sweep_certify_block_gives_each_method_its_config() -> None:
    spec = parse_certify_block(
        {
            "method": ["empirical", "smoothing"],
            "honesty_steps": 50,
            "honesty_targets": 3,
            "train_samples": 1000,
            "sigma": 0.5,
            "modalities": ["a", "all"],
        },
        [0.0, 0.5],
    )
    smoothing = spec.for_method("smoothing", seed=2)
    assert smoothing.method == "smoothing" and smoothing.smoothing is not None
    assert smoothing.smoothing.seed == 2 and smoothing.smoothing.sigma == 0.5
    assert smoothing.modalities == ("a", "all") and tuple(smoothing.radii or ()) == (0.0, 0.5)
    empirical = spec.for_method("empirical", seed=0, modalities=["v"])
    assert empirical.modalities == ("v",) and empirical.train_samples == 1000
    assert empirical.honesty == HonestyConfig(steps=50, targeted_classes=3)


@pytest.mark.slow
def test_the_cli_the_keyword_api_and_the_config_api_measure_one_run(tmp_path, capsys) -> None:
    """The CLI measures; the keyword API and run_model with the same settings find its rows stored (the same
    checkpoint, attack configuration and cells), so they evaluate nothing and return them."""
    args = [
        "run",
        "--defense",
        "jt",
        "--attack",
        "pgd_l2",
        "--modality",
        "a",
        "--eps",
        "0.5",
        "--set",
        "epochs=1",
        "--root",
        str(tmp_path),
        "--no-progress",
        "--threads",
        "1",
    ]
    args += [a for k, v in SMALL.items() for a in ("--dataset-set", f"{k}={v}")]
    assert main(args) == 0
    keyword = run(
        defense="jt",
        attack="pgd_l2",
        modality="a",
        eps=[0.5],
        overrides={"epochs": 1},
        dataset_options=SMALL,
        root=tmp_path,
        progress=False,
    )
    configured = run_model(
        ModelConfig(defense="jt", overrides={"epochs": 1}, dataset_options=SMALL),
        EvalConfig(attack="pgd_l2", modality="a", eps=[0.5]),
        root=tmp_path,
        progress=False,
    )
    assert keyword.reused and configured.reused
    assert keyword.rows["accuracy"].tolist() == configured.rows["accuracy"].tolist()
    assert keyword.trained.sha256 == configured.trained.sha256
