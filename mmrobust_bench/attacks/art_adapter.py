"""Run ART evasion attacks on a multi-modal model: ``build_attack("art:ProjectedGradientDescent", specs, max_iter=10)``.

ART attacks an estimator of one input. The adapter wraps the single-input view of
:mod:`mmrobust_bench.attacks.view` (attacked modalities around the clean input with library budget
0.35, then sample-index tags, then padding) in a ``PyTorchClassifier``: ``input_shape`` from the view,
``nb_classes`` from the model, cross-entropy loss, and the view's [0, 1] box as ``clip_values``.

Boxes. ART takes per-feature ``clip_values``, one array for all samples, so the view maps bounded
modalities with their box's lower bound as offset (``box_map``): each valid box becomes the same
per-feature interval ``[0, (hi − lo)/s]`` for every sample, and ART's own clipping *is* the box — the
result equals ART's on the single-input model of that modality (other modalities fixed) with
``clip_values`` set to the box (per-feature arrays for a per-channel box), clean values on a bound and
iterates that leave the box included. Unbounded modalities are centred (``0.5 + (u − u_clean)/s``) with
clip [0, 1], which a perturbation inside the ε ball never reaches; tags and padding get [0, 1]. So:

* batch attacks (gradient attacks, Square) get those per-feature ``clip_values``. Where ``generate()``
  takes a ``mask`` it gets the view's mask, so tags and padding are never perturbed; elsewhere they
  have zero gradient;
* decision-based attacks (HopSkipJump, BoundaryAttack), which ART runs one sample at a time from
  random points drawn inside ``clip_values``, get one estimator per sample whose per-feature
  ``clip_values`` are exact: each modality's valid box mapped through that sample's map, and tags and
  padding pinned to their values (± 1e-6, as ART requires min < max). ART draws their random start
  from an unseeded ``RandomState``, which would make runs irreproducible, so the adapter draws it
  (``init_size`` uniform points in the same box, from the seeded numpy generator) and passes the first
  adversarial one as ``x_adv_init``; a sample with none is left clean, as ART would leave it.

ε. ``eps`` is the library budget 0.35 (scale ``s = ε / 0.35``; attacks without a budget get ``s = 1`` on
bounded modalities, see :meth:`ArtAttack.scale`) and
``eps_step`` (model-input units, like ε) is divided by the scale; without one, ART's default ratio
eps_step/eps is kept. An ``eps`` option is accepted when it equals the ε of the run and refused
otherwise (ε comes from ``--eps``). ``norm`` is 1, 2 or ``np.inf`` from the threat. Other options (CW's
``learning_rate``, DeepFool's overshoot ``epsilon``) are ART's own, unitless or relative. ``batch_size``
defaults to the whole batch and ``verbose`` to False. Minimal-norm attacks (DeepFool, CarliniL2Method,
ElasticNet, HopSkipJump, BoundaryAttack, NewtonFool) have no budget: their result is projected onto the
ε ball by the base class, and run once at a large ε their per-sample norms give the whole curve
(``bench.evaluate.minimal_norm_curve``).

Conversions. ART works in float32 numpy; the view casts its input to the model's dtype (ART sends
float64 from some attacks) and back. The view is handed to ART without being registered as a
submodule, so ART's ``.to(device)``, ``.train()`` and ``zero_grad()`` never reach the user's model: the
adapter puts the model in eval mode itself, parameters stop requiring grad during the attack, and
the base class restores modes and every RNG (ART draws from numpy's global one, which it seeds).
Success is always counted by the caller with the model on the returned inputs.

Over 400 lines as one module: one adapter, its estimator and the per-attack masks and option checks it must know.
"""

from __future__ import annotations

import importlib.util
import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..contracts import Batch, ModalitySpec, ThreatModel
from ..hints import did_you_mean
from . import register_family
from .base import Attack
from .torchattacks_adapter import check_fixed_eps
from .view import (
    LIB_EPS,
    MIN_SIDE,
    SingleInputView,
    check_library_threat,
    checked_signature,
    clean_logits,
    describe_library_attack,
    frozen_parameters,
)

