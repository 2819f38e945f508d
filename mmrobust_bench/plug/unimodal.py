"""Features of models that expose uni-modal scores z^(m): the vulnerability indicator η (:func:`eta`) and empirical
certified radii (:func:`certificates`, a thin layer over ``certify.radii.certify``; docs/methods.md §11)."""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import pandas as pd
import torch
from torch import Tensor

from ..certify.honesty import HonestyConfig
from ..certify.radii import ADDITIVE, MIN_J, certify, pair_eta, unimodal_grams
from ..contracts import Batch, ModelOutput
from .batches import Split, batch_device, check_classes, device_batch, labels_of, restored_modes
from .declare import WrappedModel, check_wrapped
from .estimate import announce, certificates_estimate, loader_samples, warn_busy_cores
from .formatting import tidy_frame


@dataclasses.dataclass(frozen=True)
class CertificateResult:
    """What :func:`certificates` returns: per-sample radii and per-certificate summaries kept apart, so that a mean
    over ``summary`` never mixes in a sample's radius.

    Attributes:
        samples: one row per certificate and test sample (``certificate``, ``modality``, ``sample`` (its position
            in the test loader), ``label``, ``prediction``, ``radius`` (0 when misclassified), ``kind``).
        summary: one row per certificate (``eq5``, then ``eq7[m]`` per modality): ``n``, ``clean_accuracy``,
            ``median_radius``, ``certified_accuracy@ε`` for each radius, the honesty counts and ``kind``.
    """

    samples: pd.DataFrame
    summary: pd.DataFrame

    def to_frame(self) -> pd.DataFrame:
        """Both in one tidy frame with a ``row`` column: ``"sample"`` rows, then ``"summary"`` rows."""
        return tidy_frame(self.samples, self.summary, "summary")


def _additive_forward(
    wrapped: WrappedModel,
    raw: Any,
    order: Sequence[str] | None,
    label_key: str | None,
    dev: torch.device,
    offset: Tensor | None,
) -> tuple[Split, dict[str, Tensor], ModelOutput, Tensor]:
    """One loader batch through the model for :func:`certificates`: (split batch, inputs on ``dev``, output,
    the fusion offset), after checking the output has uni-modal scores whose sum (+ the offset) is the logits."""
    split, batch = device_batch(wrapped, raw, order, label_key, dev)
    with torch.no_grad():
        out = wrapped(batch)
    _require_unimodal(wrapped, out, "certificates")
    return split, batch, out, _check_additive(wrapped, out, offset)


def _require_unimodal(wrapped: WrappedModel, output: ModelOutput, feature: str) -> None:
    missing = [m for m in wrapped.names if m not in output.unimodal]
    if missing:
        have = f"it gives them for {', '.join(output.unimodal)} only" if output.unimodal else "it gives none"
        raise ValueError(
            f"{feature} needs uni-modal scores z^(m) (a (batch, classes) tensor per modality) and {have} "
            f"(missing: {', '.join(missing)}); return a dict {{'logits': ..., 'unimodal': {{"
            + ", ".join(f"'{m}': z_{m}" for m in wrapped.names)
            + "}} (or an object with .logits and .unimodal) from forward, or point mmr.wrap(..., "
            "unimodal=...) at them"
        )


def eta(
    model: WrappedModel,
    loader: Iterable[Any],
    *,
    order: Sequence[str] | None = None,
    label_key: str | None = None,
    device: str | torch.device | None = None,
    max_samples: int | None = None,
    class_chunk: int = 32,
) -> pd.DataFrame:
    """The vulnerability indicator η of every modality (docs/methods.md §11): the input-gradient norm
    of the uni-modal margin, η_{y,j}^(m)(x) = ‖∇_{x^(m)} (z_y^(m) − z_j^(m))‖, averaged over samples.

    Needs a model whose output exposes uni-modal scores (see :func:`~mmrobust_bench.plug.wrap`); otherwise a
    ValueError says how to expose them.

    Args:
        model: a model wrapped by :func:`~mmrobust_bench.plug.wrap` whose output has uni-modal scores.
        loader: batches with labels, as :func:`~mmrobust_bench.plug.evaluate` takes them.
        order: the layout of tuple batches.
        label_key: the key of the labels in dict batches.
        device: where batches go (default: the model's).
        max_samples: stop after the batch that reaches this many samples (None: the whole loader).
        class_chunk: classes per batched backward (memory against speed).

    Returns:
        One row per modality: ``n``, ``eta_runner_up`` (j = the fused runner-up class), ``eta_pairs`` (mean over
        all j ≠ y) and ``ratio`` (``eta_pairs`` over the first modality's), the imbalance that the paper's
        Figure 3 shows (1 = balanced).
    """
    wrapped = check_wrapped(model)
    dev = batch_device(wrapped, device)
    runner: dict[str, list[Tensor]] = {m: [] for m in wrapped.names}
    pairs: dict[str, list[Tensor]] = {m: [] for m in wrapped.names}
    n = 0
    with restored_modes(wrapped):
        for raw in loader:
            split, batch = device_batch(wrapped, raw, order, label_key, dev)
            labels = labels_of(split, None).to(dev)
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
        out.append(
            {
                "modality": m,
                "n": n,
                "eta_runner_up": float(torch.cat(runner[m]).mean()),
                "eta_pairs": pair_mean,
                "ratio": pair_mean / first if first else float("nan"),
            }
        )
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
        raise ValueError(
            f"certificates need fused logits = Σ_m unimodal[m] + a constant per class (a late-fusion "
            f"sum, as the suite's concat head with the bias/2 convention); your model's logits differ from "
            f"that sum by up to {gap:.3g} between samples. mmr.eta works without it"
        )
    return reference


