"""Bring your own model: attack and benchmark any multi-modal PyTorch classifier (``import mmrobust_bench as mmr``).

Three calls, shaped like the libraries users know (torchattacks' ``Attack(model, eps=…)``, ART's estimator
+ attack, RobustBench's ``benchmark()``)::

    wrapped = mmr.wrap(model, modalities={"audio": mmr.Modality((40, 64)),
                                          "video": mmr.Modality((3, 32, 32), box=(0, 1))})
    x_adv = mmr.attack(wrapped, (audio, video), labels, attack=torchattacks.PGDL2, modality="audio",
                       eps=1.0, alpha=0.2, steps=10)
    table = mmr.evaluate(wrapped, loader, attack="torchattacks:PGDL2", modality="audio", eps=[0.5, 1.0])

:func:`wrap` adapts the user's ``forward`` (modalities positionally, by keyword or as one dict; logits
returned as a tensor, a tuple entry, a dict entry or an ``.logits`` attribute) to the suite's contract
(a dict batch in, :class:`~mmrobust_bench.contracts.ModelOutput` out), so every attack of the suite runs
on it unchanged: native ones, ``missing`` and the torchattacks / ART adapters (docs/design.md §4, "Adapting
single-input attack libraries"). :func:`attack` and :func:`evaluate` take the user's own batches
(dicts, tuples or a tensor) and give them back in the same format; :func:`evaluate` returns the tidy rows
the CLI writes (``bench.results.ResultRow``). :func:`eta` needs uni-modal scores and says how to expose them.

Inputs are checked before any work: every modality a torch tensor (a numpy array is refused with the
``torch.from_numpy`` fix), all with one batch size of at least one sample, labels one class index per
sample within the model's logits. Floating-point inputs of another dtype than the model's (float64 from
numpy into a float32 model) are cast to the model's floating dtype, that of its first floating parameter or
buffer, before the forward (a model without one gets them as they are); :func:`attack` gives the attacked
modalities back in that dtype (casting back would move them off the ε-ball by rounding), the others untouched.

Attack options mean what they mean in the library the attack comes from: ``eps``, torchattacks' ``alpha``
and ``steps``, ART's ``eps_step`` and ``max_iter`` are all in model-input space. Given as a library class
or a configured instance, the attack runs exactly as the library would build it: options not given take
the library's own defaults (``torchattacks.PGDL2``: ``eps=1.0``, ``alpha=0.2``), read from the instance
or the constructor. Given as an id string (``"torchattacks:PGDL2"``), it runs as ``mmrobust-bench run
--attack`` runs it, so rows from Python and from the CLI agree.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import inspect
import math
import logging
import numbers
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from ._version import __version__
from .attacks import Attack, build_attack, default_eps
from .contracts import ALL_MODALITIES, Batch, ModalitySpec, ModelOutput, ThreatModel
from .io import stable_hash

CALLS = ("auto", "positional", "keyword", "dict")
# Keys under which a dict batch carries its labels, tried in this order when ``label_key`` is not given.
LABEL_KEYS = ("label", "labels", "y", "target", "targets")
LABEL = "label"  # the label's place in a declared tuple ``order``
# Library norm spellings (torchattacks "L2"/"Linf", ART 2/np.inf/1/0) -> the threat model's names.
_NORMS = {"l2": "l2", "2": "l2", "linf": "linf", "inf": "linf", "l1": "l1", "1": "l1", "l0": "l0", "0": "l0"}
# Step sizes the adapters would otherwise scale with ε: from a library class or instance they are filled
# with the library's value, so the attack runs with the step the library itself would take.
_ABSOLUTE_STEPS = ("alpha", "eps_step")
# Instance settings that only change logging or batching, never the result: not copied from an instance (ART
# keeps a SummaryWriter object, not the argument, under ``summary_writer``).
_NOT_COPIED = frozenset({"summary_writer", "verbose", "batch_size"})
FLAG_SAMPLES = 64  # samples kept from the loader for the validity checks (bench.flags)
log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------------------
# Declaring a model
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Modality:
    """One input of the user's model: its per-sample ``shape`` (inferred from the first batch when None)
    and its valid ``box`` in model-input space: ``(low, high)`` for the whole input, or
    ``((low_0, …), (high_0, …))`` per channel (first axis of ``shape``); None for an unbounded input."""

    shape: tuple[int, ...] | None = None
    box: tuple[Any, Any] | None = None
    description: str = ""

    def __post_init__(self) -> None:
        if self.shape is not None:
            shape = tuple(int(s) for s in self.shape)
            if not shape or any(s <= 0 for s in shape):
                raise ValueError(f"Modality shape must be a non-empty tuple of positive sizes, got {self.shape!r}")
            object.__setattr__(self, "shape", shape)
        if self.box is not None and (not isinstance(self.box, (tuple, list)) or len(self.box) != 2):
            raise ValueError(f"Modality box must be (low, high) or ((low per channel), (high per channel)), "
                             f"got {self.box!r}")
        if self.box is not None:  # finite and ordered now; the channel count is checked once the shape is known
            low, high = (_box_values(b, self.box) for b in self.box)
            low, high = low * (len(high) if len(low) == 1 else 1), high * (len(low) if len(high) == 1 else 1)
            if len(low) == len(high) and any(lo >= hi for lo, hi in zip(low, high)):
                raise ValueError(f"Modality box: every lower bound must be below its upper bound, got {self.box!r}")

    def spec(self, name: str, shape: tuple[int, ...]) -> ModalitySpec:
        """The suite's :class:`ModalitySpec` for this declaration with the given (declared or inferred) shape."""
        if self.box is None:
            return ModalitySpec(name, shape, description=self.description)
        lower, upper = (_channel_bounds(name, b, shape[0]) for b in self.box)
        return ModalitySpec(name, shape, lower, upper, self.description)


def _box_values(bound: Any, box: Any) -> tuple[float, ...]:
    """One side of a declared box as floats (a number gives one value), each finite, or one clear error."""
    try:
        values = (float(bound),) if isinstance(bound, numbers.Real) else tuple(float(b) for b in bound)
    except (TypeError, ValueError):
        raise ValueError(f"Modality box bounds must be numbers, got {box!r}") from None
    if not values or not all(math.isfinite(v) for v in values):
        raise ValueError(f"Modality box bounds must be finite numbers, got {box!r}; declare an unbounded input "
                         f"with box=None")
    return values


def _channel_bounds(name: str, bound: Any, channels: int) -> tuple[float, ...]:
    if isinstance(bound, numbers.Real):
        return _box_values(bound, bound) * channels
    values = _box_values(bound, bound)
    if len(values) != channels:
        raise ValueError(f"modality {name!r}: a per-channel box needs {channels} values (first axis of its shape), "
                         f"got {len(values)}")
    return values


def _as_modality(name: str, value: Any) -> Modality:
    if value is None:
        return Modality()
    if isinstance(value, Modality):
        return value
    if isinstance(value, (tuple, list)) and all(isinstance(v, int) for v in value):
        return Modality(tuple(value))
    raise ValueError(f"modality {name!r}: declare it as mmr.Modality(shape, box=...), a shape tuple, or None, "
                     f"got {value!r}")


def _forward_parameters(model: nn.Module) -> list[inspect.Parameter] | None:
    try:
        return list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):  # a builtin or C-implemented forward: nothing to check
        return None


def _describe_params(params: Sequence[inspect.Parameter]) -> str:
    return "(" + ", ".join(p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)) + ")"