INSTALL_HINT = "pip install adversarial-robustness-toolbox==1.20.1 packaging"
LIB_NORMS = {"l2": 2, "linf": np.inf, "l1": 1}
# Per-feature clip_values pin tags and padding to their value ± PIN (ART requires min < max).
PIN = 1e-6
BOTH, L2, LINF = ("l2", "linf"), ("l2",), ("linf",)
WITH_L1 = ("l2", "linf", "l1")
# Options that are lengths in input space: given in model-input units, divided by the view's scale.
LENGTH_OPTIONS = {"eps_step": "step size"}
DEFAULT_NORM_ATTACK = {
    "l2": "ProjectedGradientDescent",
    "linf": "ProjectedGradientDescent",
    "l1": "ProjectedGradientDescent",
    "l0": "CarliniL0Method",
}


@dataclass(frozen=True)
class ArtSupport:
    """How the adapter runs one ART attack.

    ``norms``: threats it accepts (attacks with a ``norm`` argument get 2 or ``np.inf`` from the threat; ℓ0
    attacks have no ℓ2/ℓ∞ budget and are accepted under both, since the result is projected anyway);
    ``masked``: ``generate()`` takes a perturbation mask (``"generate"``) or the constructor takes the
    features it may change (``"constructor"``, CarliniL0Method); ``per_sample``: run one sample at a time with exact
    per-feature ``clip_values``; ``minimal_norm``: it searches for the smallest adversarial perturbation;
    ``min_side``: the view's smallest image side (Square draws windows up to ~0.9 of the side and needs room);
    ``imports``: modules ART imports for this attack without declaring them as dependencies.
    """

    norms: tuple[str, ...]
    masked: str = ""
    per_sample: bool = False
    minimal_norm: bool = False
    min_side: int = MIN_SIDE
    imports: tuple[str, ...] = ()


ART_ATTACKS: dict[str, ArtSupport] = {
    "FastGradientMethod": ArtSupport(WITH_L1, masked="generate"),
    "ProjectedGradientDescent": ArtSupport(WITH_L1, masked="generate"),
    "BasicIterativeMethod": ArtSupport(LINF, masked="generate"),
    "MomentumIterativeMethod": ArtSupport(BOTH, masked="generate"),
    "AutoProjectedGradientDescent": ArtSupport(BOTH, masked="generate"),
    "AutoAttack": ArtSupport(BOTH, masked="generate", min_side=24, imports=("multiprocess",)),
    "SquareAttack": ArtSupport(BOTH, min_side=24),
    "DeepFool": ArtSupport(L2, minimal_norm=True),
    "NewtonFool": ArtSupport(L2, minimal_norm=True),
    "CarliniL2Method": ArtSupport(L2, minimal_norm=True),
    "CarliniLInfMethod": ArtSupport(LINF),
    "CarliniL0Method": ArtSupport(("l0", "l2", "linf"), masked="constructor"),
    "ElasticNet": ArtSupport(("l2", "l1"), minimal_norm=True),
    "HopSkipJump": ArtSupport(BOTH, per_sample=True, minimal_norm=True),
    "BoundaryAttack": ArtSupport(L2, per_sample=True, minimal_norm=True),
}

