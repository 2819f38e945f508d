"""The shared training loop: reproducible, cached checkpoints with sha256, resume, CRMT stages."""

import json
import logging

import pytest
import torch

from mmrobust_bench.bench.api import train_defense
from mmrobust_bench.bench.checkpoints import load_stage
from mmrobust_bench.defenses import build_defense
from mmrobust_bench.io import sha256_file

SMALL = dict(n_train=256, n_test=64)


def _states_equal(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_training_is_reproducible_and_cached(tmp_path):
    first = train_defense("jt", dataset_options=SMALL, overrides={"epochs": 2}, root=tmp_path / "r1", progress=False)
    second = train_defense("jt", dataset_options=SMALL, overrides={"epochs": 2}, root=tmp_path / "r2", progress=False)
    assert _states_equal(first.model, second.model) and first.sha256 == second.sha256
    cached = train_defense("jt", dataset_options=SMALL, overrides={"epochs": 2}, root=tmp_path / "r1", progress=False)
    assert cached.cached and _states_equal(cached.model, first.model)
    config = json.loads((first.directory / "config.json").read_text())
    assert config["stages"]["final"]["sha256"] == sha256_file(first.directory / "final.safetensors")
    assert config["defense"] == "jt" and config["train_config"]["epochs"] == 2


def test_corrupted_checkpoint_is_not_trusted(tmp_path):
    trained = train_defense("jt", dataset_options=SMALL, overrides={"epochs": 1}, root=tmp_path, progress=False)
    path = trained.directory / "final.safetensors"
    path.write_bytes(path.read_bytes()[:-8] + b"\0" * 8)
    assert load_stage(trained.directory, "final") is None
    again = train_defense("jt", dataset_options=SMALL, overrides={"epochs": 1}, root=tmp_path, progress=False)
    assert not again.cached and again.sha256 == trained.sha256


@pytest.mark.parametrize("defense", ["jt", "pmr", "ogm_ge"])
def test_resume_after_interruption_gives_the_same_model(tmp_path, monkeypatch, caplog, defense):
    """Stateful defenses too: PMR prototypes live in ctx.state, OGM-GE noise follows the saved generator."""
    import mmrobust_bench.bench.train as train_mod

    reference = train_defense(
        defense, dataset_options=SMALL, overrides={"epochs": 3}, root=tmp_path / "ref", progress=False
    )
    calls = {"n": 0}
    original = train_mod.save_resume

    def crash_after_second_epoch(directory, state):
        original(directory, state)
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(train_mod, "save_resume", crash_after_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        train_defense(defense, dataset_options=SMALL, overrides={"epochs": 3}, root=tmp_path / "run", progress=False)
    assert list((tmp_path / "run").rglob("resume.safetensors"))
    saved_epochs = []

    def count(directory, state):
        saved_epochs.append(state["epoch"])
        original(directory, state)

    monkeypatch.setattr(train_mod, "save_resume", count)
    caplog.set_level(logging.INFO, logger=train_mod.__name__)
    resumed = train_defense(
        defense, dataset_options=SMALL, overrides={"epochs": 3}, root=tmp_path / "run", progress=False
    )
    assert saved_epochs == [2]  # only the third epoch ran again, not the whole schedule
    assert f"resuming {defense} from epoch 2" in caplog.text
    assert _states_equal(resumed.model, reference.model)


def test_crmt_step2_changes_only_integration_weights(tmp_path):
    trained = train_defense(
        "crmt_jt", dataset_options=SMALL, overrides={"epochs": 1, "step2_epochs": 3}, root=tmp_path, progress=False
    )
    stage1, _, _ = load_stage(trained.directory, "stage1")
    final = trained.model.state_dict()
    changed = {k for k in final if not torch.equal(final[k].cpu(), stage1[k])}
    assert changed == {"head.integration.v", "head.integration.a"}
    assert set(trained.extra) == {"lipschitz.v", "lipschitz.a"}
    assert all(bool((t > 0).all()) for t in trained.extra.values())


def test_official_lipschitz_mode_is_a_named_option(tmp_path):
    trained = train_defense(
        "crmt_jt",
        dataset_options=SMALL,
        overrides={"epochs": 1, "step2_epochs": 1, "lip_mode": "official"},
        root=tmp_path,
        progress=False,
    )
    assert torch.equal(trained.extra["lipschitz.a"], torch.zeros_like(trained.extra["lipschitz.a"]))


def test_overrides_are_type_checked_and_unknown_keys_listed():
    defense, train_cfg = build_defense("crmt_at", {"rho": "1.5", "epochs": "3", "own_groups": "full"})
    assert defense.config.rho == 1.5 and train_cfg.epochs == 3 and defense.config.own_groups == "full"
    with pytest.raises(ValueError, match=r"unknown setting rhoo.*valid: rho"):
        build_defense("crmt_at", {"rhoo": 1})
    with pytest.raises(ValueError, match="epochs expects int"):
        build_defense("jt", {"epochs": "many"})
    with pytest.raises(ValueError, match="own_groups must be one of"):
        build_defense("crmt_jt", {"own_groups": "weird"})


def test_step2_train_mode_reproduces_reference_bn_drift(tmp_path):
    """With the reference's train-mode step 2, BN running statistics move; in eval mode they do not."""
    options = {"epochs": 1, "step2_epochs": 1}
    frozen = train_defense("crmt_jt", dataset_options=SMALL, overrides=options, root=tmp_path, progress=False)
    drift = train_defense(
        "crmt_jt",
        dataset_options=SMALL,
        overrides={**options, "step2_encoder_mode": "train"},
        root=tmp_path,
        progress=False,
    )
    stage1, _, _ = load_stage(drift.directory, "stage1")
    moved = {k for k, v in drift.model.state_dict().items() if "running_mean" in k and not torch.equal(v, stage1[k])}
    assert moved, "train-mode step 2 should update BN running statistics"
    stage1_frozen, _, _ = load_stage(frozen.directory, "stage1")
    assert all(torch.equal(v, stage1_frozen[k]) for k, v in frozen.model.state_dict().items() if "running" in k)


def test_scientific_notation_overrides():
    _, train_cfg = build_defense("jt", {"lr": "5e-4"})
    assert train_cfg.lr == 5e-4


def test_speed_settings_stay_out_of_old_checkpoint_keys_and_bf16_trains(tmp_path):
    """precision/channels_last/compile joined TrainConfig later: at their defaults they leave the key as it
    was (cached checkpoints stay valid); set, they are part of it. bf16 autocast trains on CPU too."""
    import dataclasses

    from mmrobust_bench.bench.api import train_defense
    from mmrobust_bench.defenses.base import KEY_OMITTED_DEFAULTS, TrainConfig, key_dict

    cfg = TrainConfig()
    assert key_dict(cfg) == {k: v for k, v in dataclasses.asdict(cfg).items() if k not in KEY_OMITTED_DEFAULTS}
    assert key_dict(TrainConfig(precision="bf16"))["precision"] == "bf16"
    with pytest.raises(ValueError, match="precision must be 'fp32' or 'bf16'"):
        TrainConfig(precision="half")
    trained = train_defense(
        "crmt_jt",
        root=tmp_path,
        progress=False,
        dataset_options={"n_train": 128, "n_test": 32},
        overrides={"epochs": 1, "precision": "bf16", "channels_last": True},
    )
    assert trained.key.train_config["precision"] == "bf16"
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in trained.model.parameters())
    conv = next(p for p in trained.model.parameters() if p.dim() == 4)
    assert conv.is_contiguous(memory_format=torch.channels_last)


def test_a_resume_file_of_another_configuration_is_ignored_with_a_warning(tmp_path, monkeypatch, caplog):
    """A resume file whose key differs (another config or suite version) must not be loaded, and says so."""
    import mmrobust_bench.bench.train as train_mod

    monkeypatch.setattr(train_mod, "clear_resume", lambda directory: None)  # keep the last resume file
    done = train_defense("jt", dataset_options=SMALL, overrides={"epochs": 2}, root=tmp_path, progress=False)
    from mmrobust_bench.bench.checkpoints import load_resume, save_resume

    stale = load_resume(done.directory)
    stale["key"] = "another configuration"
    stale["epoch"] = 0  # loading it would skip the second epoch and start from these shifted weights
    stale["model"] = {k: v + 1.0 if v.is_floating_point() else v for k, v in stale["model"].items()}
    save_resume(done.directory, stale)
    for name in ("final.safetensors", "stage1.safetensors"):
        (done.directory / name).unlink(missing_ok=True)
    caplog.set_level(logging.INFO, logger=train_mod.__name__)
    again = train_defense("jt", dataset_options=SMALL, overrides={"epochs": 2}, root=tmp_path, progress=False)
    assert not again.cached
    assert "ignoring" in caplog.text and "training jt from epoch 0" in caplog.text and "resuming" not in caplog.text
    assert _states_equal(again.model, done.model)