def certificates(
    model: WrappedModel,
    train: Iterable[Any],
    test: Iterable[Any] | None = None,
    *,
    radii: Sequence[float] = (0.25, 0.5, 1.0),
    order: Sequence[str] | None = None,
    label_key: str | None = None,
    device: str | torch.device | None = None,
    honesty_steps: int | None = None,
    seed: int | None = None,
    class_chunk: int = 32,
    honesty: Any = None,
    batch_size: int = 64,
) -> CertificateResult:
    """Empirical certified radii (Eq. 7 per modality, Eq. 5 jointly; docs/methods.md §11) of a model whose fused
    logits are the sum of its uni-modal scores plus a constant, with the suite's honesty check.

    The global constants L_{y,j}^(m) are the largest η_{y,j}^(m) over the ``train`` loader; a test sample's
    radius is min_j (h_y − h_j) / L_{y,j}^(m) (Eq. 7) or / sqrt(Σ_m (L_{y,j}^(m))²) (Eq. 5), 0 when it is
    misclassified (``certify.radii.certify`` computes them). Gradient norms at finitely many samples only
    lower-bound the Lipschitz constants, so the radii are empirical: the honesty check attacks each certified
    sample inside r(x)·(1 − slack) and counts those it breaks — a **lower bound** on the broken claims. Needs
    uni-modal scores (see :func:`~mmrobust_bench.plug.wrap`); the test loader is held in memory.

    Args:
        model: a model wrapped by :func:`~mmrobust_bench.plug.wrap` whose output has uni-modal scores.
        train: the loader the Lipschitz constants come from (labels not needed).
        test: the loader the radii are certified on (with labels).
        radii: the ε at which certified accuracy is reported.
        order: the layout of tuple batches, as in :func:`~mmrobust_bench.plug.evaluate`.
        label_key: the key of the labels in dict batches.
        device: where batches go (default: the model's).
        honesty_steps: overrides the honesty check's steps (0 skips it).
        seed: overrides the honesty check's seed.
        class_chunk: classes per batched backward (memory against speed).
        honesty: a :class:`mmrobust_bench.certify.honesty.HonestyConfig`; by default the suite's (100-step
            margin-loss ℓ2-PGD plus targeted PGD towards every other class, every iterate checked);
            ``HonestyConfig.legacy_check()`` is the earlier, weaker CE check.
        batch_size: the honesty check's batch size.

    Returns:
        A :class:`CertificateResult`: ``.samples``, one row per certificate and test sample (its radius, 0 when
        misclassified); ``.summary``, one row per certificate (``eq5``, then ``eq7[m]`` per modality): ``n``,
        ``clean_accuracy``, ``median_radius``, ``certified_accuracy@ε`` for each of ``radii``, the honesty counts
        (``honesty_certified``, ``honesty_violations``; -1 when not run), ``honesty_counts``, ``honesty_attack``
        and ``kind`` (``"empirical"``); ``.to_frame()``, both in one tidy frame.
    """
    if test is None:
        raise TypeError(
            "mmr.certificates(wrapped, train, test) needs two loaders: the test loader is missing "
            "(train gives the Lipschitz constants, test the certified radii)"
        )
    check = honesty if honesty is not None else HonestyConfig()
    if not isinstance(check, HonestyConfig):
        raise ValueError(f"honesty= takes a mmrobust_bench.certify.honesty.HonestyConfig, got {type(check).__name__}")
    if honesty_steps is not None:
        check = dataclasses.replace(check, steps=int(honesty_steps))
    if seed is not None:
        check = dataclasses.replace(check, seed=int(seed))
    wrapped = check_wrapped(model)
    dev = batch_device(wrapped, device)
    warn_busy_cores("certificates", dev)
    passes = _AdditivePasses(wrapped, order, label_key, dev)
    with restored_modes(wrapped):
        train_batches = passes.inputs(train)
        first = next(train_batches, None)  # resolves undeclared shapes before certify reads the specs
        if first is None:
            raise ValueError("the train loader gave no batches")
        first_inputs = first[0]
        size = int(next(iter(first_inputs.values())).shape[0])
        estimate = certificates_estimate(
            wrapped, first_inputs, loader_samples(train, size), loader_samples(test, size), check
        )
        if estimate is not None:
            announce(
                "certificates",
                estimate,
                "the Jacobians of every train and test sample and the honesty check",
                "pass fewer samples, or honesty=HonestyConfig(targeted_classes=3) for a cheaper check",
            )
        cert = certify(
            wrapped,
            itertools.chain([first], train_batches),
            passes.labelled(test),
            wrapped.specs,
            batch_size=batch_size,
            class_chunk=class_chunk,
            device=dev,
            honesty=check,
            heuristic=False,
            head=ADDITIVE,
            variants=(MIN_J,),
        )
    correct = cert.predictions == cert.labels
    rows, per_sample = [], []
    for found in cert.radii:
        r = torch.where(correct, found.radius.clamp_min(0), torch.zeros_like(found.radius))
        per_sample.append(
            pd.DataFrame(
                {
                    "certificate": found.name,
                    "modality": "+".join(found.modalities),
                    "sample": range(cert.n),
                    "label": cert.labels.tolist(),
                    "prediction": cert.predictions.tolist(),
                    "radius": r.double().tolist(),
                    "kind": "empirical",
                }
            )
        )
        certified = torch.nonzero(r > 0).flatten()
        check_run = found.honesty
        row = {
            "certificate": found.name,
            "modality": "+".join(found.modalities),
            "n": cert.n,
            "clean_accuracy": float(correct.float().mean()),
            "median_radius": float(r[r > 0].median()) if certified.numel() else 0.0,
        }
        row.update({f"certified_accuracy@{e:g}": float((r > e).float().mean()) for e in radii})
        row.update(
            {
                "honesty_certified": check_run.certified if check_run else -1,
                "honesty_violations": check_run.violations if check_run else -1,
                "honesty_counts": "lower bound (>= violations found)" if check_run else "not run",
                "honesty_attack": check_run.attack if check_run else "",
                "kind": "empirical",
            }
        )
        rows.append(row)
    return CertificateResult(samples=pd.concat(per_sample, ignore_index=True), summary=pd.DataFrame(rows))


