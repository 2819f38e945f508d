"""Run any torchattacks attack on a multi-modal model: ``build_attack("torchattacks:PGDL2", specs, steps=10)``.

torchattacks calls ``model(x)`` with one image tensor in [0, 1], clamps to [0, 1] itself, and some
attacks call the model on sub-batches or single samples (DeepFool, FAB, APGD, Square). The adapter
shows it a single-input *view* of the multi-modal model (DESIGN.md, "Adapting single-input attack
libraries"):

* the attacked modalities, flattened and concatenated in ``threat.modalities`` order, are the first
  D coordinates of a (B, 1, H, W) "image", mapped by one affine map per sample centred on the clean
  input, ``x_lib = 0.5 + (u - u_clean) / s`` with the scalar ``s = eps / 0.35``. The library budget is
  then 0.35 for every ε, any δ inside the ε ball (ℓ2 or ℓ∞) stays in [0.15, 0.85] so the library's
  own [0, 1] clamp never acts, and ℓ2 geometry is kept because ``s`` is a scalar;
* the next coordinates are *tags*: the sample index in binary, as 0.1 / 0.9. The view decodes them by
  thresholding at 0.5 under ``no_grad`` and supplies the frozen modalities and the clean centre of
  exactly those samples, whatever subset or order the library sends. Tags get zero gradient, so
  gradient steps never move them, and random starts move them by at most 0.35, which the
  threshold tolerates; a tag moved further (noise, pixel swaps) is an error, never a silent mix-up. The rest of the image is padding (also ignored), so that H, W ≥ 5: Square's
  ℓ2 initialisation tiles the image into windows of side H // 5.

The view clamps every attacked modality into its valid box before calling the model; the base
class then projects the returned inputs onto the threat ball and into the boxes, restores model
mode and RNGs, and keeps frozen modalities bit-identical.
"""
from __future__ import annotations

import inspect
import math
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

import torch
from torch import Tensor, nn

from ..contracts import Batch, ModalitySpec, ThreatModel
from . import register_family
from .base import Attack

INSTALL_HINT = "pip install --no-deps torchattacks==3.5.1"
LIB_EPS = 0.35
CENTRE = 0.5
TAG_LOW, TAG_HIGH = 0.1, 0.9
TAG_SLACK = 1e-3  # rounding in the library's own steps and clamps
MIN_SIDE = 5

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
IMAGE_ONLY = {
    "DIFGSM": "resizes and pads the image (input diversity)",
    "TIFGSM": "resizes the image and smooths gradients with a 3-channel kernel",
    "SINIFGSM": "rescales pixel intensities towards 0",
    "PIFGSM": "spreads gradients over image patches with a 3-channel kernel",
    "PIFGSMPP": "spreads gradients over image patches with a 3-channel kernel",
}
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


def torchattacks_names() -> list[str]:
    """Every torchattacks attack class the adapter can run: not the wrappers (MultiAttack, LGV), which take
    other attacks, nor the natural-image attacks of ``IMAGE_ONLY``."""
    ta = _torchattacks()
    wrappers = set(getattr(ta, "__wrapper__", ()))
    return sorted(
        name for name, obj in vars(ta).items()
        if inspect.isclass(obj) and issubclass(obj, ta.attack.Attack) and obj is not ta.attack.Attack
        and name not in wrappers and name not in IMAGE_ONLY
    )


def supported_norms(attack_name: str, parameters: Sequence[str]) -> tuple[str, ...]:
    if "norm" in parameters:
        return ("l2", "linf")
    if attack_name in L2_ATTACKS:
        return ("l2",)
    if attack_name in LINF_ATTACKS:
        return ("linf",)
    return ("l2", "linf")


def grid_shape(n: int) -> tuple[int, int]:
    """A near-square (H, W) with H·W ≥ n and both sides ≥ MIN_SIDE, for attacks that tile the image."""
    h = max(MIN_SIDE, math.ceil(math.sqrt(n)))
    return h, max(MIN_SIDE, math.ceil(n / h))


def tag_bits(n: int) -> int:
    return math.ceil(math.log2(n + 1))