def _resolve_call(model: nn.Module, names: tuple[str, ...], call: str) -> str:
    """Check ``call`` against the forward's signature (or pick one for ``auto``), with an error naming the fix."""
    if call not in CALLS:
        raise ValueError(f"unknown call {call!r}; valid: {', '.join(CALLS)}")
    params = _forward_parameters(model)
    if params is None:
        if call == "auto":
            raise ValueError("the forward's signature cannot be read; declare call='positional', 'keyword' or 'dict'")
        return call
    takes = _describe_params(params)
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required = [p for p in positional if p.default is p.empty]
    var_pos = any(p.kind == p.VAR_POSITIONAL for p in params)
    var_kw = any(p.kind == p.VAR_KEYWORD for p in params)
    keyword_names = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    order_hint = "declare call='positional' with modalities in that order"
    if call == "auto":
        if var_kw or set(names) <= keyword_names:
            return "keyword"
        if len(positional) >= 1 and len(required) <= 1 and len(names) > 1 and not var_pos:
            return "dict"
        if len(names) == 1 and len(required) <= 1 and (positional or var_pos):
            return "positional"
        raise ValueError(f"your forward takes {takes}, which does not name the modalities "
                         f"({', '.join(names)}); {order_hint}, call='keyword' with modalities named after its "
                         f"arguments, or call='dict' if it takes one dict")
    if call == "positional":
        if len(required) > len(names) or (len(positional) < len(names) and not var_pos):
            raise ValueError(f"your forward takes {takes} but {len(names)} modalities ({', '.join(names)}) are "
                             f"declared; {order_hint}, one per argument")
        named = [p.name for p in positional[:len(names)]]
        if set(named) == set(names) and named != list(names):
            raise ValueError(f"your forward takes {takes} but the modalities are declared as ({', '.join(names)}); "
                             f"{order_hint}, or use call='keyword'")
        return call
    if call == "keyword":
        missing = [m for m in names if m not in keyword_names]
        if missing and not var_kw:
            raise ValueError(f"your forward takes {takes}, which has no argument {', '.join(missing)}; {order_hint}, "
                             f"or name the modalities after its arguments")
        return call
    if len(required) > 1:  # dict
        raise ValueError(f"your forward takes {takes}, not one dict; {order_hint} or call='keyword'")
    return call


class WrappedModel(nn.Module):
    """A user model seen through the suite's contract: ``forward(batch: dict) -> ModelOutput``.

    Built by :func:`wrap`. The user's module is the submodule ``model``, so ``.eval()``, ``.to()``,
    parameters and buffers are the user's own; attacks restore its mode and never touch its weights.
    """

    def __init__(self, model: nn.Module, modalities: Mapping[str, Modality], call: str,
                 output: str | int | Callable[[Any], Tensor] | None,
                 unimodal: str | Callable[[Any], Any] | None) -> None:
        super().__init__()
        self.model = model
        self.declared = dict(modalities)
        self.names = tuple(modalities)
        self.call = call
        self.output = output
        self.unimodal = unimodal
        self._specs: dict[str, ModalitySpec] = {
            m: d.spec(m, d.shape) for m, d in self.declared.items() if d.shape is not None}
        self.classes: int | None = None  # the width of the logits, as the last forward gave them

    # -- shapes ---------------------------------------------------------------------------------------
    @property
    def specs(self) -> tuple[ModalitySpec, ...]:
        """The modalities as :class:`ModalitySpec` (declared order); shapes must be known (declared or seen)."""
        unknown = [m for m in self.names if m not in self._specs]
        if unknown:
            raise ValueError(f"the shape of modality {', '.join(unknown)} is not known yet: declare "
                             f"mmr.Modality(shape) or pass a batch through mmr.attack / mmr.evaluate first")
        return tuple(self._specs[m] for m in self.names)

    def resolve(self, batch: Mapping[str, Tensor]) -> tuple[ModalitySpec, ...]:
        """Infer undeclared shapes from ``batch`` and check declared ones against it."""
        for m in self.names:
            x = batch[m]
            shape = tuple(x.shape[1:])
            if m not in self._specs:
                if not shape:
                    raise ValueError(f"modality {m!r} arrived as a tensor of shape {tuple(x.shape)}; batches are "
                                     f"(batch, *shape) tensors")
                self._specs[m] = self.declared[m].spec(m, shape)
            elif self._specs[m].shape != shape:
                raise ValueError(f"modality {m!r} is declared with shape {self._specs[m].shape} but the batch has "
                                 f"{shape} per sample; fix the declaration (or omit the shape to infer it)")
        return self.specs

    # -- the forward ------------------------------------------------------------------------------------
    def forward(self, batch: Mapping[str, Tensor]) -> ModelOutput:
        inputs = [batch[m] for m in self.names]
        if self.call == "positional":
            out = self.model(*inputs)
        elif self.call == "keyword":
            out = self.model(**dict(zip(self.names, inputs)))
        else:
            out = self.model(dict(zip(self.names, inputs)))
        logits = self._logits(out)
        self.classes = int(logits.shape[1])
        return ModelOutput(logits=logits, unimodal=self._unimodal(out))

    def _logits(self, out: Any) -> Tensor:
        spec = self.output
        what = type(out).__name__
        if callable(spec) and not isinstance(spec, (str, int)):
            logits = spec(out)
        elif spec is None:
            if isinstance(out, Tensor):
                logits = out
            elif isinstance(out, Mapping):
                if "logits" not in out:
                    raise ValueError(f"your forward returns a dict with keys {', '.join(map(str, out))} and no "
                                     f"'logits'; declare output='<key>' in mmr.wrap")
                logits = out["logits"]
            elif isinstance(out, (tuple, list)) and not hasattr(out, "logits"):
                raise ValueError(f"your forward returns a {what} of {len(out)}; declare output=<index> in mmr.wrap "
                                 f"(e.g. output=0) to say which entry is the logits")
            elif hasattr(out, "logits"):
                logits = out.logits
            else:
                raise ValueError(f"your forward returns a {what}; return logits (a tensor, a dict entry, a tuple "
                                 f"entry or a .logits attribute) and declare which with output=")
        elif isinstance(spec, str):
            if isinstance(out, Mapping):
                if spec not in out:
                    raise ValueError(f"output={spec!r}: your forward returns a dict with keys "
                                     f"{', '.join(map(str, out))}; declare one of those")
                logits = out[spec]
            elif isinstance(out, Tensor):
                raise ValueError(f"output={spec!r} expects a dict (or an object with .{spec}) but your forward returns "
                                 f"a tensor; drop output= (a tensor output is used as the logits)")
            elif hasattr(out, spec):
                logits = getattr(out, spec)
            else:
                raise ValueError(f"output={spec!r}: your forward returns a {what} without {spec!r}")
        else:
            if not isinstance(out, (tuple, list)):
                raise ValueError(f"output={spec!r} expects a tuple but your forward returns a {what}; "
                                 + ("drop output= (a tensor output is used as the logits)" if isinstance(out, Tensor)
                                    else "declare output='<key>' for a dict or an attribute"))
            if not -len(out) <= spec < len(out):
                raise ValueError(f"output={spec}: your forward returns a {what} of {len(out)}")
            logits = out[spec]
        if not isinstance(logits, Tensor) or logits.dim() != 2:
            shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
            raise ValueError(f"the logits must be a (batch, classes) tensor, got {shape}; check output= in mmr.wrap")
        return logits

    def _unimodal(self, out: Any) -> dict[str, Tensor]:
        spec = self.unimodal
        if callable(spec) and not isinstance(spec, str):
            found = spec(out)
        else:
            key = spec or "unimodal"
            if isinstance(out, Mapping):
                found = out.get(key)
            elif not isinstance(out, (Tensor, tuple, list)):
                found = getattr(out, key, None)
            else:
                found = None
            if found is None and spec is not None:
                raise ValueError(f"unimodal={spec!r}: your forward's output has no {spec!r} entry")
        return dict(found) if found else {}

    # -- identity -------------------------------------------------------------------------------------
    def config_hash(self) -> str:
        """A short hash of the declaration (modalities, boxes, call, output), for the rows' ``config_hash``."""
        return stable_hash({"modalities": {m: [list(s.shape), s.lower, s.upper] for m, s in self._specs.items()},
                            "call": self.call, "output": repr(self.output), "model": type(self.model).__name__})

    def extra_repr(self) -> str:
        return f"modalities={self.names}, call={self.call!r}, output={self.output!r}"