class _AdditivePasses:
    """The loaders of :func:`certificates` as ``(inputs, labels)`` pairs on the device, every batch checked first:
    uni-modal scores present, and fused logits = Σ_m z^(m) + one per-class offset shared by every batch read."""

    def __init__(
        self, wrapped: WrappedModel, order: Sequence[str] | None, label_key: str | None, device: torch.device
    ) -> None:
        self.wrapped, self.order, self.label_key, self.device = wrapped, order, label_key, device
        self.offset: Tensor | None = None

    def _read(self, loader: Iterable[Any], what: str) -> Iterator[tuple[Split, Batch, ModelOutput]]:
        count = 0
        for raw in loader:
            split, batch, out, self.offset = _additive_forward(
                self.wrapped, raw, self.order, self.label_key, self.device, self.offset
            )
            count += 1
            yield split, batch, out
        if not count:
            raise ValueError(f"the {what} loader gave no batches")

    def inputs(self, loader: Iterable[Any]) -> Iterator[tuple[Batch, None]]:
        """The train loader's inputs (its labels are not read)."""
        for _, batch, _ in self._read(loader, "train"):
            yield batch, None

    def labelled(self, loader: Iterable[Any]) -> Iterator[tuple[Batch, Tensor]]:
        """The test loader's inputs and labels (class indices within the model's logits)."""
        for split, batch, out in self._read(loader, "test"):
            labels = labels_of(split, None).to(self.device)
            check_classes(labels, int(out.logits.shape[1]))
            yield batch, labels


__all__ = ["ADDITIVITY_TOL", "CertificateResult", "eta", "certificates"]
