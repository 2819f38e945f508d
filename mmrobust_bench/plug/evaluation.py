"""Clean and robust accuracy over an ε grid straight from the user's loader (:func:`evaluate`), as the tidy rows
the CLI writes: a thin layer over the suite's one attack loop (``bench.evaluate.robust_accuracy``) and its one
place for rows (``bench.results.clean_row`` / ``attack_rows``)."""

from __future__ import annotations

import hashlib
import logging
import numbers
import time
from collections.abc import Iterable, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from .._version import __version__
from ..attacks import Attack, build_attack, default_eps
from ..bench.evaluate import Measurement, correct_predictions, finite_rows, robust_accuracy
from ..bench.flags import Flag, check_attack, clean_row_flags, row_flags, warn_flags
from ..bench.naming import modality_name
from ..bench.results import ResultRow, append_rows, attack_rows, clean_row, read_rows, rows_frame
from ..bench.threat_sets import ANY, any_flags, combine_any, modality_label, threat_sets
from ..bench.validate import check_count, check_eps, check_name, check_output_file
from ..checked_tensors import tensor_digest
from ..contracts import ALL_MODALITIES, Batch, ThreatModel, check_modality_choice
from ..data.base import TensorSplit
from .attacking import build, resolve_attack
from .batches import batch_device, check_classes, device_batch, labels_of, restored_modes
from .declare import WrappedModel, check_wrapped
from .estimate import announce, autoattack_estimate, loader_samples, warn_busy_cores

log = logging.getLogger(__name__)

FLAG_SAMPLES = 64  # samples kept from the loader for the validity checks (bench.flags)
FGM_CHECKED = ("pgd_l2",)  # attacks whose rows get the fgm_beats_pgd check (FGM run on the same batches)


def state_dict_sha256(module: nn.Module) -> str:
    """The sha256 of a module's state dict: the rows' ``checkpoint_sha256`` for a model the suite did not train.

    Names, dtypes, shapes and bytes count, in name order (the same digest as the suite's resume files and data
    caches), so rows of different weights never mix. Non-tensor entries (``extra_state``) count by their ``repr``.

    Args:
        module: any ``nn.Module`` (for a wrapped model, pass ``wrapped.model``).

    Returns:
        The hex digest.
    """
    state = module.state_dict()
    digest = tensor_digest({k: v for k, v in state.items() if isinstance(v, Tensor)})
    other = {k: repr(v) for k, v in sorted(state.items()) if not isinstance(v, Tensor)}
    return hashlib.sha256((digest + repr(other)).encode()).hexdigest() if other else digest


def _eps_grid(eps: float | Sequence[float] | None, default: float | None) -> list[float]:
    """The ε grid of :func:`evaluate`: the caller's (a number or a list), else the library attack's own ε;
    checked like every ε of the suite (``bench.validate.check_eps``)."""
    values: list[Any]
    if eps is None:
        values = [default] if default is not None else []
    elif isinstance(eps, str):  # "0.5" or "0.5,1", as mmr.attack and --eps take it (a string is no list of radii)
        values = [v for v in eps.split(",") if v.strip()]
    else:
        one = isinstance(eps, numbers.Real) or (isinstance(eps, (np.ndarray, Tensor)) and eps.ndim == 0)
        values = [eps] if one or not isinstance(eps, Iterable) else list(eps)
    return check_eps(values)