def wrap(model: nn.Module, modalities: Mapping[str, Any] | Sequence[str], *, call: str = "auto",
         output: str | int | Callable[[Any], Tensor] | None = None,
         unimodal: str | Callable[[Any], Any] | None = None) -> WrappedModel:
    """Declare how to call ``model`` so every attack of the suite can run on it.

    ``modalities``: ``{name: mmr.Modality(shape, box=...)}`` in the order the forward takes them (a shape
    tuple or None also works; a list of names infers every shape from the first batch). ``call``: the
    modalities are passed ``"positional"``-ly, by ``"keyword"`` or as one ``"dict"``; ``"auto"`` reads the
    forward's signature. ``output``: which entry of what forward returns is the logits (a dict key or
    attribute name, a tuple index, or a function); a tensor, a dict's ``"logits"`` and ``.logits`` need none.
    ``unimodal``: where uni-modal scores are (a dict ``{modality: (B, K)}``), for :func:`eta`; found under
    ``"unimodal"`` by default.
    """
    if isinstance(model, WrappedModel):
        raise ValueError("the model is already wrapped; pass it to mmr.attack / mmr.evaluate as it is")
    if not isinstance(model, nn.Module):
        raise TypeError(f"mmr.wrap takes a torch.nn.Module, got {type(model).__name__}")
    if isinstance(modalities, Mapping):
        declared = {str(m): _as_modality(str(m), v) for m, v in modalities.items()}
    elif isinstance(modalities, str):
        raise ValueError("modalities must be a dict {name: mmr.Modality(...)} or a list of names, not one string")
    else:
        declared = {str(m): Modality() for m in modalities}
    if not declared:
        raise ValueError("declare at least one modality")
    if {ALL_MODALITIES, "any"} & set(declared) or any("," in m or "+" in m or not m for m in declared):
        raise ValueError(f"modality names must be non-empty, without ',' or '+', and not {ALL_MODALITIES!r} or 'any' "
                         f"(the joint and the worst-case threat)")
    call = _resolve_call(model, tuple(declared), call)
    return WrappedModel(model, declared, call, output, unimodal)


def _check_wrapped(model: Any) -> WrappedModel:
    if isinstance(model, WrappedModel):
        return model
    if isinstance(model, nn.Module):
        raise TypeError("wrap the model first: wrapped = mmr.wrap(model, modalities={'a': mmr.Modality(...), ...})")
    raise TypeError(f"expected a model wrapped by mmr.wrap, got {type(model).__name__}")


# ---------------------------------------------------------------------------------------------------------
# The user's batches
# ---------------------------------------------------------------------------------------------------------

@dataclass
class _Split:
    """A user batch taken apart: the modalities (suite format), the labels, and how to put it back."""

    inputs: Batch
    labels: Tensor | None
    rebuild: Callable[[Batch], Any]


def _split_batch(wrapped: WrappedModel, batch: Any, order: Sequence[str] | None = None,
                 label_key: str | None = None) -> _Split:
    """``batch`` taken apart, its modalities checked (:func:`_batch_size`)."""
    split = _take_apart(wrapped, batch, order, label_key)
    _batch_size(split.inputs)
    return split


def _batch_size(inputs: Mapping[str, Any]) -> int:
    """The number of samples of the modalities ``inputs``, after checking they are tensors of one common, non-zero
    batch size (a numpy array or a string reaches no ``.to``; an empty batch no attack loop)."""
    for m, x in inputs.items():
        if not isinstance(x, Tensor):
            fix = ("torch.from_numpy(x), or a DataLoader, which converts arrays" if isinstance(x, np.ndarray)
                   else "a (batch, *shape) tensor of numbers")
            raise TypeError(f"modality {m!r} is a {type(x).__name__}, not a torch tensor; pass {fix}")
        if x.dim() == 0:
            raise ValueError(f"modality {m!r} is a 0-d tensor; batches are (batch, *shape) tensors")
    sizes = {m: int(x.shape[0]) for m, x in inputs.items()}
    if len(set(sizes.values())) > 1:
        listed = ", ".join(f"{m}: {n}" for m, n in sizes.items())
        raise ValueError(f"the modalities have different batch sizes ({listed}); give every modality one entry per "
                         f"sample (the same first dimension)")
    n = next(iter(sizes.values()))
    if n == 0:
        raise ValueError("the batch holds no samples (its first dimension is 0); leave empty batches out of the loader "
                         "or pass at least one sample")
    return n


def _model_dtype(model: nn.Module) -> torch.dtype | None:
    """The floating dtype inputs are cast to: that of the model's first floating parameter or buffer (None: none)."""
    for t in list(model.parameters()) + list(model.buffers()):
        if t.is_floating_point():
            return t.dtype
    return None


def _as_model_dtype(x: Tensor, dtype: torch.dtype | None) -> Tensor:
    return x.to(dtype) if dtype is not None and x.is_floating_point() and x.dtype != dtype else x


def _take_apart(wrapped: WrappedModel, batch: Any, order: Sequence[str] | None = None,
                label_key: str | None = None) -> _Split:
    names = wrapped.names
    if isinstance(batch, Mapping):
        missing = [m for m in names if m not in batch]
        if missing:
            raise ValueError(f"the batch has no modality {', '.join(missing)}; its keys are "
                             f"{', '.join(map(str, batch))} and the declared modalities {', '.join(names)}")
        keys = [label_key] if label_key else [k for k in LABEL_KEYS if k in batch]
        if label_key and label_key not in batch:
            raise ValueError(f"label_key={label_key!r}: the batch has keys {', '.join(map(str, batch))}")
        labels = batch[keys[0]] if keys else None

        def rebuild(adv: Batch) -> Any:
            out = dict(batch)
            out.update(adv)
            return out

        return _Split({m: batch[m] for m in names}, labels, rebuild)
    if isinstance(batch, Tensor):
        if len(names) != 1:
            raise ValueError(f"a single tensor was given but {len(names)} modalities are declared "
                             f"({', '.join(names)}); pass a dict or a tuple in the declared order")
        return _Split({names[0]: batch}, None, lambda adv: adv[names[0]])
    if isinstance(batch, (tuple, list)):
        seq = list(batch)
        if order is None:
            if len(seq) not in (len(names), len(names) + 1):
                raise ValueError(f"the batch is a {type(batch).__name__} of {len(seq)} but {len(names)} modalities "
                                 f"are declared ({', '.join(names)}); declare order=(..., '{LABEL}') for its layout")
            order = list(names) + ([LABEL] if len(seq) == len(names) + 1 else [])
        order = list(order)
        if len(order) != len(seq):
            raise ValueError(f"order={tuple(order)} names {len(order)} entries but the batch has {len(seq)}")
        unknown = [k for k in order if k not in names and k != LABEL]
        if unknown or any(m not in order for m in names):
            raise ValueError(f"order={tuple(order)} must name every modality ({', '.join(names)}) once and "
                             f"'{LABEL}' for the labels; unknown: {', '.join(unknown) or 'none'}")
        where = {k: i for i, k in enumerate(order)}
        labels = seq[where[LABEL]] if LABEL in where else None
        kind = type(batch)

        def rebuild_seq(adv: Batch) -> Any:
            out = list(seq)
            for m, x in adv.items():
                out[where[m]] = x
            return kind(out) if kind in (tuple, list) else tuple(out)

        return _Split({m: seq[where[m]] for m in names}, labels, rebuild_seq)
    raise TypeError(f"a batch must be a dict, a tuple/list or a tensor, got {type(batch).__name__}")


def _device_batch(wrapped: WrappedModel, raw: Any, order: Sequence[str] | None, label_key: str | None,
                  dev: torch.device) -> tuple[_Split, dict[str, Tensor]]:
    """One loader batch split into its modalities, moved to ``dev`` (floating inputs in the model's dtype) and
    checked against the declared shapes."""
    split = _split_batch(wrapped, raw, order, label_key)
    dtype = _model_dtype(wrapped)
    batch = {m: _as_model_dtype(x.to(dev), dtype) for m, x in split.inputs.items()}
    wrapped.resolve(batch)
    return split, batch


def _labels_of(split: _Split, labels: Any) -> Tensor:
    y = labels if labels is not None else split.labels
    if y is None:
        raise ValueError(f"no labels: pass labels=..., put them in the batch under one of {', '.join(LABEL_KEYS)} "
                         f"(or label_key=), or declare their place with order=(..., '{LABEL}')")
    return _class_indices(y, _batch_size(split.inputs), "labels")


def _class_indices(value: Any, n: int, what: str) -> Tensor:
    """``value`` (labels or targets) as a 1-D integer tensor of ``n`` class indices >= 0, or one clear error."""
    try:
        y = torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"{what} must be class indices (a 1-D integer tensor, array or list), got "
                        f"{type(value).__name__}") from None
    if y.dim() != 1 or y.dtype.is_floating_point or y.is_complex() or y.dtype == torch.bool:
        raise ValueError(f"{what} must be a 1-D tensor of class indices, got {y.dtype} {tuple(y.shape)}")
    if y.shape[0] != n:
        raise ValueError(f"{y.shape[0]} {what} for a batch of {n} samples; give one per sample")
    if int(y.min()) < 0:
        raise ValueError(f"{what} must be class indices >= 0, got {int(y.min())}")
    return y


