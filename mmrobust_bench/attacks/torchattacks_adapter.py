"""Run any torchattacks attack on a multi-modal model: ``build_attack("torchattacks:PGDL2", specs, steps=10)``.

torchattacks calls ``model(x)`` with one image tensor in [0, 1], clamps to [0, 1] itself, and some
attacks call the model on sub-batches or single samples (DeepFool, FAB, APGD, Square). The adapter
shows it the single-input *view* of :mod:`mmrobust_bench.attacks.view`: attacked modalities mapped
around the clean input with library budget 0.35, then sample-index tags, then padding.

Every torchattacks attack class is either run by the adapter or listed in ``EXCLUDED`` with the reason
(tests/test_attack_suite.py enumerates the installed library, so a new release cannot slip through
untested). Some attacks need their options rescaled to keep the tags readable:

* VMIFGSM / VNIFGSM sample neighbours uniformly within ``beta * eps`` of the iterate, tags included,
  so their library budget is ``0.35 / beta`` instead of 0.35 (ℓ∞, so nothing else changes);
* PGDRS / PGDRSL2 add Gaussian (or uniform) smoothing noise of ``noise_sd`` to every coordinate. Like
  all noise levels it is in library units (the ε ball has radius 0.35); the library default 0.5 would
  scramble the tags, so the default is 0.05 (≈ 0.14 ε), and a level whose tails reach the tags is
  refused before the attack runs;
* JSMA has no untargeted mode and picks ``(y + 1) % 10`` as target, outside the range of a model with
  fewer classes: untargeted runs target ``(y + 1) % K`` instead.

The view clamps every attacked modality into its valid box before calling the model; the base
class then projects the returned inputs onto the threat ball and into the boxes, restores model
mode and RNGs, and keeps frozen modalities bit-identical.
"""
from __future__ import annotations

import inspect
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from ..contracts import Batch, ModalitySpec, ThreatModel
from . import register_family
from .base import Attack
from .view import LIB_EPS, TAG_TOLERANCE, SingleInputView, checked_signature, frozen_parameters

INSTALL_HINT = "pip install --no-deps torchattacks==3.5.1"
# Attacks with a fixed norm, as grouped in torchattacks' own __init__. Attacks with a ``norm``
# argument (APGD, APGDT, FAB, Square, AutoAttack) take either; the rest (ℓ0, ℓ1, noise) have no
# ℓ2/ℓ∞ budget of their own and are accepted under both, since the result is projected anyway.
L2_ATTACKS = frozenset({"CW", "DeepFool", "EADEN", "PGDL2", "PGDRSL2"})
LINF_ATTACKS = frozenset({
    "BIM", "EOTPGD", "FFGSM", "FGSM", "Jitter", "MIFGSM", "NIFGSM", "PGD", "PGDRS", "RFGSM", "SPSA", "TPGD",
    "UPGD", "VMIFGSM", "VNIFGSM",
})
# Attacks that transform their input as a natural image; on the flattened view these transforms
# mix attacked coordinates, tags and padding, so the result would have no meaning.
_FLAT = ", which has no meaning on the flattened multi-modal input"
IMAGE_ONLY = {
    "DIFGSM": "resizes and pads the image (input diversity)" + _FLAT,
    "TIFGSM": "resizes the image and smooths gradients with a 3-channel kernel" + _FLAT,
    "SINIFGSM": "rescales pixel intensities towards 0" + _FLAT,
    "PIFGSM": "spreads gradients over image patches with a 3-channel kernel" + _FLAT,
    "PIFGSMPP": "spreads gradients over image patches with a 3-channel kernel" + _FLAT,
}
# Every other attack class of the library that the adapter does not run, with the reason.
EXCLUDED = {
    **IMAGE_ONLY,
    "MultiAttack": "is a wrapper over attack objects the caller built; build each one through the adapter instead",
    "LGV": "trains surrogate copies of the model on a training loader (a transfer attack), not an input batch",
    "OnePixel": "sets pixels at positions of its choice (tags and padding included) to arbitrary values, so a "
                "moved tag can decode as another sample's index",
    "Pixle": "swaps patches of pixels across the image (tags and padding included), so a moved tag can decode "
             "as another sample's index",
}
# Attacks that search for the smallest adversarial perturbation rather than the worst one inside ε:
# run once at a large ε, their per-sample norms give the whole robust-accuracy curve.
MINIMAL_NORM = frozenset({"CW", "DeepFool", "EADEN", "EADL1", "FAB"})
# Attacks that sample neighbours uniformly within ``beta * eps`` of the iterate, tags included.
NEIGHBOUR_SAMPLING = frozenset({"VMIFGSM", "VNIFGSM"})
# Attacks that add smoothing noise of ``noise_sd`` (library units) to every coordinate, tags included.
SMOOTHING_NOISE = frozenset({"PGDRS", "PGDRSL2"})
# Gaussian noise keeps the tags readable when TAG_TOLERANCE is 7 standard deviations away.
SAFE_NOISE_SD = TAG_TOLERANCE / 7
# Attacks whose untargeted mode targets ``(y + 1) % 10``; the adapter targets ``(y + 1) % K``.
NEXT_CLASS_TARGET = frozenset({"JSMA"})
# Constructor arguments measured in input units that carry the budget (PIFGSM calls it max_epsilon).
BUDGET_ARGS = ("eps", "max_epsilon")
LIB_NORMS = {"l2": "L2", "linf": "Linf"}
# Set by the adapter from the threat model; a user value would silently disagree with it.
RESERVED_ARGS = frozenset(BUDGET_ARGS) | {"norm", "model"}


