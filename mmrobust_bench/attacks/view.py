"""The single-input view of a multi-modal model, shared by the torchattacks and ART adapters.

Attack libraries call ``model(x)`` with one tensor, clip it to their own box, and some call it on
sub-batches or single samples (DeepFool, FAB, APGD, Square, ART's decision-based attacks). The view
shows them the multi-modal model as ``f(x)`` on one (B', 1, H, W) "image" (docs/design.md §4, "Adapting
single-input attack libraries"):

* the attacked modalities, flattened and concatenated in ``threat.modalities`` order, are the first
  D coordinates, mapped by one affine map ``u = offset + s · x_lib`` with a *scalar* scale ``s`` (so ℓ2
  and ℓ∞ geometry are kept). Two kinds of offset:

  - **box map** (``box_map=True``) for bounded modalities: the offset is the box's lower bound, the
    same for every sample, so the valid box ``[lo, hi]`` becomes the per-feature interval
    ``[0, (hi − lo)/s]`` in library coordinates, one array for the whole batch. The library's own
    clipping then *is* the box: ART gets it as per-feature ``clip_values``; torchattacks, which always
    clamps to [0, 1], gets ``s = hi − lo`` for a uniform box. Iterates that leave the box are clipped by
    the library exactly as on a single-input model, and a clean value on a bound passes its gradient;
  - **centred** for unbounded modalities (and bounded ones the library cannot express):
    ``x_lib = 0.5 + (u − u_clean)/s``; with ``s = eps / LIB_EPS`` any δ in the ε ball stays in
    [0.15, 0.85], so the library's [0, 1] clamp never acts. A bounded modality mapped this way is
    clamped by the view (``torch.clamp``, ``clamp=True``) on what the model sees;

* the next coordinates are *tags*: the sample index in binary, as 0.1 / 0.9. The view decodes them by
  thresholding at 0.5 under ``no_grad`` and supplies the frozen modalities and the clean point of
  exactly those samples, whatever subset or order the library sends. Tags get zero gradient, so
  gradient steps never move them; random starts and noise move them by the library budget, which the
  adapters keep ≤ ``TAG_TOLERANCE`` or else run the library one sample at a time (a one-sample view
  ignores its tags). A tag moved further in a batched view is an error, never a silent mix-up. The rest
  of the image is padding (also ignored), so that H, W ≥ 5: Square's ℓ2 initialisation tiles the image
  into windows of side H // 5.

Decoding is ``u = u_clean + s · (x_lib − x_lib,clean)``, so whatever the library left untouched comes
back bit-identical. The attack base class then projects the returned inputs onto the threat ball and
into the boxes, restores model mode, buffers and RNGs, and keeps frozen modalities bit-identical.
:meth:`SingleInputView.attack_mask` (1 on the attacked coordinates, 0 on tags and padding),
:meth:`SingleInputView.clip_values` (the per-feature box common to all samples) and
:meth:`SingleInputView.clip_bounds` (the exact per-coordinate box of each sample) serve libraries that
accept a perturbation mask or per-feature bounds (ART).

Over 400 lines as one module: the map into the library's space, its inverse, the box and the sample-index tags
hold one invariant together (a round trip is exact) and are tested as one.
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from ..config import MAX_EPS, check_option_type, unknown_option_message
from ..contracts import Batch, ModalitySpec, ThreatModel
from ..safe_yaml import preview

LIB_EPS = 0.35
CENTRE = 0.5
TAG_LOW, TAG_HIGH = 0.1, 0.9
TAG_SLACK = 1e-3  # rounding in the library's own steps and clamps
# The largest tag move the view accepts: a budgeted move (≤ LIB_EPS per coordinate) never crosses the
# 0.5 threshold, which is 0.4 away from either code.
TAG_TOLERANCE = LIB_EPS
MIN_SIDE = 5


def checked_signature(
    label: str, attack_cls: type[Any], options: Mapping[str, Any], reserved: AbstractSet[str], reserved_source: str
) -> dict[str, inspect.Parameter]:
    """The library constructor's parameters, after refusing options that the adapter sets itself
    (``reserved``: they come from ``reserved_source``) and options the constructor does not take."""
    params = dict(inspect.signature(attack_cls.__init__).parameters)
    params.pop("self", None)
    clash = sorted(set(reserved).intersection(options))
    if clash:
        raise ValueError(f"{label}: {', '.join(clash)} come from {reserved_source}, not from options")
    unknown = sorted(set(options) - set(params))
    if unknown:
        raise ValueError(
            unknown_option_message(
                label, unknown, sorted(set(params) - set(reserved)), options, {k: p.default for k, p in params.items()}
            )
        )
    for key, value in options.items():
        check_option_type(label, key, value, params[key].default)
        check_option_range(label, key, value, params[key].default)
    return params


# Library options are checked by name at the door, as ``config.check_fields`` checks the suite's own
# settings: the libraries accept a count of 0 or a negative step and then run no attack at all, so the clean
# accuracy would be reported as robust accuracy (torchattacks:PGDL2 steps=0, art:ProjectedGradientDescent
# max_iter=0). Integer options named like counts (with an integer default, or none):
_LIBRARY_COUNT = re.compile(
    r"(^n_|^nb_|^num_|^N$|^max_|_size$|steps$|_iter$|_iterations$|_eval$|_queries$|"
    r"_restarts$|_trial$|_grads$|_sample$|_samples$|_classes$|_max$)"
)
# Counts where the library documents 0 as a mode of its own: at least 0.
ZERO_COUNTS = {
    "num_random_init": "ART FGM/PGD: 0 starts from the clean input (its default)",
    "parallel_pool_size": "ART AutoAttack: 0 runs without a process pool (its default)",
}
# Step sizes, learning rates and constants at 0 (or below) take no step or ignore the attack's loss: > 0.
POSITIVE_OPTIONS = frozenset(
    {
        "alpha",
        "alpha_max",
        "eps_step",
        "lr",
        "learning_rate",
        "delta",
        "eps_for_division",
        "c",
        "initial_const",
        "largest_const",
        "eta",
    }
)
# Fractions of a whole (of the image's features, of the window): in (0, 1].
FRACTION_OPTIONS = frozenset({"p_init", "gamma", "step_adapt", "decrease_factor"})
# Lengths in input space (ε-like): at most the suite's largest ε (``config.MAX_EPS``).
LENGTH_LIKE_OPTIONS = frozenset(
    {"alpha", "eps_step", "delta", "epsilon", "min_epsilon", "max_epsilon", "noise_sd", "std", "lr"}
)
# The only signed number option: torchattacks JSMA's theta, the perturbation per step, documented as either
# sign ("range is either [theta, 0], [0, theta]"); at 0 it changes nothing.
SIGNED_OPTIONS = frozenset({"theta"})


def check_option_range(label: str, key: str, value: Any, default: Any) -> None:
    """Refuse a library option outside the range in which it means an attack, with one line naming the option
    and its range: numbers finite; counts (``steps``, ``max_iter``, ``n_restarts``, ``n_queries``, …) integers
    >= 1 (>= 0 for ``ZERO_COUNTS``); step sizes and learning rates > 0; fractions in (0, 1]; lengths at most
    the suite's largest ε; any other number >= 0 (``SIGNED_OPTIONS`` non-zero)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    where, shown = f"{label} option {key}", preview(value)
    try:
        finite = math.isfinite(value)
    except OverflowError:  # an int beyond float range
        finite = False
    int_default = isinstance(default, int) and not isinstance(default, bool)
    if _LIBRARY_COUNT.search(key) and (int_default or default is None or default is inspect.Parameter.empty):
        least = 0 if key in ZERO_COUNTS else 1
        if not isinstance(value, int) or value < least:
            note = f" ({ZERO_COUNTS[key]})" if key in ZERO_COUNTS else ""
            raise ValueError(f"{where} must be an integer >= {least}{note}, got {shown}")
        return
    if not finite:
        raise ValueError(f"{where} must be a finite number, got {shown}")
    if key in SIGNED_OPTIONS:
        if value == 0:
            raise ValueError(f"{where} must be a non-zero number (either sign), got {shown}")
        return
    if key in POSITIVE_OPTIONS and value <= 0:
        raise ValueError(f"{where} must be > 0 (a step size or constant of 0 or below runs no attack), got {shown}")
    if key in FRACTION_OPTIONS and not 0 < value <= 1:
        raise ValueError(f"{where} must be in (0, 1], got {shown}")
    if value < 0:
        raise ValueError(f"{where} must be >= 0, got {shown}")
    if key in LENGTH_LIKE_OPTIONS and value > MAX_EPS:
        raise ValueError(f"{where} must be at most {MAX_EPS:g} (a length in model-input space, like ε), got {shown}")