def _check_classes(y: Tensor, classes: int, what: str = "labels") -> None:
    """Class indices ``y`` within the ``classes`` logits the model gives (cross-entropy would fail on an index)."""
    top = int(y.max())
    if top >= classes:
        raise ValueError(f"{what} hold class {top} but the model gives {classes} logits per sample (classes 0 to "
                         f"{classes - 1}); fix the {what} or the model's number of outputs")


def _num_classes(wrapped: WrappedModel, inputs: Mapping[str, Tensor]) -> int:
    """The width of the model's logits: as its last forward gave it, else from one forward of ``inputs`` in eval
    mode (buffers, mode and gradients untouched; the whole batch, as a model may hold per-batch state)."""
    if wrapped.classes is None:
        with _restored_modes(wrapped), torch.no_grad():
            wrapped(inputs)
    return int(wrapped.classes)


def _model_device(model: nn.Module) -> torch.device:
    for t in list(model.parameters()) + list(model.buffers()):
        return t.device
    return torch.device("cpu")


# ---------------------------------------------------------------------------------------------------------
# Attacks: id strings, library classes and configured instances
# ---------------------------------------------------------------------------------------------------------

@dataclass
class ResolvedAttack:
    """An attack request turned into the suite's terms: the attack id, its options, and the ε / norm /
    targeting that the library class or instance implies (None: not implied)."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)
    eps: float | None = None
    norm: str | None = None
    targeted: bool = False


def norm_name(value: Any) -> str:
    """A norm in any library's spelling (``"L2"``, ``"Linf"``, ``2``, ``np.inf``, ``"l1"``) as the suite names it."""
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        key = "inf" if math.isinf(float(value)) else str(int(value)) if float(value).is_integer() else str(value)
    else:
        key = str(value).strip().lower()
    if key not in _NORMS:
        raise ValueError(f"unknown norm {value!r}; valid: l2, linf, l1, l0 (or the library's spelling: 'L2', "
                         f"'Linf', 2, np.inf, 1, 0)")
    return _NORMS[key]


def _library_of(obj: Any) -> str | None:
    cls = obj if inspect.isclass(obj) else type(obj)
    root = (getattr(cls, "__module__", "") or "").split(".")[0]
    if root == "torchattacks":
        return "torchattacks"
    if root == "art":
        return "art"
    return None


def _parameters(cls: type) -> dict[str, inspect.Parameter]:
    params = dict(inspect.signature(cls.__init__).parameters)
    params.pop("self", None)
    return params


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(a is b or (type(a) is type(b) and a == b))
    except Exception:  # arrays, tensors: compare as different, so the instance's value is passed on
        return False


def resolve_attack(attack: Any) -> ResolvedAttack:
    """Turn an attack id, a torchattacks / ART class or a configured instance into the suite's terms.

    An id string is taken as ``mmrobust-bench run --attack`` takes it (nothing implied). A class contributes its
    defaults for ``eps``, ``norm`` and the step size (``alpha`` / ``eps_step``); an instance contributes every
    option it was built with (those equal to the library default, step sizes excepted, are left to the adapter,
    which passes the library's default on; logging and batching settings are not copied).
    """
    if isinstance(attack, str):  # as ``run --attack`` takes it: the adapter's defaults, ε and norm from the caller
        return ResolvedAttack(attack)
    if isinstance(attack, Attack):
        raise TypeError("pass the attack as an id string (e.g. 'pgd_l2') or a torchattacks / ART class or instance; "
                        "a suite Attack object is used with its own __call__")
    library = _library_of(attack)
    if library is None:
        raise TypeError(f"unknown attack {attack!r}: give an id string ('pgd_l2', 'torchattacks:PGDL2', "
                        f"'art:FastGradientMethod'), a torchattacks or ART attack class, or a configured instance")
    cls = attack if inspect.isclass(attack) else type(attack)
    params = _parameters(cls)
    resolved = ResolvedAttack(f"{library}:{cls.__name__}")
    _defaults_into(resolved, params)
    if inspect.isclass(attack):
        return resolved
    if library == "torchattacks":
        if getattr(attack, "normalization_used", None) or getattr(attack, "_normalization_applied", None):
            raise ValueError("the torchattacks instance applies its own input normalization; put the normalization "
                             "inside the model and attack in model-input space")
        resolved.targeted = bool(getattr(attack, "targeted", False))
    for name, param in params.items():
        if name in ("model", "estimator", "classifier") or name in _NOT_COPIED or not hasattr(attack, name):
            continue
        value = getattr(attack, name)
        if name == "eps":
            resolved.eps = _scalar(value, "eps")
        elif name == "norm":
            resolved.norm = norm_name(value)
        elif name == "targeted":
            resolved.targeted = bool(value)
        elif name in _ABSOLUTE_STEPS or not _same(value, param.default):
            resolved.options[name] = value
    return resolved


def _defaults_into(resolved: ResolvedAttack, params: Mapping[str, inspect.Parameter]) -> None:
    empty = inspect.Parameter.empty
    if "eps" in params and params["eps"].default is not empty:
        resolved.eps = _scalar(params["eps"].default, "eps")
    if "norm" in params and params["norm"].default is not empty:
        resolved.norm = norm_name(params["norm"].default)
    for name in _ABSOLUTE_STEPS:
        if name in params and params[name].default is not empty and "eps" in params:
            resolved.options[name] = params[name].default


def _scalar(value: Any, what: str) -> float:
    try:
        return float(np.asarray(value, dtype=np.float64).item())
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} must be one number, got {value!r}") from exc


def _build(wrapped: WrappedModel, attack: Any, modality: str | Sequence[str], eps: float | None, norm: str | None,
           joint: bool, seed: int, options: Mapping[str, Any], targeted: bool,
           require_eps: bool = True) -> tuple[Attack, ThreatModel, str]:
    """(suite attack, threat model at ``eps``, attack id) for a request; ``eps`` None takes the library's (and
    0 when there is none and ``require_eps`` is False)."""
    resolved = resolve_attack(attack)
    opts = {**resolved.options, **dict(options)}
    atk = build_attack(resolved.name, wrapped.specs, seed=seed, **opts)
    if norm is not None:
        chosen = norm_name(norm)
    elif resolved.norm is not None:
        chosen = resolved.norm
    else:  # the CLI's default ℓ2 where the attack runs under it, else the attack's own norm
        supported = tuple(getattr(atk, "norms", ("l2",)))
        chosen = "l2" if "l2" in supported else supported[0]
    value = eps if eps is not None else resolved.eps
    if value is None:
        value = 0.0
        if atk.norm_bounded and require_eps:
            raise ValueError(f"attack {resolved.name!r} needs eps=... (its budget, in model-input space)")
    else:  # the command line's bounds on ε: finite, >= 0, at most bench.validate.MAX_EPS
        from .bench.validate import check_eps

        value = check_eps([value], "eps")[0]
    threat = ThreatModel.parse(modality, float(value), wrapped.specs, norm=chosen, joint=joint,
                               targeted=targeted or resolved.targeted)
    atk.validate(threat)
    return atk, threat, resolved.name