_IMAGE = "transforms a natural image (3 colour channels, spatial layout), which has no meaning on the flattened view"
_PATCH = "optimises a patch pasted into images, not a per-sample evasion perturbation"
_DETECTOR = "attacks object detectors, not classifiers"
_ASR = "attacks speech-recognition estimators, not classifiers"
# Every other evasion attack of ART, with the reason the adapter does not run it.
ART_EXCLUDED: dict[str, str] = {
    "AdversarialPatch": _PATCH,
    "AdversarialPatchNumpy": _PATCH,
    "AdversarialPatchPyTorch": _PATCH,
    "AdversarialPatchTensorFlowV2": _PATCH + " (TensorFlow)",
    "AdversarialTexturePyTorch": "optimises a texture over video frames with foreground masks, not a per-sample "
    "evasion perturbation",
    "DPatch": _DETECTOR,
    "RobustDPatch": _DETECTOR,
    "OverloadPyTorch": _DETECTOR,
    "SNAL": _DETECTOR,
    "CarliniWagnerASR": _ASR,
    "ImperceptibleASR": _ASR,
    "ImperceptibleASRPyTorch": _ASR,
    "CompositeAdversarialAttackPyTorch": "changes hue, saturation, rotation and brightness: it " + _IMAGE,
    "GRAPHITEBlackbox": "perturbs image regions chosen by a mask and transforms: it " + _IMAGE,
    "GRAPHITEWhiteboxPyTorch": "perturbs image regions chosen by a mask and transforms: it " + _IMAGE,
    "LaserAttack": "draws a laser beam into an image: it " + _IMAGE,
    "ShadowAttack": "casts a smooth shadow on an image: it " + _IMAGE,
    "SpatialTransformation": "rotates and translates images: it " + _IMAGE,
    "Wasserstein": "moves pixel mass with an image-space transport kernel: it " + _IMAGE,
    "OverTheAirFlickeringPyTorch": "perturbs video frames with a temporal flicker of one colour per frame: it "
    + _IMAGE,
    "GeoDA": "searches in a low-frequency DCT subspace of an image: it " + _IMAGE,
    "SimBA": "takes one sample at a time in an image DCT or pixel basis and needs probability outputs",
    "ZooAttack": "resizes the image and samples coordinates by image importance by default: it " + _IMAGE,
    "PixelAttack": "sets whole pixels (all channels) of an image to new values by differential evolution: it " + _IMAGE,
    "ThresholdAttack": "sets whole pixels (all channels) of an image to new values by differential evolution: it "
    + _IMAGE,
    "DecisionTreeAttack": "attacks scikit-learn decision trees, not neural networks",
    "HighConfidenceLowUncertainty": "attacks GPy Gaussian-process classifiers, not neural networks",
    "MalwareGDTensorFlow": "attacks TensorFlow malware classifiers over byte embeddings",
    "FeatureAdversariesNumpy": "matches the internal representation of a guide input, not a label",
    "FeatureAdversariesPyTorch": "matches the internal representation of a guide input, not a label",
    "FeatureAdversariesTensorFlowV2": "matches the internal representation of a guide input, not a label (TensorFlow)",
    "FrameSaliencyAttack": "wraps another ART attack and perturbs video frames by saliency; use that attack directly",
    "LowProFool": "needs feature importances fitted on training data (tabular attack)",
    "SaliencyMapMethod": "perturbs the most salient features by a fixed amount up to the clip bound (ℓ0), not a "
    "budgeted perturbation; use torchattacks:JSMA",
    "SignOPTAttack": "is a decision-based ℓ2 attack with a fixed query schedule per sample; use art:HopSkipJump "
    "or art:BoundaryAttack",
    "TargetedUniversalPerturbation": "computes one perturbation for a whole data set (universal), not a "
    "per-sample evasion",
    "UniversalPerturbation": "computes one perturbation for a whole data set (universal), not a per-sample evasion",
    "VirtualAdversarialMethod": "needs the model to output probabilities (it checks that outputs sum to one); the "
    "view returns logits",
    "ProjectedGradientDescentNumpy": "is the numpy back end of ProjectedGradientDescent; use "
    "art:ProjectedGradientDescent, which picks the PyTorch one",
    "ProjectedGradientDescentPyTorch": "is the PyTorch back end of ProjectedGradientDescent; use "
    "art:ProjectedGradientDescent",
    "ProjectedGradientDescentTensorFlowV2": "is the TensorFlow back end of ProjectedGradientDescent",
    "AutoConjugateGradient": "keeps its own [0, 1] projections and loss choices for images; use "
    "art:AutoProjectedGradientDescent",
    "RescalingAutoConjugateGradient": "keeps its own [0, 1] projections and loss choices for images; use "
    "art:AutoProjectedGradientDescent",
}
# Set by the adapter from the threat model or the view; a user value would silently disagree with it.
RESERVED_ARGS = frozenset({"norm", "estimator", "classifier", "targeted", "mask"})