def describe_library_attack(name: str, options: Mapping[str, Any], fixed_eps: float | None) -> str:
    """The adapters' ``describe()`` (result rows record it): ``name(k=v, ...)`` over the options in key order,
    with a fixed ``eps`` option among them."""
    opts = dict(options)
    if fixed_eps is not None:
        opts["eps"] = fixed_eps
    return f"{name}({', '.join(f'{k}={v!r}' for k, v in sorted(opts.items()))})"


def check_library_threat(
    name: str, norms: Sequence[str], threat: ThreatModel, prefix: str, default_attack: Mapping[str, str]
) -> None:
    """The adapters' threat checks, before :meth:`Attack.validate`: a norm the attack does not run in names the
    ``--norm`` to use and an attack of the library (``prefix``) in the threat's norm; outside ℓ∞ a
    per-modality threat on several modalities is refused, since the library has one budget per input."""
    if threat.norm not in norms:
        raise ValueError(
            f"{name} attacks in norm {', '.join(norms)}, not {threat.norm}: use --norm "
            f"{norms[0]} (norm='{norms[0]}' in the API), or an {threat.norm} attack such as "
            f"{prefix}:{default_attack[threat.norm]}"
        )
    if threat.norm != "linf" and not threat.joint and len(threat.modalities) > 1:
        raise ValueError(
            f"{name} has one budget per input; use a joint {threat.norm} threat or attack one modality at a time"
        )