def attack(model: WrappedModel, batch: Any, labels: Any = None, *, attack: Any = "pgd_l2",
           modality: str | Sequence[str] = ALL_MODALITIES, eps: float | None = None, norm: str | None = None,
           joint: bool = True, targets: Tensor | None = None, seed: int = 0, order: Sequence[str] | None = None,
           label_key: str | None = None, **options: Any) -> Any:
    """The adversarial version of ``batch``, in the user's own format (dict, tuple or tensor).

    ``attack``: an id (``"pgd_l2"``, ``"missing"``, ``"torchattacks:PGDL2"``, ``"art:FastGradientMethod"``),
    a torchattacks / ART class, or a configured instance (its ``eps``, ``alpha``, ``steps``… are read).
    ``modality``: one name, several (a list or ``"a,v"``: one joint ball, or one ball each with
    ``joint=False``), or ``"all"``; ``attack="missing"`` drops them instead (``fill="zero"|"mean"|"noise"``).
    ``eps`` and the other options (``alpha``, ``steps``, ART's ``eps_step``, ``max_iter``…) are in
    model-input space and mean what the library means by them. Unattacked modalities come back bit-identical;
    the model's weights, buffers, mode and the global RNGs are left as they were. Floating inputs of another dtype
    than the model's are attacked in the model's dtype, and the attacked modalities come back in it (module
    docstring).
    """
    from .bench.validate import check_count

    wrapped = _check_wrapped(model)
    check_count(seed, "seed", minimum=0)
    split = _split_batch(wrapped, batch, order, label_key)
    y = _labels_of(split, labels)
    dtype = _model_dtype(wrapped)
    inputs = {m: _as_model_dtype(x, dtype) for m, x in split.inputs.items()}
    wrapped.resolve(inputs)
    goals = None if targets is None else _class_indices(targets, int(y.shape[0]), "targets")
    atk, threat, _ = _build(wrapped, attack, modality, eps, norm, joint, seed, options, targets is not None)
    if threat.targeted and targets is None:
        raise ValueError("the attack instance is in targeted mode: pass targets=... (the target class of each sample)")
    classes = _num_classes(wrapped, inputs)
    _check_classes(y, classes)
    if goals is not None:
        _check_classes(goals, classes, "targets")
    device = inputs[wrapped.names[0]].device
    adv = atk(wrapped, inputs, y.to(device), threat, targets=None if goals is None else goals.to(device))
    return split.rebuild({m: adv[m] for m in threat.modalities})


def drop(model: WrappedModel, batch: Any, *, modality: str | Sequence[str], fill: str = "zero",
         order: Sequence[str] | None = None, label_key: str | None = None, **options: Any) -> Any:
    """``batch`` with ``modality`` missing, in the user's format (``fill``: ``"zero"``, ``"mean"`` with
    ``fill_values={modality: mean tensor}``, or ``"noise"`` with ``noise_std``); labels are not needed."""
    split = _split_batch(_check_wrapped(model), batch, order, label_key)
    n = int(next(iter(split.inputs.values())).shape[0])
    return attack(model, batch, torch.zeros(n, dtype=torch.long), attack="missing", modality=modality, fill=fill,
                  order=order, label_key=label_key, **options)


# ---------------------------------------------------------------------------------------------------------
# Benchmark: clean and robust accuracy over an ε grid, straight from a DataLoader
# ---------------------------------------------------------------------------------------------------------

def state_dict_sha256(module: nn.Module) -> str:
    """sha256 of a module's state dict (names, dtypes, shapes and bytes, in name order; the same digest as the
    suite's resume files and data caches): the rows' ``checkpoint_sha256`` for a model the suite did not train,
    so rows of different weights never mix. Non-tensor entries (``extra_state``) count by their ``repr``."""
    from .checked_tensors import tensor_digest

    state = module.state_dict()
    digest = tensor_digest({k: v for k, v in state.items() if isinstance(v, Tensor)})
    other = {k: repr(v) for k, v in sorted(state.items()) if not isinstance(v, Tensor)}
    return hashlib.sha256((digest + repr(other)).encode()).hexdigest() if other else digest


@contextlib.contextmanager
def _restored_modes(model: nn.Module) -> Iterator[None]:
    """Evaluate in eval mode and give the user's model back in the mode it came in, module by module."""
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        yield
    finally:
        for module, flag in modes:
            module.training = flag


def _eps_grid(eps: float | Sequence[float] | None, default: float | None) -> list[float]:
    """The ε grid of :func:`evaluate`: the caller's (a number or a list), else the library attack's own ε;
    checked like every ε of the suite (``bench.validate.check_eps``)."""
    from .bench.validate import check_eps

    if eps is None:
        values = [default] if default is not None else []
    elif isinstance(eps, str):  # "0.5" or "0.5,1", as mmr.attack and --eps take it (a string is no list of radii)
        values = [v for v in eps.split(",") if v.strip()]
    else:
        one = isinstance(eps, numbers.Real) or (isinstance(eps, (np.ndarray, Tensor)) and eps.ndim == 0)
        values = [eps] if one or not isinstance(eps, Iterable) else list(eps)
    return check_eps(values)


