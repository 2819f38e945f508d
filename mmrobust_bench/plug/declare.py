"""Declaring a model: how to call the user's ``nn.Module`` (:func:`wrap`) and what its inputs are (:class:`Modality`).

:class:`WrappedModel` adapts the user's ``forward`` (modalities positionally, by keyword or as one dict; logits
returned as a tensor, a tuple entry, a dict entry or an ``.logits`` attribute) to the suite's contract (a dict
batch in, :class:`~mmrobust_bench.contracts.ModelOutput` out), so every attack of the suite runs on it unchanged.
"""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from ..contracts import ALL_MODALITIES, ModalitySpec, ModelOutput
from ..io import stable_hash

CALLS = ("auto", "positional", "keyword", "dict")  # how wrap(call=...) passes the modalities to the forward


@dataclass(frozen=True)
class Modality:
    """One input of the user's model, as :func:`wrap` takes it.

    Args:
        shape: the per-sample shape; None infers it from the first batch.
        box: the valid range in model-input space: ``(low, high)`` for the whole input, or
            ``((low_0, …), (high_0, …))`` per channel (first axis of ``shape``); None for an unbounded input.
            Attacks keep every perturbed input inside it.
        description: a free text carried into the suite's ``ModalitySpec``.

    Raises:
        ValueError: a shape that is empty or not positive, or a box that is not finite and ordered.
    """

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
            raise ValueError(
                f"Modality box must be (low, high) or ((low per channel), (high per channel)), got {self.box!r}"
            )
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
        raise ValueError(
            f"Modality box bounds must be finite numbers, got {box!r}; declare an unbounded input with box=None"
        )
    return values


def _channel_bounds(name: str, bound: Any, channels: int) -> tuple[float, ...]:
    if isinstance(bound, numbers.Real):
        return _box_values(bound, bound) * channels
    values = _box_values(bound, bound)
    if len(values) != channels:
        raise ValueError(
            f"modality {name!r}: a per-channel box needs {channels} values (first axis of its shape), got {len(values)}"
        )
    return values


def _as_modality(name: str, value: Any) -> Modality:
    if value is None:
        return Modality()
    if isinstance(value, Modality):
        return value
    if isinstance(value, (tuple, list)) and all(isinstance(v, int) for v in value):
        return Modality(tuple(value))
    raise ValueError(
        f"modality {name!r}: declare it as mmr.Modality(shape, box=...), a shape tuple, or None, got {value!r}"
    )


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
        raise ValueError(
            f"your forward takes {takes}, which does not name the modalities "
            f"({', '.join(names)}); {order_hint}, call='keyword' with modalities named after its "
            f"arguments, or call='dict' if it takes one dict"
        )
    if call == "positional":
        if len(required) > len(names) or (len(positional) < len(names) and not var_pos):
            raise ValueError(
                f"your forward takes {takes} but {len(names)} modalities ({', '.join(names)}) are "
                f"declared; {order_hint}, one per argument"
            )
        named = [p.name for p in positional[: len(names)]]
        if set(named) == set(names) and named != list(names):
            raise ValueError(
                f"your forward takes {takes} but the modalities are declared as ({', '.join(names)}); "
                f"{order_hint}, or use call='keyword'"
            )
        return call
    if call == "keyword":
        missing = [m for m in names if m not in keyword_names]
        if missing and not var_kw:
            raise ValueError(
                f"your forward takes {takes}, which has no argument {', '.join(missing)}; {order_hint}, "
                f"or name the modalities after its arguments"
            )
        return call
    if len(required) > 1:  # dict
        raise ValueError(f"your forward takes {takes}, not one dict; {order_hint} or call='keyword'")
    return call


