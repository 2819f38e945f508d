"""Run any torchattacks attack on a multi-modal model: ``build_attack("torchattacks:PGDL2", specs, steps=10)``.

torchattacks calls ``model(x)`` with one image tensor in [0, 1], clamps to [0, 1] itself, and some
attacks call the model on sub-batches or single samples (DeepFool, FAB, APGD, Square). The adapter
shows it the single-input *view* of :mod:`mmrobust_bench.attacks.view`. How the view maps the input
(see :func:`library_box_note`, which ``list`` prints):

* **uniform box** — every attacked bounded modality has the same box width ``w = hi − lo`` on every
  channel (images in [0, 1], [−1, 1], [0, 255]): the map ``x_lib = (u − lo) / w`` sends the box onto
  [0, 1], so torchattacks' own clamp *is* the box and the result equals the library's on the
  single-input model of that modality (other modalities fixed), iterates that leave the box and clean
  values on a bound included. The library budget is ``eps / w``; where its random starts or noise
  could move the sample-index tags (budget above ``TAG_TOLERANCE``), the library runs one sample at a
  time. Unbounded modalities attacked jointly with it are centred and need ``eps / w ≤ 0.5``;
* **non-uniform box** (e.g. ImageNet-normalised channels): no affine map with a scalar scale (which ℓ2
  geometry needs) sends it onto [0, 1], so torchattacks cannot express it. The adapter keeps ℓ2
  geometry — centred map, scale ``eps / 0.35`` — clamps what the model sees into the box with
  ``torch.clamp`` and projects the result into the box; the library's own iterate is not clamped to
  the box, so it can differ from a run on a box the library could express;
* **unbounded** modalities (audio): centred map with scale ``eps / 0.35``, where the library's clamp
  never acts on a perturbation inside the ε ball.

Options are in model-input space, as the library means them on a single-input model
(:func:`option_units`): ``alpha``, SPSA's ``delta``, the noise levels ``noise_sd`` (PGDRS, PGDRSL2) and
``std`` (GN) and CW's ``lr`` are divided by the scale. Without ``alpha`` the library's default ratio
alpha/eps is kept, so a grid over ε scales the step. ``eps`` comes from the threat (``--eps``); an
``eps`` option is accepted when it equals the ε of the run (torchattacks habit) and refused otherwise.

Every torchattacks attack class is either run by the adapter or listed in ``EXCLUDED`` with the reason
(tests/test_attack_suite.py enumerates the installed library, so a new release cannot slip through
untested). JSMA has no untargeted mode and picks ``(y + 1) % 10`` as target, outside the range of a
model with fewer classes: untargeted runs target ``(y + 1) % K`` instead. The class count and that
target come from the clean logits computed in eval mode without gradients (a model in train mode never
updates its BatchNorm statistics for a probe).

Over 400 lines as one module: one adapter, its option checks and the per-attack quirks it must know (sub-batch
calls, targeted modes, box handling).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..contracts import Batch, ModalitySpec, ThreatModel
from ..hints import did_you_mean
from . import register_family
from .base import Attack
from .view import (
    LIB_EPS,
    TAG_TOLERANCE,
    SingleInputView,
    check_library_threat,
    checked_signature,
    clean_logits,
    describe_library_attack,
    frozen_parameters,
)

INSTALL_HINT = "pip install --no-deps torchattacks==3.5.1"
ALL_NORMS = ("l2", "linf", "l1", "l0")
# Attacks with a fixed norm, as grouped in torchattacks' own __init__. Attacks with a ``norm``
# argument (APGD, APGDT, FAB, Square, AutoAttack) take ℓ2 or ℓ∞ (FAB also ℓ1); the ℓ1 and ℓ0 attacks
# have no ℓ2/ℓ∞ budget of their own and are also accepted under those, since the result is projected.
L2_ATTACKS = frozenset({"CW", "DeepFool", "EADEN", "PGDL2", "PGDRSL2"})
LINF_ATTACKS = frozenset(
    {
        "BIM",
        "EOTPGD",
        "FFGSM",
        "FGSM",
        "Jitter",
        "MIFGSM",
        "NIFGSM",
        "PGD",
        "PGDRS",
        "RFGSM",
        "SPSA",
        "TPGD",
        "UPGD",
        "VMIFGSM",
        "VNIFGSM",
    }
)
L1_ATTACKS = frozenset({"EADL1"})
L0_ATTACKS = frozenset({"JSMA", "SparseFool"})
# No budget at all (identity, Gaussian noise): any threat norm, the result is projected.
UNBUDGETED = frozenset({"VANILA", "GN"})
NORM_ARG_L1 = frozenset({"FAB"})
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
# Attacks that add smoothing noise of ``noise_sd`` to every coordinate, tags included.
SMOOTHING_NOISE = frozenset({"PGDRS", "PGDRSL2"})
# Gaussian noise keeps the tags readable when TAG_TOLERANCE is 7 standard deviations away.
SAFE_NOISE_SD = TAG_TOLERANCE / 7
# Attacks whose untargeted mode targets ``(y + 1) % 10``; the adapter targets ``(y + 1) % K``.
NEXT_CLASS_TARGET = frozenset({"JSMA"})
# Attacks that move every coordinate (tags included) at random by up to their budget: always, or when their
# ``random_start`` option is on. The others only take gradient steps, which never move the tags.
RANDOM_MOVES = frozenset(
    {"FFGSM", "RFGSM", "TPGD", "APGD", "APGDT", "FAB", "Square", "AutoAttack", "SPSA", "GN", "VMIFGSM", "VNIFGSM"}
)
RANDOM_START_OPTION = frozenset({"PGD", "PGDL2", "EOTPGD", "UPGD", "Jitter"})
# Attacks that need a square image: Square's ℓ2 windows assume H = W (AutoAttack runs Square).
SQUARE_IMAGE = frozenset({"Square", "AutoAttack"})
# Attacks whose targeted DLR loss reads the 4th-largest logit.
DLR_TARGETED = frozenset({"APGDT", "AutoAttack"})
# Constructor arguments measured in input units that carry the budget (PIFGSM calls it max_epsilon).
BUDGET_ARGS = ("eps", "max_epsilon")
LIB_NORMS = {"l2": "L2", "linf": "Linf", "l1": "L1"}
# Set by the adapter from the threat model; a user value would silently disagree with it.
RESERVED_ARGS = frozenset({"norm", "model"})
# Options that are lengths in input space: given in model-input units, divided by the view's scale.
# (attack or "*" for all, option) -> what it is.
LENGTH_OPTIONS: dict[tuple[str, str], str] = {
    ("*", "alpha"): "step size",
    ("SPSA", "delta"): "finite-difference step",
    ("PGDRS", "noise_sd"): "smoothing-noise level",
    ("PGDRSL2", "noise_sd"): "smoothing-noise level",
    ("GN", "std"): "Gaussian-noise standard deviation",
    ("CW", "lr"): "Adam learning rate (acts in tanh space of the box; ≈ a coordinate step of lr/2 near its centre)",
}
DEFAULT_NORM_ATTACK = {"l2": "PGDL2", "linf": "PGD", "l1": "EADL1", "l0": "JSMA"}


def import_torchattacks() -> Any:
    try:
        # torchattacks loads on first use (`list` and `--help` never need it)
        import torchattacks
    except ImportError as exc:
        raise ImportError(f"the torchattacks adapter needs torchattacks; install it with: {INSTALL_HINT}") from exc
    return torchattacks


def torchattacks_classes() -> list[str]:
    """Every attack class the installed torchattacks exports, adapted or not."""
    ta = import_torchattacks()
    return sorted(
        name
        for name, obj in vars(ta).items()
        if inspect.isclass(obj) and issubclass(obj, ta.attack.Attack) and obj is not ta.attack.Attack
    )


def torchattacks_names() -> list[str]:
    """Every torchattacks attack class the adapter can run: all but those of ``EXCLUDED``."""
    return [name for name in torchattacks_classes() if name not in EXCLUDED]


def supported_norms(attack_name: str, parameters: Sequence[str]) -> tuple[str, ...]:
    """The threat norms the adapter runs ``attack_name`` under, its natural one first."""
    if attack_name in UNBUDGETED:
        return ALL_NORMS
    if "norm" in parameters:
        return ("l2", "linf", "l1") if attack_name in NORM_ARG_L1 else ("l2", "linf")
    if attack_name in L2_ATTACKS:
        return ("l2",)
    if attack_name in LINF_ATTACKS:
        return ("linf",)
    if attack_name in L1_ATTACKS:
        return ("l1", "l2", "linf")
    if attack_name in L0_ATTACKS:
        return ("l0", "l2", "linf")
    return ("l2", "linf")


def length_options(attack_name: str) -> dict[str, str]:
    """The options of ``attack_name`` given in model-input units and divided by the view's scale."""
    return {opt: what for (name, opt), what in LENGTH_OPTIONS.items() if name in ("*", attack_name)}