def grid_shape(n: int, min_side: int = MIN_SIDE, *, square: bool = False) -> tuple[int, int]:
    """A near-square (H, W) with H·W ≥ n and both sides ≥ ``min_side``, for attacks that tile the image;
    ``square`` makes H = W (torchattacks' Square builds its ℓ2 windows for square images only) with a side its
    windows fit (:func:`square_windows_fit`)."""
    h = max(min_side, math.ceil(math.sqrt(n)))
    if not square:
        return h, max(min_side, math.ceil(n / h))
    while not square_windows_fit(h):
        h += 1
    return h, h


def square_windows_fit(side: int) -> bool:
    """Whether torchattacks' Square (ℓ2) can start on a ``side`` × ``side`` image: it adds windows of side
    s = side // 5, side // s of them per axis from (side − 5s) // 2 on, and a window the edge cuts short is a
    shape error (sides 12, 14, 18, 19, 24); a window wholly past the edge is an empty slice, harmless for s = 1."""
    s = side // 5
    start = (side - 5 * s) // 2
    sizes = [max(0, min(side, start + k * s + s) - (start + k * s)) for k in range(side // s)]
    return all(size == s or (size == 0 and s == 1) for size in sizes)


def tag_bits(n: int) -> int:
    return math.ceil(math.log2(n + 1))


class SingleInputView(nn.Module):
    """The multi-modal model seen as ``f(x)`` on one (B', 1, H, W) tensor, B' any subset of the batch.

    Holds the clean batch; decodes each row's sample index from its tags, so frozen modalities and
    the clean point always belong to the right sample, for sub-batches, single samples or repeats.
    ``min_side`` enlarges the padding for attacks that tile the image with large windows (ART's Square).
    ``box_map`` maps bounded modalities with their box's lower bound as offset (see the module
    docstring); ``clamp`` makes the view clamp bounded modalities that are *not* box-mapped.
    """

    def __init__(
        self,
        model: nn.Module,
        batch: Batch,
        modalities: Sequence[str],
        specs: dict[str, ModalitySpec],
        scale: float,
        min_side: int = MIN_SIDE,
        *,
        box_map: bool = False,
        clamp: bool = True,
        square: bool = False,
    ) -> None:
        super().__init__()
        self.model = model
        self.batch = batch
        self.modalities = tuple(modalities)
        self.specs = specs
        self.scale = float(scale)
        self.box_map = box_map
        self.dtype = torch.promote_types(torch.float32, batch[self.modalities[0]].dtype)
        for m in self.modalities[1:]:
            self.dtype = torch.promote_types(self.dtype, batch[m].dtype)
        self.clean = torch.cat([batch[m].flatten(1).to(self.dtype) for m in self.modalities], 1)
        self.sizes = [batch[m][0].numel() for m in self.modalities]
        # which modalities the library's own clipping bounds (box-mapped) and which the view clamps
        self.mapped = {m for m in self.modalities if box_map and specs[m].bounded}
        self.view_clamped = {m for m in self.modalities if clamp and specs[m].bounded and m not in self.mapped}
        lib = torch.full_like(self.clean, CENTRE)
        for m, sl in self._slices():
            if m in self.mapped:
                lo, _ = self._box_rows(m)
                lib[:, sl] = (self.clean[:, sl] - lo) / self.scale
        self.lib_clean = lib  # the clean batch in library coordinates
        n = self.clean.shape[0]
        self.n_tags = tag_bits(n)
        self.height, self.width = grid_shape(self.clean.shape[1] + self.n_tags, min_side, square=square)
        self.strict = True
        self._tags = self.encode().flatten(1)[:, self.clean.shape[1] : self.clean.shape[1] + self.n_tags]

    def _slices(self) -> Iterator[tuple[str, slice]]:
        start = 0
        for m, size in zip(self.modalities, self.sizes):
            yield m, slice(start, start + size)
            start += size

    def _box_rows(self, m: str) -> tuple[Tensor, Tensor]:
        """Modality ``m``'s valid box as two (1, numel) rows in the view's dtype (``m`` is bounded)."""
        x = self.batch[m][:1].to(self.dtype)
        box = self.specs[m].box(x)
        assert box is not None, f"modality {m!r} has no box"  # callers pass bounded modalities only
        lo, hi = box
        return lo.expand_as(x).flatten(1), hi.expand_as(x).flatten(1)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """The shape of one library input (channels first)."""
        return (1, self.height, self.width)

    def encode(self) -> Tensor:
        """The clean batch in library coordinates: the attacked coordinates, then tags, then padding."""
        n, d = self.clean.shape
        x = torch.full((n, self.height * self.width), CENTRE, dtype=self.dtype, device=self.clean.device)
        x[:, :d] = self.lib_clean
        bits = (torch.arange(n, device=x.device)[:, None] >> torch.arange(self.n_tags, device=x.device)) & 1
        x[:, d : d + self.n_tags] = torch.where(bits.bool(), TAG_HIGH, TAG_LOW).to(self.dtype)
        return x.view(n, 1, self.height, self.width)

    def decode(self, x: Tensor, index: Tensor | None = None, *, exact: bool = True) -> dict[str, Tensor]:
        """Library coordinates back to the attacked modalities in model-input space (unclamped).

        Row r is sample ``index[r]`` of the batch (all samples in order when ``index`` is None). The map is
        ``u_clean + s (x − x_clean)``, so whatever the library left where it was comes back bit-identical
        to the clean input (``exact`` is kept for callers of the former API; decoding is always exact).
        """
        lib = x.flatten(1)[:, : self.clean.shape[1]].to(self.dtype)
        clean = self.clean if index is None else self.clean[index]
        lib_clean = self.lib_clean if index is None else self.lib_clean[index]
        u = torch.add(clean, lib - lib_clean, alpha=self.scale)
        out = {}
        for m, piece in zip(self.modalities, u.split(self.sizes, dim=1)):  # type: ignore[no-untyped-call]
            out[m] = piece.reshape((piece.shape[0],) + self.batch[m].shape[1:])
        return out

    def attack_mask(self) -> Tensor:
        """(1, H, W): 1 on the attacked coordinates, 0 on tags and padding, for libraries that take a mask."""
        mask = torch.zeros(self.height * self.width, dtype=self.dtype, device=self.clean.device)
        mask[: self.clean.shape[1]] = 1
        return mask.view(self.input_shape)

    def clip_values(self) -> tuple[Tensor, Tensor]:
        """Per-feature (lower, upper), each (1, H, W), common to every sample: a box-mapped modality's valid
        box ``[0, (hi − lo)/s]``, [0, 1] on everything else (centred coordinates, tags, padding)."""
        size = self.height * self.width
        lower = torch.zeros(size, dtype=self.dtype, device=self.clean.device)
        upper = torch.ones(size, dtype=self.dtype, device=self.clean.device)
        for m, sl in self._slices():
            if m in self.mapped:
                lo, hi = self._box_rows(m)
                upper[sl] = ((hi - lo) / self.scale)[0]
        return lower.view(self.input_shape), upper.view(self.input_shape)

    def clip_bounds(self, pin: float) -> tuple[Tensor, Tensor]:
        """Per-coordinate (lower, upper), each (B, 1, H, W), in library coordinates, for per-feature bounds.

        Attacked coordinates get each modality's valid box mapped through the sample's map, intersected
        with :meth:`clip_values`; tags and padding are pinned to ``value ± pin``, so a library that draws
        random points inside its bounds never moves them. The clean point is inside every box.
        """
        lib = self.encode().flatten(1)
        lower, upper = lib - pin, lib + pin
        d = self.clean.shape[1]
        common_lo, common_hi = (c.flatten()[:d] for c in self.clip_values())
        lo_lib = common_lo.expand(lib.shape[0], d).clone()
        hi_lib = common_hi.expand(lib.shape[0], d).clone()
        for m, sl in self._slices():
            if self.specs[m].bounded and m not in self.mapped:
                lo, hi = self._box_rows(m)
                lo_lib[:, sl] = torch.maximum(
                    lo_lib[:, sl], self.lib_clean[:, sl] + (lo - self.clean[:, sl]) / self.scale
                )
                hi_lib[:, sl] = torch.minimum(
                    hi_lib[:, sl], self.lib_clean[:, sl] + (hi - self.clean[:, sl]) / self.scale
                )
        lower[:, :d] = torch.minimum(lo_lib, self.lib_clean)
        upper[:, :d] = torch.maximum(hi_lib, self.lib_clean)
        shape = (-1,) + self.input_shape
        return lower.view(shape), upper.view(shape)

    @contextmanager
    def probing(self) -> Iterator[None]:
        """Inside, rows whose tags read as an index past the batch go to sample ``index % n`` instead of
        raising: for libraries that probe the model with a made-up input while an attack is built (ART's
        APGD checks on ``np.ones`` whether the model outputs probabilities) and look at nothing else."""
        self.strict = False
        try:
            yield
        finally:
            self.strict = True

    def sample_index(self, x: Tensor) -> Tensor:
        """Each row's sample index, read from its tags; an attack that moved a tag further than its own
        budget (noise, pixel swaps) would silently pair rows with another sample's frozen inputs, so
        that is an error instead. A one-sample view has nothing to tell apart and ignores its tags."""
        n = self.clean.shape[0]
        if n == 1:
            return torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        with torch.no_grad():
            d = self.clean.shape[1]
            tags = x.flatten(1)[:, d : d + self.n_tags].to(self.dtype)
            bits = tags > CENTRE
            index = (bits.long() << torch.arange(self.n_tags, device=x.device)).sum(1)
            drift = (tags - torch.where(bits, TAG_HIGH, TAG_LOW)).abs().amax()
            if not self.strict:
                index = index % n
        if bool((drift > TAG_TOLERANCE + TAG_SLACK) | (index >= n).any()):
            raise RuntimeError(
                f"the attack moved the sample-index tags of the single-input view by {float(drift):.3g}, "
                f"more than its budget {LIB_EPS}: it changes inputs beyond its budget (noise, pixel "
                f"swaps) and cannot be adapted with these options"
            )
        return index

    def forward(self, x: Tensor) -> Tensor:
        if tuple(x.shape[1:]) != self.input_shape:
            raise RuntimeError(
                f"the attack library sent an input of shape {tuple(x.shape)} to the single-input view, "
                f"which takes (B, 1, {self.height}, {self.width}); attacks that resize or crop images "
                f"cannot be adapted"
            )
        index = self.rows(x)
        attacked = self.decode(x, index)
        inputs = {}
        for m, value in self.batch.items():
            if m in attacked:
                u = attacked[m].to(value.dtype)
                inputs[m] = clamp_to_box(self.specs[m], u) if m in self.view_clamped else u
            else:
                inputs[m] = value if index is None else value[index]
        logits: Tensor = self.model(inputs).logits.float()
        if x.requires_grad:
            # tied to the view's input with weight zero (values and gradients unchanged): a model that ignores or
            # detaches the attacked modality gives the library a zero gradient, not an autograd error
            logits = logits + (x * 0).sum()
        return logits

    def rows(self, x: Tensor) -> Tensor | None:
        """The sample index of each row, or None for the whole batch in order (what full-batch gradient
        attacks send, tags untouched): then the frozen modalities are used as they are, without copies."""
        n, d = self.clean.shape
        if x.shape[0] == n:
            if n == 1:
                return None
            with torch.no_grad():
                tags = x.flatten(1)[:, d : d + self.n_tags].to(self.dtype)
                if torch.equal(tags, self._tags):
                    return None
        index = self.sample_index(x)
        if index.shape[0] == n and bool((index == torch.arange(n, device=index.device)).all()):
            return None
        return index


def clamp_to_box(spec: ModalitySpec, x: Tensor) -> Tensor:
    """``spec``'s box with ``torch.clamp`` semantics: a value exactly on a bound passes its whole gradient
    (``max(min(·))`` would pass half), as in the libraries' own clipping."""
    box = spec.box(x)
    return x if box is None else torch.clamp(x, box[0], box[1])


def clean_logits(model: nn.Module, batch: Batch) -> Tensor:
    """The model's logits on ``batch`` in eval mode, without gradients, the mode restored after: probes (the
    class count) never update BatchNorm statistics and work for a batch of one."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            logits: Tensor = model(batch).logits
            return logits.float()
    finally:
        for module, flag in modes:
            module.training = flag


@contextmanager
def frozen_parameters(model: nn.Module) -> Iterator[None]:
    """Parameters stop requiring grad during the attack: DeepFool and ART call ``backward()``, which would
    otherwise fill the user's ``.grad`` buffers; the flags are restored afterwards."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


__all__ = [
    "SingleInputView",
    "frozen_parameters",
    "clamp_to_box",
    "clean_logits",
    "checked_signature",
    "check_option_range",
    "grid_shape",
    "tag_bits",
    "LIB_EPS",
    "CENTRE",
    "TAG_LOW",
    "TAG_HIGH",
    "TAG_SLACK",
    "TAG_TOLERANCE",
    "MIN_SIDE",
]