class _OnePass:
    """The user's loader, read once: each batch is unpacked, moved to the device, checked and its clean accuracy
    counted when it is first read; the first :data:`FLAG_SAMPLES` samples are kept for the validity checks, and
    every batch (on the CPU) when ``replay`` asks a later measurement to read them again."""

    def __init__(
        self,
        wrapped: WrappedModel,
        loader: Iterable[Any],
        order: Sequence[str] | None,
        label_key: str | None,
        device: torch.device,
    ) -> None:
        self.wrapped, self.order, self.label_key, self.device = wrapped, order, label_key, device
        self._raw = iter(loader)
        self._first: tuple[Batch, Tensor] | None = None
        self.replay = False
        self.stored: list[tuple[Batch, Tensor]] = []
        self.kept: list[tuple[Batch, Tensor]] = []
        self.n = self.correct = self.non_finite = 0
        self.seconds = 0.0

    def _read(self, raw: Any) -> tuple[Batch, Tensor]:
        split, batch = device_batch(self.wrapped, raw, self.order, self.label_key, self.device)
        return batch, labels_of(split, None).to(self.device)

    def first(self) -> Batch:
        """The first batch (its shapes resolve the wrapped model's undeclared ones); an empty loader is refused."""
        raw = next(self._raw, None)
        if raw is None:
            raise ValueError("the loader gave no batches")
        self._first = self._read(raw)
        return self._first[0]

    def _count(self, batch: Batch, labels: Tensor) -> None:
        if sum(len(y) for _, y in self.kept) < FLAG_SAMPLES:
            self.kept.append(({m: x.detach().cpu() for m, x in batch.items()}, labels.cpu()))
        start = time.perf_counter()
        with torch.no_grad():
            logits = self.wrapped(batch).logits
        check_classes(labels, int(logits.shape[1]))
        self.correct += int(correct_predictions(logits, labels).sum())
        self.non_finite += int((~finite_rows(logits)).sum())
        self.seconds += time.perf_counter() - start
        self.n += int(labels.shape[0])
        if self.replay:
            self.stored.append(({m: x.cpu() for m, x in batch.items()}, labels.cpu()))

    def batches(self) -> Iterator[tuple[Batch, Tensor]]:
        """Every batch as ``(inputs, labels)`` on the device: read (and counted) the first time, replayed after."""
        if self._first is None:
            for batch, labels in self.stored:
                yield {m: x.to(self.device) for m, x in batch.items()}, labels.to(self.device)
            return
        pending, self._first = self._first, None
        self._count(*pending)
        yield pending
        for raw in self._raw:
            batch, labels = self._read(raw)
            self._count(batch, labels)
            yield batch, labels

    def clean(self) -> Measurement:
        """Clean accuracy over the batches read (a sample with non-finite logits counts wrong, flagged)."""
        return Measurement(0.0, self.correct, self.n, self.seconds, non_finite=self.non_finite)

    def flag_split(self) -> TensorSplit:
        """The first :data:`FLAG_SAMPLES` samples, for ``bench.flags.check_attack``."""
        names = self.wrapped.names
        return TensorSplit(
            {m: torch.cat([b[m] for b, _ in self.kept])[:FLAG_SAMPLES] for m in names},
            torch.cat([y for _, y in self.kept])[:FLAG_SAMPLES],
        )