def evaluate(model: WrappedModel, loader: Iterable[Any], *, attack: Any = "autoattack",
             modality: str | Sequence[str] = ALL_MODALITIES, eps: float | Sequence[float] | None = None,
             norm: str | None = None, joint: bool = True, label: str = "model", dataset: str = "custom",
             seed: int = 0, order: Sequence[str] | None = None, label_key: str | None = None,
             results: str | None = None, check_flags: bool = True, device: str | torch.device | None = None,
             progress: bool = False, **options: Any) -> pd.DataFrame:
    """Clean and robust accuracy over an ε grid, from the user's own loader (batches as dicts, or tuples in the
    declared ``order``); RobustBench's ``benchmark()`` for multi-modal models (``mmr.benchmark`` is an alias).

    The default attack is ``autoattack``, the standard strong evaluation (APGD-CE, APGD-T, FAB-T and Square with
    a per-sample worst case; ``version="fast"`` is cheaper); ``modality="any"`` measures, per sample, the worst of
    every modality alone and all jointly. Returns the tidy rows the CLI writes (``bench.results.COLUMNS``): one
    clean row and one per ε (per threat set and ε, then ``any``'s, with ``modality="any"``), with
    ``defense`` = ``label``, ``dataset`` = ``dataset``, ``checkpoint_sha256`` = the sha256 of the model's state
    dict and ``config_hash`` = a hash of the declaration. ``results`` appends them to that CSV (checked writable
    before any work; should the final write fail, the rows are saved to a fallback file the error names).
    Floating inputs of another dtype than the model's (float64 from numpy) are cast to the model's dtype.
    ``check_flags`` runs the validity checks of ``bench.flags`` (on the first 64 samples; ``fgm_beats_pgd``
    for ``pgd_l2``) into the ``flags`` column. ``device``: where batches go (default: the model's). The loader
    is read once; the model is evaluated in eval mode
    and given back in its own mode. Attack arguments as in :func:`attack`; ``eps`` (one value or a grid) defaults to
    the library's own ε for a library class or instance, else to the CLI's default grid of the norm.
    """
    from tqdm.auto import tqdm

    from .progress import disable_flag

    from .bench.evaluate import Measurement, attack_batch, attack_setting, correct_predictions, finite_rows, merge_details
    from .bench.flags import NON_FINITE, check_attack, row_flags
    from .bench.results import CLEAN, NO_MODALITY, ResultRow, append_rows, attack_rows, rows_frame
    from .bench.threat_sets import ANY, any_flags, combine_any, modality_label, threat_sets
    from .bench.results import read_rows
    from .bench.validate import check_count, check_name, check_output_file
    from .data.base import TensorSplit

    check_name(label, "label")
    check_name(dataset, "dataset")
    check_count(seed, "seed", minimum=0)
    if results is not None:  # a file that cannot be written (or read back) is refused now, not after the work
        check_output_file(results, "results")
        if Path(results).is_file():
            read_rows(results)
    wrapped = _check_wrapped(model)
    library_eps = resolve_attack(attack).eps
    grid = _eps_grid(eps, library_eps) if eps is not None or library_eps is not None else []
    dev = torch.device(device) if device is not None else _model_device(wrapped)
    choices = threat_sets(wrapped.names) if modality == ANY else [modality]
    sets: list[_SetTally] = []
    name = ""
    n = clean_correct = clean_non_finite = 0
    clean_seconds = 0.0
    kept: list[tuple[Batch, Tensor]] = []
    with _restored_modes(wrapped):
        for raw in tqdm(loader, desc="evaluate", disable=disable_flag(progress), leave=False):
            split, batch = _device_batch(wrapped, raw, order, label_key, dev)
            labels = _labels_of(split, None).to(dev)
            if not sets:
                for choice in choices:
                    atk, threat, name = _build(wrapped, attack, choice, grid[0] if grid else None, norm, joint, seed,
                                               options, False, require_eps=False)
                    if not grid:  # neither the caller nor the library gave ε: the suite's default grid of the norm
                        grid = _eps_grid(default_eps(threat.norm), None)
                    if threat.targeted:
                        raise ValueError("evaluate measures untargeted robustness; build the attack without targeted "
                                         "mode")
                    if not atk.norm_bounded:
                        grid = [0.0]
                    fgm = (build_attack("fgm", wrapped.specs, seed=seed)
                           if check_flags and name in ("pgd_l2",) and threat.norm == "l2" else None)
                    sets.append(_SetTally(choice, atk, threat.with_eps(grid[0]), fgm, len(grid)))
            if sum(len(y) for _, y in kept) < FLAG_SAMPLES:
                kept.append(({m: x.detach().cpu() for m, x in batch.items()}, labels.cpu()))
            start = time.perf_counter()
            with torch.no_grad():
                clean_logits = wrapped(batch).logits
            _check_classes(labels, int(clean_logits.shape[1]))
            clean_correct += int(correct_predictions(clean_logits, labels).sum())
            clean_non_finite += int((~finite_rows(clean_logits)).sum())
            clean_seconds += time.perf_counter() - start
            n += int(labels.shape[0])
            for tally in sets:
                with attack_setting(wrapped, tally.attack, tally.threat):
                    hits, took, reported = attack_batch(wrapped, tally.attack, tally.threat, grid, batch, labels)
                    tally.hits.append(hits.cpu())
                    tally.seconds = [a + b for a, b in zip(tally.seconds, took)]
                    tally.details = [merge_details(d, r) for d, r in zip(tally.details, reported)]
                    if tally.fgm is not None:
                        fgm_hits, _, _ = attack_batch(wrapped, tally.fgm, tally.threat, grid, batch, labels)
                        tally.fgm_correct = [c + int(h.sum()) for c, h in zip(tally.fgm_correct, fgm_hits)]
    if not sets:
        raise ValueError("the loader gave no batches")
    common = dict(dataset=dataset, defense=label, seed=seed, checkpoint_sha256=state_dict_sha256(wrapped.model),
                  config_hash=wrapped.config_hash(), device=str(dev), suite_version=__version__)
    dtypes = sorted({str(p.dtype).replace("torch.", "") for p in wrapped.parameters() if p.is_floating_point()})
    provenance = {"label": label, "dtype": "+".join(dtypes) or "none"}
    fields = {f.name for f in dataclasses.fields(ResultRow)}
    common.update({k: v for k, v in provenance.items() if k in fields})  # columns of newer result stores
    norm_used = sets[0].threat.norm
    rows = [ResultRow(attack=CLEAN, attack_config=CLEAN, library="native", library_version=__version__,
                      modality=NO_MODALITY, norm=norm_used, eps=0.0, n=n, accuracy=clean_correct / max(n, 1),
                      wall_seconds=clean_seconds, flags=NON_FINITE if clean_non_finite else "", **common)]
    small = None
    if check_flags:
        small = TensorSplit({m: torch.cat([b[m] for b, _ in kept])[:FLAG_SAMPLES] for m in wrapped.names},
                            torch.cat([y for _, y in kept])[:FLAG_SAMPLES])
    per_set: dict[str, list[Measurement]] = {}
    set_flags: dict[str, list] = {}
    for tally in sets:
        outcomes = torch.cat(tally.hits, 1)
        measured = [Measurement(e, int(outcomes[i].sum()), n, tally.seconds[i], outcomes[i], tally.details[i])
                    for i, e in enumerate(grid)]
        flags = []
        if small is not None:
            fgm_measured = ([Measurement(e, c, n, 0.0) for e, c in zip(grid, tally.fgm_correct)]
                            if tally.fgm is not None else None)
            with _restored_modes(wrapped):
                flags = check_attack(wrapped, small, tally.attack, tally.threat, grid, measured, dev, fgm=fgm_measured)
        set_label = modality_label(tally.choice, tally.threat)
        per_set[set_label], set_flags[set_label] = measured, flags
        rows += attack_rows(measured, attack=name, attack_config=tally.attack.describe(), library=tally.attack.library,
                            library_version=tally.attack.library_version, modality=set_label, norm=norm_used,
                            norm_bounded=tally.attack.norm_bounded, flags_at=partial(row_flags, flags), common=common)
    if modality == ANY:
        first = sets[0].attack
        rows += attack_rows(combine_any(per_set), attack=name, attack_config=first.describe(), library=first.library,
                            library_version=first.library_version, modality=ANY, norm=norm_used,
                            norm_bounded=first.norm_bounded, common=common,
                            flags_at=lambda e: any_flags({s: row_flags(f, e) for s, f in set_flags.items()}))
    if results is not None:
        append_rows(results, rows)
    return rows_frame(rows)


benchmark = evaluate


@dataclass
class _SetTally:
    """What :func:`evaluate` adds up for one threat set over the loader's batches."""

    choice: Any
    attack: Attack
    threat: ThreatModel
    fgm: Attack | None
    radii: int
    hits: list[Tensor] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    details: list[dict | None] = field(default_factory=list)
    fgm_correct: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.seconds = [0.0] * self.radii
        self.details = [None] * self.radii
        self.fgm_correct = [0] * self.radii


def format_table(frame: pd.DataFrame) -> str:
    """The rows of :func:`evaluate` as the Markdown table the CLI prints, with a ``model`` column (a ``flags``
    column when a validity flag of ``bench.flags`` is raised)."""
    from .bench.api import format_table as cli_table

    return cli_table(frame, model_column=True)


# ---------------------------------------------------------------------------------------------------------
# Features that need uni-modal scores
# ---------------------------------------------------------------------------------------------------------

def _additive_forward(wrapped: WrappedModel, raw: Any, order: Sequence[str] | None, label_key: str | None,
                      dev: torch.device, offset: Tensor | None) -> tuple[_Split, dict[str, Tensor], ModelOutput, Tensor]:
    """One loader batch through the model for :func:`certificates`: (split batch, inputs on ``dev``, output,
    the fusion offset), after checking the output has uni-modal scores whose sum (+ the offset) is the logits."""
    split, batch = _device_batch(wrapped, raw, order, label_key, dev)
    with torch.no_grad():
        out = wrapped(batch)
    _require_unimodal(wrapped, out, "certificates")
    return split, batch, out, _check_additive(wrapped, out, offset)


def _require_unimodal(wrapped: WrappedModel, output: ModelOutput, feature: str) -> None:
    missing = [m for m in wrapped.names if m not in output.unimodal]
    if missing:
        have = f"it gives them for {', '.join(output.unimodal)} only" if output.unimodal else "it gives none"
        raise ValueError(f"{feature} needs uni-modal scores z^(m) (a (batch, classes) tensor per modality) and {have} "
                         f"(missing: {', '.join(missing)}); return a dict {{'logits': ..., 'unimodal': {{"
                         + ", ".join(f"'{m}': z_{m}" for m in wrapped.names)
                         + "}} (or an object with .logits and .unimodal) from forward, or point mmr.wrap(..., "
                           "unimodal=...) at them")


def eta(model: WrappedModel, loader: Iterable[Any], *, order: Sequence[str] | None = None,
        label_key: str | None = None, device: str | torch.device | None = None, max_samples: int | None = None,
        class_chunk: int = 32) -> pd.DataFrame:
    """The vulnerability indicator η of every modality (docs/methods.md §11): the input-gradient norm
    of the uni-modal margin, η_{y,j}^(m)(x) = ‖∇_{x^(m)} (z_y^(m) − z_j^(m))‖, averaged over samples.

    Needs a model whose output exposes uni-modal scores (see :func:`wrap`); otherwise a ValueError says how
    to expose them. One row per modality: ``n``, ``eta_runner_up`` (j = the fused runner-up class),
    ``eta_pairs`` (mean over all j ≠ y) and ``ratio`` (``eta_pairs`` over the first modality's), the imbalance
    that the paper's Figure 3 shows (1 = balanced).
    """
    from .certify.radii import pair_eta, unimodal_grams

    wrapped = _check_wrapped(model)
    dev = torch.device(device) if device is not None else _model_device(wrapped)
    runner: dict[str, list[Tensor]] = {m: [] for m in wrapped.names}
    pairs: dict[str, list[Tensor]] = {m: [] for m in wrapped.names}
    n = 0
    with _restored_modes(wrapped):
        for raw in loader:
            split, batch = _device_batch(wrapped, raw, order, label_key, dev)
            labels = _labels_of(split, None).to(dev)
            if n == 0:
                with torch.no_grad():
                    _require_unimodal(wrapped, wrapped(batch), "eta")
            grams, logits = unimodal_grams(wrapped, batch, wrapped.names, class_chunk)
            rows = torch.arange(labels.shape[0], device=dev)
            runner_up = logits.scatter(1, labels[:, None], -math.inf).argmax(1)
            for m, g in grams.items():
                at_y = pair_eta(g)[rows, labels]  # (B, K): η_{y,j}
                runner[m].append(at_y[rows, runner_up].cpu())
                k = at_y.shape[1]
                pairs[m].append((at_y.sum(1) / max(k - 1, 1)).cpu())  # η_{y,y} = 0
            n += int(labels.shape[0])
            if max_samples is not None and n >= max_samples:
                break
    if n == 0:
        raise ValueError("the loader gave no batches")
    out = []
    first = None
    for m in wrapped.names:
        pair_mean = float(torch.cat(pairs[m]).mean())
        first = pair_mean if first is None else first
        out.append({"modality": m, "n": n, "eta_runner_up": float(torch.cat(runner[m]).mean()),
                    "eta_pairs": pair_mean, "ratio": pair_mean / first if first else float("nan")})
    return pd.DataFrame(out, columns=["modality", "n", "eta_runner_up", "eta_pairs", "ratio"])


