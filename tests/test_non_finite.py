"""Non-finite values never become numbers: a diverged training stops without a checkpoint, a NaN checkpoint or
dataset is refused, NaN or inf logits are flagged ``non_finite`` (never read as class 0) and never certified,
and a declared box must be finite."""

from __future__ import annotations

import json
import logging
import math
import wave
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import mmrobust_bench as mmr
from mmrobust_bench.attacks import Attack, build_attack
from mmrobust_bench.bench import flags as F
from mmrobust_bench.bench.checkpoints import (
    RESUME_FILE,
    CheckpointKey,
    load_resume,
    load_stage,
    save_resume,
    save_stage,
)
from mmrobust_bench.bench.evaluate import clean_accuracy, minimal_norm_curve, robust_accuracy
from mmrobust_bench.bench.train import check_finite_epoch
from mmrobust_bench.certify.radii import certify, radius_from
from mmrobust_bench.certify.smoothing import SmoothingConfig, smooth_certify
from mmrobust_bench.cli import main
from mmrobust_bench.contracts import ModalitySpec, ThreatModel
from mmrobust_bench.data import avdigits
from mmrobust_bench.data.avdigits import AVDigitsConfig, load_tables
from mmrobust_bench.data.base import InMemoryDataset, TensorSplit
from mmrobust_bench.defenses import TrainConfig
from mmrobust_bench.io import sha256_file

from helpers import flat_specs, linear_model

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

K = 3
CPU = torch.device("cpu")
DA, DV = 6, 4
N = 12
LIMIT = 2.0  # Breaker's logits are NaN where any input's magnitude exceeds this