def _torchattacks() -> Any:
    try:
        import torchattacks
    except ImportError as exc:
        raise ImportError(f"the torchattacks adapter needs torchattacks; install it with: {INSTALL_HINT}") from exc
    return torchattacks


def torchattacks_classes() -> list[str]:
    """Every attack class the installed torchattacks exports, adapted or not."""
    ta = _torchattacks()
    return sorted(name for name, obj in vars(ta).items()
                  if inspect.isclass(obj) and issubclass(obj, ta.attack.Attack) and obj is not ta.attack.Attack)


def torchattacks_names() -> list[str]:
    """Every torchattacks attack class the adapter can run: all but those of ``EXCLUDED``."""
    return [name for name in torchattacks_classes() if name not in EXCLUDED]


def supported_norms(attack_name: str, parameters: Sequence[str]) -> tuple[str, ...]:
    if "norm" in parameters:
        return ("l2", "linf")
    if attack_name in L2_ATTACKS:
        return ("l2",)
    if attack_name in LINF_ATTACKS:
        return ("linf",)
    return ("l2", "linf")


class TorchattacksAttack(Attack):
    """One torchattacks attack, by class name, on the attacked modalities of a multi-modal model.

    ``options`` go to the attack's constructor. ε and the norm come from the threat model; torchattacks
    takes one ε per call, so ``per_sample_eps`` is False. Step sizes (``alpha``) are in model-input
    units, like ε; without one, the library's default ratio alpha/eps is kept. Other options (CW's
    ``lr``, SPSA's ``delta``, noise levels) are in library units, where the ε ball has radius 0.35.
    ``seed`` and ``n_classes`` default to the adapter's seed and the model's class count (not the
    library's 10). Minimal-norm attacks without a budget (DeepFool, CW) use the same scale; their
    result is projected onto the ε ball by the base class, and ``minimal_norm`` marks them for
    ``bench.evaluate.minimal_norm_curve`` (run once at a large ε, the per-sample norms give the curve).
    """

    library = "torchattacks"
    per_sample_eps = False

    def __init__(self, attack_name: str, specs: Sequence[ModalitySpec], *, seed: int = 0, **options: Any) -> None:
        super().__init__(specs, seed=seed)
        ta = _torchattacks()
        if attack_name in EXCLUDED:
            raise ValueError(f"torchattacks:{attack_name} cannot be adapted to a multi-modal model: it "
                             f"{EXCLUDED[attack_name]}")
        valid = torchattacks_names()
        if attack_name not in valid:
            raise ValueError(f"unknown torchattacks attack {attack_name!r}; valid: {', '.join(valid)}")
        self.attack_cls = getattr(ta, attack_name)
        self.signature_args = checked_signature(f"torchattacks:{attack_name}", self.attack_cls, options,
                                                RESERVED_ARGS, "the threat model")
        self.name = f"torchattacks:{attack_name}"
        self.norms = supported_norms(attack_name, list(self.signature_args))
        self.options = dict(options)
        self.minimal_norm = attack_name in MINIMAL_NORM
        self.lib_eps = LIB_EPS
        if attack_name in NEIGHBOUR_SAMPLING:
            beta = float(self.options.get("beta", self.signature_args["beta"].default))
            self.lib_eps = LIB_EPS / max(1.0, beta)
        if attack_name in SMOOTHING_NOISE:
            self._check_smoothing_noise()

    def _check_smoothing_noise(self) -> None:
        """Gaussian noise with tails that reach the tags, or uniform noise wider than their tolerance, would
        scramble the sample index: refuse it before running."""
        kind = self.options.get("noise_type", self.signature_args["noise_type"].default)
        sd = float(self.options.get("noise_sd", SAFE_NOISE_SD))
        limit = SAFE_NOISE_SD if kind == "guassian" else TAG_TOLERANCE
        if sd > limit:
            raise ValueError(f"{self.name}: noise_sd={sd:g} ({kind} noise, library units where the ε ball has radius "
                             f"{LIB_EPS}) would move the sample-index tags of the single-input view; use noise_sd <= "
                             f"{limit:.3g}")

    @property
    def library_version(self) -> str:
        return _torchattacks().__version__

    def describe(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in sorted(self.options.items()))
        return f"{self.name}({opts})"

    def validate(self, threat: ThreatModel) -> None:
        if threat.norm not in self.norms:
            other = "PGDL2" if threat.norm == "l2" else "PGD"
            raise ValueError(f"{self.name} is an {self.norms[0]} attack and cannot run under a {threat.norm} threat; "
                             f"use a {self.norms[0]} threat or an attack such as torchattacks:{other}")
        if threat.norm == "l2" and not threat.joint and len(threat.modalities) > 1:
            raise ValueError(f"{self.name} has one budget per input; use a joint l2 threat or attack one modality "
                             f"at a time")
        super().validate(threat)

    def constructor_args(self, threat: ThreatModel, scale: float, view: SingleInputView) -> dict[str, Any]:
        """Constructor arguments in library units: budget ``lib_eps``, step sizes divided by ``scale``."""
        args = dict(self.options)
        params = self.signature_args
        for budget in BUDGET_ARGS:
            if budget in params:
                args[budget] = self.lib_eps
        if "alpha" in params:
            if "alpha" in args:
                args["alpha"] = args["alpha"] / scale
            else:
                default_budget = next(params[b].default for b in BUDGET_ARGS if b in params)
                args["alpha"] = self.lib_eps * params["alpha"].default / default_budget
        if self.attack_cls.__name__ in SMOOTHING_NOISE and "noise_sd" not in args:
            args["noise_sd"] = SAFE_NOISE_SD
        if "norm" in params:
            args["norm"] = LIB_NORMS[threat.norm]
        if "seed" in params and "seed" not in args:
            args["seed"] = self.seed
        if "n_classes" in params and "n_classes" not in args:
            with torch.no_grad():
                args["n_classes"] = view(view.encode()[:1]).shape[1]
        return args

    def perturb(self, model: nn.Module, batch: Batch, labels: Tensor, threat: ThreatModel, eps: Tensor,
                *, targets: Tensor | None = None) -> Batch:
        eps0 = float(eps[0])
        if eps0 == 0.0:
            return {m: batch[m] for m in threat.modalities}
        scale = eps0 / self.lib_eps
        view = SingleInputView(model, batch, threat.modalities, self.specs, scale)
        with frozen_parameters(model):
            atk = self.attack_cls(view, **self.constructor_args(threat, scale, view))
            atk.set_model_training_mode(model_training=False)
            if targets is None and self.attack_cls.__name__ in NEXT_CLASS_TARGET:
                with torch.no_grad():
                    targets = (labels + 1) % view(view.encode()[:1]).shape[1]
            if targets is not None:
                if "targeted" not in atk.supported_mode:
                    raise ValueError(f"{self.name} has no targeted mode")
                atk.set_mode_targeted_by_label(quiet=True)
            x_adv = atk(view.encode(), labels if targets is None else targets)
        return view.decode(x_adv.detach(), exact=True)


def build_torchattacks(attack_name: str, specs: Sequence[ModalitySpec], *, seed: int = 0,
                       **options: Any) -> TorchattacksAttack:
    return TorchattacksAttack(attack_name, specs, seed=seed, **options)


register_family("torchattacks", build_torchattacks, torchattacks_names)

__all__ = ["TorchattacksAttack", "SingleInputView", "torchattacks_names", "torchattacks_classes", "EXCLUDED",
           "IMAGE_ONLY", "MINIMAL_NORM"]
