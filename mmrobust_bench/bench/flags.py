"""Validity flags: cheap checks that an attack's numbers can be trusted (gradient masking and friends).

A robust accuracy is only an upper bound; these are the standard signs that it is a loose one
(Athalye et al. 2018; Carlini et al. 2019, "On evaluating adversarial robustness"):

* ``non_monotone``: accuracy rises with ε by more than binomial noise (a bigger ball contains the smaller one);
* ``fgm_beats_pgd``: one gradient step does better than the iterative attack at the same ε;
* ``unbounded_not_zero``: the attack at a huge radius (``UNBOUNDED_FACTOR`` × the largest ε) leaves more than
  ``UNBOUNDED_MAX_ACCURACY`` of a sample correct; with a box-bounded modality alone the box, not the
  radius, may be what stops it, so read this one as a prompt to look. Not raised where the attack already
  leaves at most that fraction correct at an ε of its curve (:func:`breaks_nearly_all`);
* ``zero_gradients``: the input gradient of the attack loss (CE on the fused logits) is exactly zero, or not
  finite, on more than ``ZERO_GRADIENT_FRACTION`` of a sample (rounding, quantisation, saturated layers);
* ``randomness``: two identical runs of the (seeded) attack, or two forward passes, disagree: the model is
  stochastic and needs expectation over transformation;
* ``non_finite``: the model's logits are NaN or inf on clean samples (every row of the run: such a model's
  accuracies are not measurements, and the other checks are skipped) or on the attack's outputs at an ε (that
  row; counted over every attacked sample as it was measured). Such samples count as wrong
  (``bench.evaluate.correct_predictions``), never as the argmax of NaN; a clean row carries the flag when any
  test sample's logits were not finite (:func:`clean_row_flags`).

Each flag belongs to one ε row or to every row of a run; result rows carry their flag names joined by ";".
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

import pandas as pd
import torch
from torch import nn

from ..attacks import Attack
from ..attacks.native import input_gradients
from ..contracts import ThreatModel, joint_l2_norm
from ..data.base import TensorSplit
from .evaluate import Measurement, attack_setting, correct_predictions, finite_rows
from .threat_sets import ANY

NON_MONOTONE = "non_monotone"
FGM_BEATS_PGD = "fgm_beats_pgd"
UNBOUNDED_NOT_ZERO = "unbounded_not_zero"
ZERO_GRADIENTS = "zero_gradients"
RANDOMNESS = "randomness"
NON_FINITE = "non_finite"
FLAG_NAMES = (NON_MONOTONE, FGM_BEATS_PGD, UNBOUNDED_NOT_ZERO, ZERO_GRADIENTS, RANDOMNESS, NON_FINITE)

Z = 2.0  # how many binomial standard deviations count as noise
UNBOUNDED_FACTOR = 1e3
UNBOUNDED_MAX_ACCURACY = 0.05
ZERO_GRADIENT_FRACTION = 0.05
CHECK_SAMPLES = 64  # samples for the unbounded and gradient checks
RANDOMNESS_SAMPLES = 16


@dataclass(frozen=True)
class Flag:
    """A raised flag: its name, what was seen, and the ε row it belongs to (None: every row of the run)."""

    name: str
    detail: str
    eps: float | None = None
    strong: bool = False  # raised on the strong evaluation itself, whose remedy cannot be "run it"

    def note(self) -> str:
        where = "" if self.eps is None else f" at eps={self.eps:g}"
        remedy = REMEDIES.get(self.name)
        if self.strong and remedy == STRONG_EVALUATION:
            remedy = STRONG_ALREADY
        return f"flag {self.name}{where}: {self.detail}" + (f"; {remedy}" if remedy else "")


# What to do about a flag, printed with it: the signs of gradient masking ask for the strong evaluation.
STRONG_EVALUATION = (
    "this number may be gradient masking, not robustness: confirm it with the standard strong "
    "evaluation, --attack autoattack (attack='autoattack' in the API)"
)
# The same signs raised on the strong evaluation: the number is still an upper bound, and the model is what to read.
STRONG_ALREADY = (
    "the strong evaluation raised it itself, so read this number as an upper bound: with one modality attacked "
    "the others may decide alone (compare the row with that modality missing), a box may stop the attack, or "
    "a cheaper version (fast, fast-all-targets) may fall short of version='standard'"
)
REMEDIES = {
    NON_MONOTONE: STRONG_EVALUATION,
    FGM_BEATS_PGD: STRONG_EVALUATION,
    UNBOUNDED_NOT_ZERO: STRONG_EVALUATION,
    ZERO_GRADIENTS: STRONG_EVALUATION,
    RANDOMNESS: "the model or attack is stochastic: average the attack's gradients over its randomness "
    "(expectation over transformation) before trusting this number",
}


def binomial_std(p: float, n: int) -> float:
    return math.sqrt(max(p * (1 - p), 0.0) / max(n, 1))


def non_monotone(measurements: Sequence[Measurement], z: float = Z) -> list[Flag]:
    """Accuracy that rises from one ε to the next by more than ``z`` binomial standard deviations."""
    ordered = sorted(measurements, key=lambda m: m.eps)
    flags = []
    for low, high in itertools.pairwise(ordered):
        rise = high.accuracy - low.accuracy
        noise = z * binomial_std((low.accuracy + high.accuracy) / 2, high.n)
        if rise > noise and high.eps > low.eps:
            flags.append(
                Flag(
                    NON_MONOTONE,
                    f"accuracy rises from {low.accuracy:.3f} at eps={low.eps:g} to "
                    f"{high.accuracy:.3f} (more than {noise:.3f}, {z:g} binomial std)",
                    high.eps,
                )
            )
    return flags


def fgm_beats_pgd(fgm: Sequence[Measurement], pgd: Sequence[Measurement], z: float = Z) -> list[Flag]:
    """ε values where FGM leaves fewer samples correct than PGD by more than ``z`` binomial standard deviations."""
    by_eps = {m.eps: m for m in fgm}
    flags = []
    for p in pgd:
        f = by_eps.get(p.eps)
        if f is None:
            continue
        gap = p.accuracy - f.accuracy
        noise = z * binomial_std((p.accuracy + f.accuracy) / 2, p.n)
        if gap > noise:
            flags.append(
                Flag(
                    FGM_BEATS_PGD,
                    f"FGM accuracy {f.accuracy:.3f} is below PGD's {p.accuracy:.3f} (by more than {noise:.3f})",
                    p.eps,
                )
            )
    return flags


def zero_gradients(
    model: nn.Module, batch, labels: torch.Tensor, threat: ThreatModel, max_fraction: float = ZERO_GRADIENT_FRACTION
) -> list[Flag]:
    """Samples whose CE input gradient over the attacked modalities is exactly zero or not finite."""
    grads = input_gradients(model, batch, labels, threat.modalities)
    norm = joint_l2_norm(grads, threat.modalities)
    dead = (norm == 0) | ~torch.isfinite(norm)
    fraction = float(dead.float().mean()) if dead.numel() else 0.0
    if fraction > max_fraction:
        return [
            Flag(
                ZERO_GRADIENTS,
                f"the input gradient of CE is zero or not finite on {fraction:.0%} of "
                f"{dead.numel()} samples (more than {max_fraction:.0%})",
            )
        ]
    return []


def unbounded(
    model: nn.Module,
    batch,
    labels: torch.Tensor,
    attack: Attack,
    threat: ThreatModel,
    radius: float,
    max_accuracy: float = UNBOUNDED_MAX_ACCURACY,
) -> list[Flag]:
    """The attack at a huge radius should leave (almost) nothing correct."""
    adv = attack(model, batch, labels, threat.with_eps(radius))
    with torch.no_grad():
        accuracy = float(correct_predictions(model(adv).logits, labels).float().mean())
    if accuracy > max_accuracy:
        return [
            Flag(
                UNBOUNDED_NOT_ZERO,
                f"at eps={radius:g} the attack leaves accuracy {accuracy:.3f} on "
                f"{labels.shape[0]} samples (more than {max_accuracy:g})",
            )
        ]
    return []


def breaks_nearly_all(measurements: Sequence[Measurement], max_accuracy: float = UNBOUNDED_MAX_ACCURACY) -> bool:
    """Whether the attack leaves at most ``max_accuracy`` correct at some ε it was measured at (the largest, on a
    monotone curve).

    Such an attack demonstrably breaks (nearly) every sample inside the grid, which is what the unbounded check
    asks; its failure at ``UNBOUNDED_FACTOR`` × the largest ε would only say that steps scaled with ε overshoot (a
    step of 1000·ε lands on the box's corners), not that gradients are masked. The check is skipped for it, and
    :func:`flag_rows` clears the flag on the stored rows of such a curve (so a cell skipped alone and a curve
    assembled from several cells agree)."""
    return any(m.n > 0 and m.accuracy <= max_accuracy for m in measurements)


def _identical(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Exactly equal, NaN in the same places counting as equal (NaN != NaN would read as randomness)."""
    return (
        a.shape == b.shape and torch.equal(a.isnan(), b.isnan()) and torch.equal(a.nan_to_num(0.0), b.nan_to_num(0.0))
    )


def randomness(model: nn.Module, batch, labels: torch.Tensor, attack: Attack, threat: ThreatModel) -> list[Flag]:
    """Two identical runs of the seeded attack, and two forward passes, must agree exactly."""
    first = attack(model, batch, labels, threat)
    second = attack(model, batch, labels, threat)
    with torch.no_grad():
        outputs_differ = not _identical(model(batch).logits, model(batch).logits)
    attack_differs = any(not _identical(first[m], second[m]) for m in first)
    if outputs_differ or attack_differs:
        what = "the model's outputs" if outputs_differ else "the attack's results"
        return [
            Flag(
                RANDOMNESS,
                f"{what} differ between two identical runs on {labels.shape[0]} samples: the model "
                f"is stochastic; average over its randomness (EOT) before trusting the numbers",
            )
        ]
    return []


def _bad_logits(model: nn.Module, batch) -> int:
    """How many samples of ``batch`` get a NaN or inf logit."""
    with torch.no_grad():
        return int((~finite_rows(model(batch).logits)).sum())


def non_finite_clean(model: nn.Module, batch, labels: torch.Tensor) -> list[Flag]:
    """The model's logits on clean samples must be numbers: a run-wide flag when any is NaN or inf."""
    bad = _bad_logits(model, batch)
    if bad:
        return [
            Flag(
                NON_FINITE,
                f"the model's logits are NaN or inf on {bad} of {labels.shape[0]} clean samples: its "
                f"predictions are not numbers (a diverged training or a damaged checkpoint?), so no "
                f"accuracy of this run is a measurement; the other checks were skipped",
            )
        ]
    return []


def non_finite_adversarial(measurements: Sequence[Measurement], norm_bounded: bool = True) -> list[Flag]:
    """Each ε row whose measurement met NaN or inf logits on the attack's outputs (counted over every attacked
    sample as it was measured, :attr:`Measurement.non_finite`); an attack without a budget flags every row."""
    return [
        Flag(
            NON_FINITE,
            f"the model's logits are NaN or inf on {m.non_finite} of {m.n} attacked samples: counted as "
            f"misclassified, but there the model breaks down rather than being fooled",
            m.eps if norm_bounded else None,
        )
        for m in measurements
        if m.non_finite
    ]


def clean_row_flags(clean: Measurement) -> str:
    """The ``flags`` cell of a clean-accuracy row: ``non_finite`` when any sample's logits were NaN or inf."""
    return NON_FINITE if clean.non_finite else ""


def check_attack(
    model: nn.Module,
    split: TensorSplit,
    attack: Attack,
    threat: ThreatModel,
    eps_grid: Sequence[float],
    measurements: Sequence[Measurement],
    device: torch.device,
    *,
    fgm: Sequence[Measurement] | None = None,
    samples: int = CHECK_SAMPLES,
    unbounded_factor: float = UNBOUNDED_FACTOR,
) -> list[Flag]:
    """Every flag for one attack's run over ``eps_grid``: from its ``measurements`` (and FGM's at the same
    ε, when given; their non-finite counts included), plus the unbounded, gradient and randomness checks on the
    first ``samples`` samples. A model whose clean logits are not finite gets the ``non_finite`` flag alone:
    every other check would only describe NaN."""
    model.eval()
    strong = getattr(attack, "masking_resistant", False)  # autoattack: DLR and Square see past masked gradients
    flags: list[Flag] = []
    small = split.subset(torch.arange(min(samples, len(split))))
    batch, labels = next(small.batches(len(small), device=device))
    few = {m: x[:RANDOMNESS_SAMPLES] for m, x in batch.items()}
    broken = non_finite_clean(model, batch, labels)
    if broken:
        return broken
    with attack_setting(model, attack, threat):
        if attack.norm_bounded:
            flags += non_monotone(measurements)
            if fgm is not None:
                flags += fgm_beats_pgd(fgm, measurements)
            largest = max(float(e) for e in eps_grid)
            if largest > 0 and not breaks_nearly_all(measurements):
                flags += unbounded(model, batch, labels, attack, threat, unbounded_factor * largest)
            if not strong:
                flags += zero_gradients(model, batch, labels, threat)
            threat = threat.with_eps(largest)
        flags += randomness(model, few, labels[:RANDOMNESS_SAMPLES], attack, threat)
    flags += non_finite_adversarial(measurements, attack.norm_bounded)
    return [replace(f, strong=True) for f in flags] if strong else flags


def warn_flags(flags: Iterable[Flag], logger: logging.Logger, where: str = "") -> list[str]:
    """Log each flag's note (what was seen, and the remedy) as a warning on ``logger``, prefixed with ``where`` (the
    threat set, in an ``any`` run that attacks several), and return the notes: ``run`` and ``evaluate`` both say
    every flag they raise."""
    notes = [f"{where}: {f.note()}" if where else f.note() for f in flags]
    for note in notes:
        logger.warning("%s", note)
    return notes


def row_flags(flags: Iterable[Flag], eps: float | None) -> str:
    """The ``flags`` cell of the row at ``eps``: run-wide flags and those of that ε, sorted, ";"-joined."""
    names = {f.name for f in flags if f.eps is None or (eps is not None and math.isclose(f.eps, eps))}
    return ";".join(sorted(names))


def flag_rows(frame: pd.DataFrame, z: float = Z) -> pd.Series:
    """Flags that follow from result rows alone (a run's or a sweep's): ``non_monotone`` within each curve and
    ``fgm_beats_pgd`` between the ``fgm`` and ``pgd_l2`` rows of one model and modality. Returns the
    ``flags`` column, merged with the flags the rows already carry, less ``unbounded_not_zero`` on a curve with a
    row that shows the attack breaking nearly every sample (:func:`breaks_nearly_all`; a curve assembled from
    several cells can show it where one cell's grid could not); an ``any`` row keeps that flag only while a
    threat set's row at its ε still carries it."""
    existing = frame["flags"] if "flags" in frame else pd.Series("", index=frame.index)
    names = {i: set(filter(None, str(v).split(";"))) if isinstance(v, str) else set() for i, v in existing.items()}
    attacked = frame[frame["attack"] != "clean"].dropna(subset=["eps"])
    model_keys = ["dataset", "defense", "seed", "checkpoint_sha256", "modality", "norm"]
    for _, curve in attacked.groupby(model_keys + ["attack", "attack_config"], sort=False):
        rows = curve.sort_values("eps")
        measured = [Measurement(float(r.eps), round(r.accuracy * r.n), int(r.n), 0.0) for r in rows.itertuples()]
        index_of = dict(zip(rows["eps"].astype(float), rows.index))
        for flag in non_monotone(measured, z):
            names[index_of[flag.eps]].add(flag.name)
        if str(rows["modality"].iloc[0]) != ANY and breaks_nearly_all(measured):
            for i in rows.index:
                names[i].discard(UNBOUNDED_NOT_ZERO)
    is_any = attacked["modality"].astype(str) == ANY
    set_keys = ["dataset", "defense", "seed", "checkpoint_sha256", "norm", "attack", "attack_config", "eps"]
    for _key, group in attacked.groupby(set_keys, sort=False):
        anys = group.index[is_any[group.index]]
        if len(anys) and not any(UNBOUNDED_NOT_ZERO in names[i] for i in group.index.difference(anys)):
            for i in anys:
                names[i].discard(UNBOUNDED_NOT_ZERO)
    for _, group in attacked.groupby(model_keys, sort=False):
        fgm = group[group["attack"] == "fgm"]
        pgd = group[group["attack"] == "pgd_l2"]
        if fgm.empty or pgd.empty:
            continue
        f = [Measurement(float(r.eps), round(r.accuracy * r.n), int(r.n), 0.0) for r in fgm.itertuples()]
        for row in pgd.itertuples():
            p = [Measurement(float(row.eps), round(row.accuracy * row.n), int(row.n), 0.0)]
            if fgm_beats_pgd(f, p, z):
                names[row.Index].add(FGM_BEATS_PGD)
    return pd.Series({i: ";".join(sorted(v)) for i, v in names.items()}, index=frame.index, dtype=object)


__all__ = [
    "Flag",
    "FLAG_NAMES",
    "warn_flags",
    "NON_MONOTONE",
    "FGM_BEATS_PGD",
    "UNBOUNDED_NOT_ZERO",
    "ZERO_GRADIENTS",
    "RANDOMNESS",
    "NON_FINITE",
    "binomial_std",
    "non_monotone",
    "fgm_beats_pgd",
    "zero_gradients",
    "unbounded",
    "randomness",
    "non_finite_clean",
    "non_finite_adversarial",
    "clean_row_flags",
    "check_attack",
    "row_flags",
    "flag_rows",
    "breaks_nearly_all",
]