def uniform_width(specs: Sequence[ModalitySpec]) -> float | None:
    """The common box width of the bounded ``specs`` when every channel of every one has the same width, else None."""
    widths = {hi - lo for s in specs if s.lower is not None and s.upper is not None for lo, hi in zip(s.lower, s.upper)}
    return widths.pop() if len(widths) == 1 else None


@dataclass(frozen=True)
class ViewPlan:
    """How one call maps the input for the library: ``scale`` s, ``box_map`` (the library clamp is the
    box), ``budget`` (ε in library units), ``per_sample`` (one library call per sample)."""

    scale: float
    box_map: bool
    budget: float
    per_sample: bool


class TorchattacksAttack(Attack):
    """One torchattacks attack, by class name, on the attacked modalities of a multi-modal model.

    ``options`` go to the attack's constructor, lengths (:func:`option_units`) converted from model-input
    space. ε and the norm come from the threat model; torchattacks takes one ε per call, so
    ``per_sample_eps`` is False. ``seed`` and ``n_classes`` default to the adapter's seed and the model's
    class count (not the library's 10). Minimal-norm attacks without a budget (DeepFool, CW) run on the
    same view; their result is projected onto the ε ball by the base class, and ``minimal_norm`` marks
    them for ``bench.evaluate.minimal_norm_curve`` (run once at a large ε, the per-sample norms give the
    curve). See the module docstring for the box.
    """

    library = "torchattacks"
    per_sample_eps = False

    def __init__(self, attack_name: str, specs: Sequence[ModalitySpec], *, seed: int = 0, **options: Any) -> None:
        super().__init__(specs, seed=seed)
        ta = import_torchattacks()
        if attack_name in EXCLUDED:
            raise ValueError(
                f"torchattacks:{attack_name} cannot be adapted to a multi-modal model: it {EXCLUDED[attack_name]}"
            )
        valid = torchattacks_names()
        if attack_name not in valid:
            hint = did_you_mean(attack_name, valid, prefix="torchattacks:")
            raise ValueError(f"unknown torchattacks attack {attack_name!r}{hint}; valid: {', '.join(valid)}")
        self.attack_cls = getattr(ta, attack_name)
        self.name = f"torchattacks:{attack_name}"
        params = dict(inspect.signature(self.attack_cls.__init__).parameters)
        options = dict(options)
        self.fixed_eps: float | None = None
        for budget in BUDGET_ARGS:
            if budget in options:
                if budget not in params:
                    raise ValueError(
                        f"{self.name} has no budget option {budget} (it searches for the smallest "
                        f"perturbation); ε comes from --eps"
                    )
                value = options.pop(budget)
                if not isinstance(value, (int, float)) or isinstance(value, bool):
                    raise ValueError(f"{self.name} option {budget} must be a number, got {value!r}")
                self.fixed_eps = float(value)
        self.signature_args = checked_signature(
            self.name, self.attack_cls, options, RESERVED_ARGS | set(BUDGET_ARGS), "the threat model (--norm, --eps)"
        )
        self.norms = supported_norms(attack_name, list(self.signature_args))
        self.options = options
        self.minimal_norm = attack_name in MINIMAL_NORM
        # ``batched``: where the box map would need one library call per sample (a random start larger than the
        # tags' margin), take the centred map instead, as for a non-uniform box: one call per batch, the box
        # clamped by the view. The autoattack ensemble sets it; a plain ``torchattacks:NAME`` keeps the
        # library's own box.
        self.batched = False
        self.lib_eps = LIB_EPS
        if attack_name in NEIGHBOUR_SAMPLING:
            beta = float(self.options.get("beta", self.signature_args["beta"].default))
            self.lib_eps = LIB_EPS / max(1.0, beta)

    @property
    def library_version(self) -> str:
        return str(import_torchattacks().__version__)

    def describe(self) -> str:
        return describe_library_attack(self.name, self.options, self.fixed_eps)

    def validate(self, threat: ThreatModel) -> None:
        check_library_threat(self.name, self.norms, threat, "torchattacks", DEFAULT_NORM_ATTACK)
        super().validate(threat)

    def plan(self, threat: ThreatModel, eps: float) -> ViewPlan:
        """The view's map for one call at ``eps`` (see the module docstring)."""
        mods = threat.modalities
        bounded = [self.specs[m] for m in mods if self.specs[m].bounded]
        width = uniform_width(bounded) if bounded else None
        l0 = threat.norm == "l0"
        if width is not None:
            budget = 1.0 if l0 else eps / width
            if len(bounded) == len(mods) or (not l0 and budget <= 0.5):
                per_sample = l0 or self.tag_move(budget) > TAG_TOLERANCE
                if not (per_sample and self.batched and not l0):
                    return ViewPlan(width, True, budget, per_sample)
        scale = 1.0 if l0 else eps / self.lib_eps
        budget = 1.0 if l0 else self.lib_eps
        return ViewPlan(scale, False, budget, l0 or self.tag_move(budget, scale) > TAG_TOLERANCE)

    def tag_move(self, budget: float, scale: float | None = None) -> float:
        """How far random starts, neighbour sampling or noise can move the sample-index tags, in library units
        (gradient steps never move them: they have zero gradient)."""
        name = self.attack_cls.__name__
        scale = scale if scale is not None else 1.0
        random_start = name in RANDOM_START_OPTION and bool(
            self.options.get("random_start", self.signature_args["random_start"].default)
        )
        move = budget if (random_start or name in RANDOM_MOVES) else 0.0
        if name in NEIGHBOUR_SAMPLING:
            move *= float(self.options.get("beta", self.signature_args["beta"].default))
        if name in SMOOTHING_NOISE:
            kind = self.options.get("noise_type", self.signature_args["noise_type"].default)
            sd = self._lib_value("noise_sd", scale, SAFE_NOISE_SD)
            move = max(move, 7 * sd if kind == "guassian" else sd)
        if name == "GN":
            move = max(move, 7 * self._lib_value("std", scale, self.signature_args["std"].default))
        if name == "SPSA":
            move = max(move, self._lib_value("delta", scale, self.signature_args["delta"].default))
        return move

    def _lib_value(self, option: str, scale: float, default: float) -> float:
        return float(self.options[option]) / scale if option in self.options else float(default)

    def constructor_args(self, threat: ThreatModel, plan: ViewPlan, n_classes: int) -> dict[str, Any]:
        """Constructor arguments in library units: budget ``plan.budget``, lengths divided by the scale."""
        name = self.attack_cls.__name__
        args = dict(self.options)
        params = self.signature_args
        for option in length_options(name):
            if option in args and option in params:
                args[option] = float(args[option]) / plan.scale
        for budget in BUDGET_ARGS:
            if budget in params:
                args[budget] = plan.budget
        if "alpha" in params and "alpha" not in args:
            default_budget = next(params[b].default for b in BUDGET_ARGS if b in params)
            args["alpha"] = plan.budget * params["alpha"].default / default_budget
        if name in SMOOTHING_NOISE and "noise_sd" not in args:
            args["noise_sd"] = SAFE_NOISE_SD
        if "norm" in params:
            args["norm"] = LIB_NORMS.get(threat.norm, "L2")
        if "seed" in params and "seed" not in args:
            args["seed"] = self.seed
        if "n_classes" in params and "n_classes" not in args:
            args["n_classes"] = n_classes
        return args

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
        plan = self.plan(threat, eps0)
        n_classes = int(clean_logits(model, {m: x[:1] for m, x in batch.items()}).shape[1])  # eval, no grad
        if self.attack_cls.__name__ in DLR_TARGETED and n_classes < 4:
            raise ValueError(
                f"{self.name} uses the targeted DLR loss, which needs at least 4 classes; the model has "
                f"{n_classes}: use torchattacks:APGD"
            )
        if targets is None and self.attack_cls.__name__ in NEXT_CLASS_TARGET:
            targets = (labels + 1) % n_classes
        args = self.constructor_args(threat, plan, n_classes)
        if not plan.per_sample:
            return self._run(model, batch, labels, targets, threat, plan, args)
        rows = [
            self._run(
                model,
                {m: x[i : i + 1] for m, x in batch.items()},
                labels[i : i + 1],
                None if targets is None else targets[i : i + 1],
                threat,
                plan,
                args,
            )
            for i in range(labels.shape[0])
        ]
        return {m: torch.cat([r[m] for r in rows]) for m in threat.modalities}

    def _run(
        self,
        model: nn.Module,
        batch: Batch,
        labels: Tensor,
        targets: Tensor | None,
        threat: ThreatModel,
        plan: ViewPlan,
        args: dict[str, Any],
    ) -> Batch:
        view = SingleInputView(
            model,
            batch,
            threat.modalities,
            self.specs,
            plan.scale,
            box_map=plan.box_map,
            square=self.attack_cls.__name__ in SQUARE_IMAGE,
        )
        with frozen_parameters(model):
            atk = self.attack_cls(view, **args)
            atk.set_model_training_mode(model_training=False)
            if targets is not None:
                if "targeted" not in atk.supported_mode:
                    raise ValueError(f"{self.name} has no targeted mode")
                atk.set_mode_targeted_by_label(quiet=True)
            x_adv = atk(view.encode(), labels if targets is None else targets)
        return view.decode(x_adv.detach())


def check_fixed_eps(label: str, fixed: float, eps: Sequence[float]) -> None:
    """An ``eps`` option is accepted when it equals the run's ε (torchattacks/ART habit) and refused otherwise;
    ε = 0 (the clean point, part of most grids) always passes."""
    other = [e for e in eps if e != 0 and not math.isclose(e, fixed, rel_tol=1e-6, abs_tol=1e-12)]
    if other:
        raise ValueError(
            f"{label}: option eps={fixed:g} differs from the run's ε={other[0]:g}; ε comes from --eps "
            f"(eps= in the API): drop eps from the attack options or make them equal"
        )


def build_torchattacks(
    attack_name: str, specs: Sequence[ModalitySpec], *, seed: int = 0, **options: Any
) -> TorchattacksAttack:
    return TorchattacksAttack(attack_name, specs, seed=seed, **options)


register_family("torchattacks", build_torchattacks, torchattacks_names)

__all__ = [
    "TorchattacksAttack",
    "SingleInputView",
    "torchattacks_names",
    "torchattacks_classes",
    "EXCLUDED",
    "IMAGE_ONLY",
    "MINIMAL_NORM",
    "supported_norms",
    "length_options",
    "check_fixed_eps",
    "ViewPlan",
]