def _art() -> Any:
    try:
        # ART loads on first use (its import takes seconds)
        import art.attacks.evasion as evasion
        from art.estimators.classification import PyTorchClassifier
    except ImportError as exc:
        raise ImportError(
            f"the ART adapter needs adversarial-robustness-toolbox; install it with: {INSTALL_HINT}"
        ) from exc
    return evasion, PyTorchClassifier


def art_classes() -> list[str]:
    """Every evasion attack class the installed ART exports, adapted or not."""
    # ART loads on first use (its import takes seconds)
    from art.attacks.attack import EvasionAttack

    evasion, _ = _art()
    return sorted(
        name
        for name, obj in vars(evasion).items()
        if inspect.isclass(obj) and issubclass(obj, EvasionAttack) and obj is not EvasionAttack
    )


def art_names() -> list[str]:
    """The ART evasion attacks the adapter runs (those of ``ART_ATTACKS`` that the installed ART has)."""
    evasion, _ = _art()
    return sorted(name for name in ART_ATTACKS if hasattr(evasion, name))


class _Unregistered(nn.Module):
    """What ART wraps: the view, held without registering it as a submodule (see the module docstring)."""

    view: SingleInputView  # set with object.__setattr__, past nn.Module's registration

    def __init__(self, view: SingleInputView) -> None:
        super().__init__()
        object.__setattr__(self, "view", view)

    def forward(self, x: Tensor) -> Tensor:
        view = self.view
        out: Tensor = view(x.to(device=view.clean.device, dtype=view.dtype)).to(x.device)
        return out