class WrappedModel(nn.Module):
    """A user model seen through the suite's contract: ``forward(batch: dict) -> ModelOutput``.

    Built by :func:`wrap` (not by hand). The user's module is the submodule ``model``, so ``.eval()``, ``.to()``,
    parameters and buffers are the user's own; attacks restore its mode and never touch its weights.

    Attributes:
        model: the user's module.
        names: the modality names, in the declared order.
        call: how the forward takes the modalities (``"positional"``, ``"keyword"`` or ``"dict"``).
        specs: the modalities as ``contracts.ModalitySpec`` (once every shape is declared or seen).
        classes: the width of the logits as the last forward gave them (None before the first).
    """

    def __init__(
        self,
        model: nn.Module,
        modalities: Mapping[str, Modality],
        call: str,
        output: str | int | Callable[[Any], Tensor] | None,
        unimodal: str | Callable[[Any], Any] | None,
    ) -> None:
        super().__init__()
        self.model = model
        self.declared = dict(modalities)
        self.names = tuple(modalities)
        self.call = call
        self.output = output
        self.unimodal = unimodal
        self._specs: dict[str, ModalitySpec] = {
            m: d.spec(m, d.shape) for m, d in self.declared.items() if d.shape is not None
        }
        self.classes: int | None = None  # the width of the logits, as the last forward gave them

    # -- shapes ---------------------------------------------------------------------------------------
    @property
    def specs(self) -> tuple[ModalitySpec, ...]:
        """The modalities as :class:`ModalitySpec` (declared order); shapes must be known (declared or seen)."""
        unknown = [m for m in self.names if m not in self._specs]
        if unknown:
            raise ValueError(
                f"the shape of modality {', '.join(unknown)} is not known yet: declare "
                f"mmr.Modality(shape) or pass a batch through mmr.attack / mmr.evaluate first"
            )
        return tuple(self._specs[m] for m in self.names)

    def _order_hint(self) -> str:
        """An ``order=`` with this model's names, as an error shows it (the fields in the loader's own order)."""
        return ", ".join([*map(repr, self.names), "'label'"])

    def resolve(self, batch: Mapping[str, Tensor]) -> tuple[ModalitySpec, ...]:
        """Infer undeclared shapes from ``batch`` and check declared ones against it."""
        for m in self.names:
            x = batch[m]
            shape = tuple(x.shape[1:])
            if m not in self._specs:
                if not shape:
                    raise ValueError(
                        f"modality {m!r} arrived as a tensor of shape {tuple(x.shape)}; batches are "
                        f"(batch, *shape) tensors (a loader of tuples: give their order, order=({self._order_hint()}))"
                    )
                self._specs[m] = self.declared[m].spec(m, shape)
            elif self._specs[m].shape != shape:
                raise ValueError(
                    f"modality {m!r} is declared with shape {self._specs[m].shape} but the batch has "
                    f"{shape} per sample; fix the declaration (or omit the shape to infer it), or, for a loader of "
                    f"tuples, their order (order=({self._order_hint()}))"
                )
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
                    raise ValueError(
                        f"your forward returns a dict with keys {', '.join(map(str, out))} and no "
                        f"'logits'; declare output='<key>' in mmr.wrap"
                    )
                logits = out["logits"]
            elif isinstance(out, (tuple, list)) and not hasattr(out, "logits"):
                raise ValueError(
                    f"your forward returns a {what} of {len(out)}; declare output=<index> in mmr.wrap "
                    f"(e.g. output=0) to say which entry is the logits"
                )
            elif hasattr(out, "logits"):
                logits = out.logits
            else:
                raise ValueError(
                    f"your forward returns a {what}; return logits (a tensor, a dict entry, a tuple "
                    f"entry or a .logits attribute) and declare which with output="
                )
        elif isinstance(spec, str):
            if isinstance(out, Mapping):
                if spec not in out:
                    raise ValueError(
                        f"output={spec!r}: your forward returns a dict with keys "
                        f"{', '.join(map(str, out))}; declare one of those"
                    )
                logits = out[spec]
            elif isinstance(out, Tensor):
                raise ValueError(
                    f"output={spec!r} expects a dict (or an object with .{spec}) but your forward returns "
                    f"a tensor; drop output= (a tensor output is used as the logits)"
                )
            elif hasattr(out, spec):
                logits = getattr(out, spec)
            else:
                raise ValueError(f"output={spec!r}: your forward returns a {what} without {spec!r}")
        else:
            if not isinstance(out, (tuple, list)):
                raise ValueError(
                    f"output={spec!r} expects a tuple but your forward returns a {what}; "
                    + (
                        "drop output= (a tensor output is used as the logits)"
                        if isinstance(out, Tensor)
                        else "declare output='<key>' for a dict or an attribute"
                    )
                )
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
        return stable_hash(
            {
                "modalities": {m: [list(s.shape), s.lower, s.upper] for m, s in self._specs.items()},
                "call": self.call,
                "output": repr(self.output),
                "model": type(self.model).__name__,
            }
        )

    def extra_repr(self) -> str:
        return f"modalities={self.names}, call={self.call!r}, output={self.output!r}"


def wrap(
    model: nn.Module,
    modalities: Mapping[str, Any] | Sequence[str],
    *,
    call: str = "auto",
    output: str | int | Callable[[Any], Tensor] | None = None,
    unimodal: str | Callable[[Any], Any] | None = None,
) -> WrappedModel:
    """Declare how to call ``model`` so every attack of the suite can run on it.

    Args:
        model: the user's ``torch.nn.Module``.
        modalities: ``{name: mmr.Modality(shape, box=...)}`` in the order the forward takes them (a shape tuple
            or None also works; a list of names infers every shape from the first batch).
        call: the modalities are passed ``"positional"``-ly, by ``"keyword"`` or as one ``"dict"``; ``"auto"``
            reads the forward's signature.
        output: which entry of what the forward returns is the logits (a dict key or attribute name, a tuple
            index, or a function); a tensor, a dict's ``"logits"`` and ``.logits`` need none.
        unimodal: where uni-modal scores are (a dict ``{modality: (B, K)}``), for :func:`~mmrobust_bench.plug.eta`
            and :func:`~mmrobust_bench.plug.certificates`; found under ``"unimodal"`` by default.

    Returns:
        The wrapped model, for :func:`~mmrobust_bench.plug.attack`, :func:`~mmrobust_bench.plug.evaluate` and the
        other calls of the public API.

    Raises:
        ValueError: a declaration that does not fit the forward's signature, with the fix.
        TypeError: ``model`` is not an ``nn.Module``.
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
        raise ValueError(
            f"modality names must be non-empty, without ',' or '+', and not {ALL_MODALITIES!r} or 'any' "
            f"(the joint and the worst-case threat)"
        )
    call = _resolve_call(model, tuple(declared), call)
    return WrappedModel(model, declared, call, output, unimodal)


def check_wrapped(model: Any) -> WrappedModel:
    """``model`` itself when :func:`wrap` made it, else one error saying to wrap it first."""
    if isinstance(model, WrappedModel):
        return model
    if isinstance(model, nn.Module):
        raise TypeError("wrap the model first: wrapped = mmr.wrap(model, modalities={'a': mmr.Modality(...), ...})")
    raise TypeError(f"expected a model wrapped by mmr.wrap, got {type(model).__name__}")


__all__ = ["CALLS", "Modality", "WrappedModel", "wrap", "check_wrapped"]