def evaluate(
    model: WrappedModel,
    loader: Iterable[Any],
    *,
    attack: Any = "autoattack",
    modality: str | Sequence[str] = ALL_MODALITIES,
    eps: float | Sequence[float] | None = None,
    norm: str | None = None,
    joint: bool = True,
    label: str = "model",
    dataset: str = "custom",
    seed: int = 0,
    order: Sequence[str] | None = None,
    label_key: str | None = None,
    results: str | None = None,
    check_flags: bool = True,
    device: str | torch.device | None = None,
    progress: bool = False,
    **options: Any,
) -> pd.DataFrame:
    """Clean and robust accuracy over an ε grid, from the user's own loader (RobustBench's ``benchmark()`` for
    multi-modal models; ``mmr.benchmark`` is an alias).

    The default attack is ``autoattack``, the standard strong evaluation (APGD-CE, APGD-T, FAB-T and Square with
    a per-sample worst case; ``version="fast-all-targets"`` costs about a fifth, and ``version="fast"``, which targets
    only the top 3 runner-up classes, can fall short of it). Floating inputs of another dtype than the model's
    (float64 from numpy) are cast to the model's dtype. The loader is read once (its batches are held on the CPU
    when several measurements need them: ``modality="any"`` or the FGM check); the model is evaluated in eval mode
    and given back in its own mode.

    Args:
        model: a model wrapped by :func:`~mmrobust_bench.plug.wrap`.
        loader: batches as dicts, tuples in the declared ``order``, or tensors, with labels.
        attack: an id (``"pgd_l2"``, ``"torchattacks:PGDL2"``), a torchattacks / ART class or instance, as in
            :func:`~mmrobust_bench.plug.attack`.
        modality: one name, several (one joint ball, or one each with ``joint=False``), ``"all"``, or ``"any"``:
            per sample, the worst of every modality alone and all jointly.
        eps: one value or a grid; defaults to the library's own ε for a library class or instance, else to the
            CLI's default grid of the norm.
        norm: the threat's norm (default: the attack's own, ℓ2 where it runs under it).
        joint: one ε-ball over the attacked modalities (True) or one per modality.
        label: the rows' ``defense`` and ``label``.
        dataset: the rows' ``dataset``.
        seed: the attack's seed (a whole number >= 0).
        order: the layout of tuple batches, e.g. ``("video", "audio", "label")``.
        label_key: the key of the labels in dict batches (default: the first of ``label``, ``labels``, ``y``, ...).
        results: a CSV the rows are appended to (checked writable before any work; should the final write fail,
            the rows are saved to a fallback file the error names).
        check_flags: run the validity checks of ``bench.flags`` on the first 64 samples (``fgm_beats_pgd`` for
            ``pgd_l2``) into the ``flags`` column.
        device: where batches go (default: the model's).
        progress: show progress bars.
        **options: the attack's options (``alpha``, ``steps``, ``version``, ...).

    Returns:
        The tidy rows the CLI writes (``bench.results.COLUMNS``): one clean row and one per ε (per threat set and
        ε, then ``any``'s with ``modality="any"``), with ``checkpoint_sha256`` the sha256 of the model's state
        dict (:func:`state_dict_sha256`) and ``config_hash`` a hash of the declaration.
    """
    check_name(label, "label")
    check_name(dataset, "dataset")
    check_count(seed, "seed", minimum=0)
    if results is not None:  # a file that cannot be written (or read back) is refused now, not after the work
        check_output_file(results, "results")
        if Path(results).is_file():
            read_rows(results)
    wrapped = check_wrapped(model)
    library_eps = resolve_attack(attack).eps
    grid = _eps_grid(eps, library_eps) if eps is not None or library_eps is not None else []
    dev = batch_device(wrapped, device)
    warn_busy_cores("evaluate", dev)
    if isinstance(modality, str):
        check_modality_choice(modality, wrapped.names)
    choices = threat_sets(wrapped.names) if modality == ANY else [modality]
    with restored_modes(wrapped):
        source = _OnePass(wrapped, loader, order, label_key, dev)
        first_inputs = source.first()  # the cost estimate below times a pass on it
        sets: list[tuple[Any, Attack, ThreatModel, Attack | None]] = []
        name = ""
        for choice in choices:
            atk, threat, name = build(
                wrapped, attack, choice, grid[0] if grid else None, norm, joint, seed, options, False, require_eps=False
            )
            if not grid:  # neither the caller nor the library gave ε: the suite's default grid of the norm
                grid = _eps_grid(default_eps(threat.norm), None)
            if threat.targeted:
                raise ValueError("evaluate measures untargeted robustness; build the attack without targeted mode")
            if not atk.norm_bounded:
                grid = [0.0]
            fgm = (
                build_attack("fgm", wrapped.specs, seed=seed)
                if check_flags and name in FGM_CHECKED and threat.norm == "l2"
                else None
            )
            sets.append((choice, atk, threat.with_eps(grid[0]), fgm))
        source.replay = len(sets) > 1 or any(fgm is not None for *_, fgm in sets)
        samples = loader_samples(loader, int(next(iter(first_inputs.values())).shape[0]))
        estimate = autoattack_estimate(wrapped, first_inputs, [atk for _, atk, _, _ in sets], samples, len(grid))
        if estimate is not None:
            announce(
                "evaluate",
                estimate,
                f"{samples} samples × {len(sets)} threat set(s) × {len(grid)} radii of {sets[0][1].describe()}",
                "version='fast-all-targets' (about a fifth of standard's cost), fewer samples or fewer radii give a "
                "quicker answer",
            )
        measured_sets = []
        for choice, atk, threat, fgm in sets:
            measured = robust_accuracy(wrapped, source.batches(), atk, threat, grid, 0, dev, progress)
            fgm_measured = None
            if fgm is not None:
                fgm_measured = [
                    Measurement(m.eps, m.correct, m.n, 0.0)
                    for m in robust_accuracy(wrapped, source.batches(), fgm, threat, grid, 0, dev)
                ]
            measured_sets.append((modality_label(choice, threat), atk, threat, measured, fgm_measured))
        small = source.flag_split() if check_flags else None
        per_set: dict[str, list[Measurement]] = {}
        set_flags: dict[str, list[Flag]] = {}
        for set_label, atk, threat, measured, fgm_measured in measured_sets:
            per_set[set_label] = measured
            set_flags[set_label] = (
                check_attack(wrapped, small, atk, threat, grid, measured, dev, fgm=fgm_measured)
                if small is not None
                else []
            )
            warn_flags(set_flags[set_label], log, modality_name(set_label) if modality == ANY else "")
    common = _common(wrapped, label, dataset, seed, dev, loader)
    norm_used = sets[0][2].norm
    clean = source.clean()
    rows = [clean_row(clean, norm=norm_used, flags=clean_row_flags(clean), common=common)]
    for set_label, atk, _, measured, _ in measured_sets:
        rows += attack_rows(
            measured,
            attack=name,
            attack_config=atk.describe(),
            library=atk.library,
            library_version=atk.library_version,
            modality=set_label,
            norm=norm_used,
            norm_bounded=atk.norm_bounded,
            flags_at=partial(row_flags, set_flags[set_label]),
            common=common,
        )
    if modality == ANY:
        first = sets[0][1]
        rows += attack_rows(
            combine_any(per_set),
            attack=name,
            attack_config=first.describe(),
            library=first.library,
            library_version=first.library_version,
            modality=ANY,
            norm=norm_used,
            norm_bounded=first.norm_bounded,
            common=common,
            flags_at=lambda e: any_flags({s: row_flags(f, e) for s, f in set_flags.items()}),
        )
    if results is not None:
        append_rows(results, rows, replace=modality == ANY)  # any's sets replace stored ones (bench.api.run)
    return rows_frame(rows)