def inputs(n: int = N, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inputs in [0.3, 0.7] (far inside LIMIT) and labels."""
    gen = torch.Generator().manual_seed(seed)
    return (
        0.3 + 0.4 * torch.rand(n, DA, generator=gen),
        0.3 + 0.4 * torch.rand(n, DV, generator=gen),
        torch.randint(0, K, (n,), generator=gen),
    )


class Linear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(1)
        self.fc = nn.Linear(DA + DV, K)
        with torch.no_grad():
            self.fc.weight.copy_(torch.randn(K, DA + DV, generator=gen))
            self.fc.bias.zero_()

    def forward(self, audio, video):
        return self.fc(torch.cat([audio, video], 1))


class AllNaN(Linear):
    """A diverged model: every logit NaN."""

    def forward(self, audio, video):
        return super().forward(audio, video) * math.nan


class Breaker(Linear):
    """Finite on the data, NaN where an input leaves [-LIMIT, LIMIT] (a model that breaks down, not one fooled)."""

    def forward(self, audio, video):
        logits = super().forward(audio, video)
        far = (torch.cat([audio, video], 1).abs() > LIMIT).any(1, keepdim=True)
        return torch.where(far, torch.full_like(logits, math.nan), logits)


def wrapped(model: nn.Module):
    return mmr.wrap(model, {"audio": mmr.Modality((DA,)), "video": mmr.Modality((DV,), box=(0, 1))})


def loader(n: int = N, seed: int = 0) -> DataLoader:
    return DataLoader(TensorDataset(*inputs(n, seed)), batch_size=8)


# ----------------------------------------------------------------------------- training and checkpoints


@pytest.mark.slow
def test_diverging_training_is_one_line_error_and_writes_no_checkpoint(tmp_path, capsys):
    rc = main(
        [
            "run",
            "--defense",
            "jt",
            "--eps",
            "0.5",
            "--no-progress",
            "--threads",
            "1",
            "--root",
            str(tmp_path),
            "--set",
            "epochs=1",
            "--set",
            "lr=1e30",
            "--dataset-set",
            "n_train=300",
            "--dataset-set",
            "n_test=60",
        ]
    )
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("mmrobust-bench: error:")]
    assert rc == 2 and len(errors) == 1 and "Traceback" not in err, err
    assert (
        "training jt diverged: the loss is NaN or inf at epoch 1 of 1, step 2" in errors[0]
        and "lower the learning rate (lr is 1e+30; --set lr=...)" in errors[0]
        and "no checkpoint was written" in errors[0]
    ), errors[0]
    assert list((tmp_path / "checkpoints").rglob("*.safetensors")) == []
    assert list((tmp_path / "checkpoints").rglob("config.json")) == []
    assert not (tmp_path / "results.csv").exists()


def test_epoch_check_names_the_first_bad_step_then_non_finite_weights():
    cfg = TrainConfig(epochs=3, lr=0.5)
    model = nn.Linear(2, 2)
    ok, bad = torch.tensor(True), torch.tensor(False)
    check_finite_epoch(model, [(0, ok), (1, ok)], 0, cfg, "jt")  # nothing wrong: no error
    with pytest.raises(
        ValueError,
        match=r"^training jt diverged: the loss is NaN or inf at epoch 2 of 3, step 4 "
        r"\(2 such steps in the epoch\); lower the learning rate \(lr is 0\.5; ",
    ):
        check_finite_epoch(model, [(0, ok), (3, bad), (5, bad)], 1, cfg, "jt")
    with torch.no_grad():
        model.bias[1] = math.inf
    with pytest.raises(
        ValueError,
        match=r"^training jt diverged: after epoch 3 of 3 the weights hold NaN or inf "
        r"\(bias\); ",
    ):
        check_finite_epoch(model, [(0, ok)], 2, cfg, "jt")


def key() -> CheckpointKey:
    return CheckpointKey("synthav", {"n": 1}, "jt", {}, {"epochs": 1}, 0)


def test_a_nan_model_is_never_saved(tmp_path):
    model = nn.Linear(3, 2)
    with torch.no_grad():
        model.weight[0, 1] = math.nan
    with pytest.raises(
        ValueError,
        match=r"^training jt \(seed 0\) diverged: its final stage holds NaN or inf in "
        r"model\.weight; lower the learning rate",
    ):
        save_stage(tmp_path, "final", model, {}, key())
    with pytest.raises(ValueError, match=r"holds NaN or inf in extra\.lipschitz\.a"):
        save_stage(tmp_path, "final", nn.Linear(3, 2), {"lipschitz.a": torch.tensor([1.0, math.nan])}, key())
    assert list(tmp_path.iterdir()) == []


def test_a_nan_checkpoint_on_disk_is_refused_and_retrained(tmp_path, caplog):
    """A stage file whose sha256 is on record (so not a bit flip) but that holds NaN, as an older version wrote it."""
    save_stage(tmp_path, "final", nn.Linear(3, 2), {}, key())
    assert load_stage(tmp_path, "final", key()) is not None
    path = tmp_path / "final.safetensors"
    with safe_open(str(path), framework="pt") as fh:
        metadata = fh.metadata()
    tensors = load_file(str(path))
    tensors["model.bias"][1] = math.nan
    save_file(tensors, str(path), metadata=metadata)
    config = json.loads((tmp_path / "config.json").read_text())
    config["stages"]["final"]["sha256"] = sha256_file(path)
    (tmp_path / "config.json").write_text(json.dumps(config))
    with caplog.at_level(logging.WARNING):
        assert load_stage(tmp_path, "final", key()) is None
    assert f"not reusing {path}: it holds NaN or inf in model.bias (a diverged model); retraining" in caplog.text


def test_a_resume_file_with_a_nan_model_is_ignored(tmp_path, caplog):
    model = nn.Linear(2, 2)
    with torch.no_grad():
        model.weight[1, 1] = -math.inf
    save_resume(tmp_path, {"key": "k", "epoch": 0, "model": model.state_dict()})
    with caplog.at_level(logging.WARNING):
        assert load_resume(tmp_path, "k") is None
    assert (
        f"ignoring {tmp_path / RESUME_FILE}: cannot read it (ValueError: its model holds NaN or inf in weight"
        in caplog.text
    )


# ----------------------------------------------------------------------------- evaluation: the non_finite flag


def test_clean_accuracy_does_not_read_nan_logits_as_class_0():
    model = linear_model({"v": 3, "a": 2}, K)
    with torch.no_grad():
        model.head.fc.weight.fill_(math.nan)
    split = TensorSplit({"v": torch.randn(5, 3), "a": torch.randn(5, 2)}, torch.zeros(5, dtype=torch.long))
    clean = clean_accuracy(model, split, 2, torch.device("cpu"))  # argmax of NaN is 0: the old count was 5 of 5
    assert (clean.correct, clean.n, clean.non_finite) == (0, 5, 5)
    assert F.clean_row_flags(clean) == F.NON_FINITE and F.NON_FINITE in F.FLAG_NAMES


def test_a_nan_model_gets_the_non_finite_flag_on_every_row_and_nothing_else():
    frame = mmr.evaluate(wrapped(AllNaN()), loader(), attack="pgd_l2", modality="audio", eps=[0.25, 1.0])
    assert frame["attack"].tolist() == ["clean", "pgd_l2", "pgd_l2"]
    assert frame["flags"].tolist() == ["non_finite"] * 3
    assert frame["accuracy"].tolist() == [0.0, 0.0, 0.0]
    flags = F.check_attack(
        wrapped(AllNaN()),
        TensorSplit({"audio": inputs()[0], "video": inputs()[1]}, inputs()[2]),
        build_attack("pgd_l2", wrapped(AllNaN()).specs),
        ThreatModel(("audio",), 1.0),
        [1.0],
        [],
        torch.device("cpu"),
    )
    assert [(f.name, f.eps) for f in flags] == [(F.NON_FINITE, None)]
    assert flags[0].detail.startswith(f"the model's logits are NaN or inf on {N} of {N} clean samples")


def test_nan_logits_under_attack_flag_that_row_only():
    """FGM moves the audio by exactly ε in ℓ2: at ε = 0.5 no coordinate can leave [-2, 2] (finite logits); at
    ε = 20 one coordinate moves by at least 20/√6 > 2 + 0.7, so every attacked sample's logits are NaN."""
    frame = mmr.evaluate(wrapped(Breaker()), loader(), attack="fgm", modality="audio", eps=[0.5, 20.0])
    assert frame["flags"].tolist() == ["", "", "non_finite"]
    assert frame["accuracy"].iloc[2] == 0.0  # NaN counts as wrong, never as class 0


class BreaksLate(Linear):
    """NaN on a moved audio (a coordinate outside [0.3, 0.7], where the data lie) of a sample whose first video
    coordinate is marked (> 0.65): :func:`late_breakers` marks only samples past the first 64."""

    def forward(self, audio, video):
        logits = super().forward(audio, video)
        moved = ((audio < 0.3 - 1e-6) | (audio > 0.7 + 1e-6)).any(1, keepdim=True)
        marked = video[:, :1] > 0.65
        return torch.where(moved & marked, torch.full_like(logits, math.nan), logits)


def late_breakers(n: int = 80, late: int = 64) -> DataLoader:
    audio, video, labels = inputs(n)
    video[:, 0] = 0.31
    video[late:, 0] = 0.69
    return DataLoader(TensorDataset(audio, video, labels), batch_size=16)


def test_nan_logits_under_attack_are_counted_on_every_attacked_sample_and_every_eps():
    """FGM at ε ≥ 1 moves some audio coordinate by at least ε/√6 > 0.4, out of [0.3, 0.7] for sure: the 16 marked
    samples (all past the first 64, where the other checks look) break down there, and each such row, not only
    the largest ε's, says so."""
    frame = mmr.evaluate(wrapped(BreaksLate()), late_breakers(), attack="fgm", modality="audio", eps=[1.0, 2.0])
    assert frame["flags"].tolist() == ["", "non_finite", "non_finite"]
    measured = robust_accuracy(
        wrapped(BreaksLate()),
        [({"audio": a, "video": v}, y) for a, v, y in late_breakers()],
        build_attack("fgm", wrapped(BreaksLate()).specs),
        ThreatModel(("audio",), 1.0),
        [1.0],
        0,
        torch.device("cpu"),
    )
    assert measured[0].non_finite == 16


class Push(Attack):
    """A minimal-norm attack that moves every sample's audio by 1.5 along its first coordinate: a known norm."""

    name = "push"
    minimal_norm = True

    def perturb(self, model, batch, labels, threat, eps, *, targets=None):
        audio = batch["audio"].clone()
        audio[:, 0] += 1.5
        return {"audio": audio}


def test_a_minimal_norm_curve_counts_nan_logits_on_clean_correct_samples_inside_each_eps():
    """Push moves every sample by exactly 1.5; BreaksLate's logits are NaN on the 16 marked samples it moves. From
    ε = 1.5 on, each marked sample the model classified correctly counts as broken down (never one already wrong),
    and below 1.5 none does."""
    model = wrapped(BreaksLate())
    audio, video, labels = next(iter(DataLoader(late_breakers().dataset, batch_size=80)))
    split = TensorSplit({"audio": audio, "video": video}, labels)
    with torch.no_grad():
        correct = model({"audio": audio, "video": video}).logits.argmax(1) == labels
    expected = int(correct[64:].sum())
    assert expected > 0 and int((~correct[64:]).sum()) > 0  # marked samples both right and wrong: the guard shows
    curve = minimal_norm_curve(model, split, Push(model.specs), ThreatModel(("audio",), 1.0), [1.0, 2.0], 80, CPU)
    assert [m.non_finite for m in curve.measurements] == [0, expected]


def test_randomness_is_not_raised_by_nan_equal_nan():
    model = wrapped(AllNaN())
    a, v, y = inputs()
    attack = build_attack("pgd_l2", model.specs)
    assert F.randomness(model, {"audio": a, "video": v}, y, attack, ThreatModel(("audio",), 0.5)) == []


# ----------------------------------------------------------------------------- certification refuses


def test_smooth_certify_refuses_a_nan_model():
    """Refused on the first group of samples certified together (batch 40 / n0 10 = 4 samples)."""
    with pytest.raises(
        ValueError,
        match=r"^smoothing: the model's logits are NaN or inf on noisy copies \(σ = 0\.25\) "
        r"of 4 samples, so it cannot be certified",
    ):
        mmr.smooth_certify(wrapped(AllNaN()), loader(), sigma=0.25, n0=10, n=20, batch=40, n_attack=2)


def test_smooth_certify_refuses_nan_on_the_noisy_copies():
    """Finite at every clean sample, NaN on noisy copies that leave [-2, 2] (σ = 5 makes them common)."""
    a, v, y = inputs()
    with pytest.raises(ValueError, match=r"^smoothing: the model's logits are NaN or inf on noisy copies \(σ = 5\)"):
        smooth_certify(
            wrapped(Breaker()),
            {"audio": a, "video": v},
            y,
            ("audio",),
            SmoothingConfig(sigma=5.0, n0=10, n=20, batch=40),
        )
    cert = smooth_certify(
        wrapped(Breaker()), {"audio": a, "video": v}, y, ("audio",), SmoothingConfig(sigma=0.1, n0=10, n=20, batch=40)
    )  # σ = 0.1 stays inside: certified
    assert cert.n == N


def test_radius_certificates_refuse_nan_logits_and_constants():
    y = torch.tensor([0, 1])
    margins = torch.tensor([[0.0, 1.0, 2.0], [math.nan, 0.0, 1.0]])
    den = torch.ones(K, K)
    with pytest.raises(ValueError, match=r"^certify: the model's logits are NaN or inf on 1 of 2 certified samples"):
        radius_from(margins, y, den, torch.tensor([1, 2]))
    den[0, 2] = math.nan  # a NaN constant fails d > 0 and used to claim an infinite radius
    with pytest.raises(ValueError, match=r"^certify: the Lipschitz constants .* hold NaN or inf"):
        radius_from(margins.nan_to_num(0.0), y, den, torch.tensor([1, 2]))
    dims = {"v": 3, "a": 2}
    model = linear_model(dims, K)
    with torch.no_grad():
        model.head.fc.bias[2] = math.inf
    split = TensorSplit({"v": torch.randn(6, 3), "a": torch.randn(6, 2)}, torch.arange(6) % K)
    with pytest.raises(ValueError, match=r"^certify: the model's logits are NaN or inf on 6 of 6 certified samples"):
        certify(model, split, split, flat_specs(dims), honesty_steps=0)


# ----------------------------------------------------------------------------- data


def write_wav(path: Path, samples: np.ndarray) -> None:
    with wave.open(str(path), "wb") as fh:
        fh.setnchannels(1)
        fh.setsampwidth(2)
        fh.setframerate(8000)
        fh.writeframes(samples.astype("<i2").tobytes())


def recordings(root: Path, silent: set[str]) -> Path:
    """Digits 0-9 of one speaker, indices 0-5 (0-4 test, 5 train): tones, or zeros for the names in ``silent``."""
    root.mkdir()
    t = np.arange(1600) / 8000
    for digit in range(10):
        for index in range(6):
            name = f"{digit}_alice_{index}.wav"
            tone = 8000 * np.sin(2 * np.pi * (300 + 150 * digit + 7 * index) * t)
            write_wav(root / name, np.zeros(1600) if name in silent else tone)
    return root


def test_all_silent_training_recordings_are_an_error_naming_them(tmp_path):
    root = recordings(tmp_path / "recordings", {f"{d}_alice_{i}.wav" for d in range(10) for i in range(6)})
    with pytest.raises(
        ValueError,
        match=r"^avdigits: the log-mel frames of the 10 training recordings have no spread "
        r"\(σ = 0\), so they cannot be normalised: 10 of them are silent \(e\.g\. "
        r"0_alice_5\.wav, 1_alice_5\.wav, 2_alice_5\.wav\); pass FSDD's own",
    ):
        load_tables(AVDigitsConfig(data_root=str(root)), tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


def test_one_silent_recording_is_named_and_its_features_stay_finite(tmp_path, caplog):
    root = recordings(tmp_path / "recordings", {"3_alice_5.wav"})
    with caplog.at_level(logging.WARNING):
        tables = load_tables(AVDigitsConfig(data_root=str(root)), tmp_path / "cache")
    assert (
        "avdigits: 1 recordings are silent (every sample equal), their features a constant: 3_alice_5.wav"
        in caplog.text
    )
    assert bool(torch.isfinite(tables.audio).all())


def test_a_cache_with_nan_features_is_rebuilt(tmp_path, caplog):
    root = recordings(tmp_path / "recordings", set())
    cfg = AVDigitsConfig(data_root=str(root))
    tables = load_tables(cfg, tmp_path / "cache")
    (path,) = (tmp_path / "cache").glob("avdigits-*.safetensors")
    tables.audio[0, 0, 0, 0] = math.nan
    avdigits.write_cache(path, tables)
    with caplog.at_level(logging.WARNING):
        assert avdigits.read_cache(path, tables.key) is None
    assert f"avdigits cache {path} is not used: it holds NaN or inf features; rebuilding it" in caplog.text


def test_a_dataset_with_nan_inputs_is_refused_naming_split_modality_and_samples():
    good = TensorSplit({"v": torch.zeros(4, 3), "a": torch.zeros(4, 2)}, torch.zeros(4, dtype=torch.long))
    bad_a = torch.zeros(4, 2)
    bad_a[2, 1] = math.nan
    bad = TensorSplit({"v": torch.zeros(4, 3), "a": bad_a}, torch.zeros(4, dtype=torch.long))
    specs = flat_specs({"v": 3, "a": 2})
    InMemoryDataset("tiny", specs, 2, good, good)
    with pytest.raises(
        ValueError,
        match=r"^dataset tiny, test split: modality 'a' holds NaN or inf values in 1 of 4 "
        r"samples \(samples 2\); fix the files",
    ):
        InMemoryDataset("tiny", specs, 2, good, bad)


# ----------------------------------------------------------------------------- declared boxes


@pytest.mark.parametrize(
    "box, message",
    [
        ((math.nan, 1), "Modality box bounds must be finite numbers"),
        ((0, math.inf), "Modality box bounds must be finite numbers"),
        (((0, 0), (1, math.nan)), "Modality box bounds must be finite numbers"),
        (("low", 1), "Modality box bounds must be numbers"),
        ((1, 0), "every lower bound must be below its upper bound"),
        (((0, 2), 1), "every lower bound must be below its upper bound"),
    ],
)
def test_declared_boxes_must_be_finite_and_ordered(box, message):
    with pytest.raises(ValueError, match=message):
        mmr.Modality((2, 3), box=box)


@pytest.mark.parametrize("lower, upper", [((math.nan,), (1.0,)), ((0.0,), (math.inf,)), ((-math.inf,), (0.0,))])
def test_spec_boxes_must_be_finite(lower, upper):
    with pytest.raises(ValueError, match=r"^modality 'v': box bounds must be finite numbers"):
        ModalitySpec("v", (1, 2), lower, upper)


def test_json_files_refuse_nan_and_inf_naming_where_and_leave_the_old_file(tmp_path):
    from mmrobust_bench.io import atomic_write_json

    path = tmp_path / "config.json"
    atomic_write_json(path, {"a": 1})
    with pytest.raises(ValueError) as err:
        atomic_write_json(path, {"a": 1, "opts": {"clip": float("inf"), "grid": [0.5, float("nan")]}})
    assert str(err.value) == (
        f"{path}: JSON cannot record the non-finite number(s) opts.clip = inf, opts.grid[1] = nan; give finite values"
    )
    assert json.loads(path.read_text()) == {"a": 1}  # nothing written over it
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_checkpoint_key_with_a_non_finite_setting_is_refused_before_training():
    with pytest.raises(ValueError) as err:
        CheckpointKey("synthav", {}, "crmt_jt", {"rho": float("-inf")}, {"epochs": 1}, 0)
    assert str(err.value) == (
        "crmt_jt: the setting(s) defense.rho = -inf are not finite numbers, which a checkpoint's config.json cannot "
        "record; give finite values"
    )