class SingleInputView(nn.Module):
    """The multi-modal model seen as ``f(x)`` on one (B', 1, H, W) tensor, B' any subset of the batch.

    Holds the clean batch; decodes each row's sample index from its tags, so frozen modalities and
    the clean centre always belong to the right sample, for sub-batches, single samples or repeats.
    """

    def __init__(self, model: nn.Module, batch: Batch, modalities: Sequence[str], specs: dict[str, ModalitySpec],
                 scale: float) -> None:
        super().__init__()
        self.model = model
        self.batch = batch
        self.modalities = tuple(modalities)
        self.specs = specs
        self.scale = scale
        self.dtype = torch.promote_types(torch.float32, batch[self.modalities[0]].dtype)
        for m in self.modalities[1:]:
            self.dtype = torch.promote_types(self.dtype, batch[m].dtype)
        self.clean = torch.cat([batch[m].flatten(1).to(self.dtype) for m in self.modalities], 1)
        self.sizes = [batch[m][0].numel() for m in self.modalities]
        n = self.clean.shape[0]
        self.n_tags = tag_bits(n)
        self.height, self.width = grid_shape(self.clean.shape[1] + self.n_tags)

    def encode(self) -> Tensor:
        """The clean batch in library coordinates: 0.5 on attacked coordinates, then tags, then padding."""
        n, d = self.clean.shape
        x = torch.full((n, self.height * self.width), CENTRE, dtype=self.dtype, device=self.clean.device)
        bits = (torch.arange(n, device=x.device)[:, None] >> torch.arange(self.n_tags, device=x.device)) & 1
        x[:, d:d + self.n_tags] = torch.where(bits.bool(), TAG_HIGH, TAG_LOW).to(self.dtype)
        return x.view(n, 1, self.height, self.width)

    def decode(self, x: Tensor, index: Tensor | None = None) -> dict[str, Tensor]:
        """Library coordinates back to the attacked modalities in model-input space (unclamped).

        Row r is sample ``index[r]`` of the batch (all samples in order when ``index`` is None).
        """
        clean = self.clean if index is None else self.clean[index]
        u = clean + self.scale * (x.flatten(1)[:, :self.clean.shape[1]].to(self.dtype) - CENTRE)
        out = {}
        for m, piece in zip(self.modalities, u.split(self.sizes, dim=1)):
            out[m] = piece.reshape((piece.shape[0],) + self.batch[m].shape[1:])
        return out

    def sample_index(self, x: Tensor) -> Tensor:
        """Each row's sample index, read from its tags; an attack that moved a tag further than its own
        budget (noise, pixel swaps) would silently pair rows with another sample's frozen inputs, so
        that is an error instead."""
        with torch.no_grad():
            d = self.clean.shape[1]
            tags = x.flatten(1)[:, d:d + self.n_tags].to(self.dtype)
            bits = tags > CENTRE
            index = (bits.long() << torch.arange(self.n_tags, device=x.device)).sum(1)
            drift = (tags - torch.where(bits, TAG_HIGH, TAG_LOW)).abs().amax()
        if bool((drift > LIB_EPS + TAG_SLACK) | (index >= self.clean.shape[0]).any()):
            raise RuntimeError(f"the attack moved the sample-index tags of the single-input view by {float(drift):.3g}, "
                               f"more than its budget {LIB_EPS}: it changes inputs beyond its budget (noise, pixel "
                               f"swaps) and cannot be adapted with these options")
        return index

    def forward(self, x: Tensor) -> Tensor:
        if tuple(x.shape[1:]) != (1, self.height, self.width):
            raise RuntimeError(f"torchattacks sent an input of shape {tuple(x.shape)} to the single-input view, which "
                               f"takes (B, 1, {self.height}, {self.width}); attacks that resize or crop images cannot "
                               f"be adapted")
        index = self.sample_index(x)
        attacked = self.decode(x, index)
        inputs = {}
        for m, value in self.batch.items():
            if m in attacked:
                inputs[m] = self.specs[m].clamp(attacked[m].to(value.dtype))
            else:
                inputs[m] = value[index]
        return self.model(inputs).logits.float()