ADDITIVITY_TOL = 1e-4  # relative: logits − Σ_m z^(m) may vary across samples by this much of the logits' scale


def _check_additive(wrapped: WrappedModel, output: ModelOutput, offset: Tensor | None) -> Tensor:
    """The per-class offset c = logits − Σ_m z^(m), which must be the same for every sample: then the margin
    h_y − h_j is the sum of the uni-modal margins plus a constant, and the bounds of Eq. 5/7 hold."""
    logits = output.logits.detach().float()
    rest = logits - sum(output.unimodal[m].detach().float() for m in wrapped.names)
    reference = rest[0] if offset is None else offset
    scale = float(logits.abs().amax()) + 1.0
    gap = float((rest - reference).abs().amax()) if rest.numel() else 0.0
    if gap > ADDITIVITY_TOL * scale:
        raise ValueError(f"certificates need fused logits = Σ_m unimodal[m] + a constant per class (a late-fusion "
                         f"sum, as the suite's concat head with the bias/2 convention); your model's logits differ from "
                         f"that sum by up to {gap:.3g} between samples. mmr.eta works without it")
    return reference


def certificates(model: WrappedModel, train: Iterable[Any], test: Iterable[Any] | None = None, *,
            radii: Sequence[float] = (0.25, 0.5, 1.0), order: Sequence[str] | None = None, label_key: str | None = None,
            device: str | torch.device | None = None, honesty_steps: int | None = None, seed: int | None = None,
            class_chunk: int = 32, honesty: Any = None, batch_size: int = 64) -> pd.DataFrame:
    """Empirical certified radii (Eq. 7 per modality, Eq. 5 jointly; docs/methods.md §11) of a model whose
    fused logits are the sum of its uni-modal scores plus a constant, with the suite's honesty check.

    The global constants L_{y,j}^(m) are the largest η_{y,j}^(m) over the ``train`` loader; a test sample's
    radius is min_j (h_y − h_j) / L_{y,j}^(m) (Eq. 7) or / sqrt(Σ_m (L_{y,j}^(m))²) (Eq. 5), 0 when it is
    misclassified. Gradient norms at finitely many samples only lower-bound the Lipschitz constants, so the
    radii are empirical: the honesty check (``honesty``, a :class:`mmrobust_bench.certify.honesty.HonestyConfig`;
    by default the suite's: 100-step margin-loss ℓ2-PGD plus targeted PGD towards every other class, every
    iterate checked) attacks each certified sample inside r(x)·(1 − slack) and counts those it breaks — a
    **lower bound** on the broken claims. ``honesty_steps`` / ``seed`` override its steps / seed (0 steps skips
    it); ``HonestyConfig.legacy_check()`` is the earlier, weaker CE check. One row per certificate: median
    radius, certified accuracy at each of ``radii``, the honesty counts and the check used. Needs uni-modal
    scores (see :func:`wrap`); the test loader is held in memory.
    """
    if test is None:
        raise TypeError("mmr.certificates(wrapped, train, test) needs two loaders: the test loader is missing "
                        "(train gives the Lipschitz constants, test the certified radii)")
    from .certify.honesty import HonestyConfig, honesty_check
    from .certify.radii import pair_eta, radius_from, unimodal_grams
    from .data.base import TensorSplit

    check = honesty if honesty is not None else HonestyConfig()
    if not isinstance(check, HonestyConfig):
        raise ValueError(f"honesty= takes a mmrobust_bench.certify.honesty.HonestyConfig, got {type(check).__name__}")
    changes = {k: int(v) for k, v in (("steps", honesty_steps), ("seed", seed)) if v is not None}
    if changes:
        check = dataclasses.replace(check, **changes)

    wrapped = _check_wrapped(model)
    dev = torch.device(device) if device is not None else _model_device(wrapped)
    pair: dict[str, Tensor] = {}
    offset: Tensor | None = None
    with _restored_modes(wrapped):
        for raw in train:
            split, batch, out, offset = _additive_forward(wrapped, raw, order, label_key, dev, offset)
            grams, _ = unimodal_grams(wrapped, batch, wrapped.names, class_chunk)
            for m, g in grams.items():
                p = pair_eta(g).amax(0)
                pair[m] = p if m not in pair else torch.maximum(pair[m], p)
        if not pair:
            raise ValueError("the train loader gave no batches")
        inputs: dict[str, list[Tensor]] = {m: [] for m in wrapped.names}
        labels, logits = [], []
        for raw in test:
            split, batch, out, offset = _additive_forward(wrapped, raw, order, label_key, dev, offset)
            y = _labels_of(split, None).to(dev)
            for m in wrapped.names:
                inputs[m].append(batch[m])
            labels.append(y)
            logits.append(out.logits.detach().float())
        if not labels:
            raise ValueError("the test loader gave no batches")
        y = torch.cat(labels)
        h = torch.cat(logits)
        batch = {m: torch.cat(v) for m, v in inputs.items()}
        margins = h.gather(1, y[:, None]) - h
        runner_up = h.scatter(1, y[:, None], -math.inf).argmax(1)
        correct = h.argmax(1) == y
        certificates = [("eq5", wrapped.names, torch.sqrt(sum(pair[m] ** 2 for m in wrapped.names)))]
        certificates += [(f"eq7[{m}]", (m,), pair[m]) for m in wrapped.names]
        split = TensorSplit(batch, y)
        rows = []
        for name, mods, den in certificates:
            r, _ = radius_from(margins, y, den, runner_up)
            r = torch.where(correct, r.clamp_min(0), torch.zeros_like(r))
            certified = torch.nonzero(r > 0).flatten()
            found = None
            if check.enabled:
                found = honesty_check(wrapped, split, r, mods, wrapped.specs, config=check, batch_size=batch_size,
                                      device=dev)
            row = {"certificate": name, "modality": "+".join(mods), "n": int(y.numel()),
                   "clean_accuracy": float(correct.float().mean()),
                   "median_radius": float(r[r > 0].median()) if certified.numel() else 0.0}
            row.update({f"certified_accuracy@{e:g}": float((r > e).float().mean()) for e in radii})
            row.update({"honesty_certified": found.certified if found else -1,
                        "honesty_violations": found.violations if found else -1,
                        "honesty_counts": "lower bound (>= violations found)" if found else "not run",
                        "honesty_attack": found.attack if found else "", "kind": "empirical"})
            rows.append(row)
    return pd.DataFrame(rows)


SMOOTHING_ROWS = ("sample", "certified_accuracy")  # the two kinds of row of SmoothingResult.to_frame
# the columns of SmoothingResult.to_frame, in order (then any others: the honesty check's)
SMOOTHING_COLUMNS = ("row", "modality", "sample", "label", "prediction", "abstained", "p_a_lower", "radius", "eps",
                     "certified_accuracy", "abstained_fraction", "samples", "sigma", "n0", "n", "alpha", "kind")