def _common(
    wrapped: WrappedModel, label: str, dataset: str, seed: int, dev: torch.device, loader: Any = None
) -> dict[str, Any]:
    """The columns every row of one :func:`evaluate` call shares: who measured what, where, and in batches of what
    size (the loader's ``batch_size``; 0 when it has none, e.g. a plain list or a batch sampler)."""
    common: dict[str, Any] = dict(
        dataset=dataset,
        defense=label,
        seed=seed,
        checkpoint_sha256=state_dict_sha256(wrapped.model),
        config_hash=wrapped.config_hash(),
        device=str(dev),
        suite_version=__version__,
    )
    dtypes = sorted({str(p.dtype).replace("torch.", "") for p in wrapped.parameters() if p.is_floating_point()})
    size = getattr(loader, "batch_size", None)
    batch_size = int(size) if isinstance(size, int) and not isinstance(size, bool) and size > 0 else 0
    provenance = {"label": label, "dtype": "+".join(dtypes) or "none", "batch_size": batch_size}
    fields = ResultRow.__dataclass_fields__
    common.update({k: v for k, v in provenance.items() if k in fields})  # columns of newer result stores
    return common


benchmark = evaluate

__all__ = ["FLAG_SAMPLES", "state_dict_sha256", "evaluate", "benchmark"]
