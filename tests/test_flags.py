"""Validity flags: they fire on a model with masked gradients or random outputs and stay quiet on a clean
linear model; the ``flags`` column of result rows, and CSVs written before it existed."""

import dataclasses

import pandas as pd
import pytest
import torch
from torch import nn

from mmrobust_bench.attacks import Attack, build_attack
from mmrobust_bench.bench import flags as F
from mmrobust_bench.bench.evaluate import Measurement, robust_accuracy
from mmrobust_bench.bench.results import COLUMNS, ResultRow, append_rows, read_rows, rows_frame
from mmrobust_bench.contracts import ThreatModel
from mmrobust_bench.data.base import TensorSplit

from helpers import flat_specs, linear_model

CPU = torch.device("cpu")
DIMS = {"v": 6, "a": 4}
GRID = [0.1, 0.3, 0.6]


class Rounded(nn.Module):
    """Quantises its input before the real model: gradients are zero almost everywhere (masked)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch):
        return self.model({m: torch.round(x) for m, x in batch.items()})


class Noisy(nn.Module):
    """Adds fresh noise to its input on every call: a randomised model."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch):
        return self.model({m: x + 0.05 * torch.randn_like(x) for m, x in batch.items()})


def split_for(model, n=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = {m: 3 * torch.randn(n, d, generator=g) for m, d in DIMS.items()}
    with torch.no_grad():
        labels = model(x).logits.argmax(1)
    return TensorSplit(x, labels)


def run_checks(model, attack="pgd_l2", modalities=("v", "a")):
    specs = flat_specs(DIMS)
    split = split_for(model)
    atk = build_attack(attack, specs)
    threat = ThreatModel(modalities, GRID[0])
    measured = robust_accuracy(model, split, atk, threat, GRID, 64, CPU)
    fgm = robust_accuracy(model, split, build_attack("fgm", specs), threat, GRID, 64, CPU)
    return F.check_attack(model, split, atk, threat, GRID, measured, CPU, fgm=fgm)


def test_clean_linear_model_raises_no_flag():
    assert run_checks(linear_model(DIMS, 3)) == []


def test_rounding_layer_raises_zero_gradient_and_unbounded_flags():
    flags = run_checks(Rounded(linear_model(DIMS, 3)).eval())
    names = {f.name for f in flags}
    assert {F.ZERO_GRADIENTS, F.UNBOUNDED_NOT_ZERO} <= names
    assert all(f.eps is None for f in flags if f.name in (F.ZERO_GRADIENTS, F.UNBOUNDED_NOT_ZERO))
    assert any("100%" in f.detail for f in flags if f.name == F.ZERO_GRADIENTS)


def test_random_model_raises_randomness_flag():
    flags = run_checks(Noisy(linear_model(DIMS, 3)).eval(), attack="fgm")
    assert F.RANDOMNESS in {f.name for f in flags}


def test_feature_level_missing_gets_only_the_randomness_check():
    model = linear_model(DIMS, 3)
    split = split_for(model)
    atk = build_attack("missing", flat_specs(DIMS), level="feature")
    threat = ThreatModel(("v",), 0.0)
    measured = robust_accuracy(model, split, atk, threat, [0.0], 64, CPU)
    assert F.check_attack(model, split, atk, threat, [0.0], measured, CPU) == []
    assert model.dropped_features == frozenset()


def m(eps, correct, n=100):
    return Measurement(eps, correct, n, 0.0)


def test_non_monotone_beyond_binomial_noise():
    assert F.non_monotone([m(0.5, 50), m(1.0, 52), m(2.0, 40)]) == []
    flags = F.non_monotone([m(0.5, 50), m(1.0, 30), m(2.0, 60)])
    assert [(f.name, f.eps) for f in flags] == [(F.NON_MONOTONE, 2.0)]
    assert "binomial" in flags[0].note() and "eps=2" in flags[0].note()


def test_fgm_beating_pgd_at_the_same_eps():
    pgd = [m(0.5, 60), m(1.0, 40)]
    assert F.fgm_beats_pgd([m(0.5, 70), m(1.0, 41)], pgd) == []
    flags = F.fgm_beats_pgd([m(0.5, 58), m(1.0, 20)], pgd)
    assert [(f.name, f.eps) for f in flags] == [(F.FGM_BEATS_PGD, 1.0)]


def test_row_flags_joins_run_wide_and_per_eps_flags():
    flags = [F.Flag(F.ZERO_GRADIENTS, "x"), F.Flag(F.NON_MONOTONE, "y", 1.0), F.Flag(F.FGM_BEATS_PGD, "z", 1.0)]
    assert F.row_flags(flags, 1.0) == "fgm_beats_pgd;non_monotone;zero_gradients"
    assert F.row_flags(flags, 0.5) == "zero_gradients"
    assert F.row_flags([], 0.5) == ""


def row(attack, eps, accuracy, **kw):
    base = dict(
        dataset="synthav",
        defense="jt",
        seed=0,
        checkpoint_sha256="abc",
        config_hash="h",
        attack=attack,
        attack_config=attack,
        library="native",
        library_version="0",
        modality="a",
        norm="l2",
        eps=eps,
        n=200,
        accuracy=accuracy,
        wall_seconds=0.1,
        device="cpu",
        suite_version="0",
    )
    base.update(kw)
    return ResultRow(**base)


def test_flag_rows_from_the_rows_of_a_sweep():
    frame = rows_frame(
        [
            row("clean", 0.0, 0.9),
            row("fgm", 0.5, 0.7),
            row("fgm", 1.0, 0.4),
            row("pgd_l2", 0.5, 0.6),
            row("pgd_l2", 1.0, 0.55),
            row("pgd_l2", 2.0, 0.7, flags="randomness"),
        ]
    )
    flags = F.flag_rows(frame)
    assert list(flags) == ["", "", "", "", "fgm_beats_pgd", "non_monotone;randomness"]


def test_result_rows_carry_flags_and_old_csvs_still_read(tmp_path):
    assert "flags" in COLUMNS and COLUMNS[-5:] == [
        "timestamp",
        "cpu_capability",
        "torch_build",
        "device_name",
        "batch_size",
    ]
    assert row("pgd_l2", 0.5, 0.5).flags == ""
    old = tmp_path / "old.csv"
    legacy = rows_frame([row("clean", 0.0, 0.9), row("pgd_l2", 0.5, 0.5)]).drop(columns=["flags"])
    legacy.to_csv(old, index=False)
    frame = read_rows(old)
    assert list(frame.columns) == COLUMNS and list(frame["flags"]) == ["", ""]
    merged = append_rows(old, [row("pgd_l2", 1.0, 0.3, flags="zero_gradients;unbounded_not_zero")])
    assert list(merged["flags"]) == ["", "", "zero_gradients;unbounded_not_zero"]
    again = read_rows(old)
    assert list(again["flags"]) == ["", "", "zero_gradients;unbounded_not_zero"] and len(again) == 3
    assert dataclasses.asdict(row("clean", 0.0, 1.0)).keys() == set(COLUMNS)
    assert read_rows(tmp_path / "none.csv").empty


@pytest.mark.parametrize("extra", [{"note": "kept"}])
def test_unknown_columns_are_kept_after_known_ones(tmp_path, extra):
    path = tmp_path / "rows.csv"
    rows_frame([row("clean", 0.0, 0.9)]).assign(**extra).to_csv(path, index=False)
    frame = read_rows(path)
    assert list(frame.columns) == COLUMNS + ["note"] and frame["note"].iloc[0] == "kept"
    assert isinstance(frame, pd.DataFrame)


class IgnoresAudio(nn.Module):
    """A model that never reads its audio: no attack on the audio alone can change a prediction."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch):
        return self.model({**batch, "a": torch.zeros_like(batch["a"])})


@pytest.mark.parametrize("attack", ["pgd_l2", "autoattack"])
def test_a_flag_on_the_strong_evaluation_does_not_prescribe_the_strong_evaluation(attack):
    """The unbounded check fires on the audio of a model that ignores it, whatever the attack; the remedy says to
    run `autoattack` only when the attack was not `autoattack`."""
    model = IgnoresAudio(linear_model(DIMS, 3)).eval()
    split = split_for(model)
    atk = build_attack(attack, flat_specs(DIMS), **({"version": "fast"} if attack == "autoattack" else {}))
    threat = ThreatModel(("a",), GRID[0])
    measured = robust_accuracy(model, split, atk, threat, GRID, 64, CPU)
    assert all(m.accuracy == 1.0 for m in measured)
    flags = F.check_attack(model, split, atk, threat, GRID, measured, CPU)
    unbounded = next(f for f in flags if f.name == F.UNBOUNDED_NOT_ZERO)
    assert unbounded.strong == (attack == "autoattack")
    if attack == "autoattack":
        assert F.STRONG_ALREADY in unbounded.note() and "--attack autoattack" not in unbounded.note()
    else:
        assert F.STRONG_EVALUATION in unbounded.note()


class DictRounded(nn.Module):
    """A user's own model (a dict of modality tensors → logits) that quantises its input: masked gradients."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch):
        return self.model({m: torch.round(x) for m, x in batch.items()}).logits


@pytest.mark.parametrize("modality", ["v", "any"])
def test_evaluate_warns_with_every_flag_it_raises_and_names_the_remedy(caplog, modality):
    """``mmr.evaluate`` logs each raised flag's note, as ``run`` does (with the threat set in an ``any`` run), so a
    flagged number never reaches a user of the Python API unsaid."""
    import logging

    import mmrobust_bench as mmr

    core = linear_model(DIMS, 3)
    split = split_for(Rounded(core))
    wrapped = mmr.wrap(DictRounded(core), {m: mmr.Modality((d,)) for m, d in DIMS.items()})
    loader = [
        {**{m: x[i : i + 24] for m, x in split.inputs.items()}, "label": split.labels[i : i + 24]} for i in (0, 24)
    ]
    with caplog.at_level(logging.WARNING, logger="mmrobust_bench.plug.evaluation"):
        rows = mmr.evaluate(wrapped, loader, attack="pgd_l2", modality=modality, eps=GRID)
    flagged = rows[rows["flags"].astype(str).str.contains(F.ZERO_GRADIENTS)]
    assert len(flagged) >= len(GRID)
    warned = [r.getMessage() for r in caplog.records if f"flag {F.ZERO_GRADIENTS}" in r.getMessage()]
    assert warned and all(F.STRONG_EVALUATION in w for w in warned)
    if modality == "any":  # one warning per threat set that raised it, named
        assert {w.split(":")[0] for w in warned} == {"visual", "audio", "all modalities (joint)"}


class Overshooting(Attack):
    """The paper's PGD, except that beyond a radius of 1000 it returns the clean input: an attack whose steps,
    scaled with ε, overshoot at the unbounded check's radius although it breaks every sample inside the grid."""

    name = "overshooting"

    def __init__(self, specs):
        super().__init__(specs)
        self.inner = build_attack("pgd_l2", specs)

    def perturb(self, model, batch, labels, threat, eps, *, targets=None):
        if float(eps.max()) > 1000:
            return {m: batch[m] for m in threat.modalities}
        return self.inner.perturb(model, batch, labels, threat, eps, targets=targets)


def test_an_attack_that_breaks_every_sample_in_its_grid_is_not_flagged_unbounded():
    """The unbounded check asks whether the attack can break (nearly) everything; an attack that leaves ≤ 5% at
    the grid's largest ε has shown it, and its failure at 1000·ε is an overshoot, not masking."""
    model = linear_model(DIMS, 3)
    split = split_for(model)
    atk, threat, grid = Overshooting(flat_specs(DIMS)), ThreatModel(("v", "a"), 2.0), [2.0, 8.0]
    measured = robust_accuracy(model, split, atk, threat, grid, 64, CPU)
    assert measured[-1].accuracy <= F.UNBOUNDED_MAX_ACCURACY and F.breaks_nearly_all(measured)
    batch, labels = next(split.batches(len(split), device=CPU))
    assert F.unbounded(model, batch, labels, atk, threat, 1000 * grid[-1])  # the overshoot is there
    assert F.UNBOUNDED_NOT_ZERO not in {f.name for f in F.check_attack(model, split, atk, threat, grid, measured, CPU)}
    # the same attack on a grid it does not break is still checked, and flagged (its 1000·ε overshoots too)
    small = [2.0]
    weak = robust_accuracy(model, split, atk, threat, small, 64, CPU)
    assert weak[0].accuracy > F.UNBOUNDED_MAX_ACCURACY
    assert F.UNBOUNDED_NOT_ZERO in {f.name for f in F.check_attack(model, split, atk, threat, small, weak, CPU)}


def test_stored_rows_lose_the_unbounded_flag_only_on_a_curve_that_reaches_zero():
    """A sweep's curve is assembled from several cells, so the rule is applied to the stored rows too; an ``any`` row
    keeps the flag while one of its threat sets' rows at that ε does."""
    u = F.UNBOUNDED_NOT_ZERO
    frame = rows_frame(
        [
            row("pgd_l2", 0.5, 0.30, flags=u, modality="v"),  # a cell at ε = 0.5 ...
            row("pgd_l2", 3.0, 0.02, flags=u, modality="v"),  # ... one at 3 breaks nearly all: cleared
            row("pgd_l2", 0.5, 0.60, flags=u, modality="a"),
            row("pgd_l2", 3.0, 0.40, flags=f"{u};zero_gradients", modality="a"),  # never breaks: kept
            row("autoattack", 0.5, 0.01, flags=u, modality="v"),
            row("autoattack", 0.5, 0.00, flags=u, modality="all"),
            row("autoattack", 0.5, 0.00, flags=u, modality="any"),  # no set keeps it: cleared
            row("autoattack", 0.5, 0.01, flags=u, modality="v", seed=1),
            row("autoattack", 0.5, 0.50, flags=u, modality="a", seed=1),  # keeps it ...
            row("autoattack", 0.5, 0.01, flags=u, modality="any", seed=1),  # ... so the worst case does too
        ]
    )
    assert list(F.flag_rows(frame)) == ["", "", u, f"{u};zero_gradients", "", "", "", "", u, u]