class ArtAttack(Attack):
    """One ART evasion attack, by class name, on the attacked modalities of a multi-modal model.

    ``options`` go to the attack's constructor (see the module docstring for units and defaults). ART
    takes one ε per call, so ``per_sample_eps`` is False.
    """

    library = "art"
    per_sample_eps = False

    def __init__(self, attack_name: str, specs: Sequence[ModalitySpec], *, seed: int = 0, **options: Any) -> None:
        super().__init__(specs, seed=seed)
        evasion, _ = _art()
        if attack_name in ART_EXCLUDED:
            raise ValueError(
                f"art:{attack_name} cannot be adapted to a multi-modal model: it {ART_EXCLUDED[attack_name]}"
            )
        valid = art_names()
        if attack_name not in valid:
            hint = did_you_mean(attack_name, valid, prefix="art:")
            raise ValueError(f"unknown ART attack {attack_name!r}{hint}; valid: {', '.join(valid)}")
        self.support = ART_ATTACKS[attack_name]
        for module in self.support.imports:
            if importlib.util.find_spec(module) is None:
                raise ImportError(
                    f"art:{attack_name} needs the {module} package, which ART imports without declaring "
                    f"it; install it with: pip install {module}"
                )
        self.attack_cls = getattr(evasion, attack_name)
        options = dict(options)
        self.fixed_eps: float | None = None
        if "eps" in options:
            if "eps" not in inspect.signature(self.attack_cls.__init__).parameters:
                raise ValueError(
                    f"art:{attack_name} has no budget option eps (it searches for the smallest "
                    f"perturbation); ε comes from --eps"
                )
            value = options.pop("eps")
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise ValueError(f"art:{attack_name} option eps must be a number, got {value!r}")
            self.fixed_eps = float(value)
        self.signature_args = checked_signature(
            f"art:{attack_name}",
            self.attack_cls,
            options,
            RESERVED_ARGS | {"eps"},
            "the threat model (--norm, --eps) or the adapter",
        )
        self.name = f"art:{attack_name}"
        self.norms = self.support.norms
        self.minimal_norm = self.support.minimal_norm
        self.options = dict(options)

    @property
    def library_version(self) -> str:
        # ART loads on first use (its import takes seconds)
        import art

        return str(art.__version__)

    def describe(self) -> str:
        return describe_library_attack(self.name, self.options, self.fixed_eps)

    def validate(self, threat: ThreatModel) -> None:
        check_library_threat(self.name, self.norms, threat, "art", DEFAULT_NORM_ATTACK)
        super().validate(threat)

    def constructor_args(self, threat: ThreatModel, scale: float, n: int, targeted: bool) -> dict[str, Any]:
        """Constructor arguments in library units: budget 0.35, ``eps_step`` divided by ``scale``."""
        args = dict(self.options)
        params = self.signature_args
        if "eps" in params:
            args["eps"] = LIB_EPS if threat.norm != "l0" else args.get("eps", params["eps"].default)
            if "eps_step" in params:
                if "eps_step" in args:
                    args["eps_step"] = args["eps_step"] / scale
                else:
                    args["eps_step"] = LIB_EPS * params["eps_step"].default / params["eps"].default
        if "norm" in params:
            args["norm"] = LIB_NORMS[threat.norm]
        if "targeted" in params:
            args["targeted"] = targeted
        if "batch_size" in params and "batch_size" not in args and not self.support.per_sample:
            args["batch_size"] = n
        if "verbose" in params and "verbose" not in args:
            args["verbose"] = False
        return args

    def scale(self, threat: ThreatModel, eps: float) -> tuple[float, bool]:
        """The view's scale s and whether bounded modalities are box-mapped (ART's clip *is* the box).

        Attacks with a budget (ℓ2, ℓ∞, ℓ1): ``s = eps / 0.35`` (library budget 0.35, so random starts never
        reach the tags), box-mapped. Attacks without one (minimal-norm, CW, ℓ0) are not scale-free (CW's loss
        adds ‖δ‖², DeepFool scales its step by ``clip_max − clip_min``): with every attacked modality bounded
        they get ``s = 1`` and the true boxes, exactly as on a single-input model; with an unbounded one there
        is no single-input box to copy, and they get ``s = eps / 0.35`` (``1`` for ℓ0), clip [0, 1] everywhere
        and the boxes clamped by the view (``torch.clamp``), as in earlier releases."""
        if "eps" in self.signature_args and threat.norm != "l0":
            return eps / LIB_EPS, True
        if all(self.specs[m].bounded for m in threat.modalities):
            return 1.0, True
        return (1.0 if threat.norm == "l0" else eps / LIB_EPS), False

    def _estimator(self, view: SingleInputView, n_classes: int, clip_values: tuple[Any, Any]) -> Any:
        _, classifier = _art()
        device = "gpu" if view.clean.device.type == "cuda" else "cpu"
        return classifier(
            _Unregistered(view),
            loss=nn.CrossEntropyLoss(),
            input_shape=view.input_shape,
            nb_classes=n_classes,
            clip_values=clip_values,
            channels_first=True,
            device_type=device,
        )

    def _generate(
        self,
        view: SingleInputView,
        threat: ThreatModel,
        scale: float,
        n_classes: int,
        clip_values: tuple[Any, Any],
        y: np.ndarray,
        targeted: bool,
        **kwargs: Any,
    ) -> np.ndarray:
        x = view.encode().cpu().numpy().astype(np.float32)
        estimator = self._estimator(view, n_classes, clip_values)
        args = self.constructor_args(threat, scale, x.shape[0], targeted)
        # one mask for every sample: generate() gets it per input, shape x.shape[1:], which ART broadcasts over
        # whatever subset it attacks (APGD and AutoAttack attack only the samples still robust; a per-sample
        # mask of the whole batch would not broadcast against that subset)
        input_mask = view.attack_mask().cpu().numpy().astype(np.float32)
        if self.support.masked == "constructor":
            args["mask"] = np.broadcast_to(input_mask, x.shape).astype(np.float32)
        with view.probing():
            atk = self.attack_cls(estimator, **args)
        if self.support.masked == "generate":
            kwargs["mask"] = input_mask
        adv: np.ndarray = atk.generate(x, y, **kwargs)
        return adv

    def _random_start(
        self, view: SingleInputView, clip: tuple[np.ndarray, np.ndarray], y: int, targeted: bool
    ) -> np.ndarray | None:
        """The first adversarial one of ``init_size`` uniform draws inside ``clip``, from the seeded numpy
        generator (ART's own start comes from an unseeded one), or None when no draw is adversarial."""
        size = int(self.options.get("init_size", self.signature_args["init_size"].default))
        lower, upper = clip
        draws = np.random.uniform(lower, upper, size=(size,) + lower.shape).astype(np.float32)
        with torch.no_grad():
            pred = view(torch.from_numpy(draws).to(view.clean.device)).argmax(1).cpu().numpy()
        hits = np.flatnonzero(pred == y if targeted else pred != y)
        return draws[hits[0]][None] if hits.size else None

    def perturb(
        self,
        model: nn.Module,
        batch: Batch,
        labels: Tensor,
        threat: ThreatModel,
        eps: Tensor,
        *,
        targets: Tensor | None = None,
    ) -> Batch:
        eps0 = float(eps[0])
        if self.fixed_eps is not None:
            check_fixed_eps(self.name, self.fixed_eps, [eps0])
        if eps0 == 0.0:
            return {m: batch[m] for m in threat.modalities}
        scale, box_map = self.scale(threat, eps0)
        targeted = targets is not None
        if targeted and "targeted" not in self.signature_args:
            raise ValueError(f"{self.name} has no targeted mode")
        y = (labels if targets is None else targets).detach().cpu().numpy().astype(np.int64)
        n_classes = int(clean_logits(model, {m: x[:1] for m, x in batch.items()}).shape[1])  # eval, no grad
        model.eval()

        def make_view(part: Batch) -> SingleInputView:
            return SingleInputView(
                model, part, threat.modalities, self.specs, scale, self.support.min_side, box_map=box_map
            )

        def to_numpy(bounds: tuple[Tensor, Tensor]) -> tuple[np.ndarray, np.ndarray]:
            return bounds[0][0].cpu().numpy().astype(np.float32), bounds[1][0].cpu().numpy().astype(np.float32)

        with frozen_parameters(model):
            if not self.support.per_sample:
                view = make_view(batch)
                lower, upper = view.clip_values()
                clip = to_numpy((lower[None], upper[None]))
                x_adv = self._generate(view, threat, scale, n_classes, clip, y, targeted)
                return view.decode(torch.from_numpy(np.asarray(x_adv)).to(device=view.clean.device))
            rows = []
            for i in range(labels.shape[0]):
                one = make_view({m: x[i : i + 1] for m, x in batch.items()})
                clip = to_numpy(one.clip_bounds(PIN))
                start = self._random_start(one, clip, int(y[i]), targeted)
                if start is None:
                    rows.append({m: batch[m][i : i + 1] for m in threat.modalities})
                    continue
                x_adv = self._generate(one, threat, scale, n_classes, clip, y[i : i + 1], targeted, x_adv_init=start)
                rows.append(one.decode(torch.from_numpy(np.asarray(x_adv)).to(device=one.clean.device)))
        return {m: torch.cat([r[m] for r in rows]) for m in threat.modalities}


def build_art(attack_name: str, specs: Sequence[ModalitySpec], *, seed: int = 0, **options: Any) -> ArtAttack:
    return ArtAttack(attack_name, specs, seed=seed, **options)


register_family("art", build_art, art_names)

__all__ = ["ArtAttack", "ART_ATTACKS", "ART_EXCLUDED", "art_names", "art_classes"]