@dataclass(frozen=True)
class SmoothingResult:
    """What :func:`smooth_certify` returns: per-sample rows and per-radius rows kept apart, so that a mean over
    ``summary`` never mixes in a sample's radius.

    ``samples``: one row per test sample (``sample``, ``label``, ``prediction`` (−1 when abstaining),
    ``abstained``, ``p_a_lower``, ``radius`` (NaN when abstaining)); ``summary``: one row per radius ``eps``
    (``certified_accuracy``, ``abstained_fraction``, ``samples`` and the honesty counts when checked); both carry
    ``modality``, ``sigma``, ``n0``, ``n``, ``alpha`` and ``kind``. ``largest_radius``: σ·Φ⁻¹(α^{1/n}), beyond
    which nothing is certified (``certify.smoothing.largest_certifiable_radius``)."""

    samples: pd.DataFrame
    summary: pd.DataFrame
    largest_radius: float

    def to_frame(self) -> pd.DataFrame:
        """Both in one tidy frame with a ``row`` column: ``"sample"`` rows, then ``"certified_accuracy"`` rows."""
        frame = pd.concat([self.samples.assign(row="sample"), self.summary.assign(row="certified_accuracy")],
                          ignore_index=True)
        return frame[list(SMOOTHING_COLUMNS) + [c for c in frame.columns if c not in SMOOTHING_COLUMNS]]


def smooth_certify(model: WrappedModel, loader: Iterable[Any], *, modality: str | Sequence[str] = ALL_MODALITIES,
                   sigma: float = 0.25, n0: int = 100, n: int = 1000, alpha: float = 0.001, batch: int = 1000,
                   seed: int = 0, radii: Sequence[float] | None = None, order: Sequence[str] | None = None,
                   label_key: str | None = None, device: str | torch.device | None = None,
                   max_samples: int | None = None, n_attack: int = 0, attack_steps: int = 20,
                   progress: bool = False) -> SmoothingResult:
    """Randomized-smoothing certificates (Cohen et al. 2019; ``mmrobust_bench.certify.smoothing``) of any wrapped
    model, with Gaussian noise of std ``sigma`` on ``modality`` (one name, ``"a,v"`` or ``"all"``; the others held
    fixed): **sound (probabilistic, 1 − α)** — each radius holds with probability ≥ 1 − ``alpha`` over the noise
    draws, whatever the model (no uni-modal scores, no Lipschitz estimate needed). Train the model with the same
    unclamped noise or the smoothed classifier abstains a lot.

    Returns a :class:`SmoothingResult`: ``.samples`` (one row per test sample), ``.summary`` (one row per ε of
    ``radii``: the fraction of all samples certified correct with radius ≥ ε, and the abstention rate) and
    ``.to_frame()`` (both in one tidy frame with a ``row`` column). No radius is certified beyond
    σ·Φ⁻¹(α^{1/n}) (``.largest_radius``; 0.62 at the defaults, 0.80 with ``n=10_000``, which costs 10× more):
    ``radii`` defaults to 0, σ, 2σ, … up to it, and
    given radii above it are clipped to it with a warning naming it. ``n_attack > 0`` also runs the
    SmoothAdv-style honesty check (``attack_steps`` PGD steps; violations found are a lower bound) and adds its
    counts to the summary rows. The loader is held in memory (``max_samples`` caps it). Counts (``n0``, ``n``,
    ``batch``, ``max_samples``, ``n_attack``, ``attack_steps``) and ``seed`` must be whole numbers, never truncated.
    """
    from .bench.validate import check_count
    from .certify.smoothing import SOUND, SmoothingConfig, capped_radii, smoothed_honesty_check
    from .certify.smoothing import smooth_certify as certify_smoothed

    wrapped = _check_wrapped(model)
    n0, n, batch = (check_count(v, name) for v, name in ((n0, "n0"), (n, "n"), (batch, "batch")))
    seed, n_attack = check_count(seed, "seed", minimum=0), check_count(n_attack, "n_attack (0 skips the check)", 0)
    attack_steps = check_count(attack_steps, "attack_steps")
    if max_samples is not None:
        max_samples = check_count(max_samples, "max_samples (None: every sample)")
    config = SmoothingConfig(sigma=float(sigma), n0=n0, n=n, alpha=float(alpha), batch=batch, seed=seed)
    radii = capped_radii(config.default_radii if radii is None else radii, config.sigma, config.n, config.alpha)
    dev = torch.device(device) if device is not None else _model_device(wrapped)
    inputs: dict[str, list[Tensor]] = {m: [] for m in wrapped.names}
    labels: list[Tensor] = []
    count = classes = 0
    for raw in loader:
        split, part = _device_batch(wrapped, raw, order, label_key, dev)
        y = _labels_of(split, None).to(dev)
        classes = classes or _num_classes(wrapped, part)
        _check_classes(y, classes)  # a label beyond the logits would count as a wrong prediction, silently
        for m in wrapped.names:
            inputs[m].append(part[m])
        labels.append(y)
        count += int(y.shape[0])
        if max_samples is not None and count >= max_samples:
            break
    if not labels:
        raise ValueError("the loader gave no batches")
    keep = count if max_samples is None else min(count, int(max_samples))
    x = {m: torch.cat(v)[:keep] for m, v in inputs.items()}
    y = torch.cat(labels)[:keep]
    spec = modality if isinstance(modality, str) else ",".join(modality)
    mods = ThreatModel.parse(spec, 0.0, wrapped.specs).modalities
    with _restored_modes(wrapped):
        _announce_cost(wrapped, x, keep, n0 + n, batch)
        cert = certify_smoothed(wrapped, x, y, mods, config, device=dev, progress=progress)
        honesty = (smoothed_honesty_check(wrapped, x, cert, n_attack=n_attack, steps=attack_steps, device=dev,
                                          progress=progress) if n_attack > 0 else None)
    common = {"modality": cert.modality_label, "sigma": config.sigma, "n0": config.n0, "n": config.n,
              "alpha": config.alpha, "kind": SOUND}
    samples = pd.DataFrame({"modality": cert.modality_label, "sample": np.arange(cert.n),
                            "label": cert.labels.numpy().astype(int),
                            "prediction": cert.predictions.numpy().astype(int),
                            "abstained": cert.abstained.numpy().astype(bool), "p_a_lower": cert.p_lower.numpy(),
                            "radius": cert.radius.numpy(), **{k: v for k, v in common.items() if k != "modality"}})
    abstained = float(cert.abstained.float().mean()) if cert.n else 0.0
    rows: list[dict[str, Any]] = []
    for eps in radii:
        row = {"eps": float(eps), "certified_accuracy": cert.certified_accuracy(eps), "abstained_fraction": abstained,
               "samples": cert.n, **common}
        if honesty is not None:
            row.update({"honesty_checked": honesty.checked, "honesty_violations": honesty.violations,
                        "honesty_counts": "lower bound (>= violations found)", "honesty_attack": honesty.attack})
        rows.append(row)
    return SmoothingResult(samples, pd.DataFrame(rows), config.largest_radius)


ANNOUNCE_SECONDS = 60.0  # a call expected to take longer says so before it starts


def _announce_cost(model: nn.Module, x: Mapping[str, Tensor], samples: int, draws: int, batch: int) -> float:
    """Time one forward pass of ``batch`` copies of the first sample and warn, before a long smoothing run starts, how
    long ``samples`` × ``draws`` noisy forwards will take here (the estimate, in seconds, is returned)."""
    size = max(1, min(batch, draws))
    probe = {m: v[:1].expand((size,) + tuple(v.shape[1:])) for m, v in x.items()}
    model.eval()
    start = time.perf_counter()
    with torch.no_grad():
        model(probe)
    estimate = (time.perf_counter() - start) * samples * math.ceil(draws / size)
    if estimate > ANNOUNCE_SECONDS:
        log.warning("smooth_certify: about %.0f min for %d samples × %d noisy forward passes on this machine; lower n "
                    "or max_samples for a quicker answer", estimate / 60, samples, draws)
    return estimate


__all__ = ["Modality", "WrappedModel", "wrap", "attack", "drop", "evaluate", "benchmark", "eta", "certificates",
           "smooth_certify", "SmoothingResult",
           "format_table", "resolve_attack", "ResolvedAttack", "norm_name", "state_dict_sha256", "CALLS", "LABEL_KEYS", "LABEL"]