@contextmanager
def frozen_parameters(model: nn.Module) -> Iterator[None]:
    """Parameters stop requiring grad during the attack: DeepFool calls ``backward()``, which would
    otherwise fill the user's ``.grad`` buffers; the flags are restored afterwards."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


class TorchattacksAttack(Attack):
    """One torchattacks attack, by class name, on the attacked modalities of a multi-modal model.

    ``options`` go to the attack's constructor. ε and the norm come from the threat model; torchattacks
    takes one ε per call, so ``per_sample_eps`` is False. Step sizes (``alpha``) are in model-input
    units, like ε; without one, the library's default ratio alpha/eps is kept. Other options (CW's
    ``lr``, SPSA's ``delta``, noise levels) are in library units, where the ε ball has radius 0.35.
    ``seed`` and ``n_classes`` default to the adapter's seed and the model's class count (not the
    library's 10). Minimal-norm attacks without a budget (DeepFool, CW) use the same scale; their
    result is projected onto the ε ball by the base class.
    """

    library = "torchattacks"
    per_sample_eps = False

    def __init__(self, attack_name: str, specs: Sequence[ModalitySpec], *, seed: int = 0, **options: Any) -> None:
        super().__init__(specs, seed=seed)
        ta = _torchattacks()
        if attack_name in IMAGE_ONLY:
            raise ValueError(f"torchattacks:{attack_name} {IMAGE_ONLY[attack_name]}, which has no meaning on the "
                             f"flattened multi-modal input; it cannot be adapted")
        valid = torchattacks_names()
        if attack_name not in valid:
            raise ValueError(f"unknown torchattacks attack {attack_name!r}; valid: {', '.join(valid)}")
        self.attack_cls = getattr(ta, attack_name)
        self.signature_args = dict(inspect.signature(self.attack_cls.__init__).parameters)
        self.signature_args.pop("self")
        reserved = sorted(RESERVED_ARGS.intersection(options))
        if reserved:
            raise ValueError(f"torchattacks:{attack_name}: {', '.join(reserved)} come from the threat model, "
                             f"not from options")
        unknown = sorted(set(options) - set(self.signature_args))
        if unknown:
            accepted = sorted(set(self.signature_args) - RESERVED_ARGS)
            raise ValueError(f"torchattacks:{attack_name} has no option {', '.join(unknown)}; "
                             f"accepted: {', '.join(accepted) or 'none'}")
        self.name = f"torchattacks:{attack_name}"
        self.norms = supported_norms(attack_name, list(self.signature_args))
        self.options = dict(options)

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
        """Constructor arguments in library units: budget 0.35, step sizes divided by ``scale``."""
        args = dict(self.options)
        params = self.signature_args
        for budget in BUDGET_ARGS:
            if budget in params:
                args[budget] = LIB_EPS
        if "alpha" in params:
            if "alpha" in args:
                args["alpha"] = args["alpha"] / scale
            else:
                default_budget = next(params[b].default for b in BUDGET_ARGS if b in params)
                args["alpha"] = LIB_EPS * params["alpha"].default / default_budget
        if "norm" in params:
            args["norm"] = LIB_NORMS[threat.norm]
        if "seed" in params and "seed" not in args:
            args["seed"] = self.seed
        if "n_classes" in params and "n_classes" not in args:
            with torch.no_grad():
                args["n_classes"] = view(view.encode()).shape[1]
        return args

    def perturb(self, model: nn.Module, batch: Batch, labels: Tensor, threat: ThreatModel, eps: Tensor,
                *, targets: Tensor | None = None) -> Batch:
        eps0 = float(eps[0])
        if eps0 == 0.0:
            return {m: batch[m] for m in threat.modalities}
        scale = eps0 / LIB_EPS
        view = SingleInputView(model, batch, threat.modalities, self.specs, scale)
        with frozen_parameters(model):
            atk = self.attack_cls(view, **self.constructor_args(threat, scale, view))
            atk.set_model_training_mode(model_training=False)
            if targets is not None:
                if "targeted" not in atk.supported_mode:
                    raise ValueError(f"{self.name} has no targeted mode")
                atk.set_mode_targeted_by_label(quiet=True)
            x_adv = atk(view.encode(), labels if targets is None else targets)
        return view.decode(x_adv.detach())


def build_torchattacks(attack_name: str, specs: Sequence[ModalitySpec], *, seed: int = 0,
                       **options: Any) -> TorchattacksAttack:
    return TorchattacksAttack(attack_name, specs, seed=seed, **options)


register_family("torchattacks", build_torchattacks, torchattacks_names)
