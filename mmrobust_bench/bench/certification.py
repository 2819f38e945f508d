"""``mmrobust-bench certify``: train or load a model, certify it, and write its files and tidy rows.

Two methods, told apart by the ``method`` and ``kind`` columns of ``certified.csv``:

- ``empirical`` (default): Eq. 5/7/10 radii from gradient-based Lipschitz estimates (``certify.radii``),
  kind ``empirical`` (``not a bound (runner-up only)`` for runner-up radii, ``heuristic …`` on models
  whose uni-modal scores mix modalities). Writes ``<root>/certify/<dataset>/<label>/seed<seed>-<sha12>/``
  (certificate.md, summary.csv, pairs.csv, samples.csv) and replaces the model's empirical rows in
  ``<root>/certified.csv`` and its rows in ``<root>/eta_pairs.csv`` (per class pair η, Figure 3).
- ``smoothing``: randomized-smoothing certificates per noise set (``certify.smoothing``), kind
  ``sound (probabilistic, 1-alpha)``; files under ``…/seed<seed>-<sha12>/smoothing-<modality>-sigma<σ>/``
  and rows replacing the same model's rows of the same noise set and σ.

Rows written before the ``method``/``kind`` columns existed read as ``empirical`` (:func:`read_certified`).
Sweeps call this once per model and method.

Over 400 lines as one module: the empirical certificate, smoothing and η rows of one trained model share its
loading, provenance and crash-safe writes.
"""

from __future__ import annotations

import datetime as _dt
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from .._version import __version__
from ..certify.honesty import HonestyConfig
from ..certify.radii import DEFAULT_RADII, Certificate, certify, head_kind, mixes_modalities
from ..certify.smoothing import METHOD as SMOOTHING
from ..certify.smoothing import (
    SmoothedCertificate,
    SmoothingConfig,
    capped_radii,
    smooth_certify,
    smoothed_honesty_check,
)
from ..contracts import ALL_MODALITIES, ModalitySpec, ThreatModel
from ..data.base import leading
from ..io import atomic_path, atomic_write_text, default_root, file_lock, file_slug
from ..models.sparse_coding import stopping_rule
from .api import invoked_command, train_defense, validate_eps
from .certified_rows import (
    CERTIFIED_CSV,
    EMPIRICAL_METHOD,
    ETA_PAIRS_CSV,
    METHODS,
    MODEL_COLUMNS,
    with_certificate_kinds,
)
from .configs import CertifyConfig, ModelConfig
from .environment import row_provenance
from .result_readers import read_table as read_any
from .results import replace_keyed_rows
from .train import TrainedModel, select_device
from .validate import check_certify_settings, check_name, check_run_settings

log = logging.getLogger(__name__)

# Certificates run every sparse-coding layer (MSEFM) with this stopping rule, so no sample's output depends on its
# batch (smoothing assumes a fixed base classifier). The rows' STOPPING_COLUMN says so; empty: no sparse coding, or a
# row made before the column, which ran the model's own rule.
CERTIFY_STOPPING = "sample"
STOPPING_COLUMN = "sparse_coding_stopping"
# Provenance columns of certificate and η rows (bench.environment), with the value rows written before them get
# ("" / 0 = not recorded): a certificate reproduces bit for bit only on the same kernels and thread count.
PROVENANCE_DEFAULTS: dict[str, Any] = {
    "device": "",
    "torch_version": "",
    "cpu_capability": "",
    "torch_build": "",
    "device_name": "",
    "threads": 0,
}


def certificate_provenance(device: torch.device | str) -> dict[str, Any]:
    """The provenance columns of a certificate or η row computed now on ``device``."""
    return {"device": str(device), **row_provenance(device)}


def with_provenance_defaults(frame: pd.DataFrame) -> pd.DataFrame:
    """Certificate or η rows with the provenance columns filled (:data:`PROVENANCE_DEFAULTS`) where they predate
    them; new rows keep their values."""
    if frame.empty:
        return frame
    frame = frame.copy()
    for name, default in PROVENANCE_DEFAULTS.items():
        if name not in frame.columns:
            frame[name] = default
        else:
            frame[name] = frame[name].where(frame[name].notna(), default)
    return frame


@dataclass
class CertifyOutcome:
    certificate: Certificate | list[SmoothedCertificate]
    trained: TrainedModel
    directory: Path
    certified_path: Path
    eta_path: Path
    text: str


def read_table(path: Path) -> pd.DataFrame:
    return pd.read_csv(path) if Path(path).exists() else pd.DataFrame()


def model_keys(frame: pd.DataFrame, method: str | None = None) -> set[tuple]:
    """(dataset, label, seed, sha256) of the models with rows in ``frame`` (of ``method`` only, if given)."""
    if frame.empty:
        return set()
    if method is not None:
        frame = with_certificate_kinds(frame)
        frame = frame[frame["method"].astype(str) == method]
    values = frame[list(MODEL_COLUMNS)].itertuples(index=False, name=None)
    return {(str(d), str(f), int(s), str(h)) for d, f, s, h in values}


def read_certified(path: Path) -> pd.DataFrame:
    """certified.csv with ``method``/``kind`` filled for rows written before those columns existed."""
    return with_provenance_defaults(with_certificate_kinds(read_any(path)))


def certificate_rows(
    frame: pd.DataFrame,
    model: tuple,
    method: str = EMPIRICAL_METHOD,
    modality: str | None = None,
    sigma: float | None = None,
) -> pd.DataFrame:
    """The rows of ``frame`` (certified.csv) of ``model`` (dataset, label, seed, sha256) by ``method`` (for
    smoothing: of that noise set's modality label and σ)."""
    if frame.empty:
        return frame
    frame = with_certificate_kinds(frame)
    rows = frame[frame["method"].astype(str) == method]
    if rows.empty:
        return rows
    keys = rows[list(MODEL_COLUMNS)].astype(str).agg("|".join, axis=1)
    rows = rows[keys == "|".join(str(v) for v in model)]
    if method == SMOOTHING and not rows.empty:
        rows = rows[
            (rows["modality"].astype(str) == str(modality))
            & ((rows["sigma"].astype(float) - float(sigma)).abs() < 1e-12)
        ]
    return rows


def settings_mismatch(rows: pd.DataFrame, expect: Mapping[str, Any]) -> list[str]:
    """``column: stored → expected`` for each setting in ``expect`` that the certificate ``rows`` do not all
    share: ``n`` (test samples certified), ``radii`` (the radius grid, as a set) or any other recorded column
    (smoothing's ``n0``, ``n_noise``, ``alpha``). A column the rows lack counts as different: they cannot be
    shown to match."""
    out = []
    for name, wanted in expect.items():
        column = "radius" if name == "radii" else name
        if column not in rows.columns:
            out.append(f"{name}: not recorded → {wanted}")
            continue
        stored = rows[column].dropna()
        if name == "radii":
            have, want = sorted({round(float(v), 10) for v in stored}), sorted({round(float(v), 10) for v in wanted})
            if have != want:
                out.append(f"radii: {have} → {want}")
        elif stored.empty or not (stored.astype(float) == float(wanted)).all():
            have = sorted({float(v) for v in stored}) or "not recorded"
            out.append(f"{name}: {have} → {wanted}")
    return out


def has_certificate(
    frame: pd.DataFrame,
    model: tuple,
    method: str = EMPIRICAL_METHOD,
    modality: str | None = None,
    sigma: float | None = None,
) -> bool:
    """Whether ``frame`` (certified.csv) holds rows of ``model`` (dataset, label, seed, sha256) by ``method``
    (for smoothing: of that noise set's modality label and σ), whatever settings made them (those:
    :func:`settings_mismatch`)."""
    return not certificate_rows(frame, model, method, modality, sigma).empty


def replace_certificate_rows(path: Path, new: pd.DataFrame) -> pd.DataFrame:
    """Write certificate rows ``new`` into certified.csv in place of the stored rows they supersede (same
    model and method; for smoothing also the same modality label and σ), under the file's lock, atomically.
    Old rows without ``method``/``kind`` are filled as :func:`with_certificate_kinds` reads them."""
    path = Path(path)
    new = with_provenance_defaults(with_certificate_kinds(new))
    with file_lock(path):
        old = with_provenance_defaults(with_certificate_kinds(read_any(path)))
        if not old.empty:

            def key(frame: pd.DataFrame) -> pd.Series:
                base = frame[list(MODEL_COLUMNS) + ["method"]].astype(str).agg("|".join, axis=1)
                smooth = frame["method"].astype(str) == SMOOTHING
                extra = pd.Series("", index=frame.index)
                if smooth.any():
                    extra[smooth] = (
                        frame.loc[smooth, "modality"].astype(str)
                        + "|"
                        + frame.loc[smooth, "sigma"].astype(float).map(lambda v: f"{v:.10g}")
                    )
                return base + "|" + extra

            old = old[~key(old).isin(set(key(new)))]
        frame = new if old.empty else pd.concat([old, new], ignore_index=True)
        with atomic_path(path) as tmp:
            frame.to_csv(tmp, index=False)
    return frame


def replace_model_rows(path: Path, new: pd.DataFrame) -> pd.DataFrame:
    """Write ``new`` into the CSV at ``path`` in place of earlier rows of the same models (atomic, under the
    result store's inter-process lock, so concurrent sweeps/shards lose no model's rows)."""
    return replace_keyed_rows(path, with_provenance_defaults(new), MODEL_COLUMNS, defaults=PROVENANCE_DEFAULTS)


def _checkpoint_tau(
    trained: TrainedModel, modalities: Sequence[str]
) -> tuple[dict[str, torch.Tensor] | None, str, list[str]]:
    """τ stored by CRMT's get_lip in the checkpoint when it is the intended estimate, else None."""
    keys = {m: f"lipschitz.{m}" for m in modalities}
    if not all(k in trained.extra for k in keys.values()):
        return None, "", []
    mode = getattr(trained.defense.config, "lip_mode", "intended")
    if mode != "intended":
        return (
            None,
            "",
            [
                f"the checkpoint's τ comes from get_lip mode {mode!r} (τ of later modalities ≡ 0); "
                "Eq. 10 uses a fresh intended estimate instead"
            ],
        )
    return {m: trained.extra[k] for m, k in keys.items()}, "checkpoint (lipschitz.<m>, intended get_lip)", []


def certify_defense(
    defense: str,
    *,
    dataset: str = "synthav",
    seed: int = 0,
    label: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    dataset_options: Mapping[str, Any] | None = None,
    root: Path | None = None,
    device: str = "auto",
    radii: Sequence[float] | None = None,
    honesty_steps: int = 100,
    train_samples: int = -1,
    batch_size: int = 64,
    progress: bool = True,
    trained: TrainedModel | None = None,
    command: str | None = None,
    method: str = EMPIRICAL_METHOD,
    honesty: HonestyConfig | None = None,
    smoothing: SmoothingConfig | None = None,
    modalities: Sequence[str] = (ALL_MODALITIES,),
    test_samples: int = -1,
    n_attack: int = 16,
    attack_steps: int = 20,
    attack_samples: int = -1,
) -> CertifyOutcome:
    """Train (or load) ``defense``, certify it and write its files.

    ``method="empirical"``: writes ``<root>/certify/<dataset>/<label>/seed<seed>-<sha12>/`` (certificate.md,
    summary.csv, pairs.csv, samples.csv) and replaces this model's empirical rows in ``<root>/certified.csv``
    and its rows in ``<root>/eta_pairs.csv``. ``train_samples > 0`` takes a seeded subset of the training
    split for the global constants (a speed/accuracy trade-off: fewer samples give smaller, less safe
    constants). ``honesty`` sets the honesty check's strength (``honesty_steps`` its steps; 0 skips it).

    ``method="smoothing"``: randomized smoothing with ``smoothing`` (σ, n0, n, α, batch) for each noise set
    in ``modalities`` (``"a"``, ``"all"`` or ``"a,v"`` …); ``n_attack > 0`` runs the SmoothAdv-style
    honesty check (``attack_steps`` PGD steps, on the first ``attack_samples`` certified samples if > 0).
    ``test_samples > 0`` certifies only the first that many test samples (either method). ``radii``: the grid of
    certified accuracies, by default ``DEFAULT_RADII`` (empirical) or 0, σ, 2σ, … up to the largest certifiable
    radius (smoothing: ``SmoothingConfig.default_radii``; given radii above it are clipped to it with a warning).
    """
    return certify_model(
        ModelConfig(
            defense=defense,
            dataset=dataset,
            seed=seed,
            overrides=dict(overrides or {}),
            dataset_options=dict(dataset_options or {}),
            label=label,
        ),
        CertifyConfig(
            method=method,
            radii=radii,
            honesty_steps=honesty_steps,
            honesty=honesty,
            train_samples=train_samples,
            test_samples=test_samples,
            batch_size=batch_size,
            smoothing=smoothing,
            modalities=tuple(modalities),
            n_attack=n_attack,
            attack_steps=attack_steps,
            attack_samples=attack_samples,
        ),
        root=root,
        device=device,
        progress=progress,
        trained=trained,
        command=command,
    )


def certify_model(
    model: ModelConfig,
    config: CertifyConfig,
    *,
    root: Path | None = None,
    device: str = "auto",
    progress: bool = True,
    trained: TrainedModel | None = None,
    command: str | None = None,
) -> CertifyOutcome:
    """:func:`certify_defense` with its settings as the config objects the CLI and the sweep share
    (``bench.configs``)."""
    defense, dataset, seed, label = model.defense, model.dataset, model.seed, model.label
    overrides, dataset_options = model.overrides, model.dataset_options
    method, radii, honesty_steps, honesty = config.method, config.radii, config.honesty_steps, config.honesty
    train_samples, test_samples, batch_size = config.train_samples, config.test_samples, config.batch_size
    smoothing, modalities = config.smoothing, config.modalities
    n_attack, attack_steps, attack_samples = config.n_attack, config.attack_steps, config.attack_samples
    if method not in METHODS:
        raise ValueError(f"unknown certification method {method!r}; valid: {', '.join(METHODS)}")
    radii = None if radii is None else validate_eps(radii)
    root = Path(root) if root is not None else default_root()
    command = command or invoked_command()
    label = label or defense
    dev = select_device(device)
    check_name(label, "label")  # it names the certificate's folder (as a slug: it never leaves <root>/certify)
    check_certify_settings(train_samples=train_samples, honesty_steps=honesty_steps, batch_size=batch_size)
    if trained is None:  # every setting and the output folder before any training
        check_run_settings(
            defense=defense,
            overrides=overrides,
            dataset=dataset,
            dataset_options=dataset_options,
            seed=seed,
            root=root,
            label=label,
        )
    if trained is None:
        trained = train_defense(
            defense,
            dataset=dataset,
            seed=seed,
            overrides=overrides,
            dataset_options=dataset_options,
            root=root,
            device=str(dev),
            progress=progress,
        )
    ds = trained.dataset  # type: ignore[attr-defined]
    test_split = leading(ds.test, test_samples)
    if method == SMOOTHING:
        config = smoothing or SmoothingConfig()
        return _certify_smoothing(
            trained,
            ds,
            test_split,
            defense=defense,
            label=label,
            seed=seed,
            root=root,
            device=dev,
            radii=config.default_radii if radii is None else radii,
            config=config,
            noise_sets=modalities,
            n_attack=n_attack,
            attack_steps=attack_steps,
            attack_samples=attack_samples,
            progress=progress,
            command=command,
        )
    radii = DEFAULT_RADII if radii is None else radii
    names = [s.name for s in ds.specs]
    tau, source, notes = _checkpoint_tau(trained, names)
    train_split = ds.train
    if 0 < train_samples < len(train_split):
        gen = torch.Generator().manual_seed(seed)
        train_split = train_split.subset(torch.randperm(len(train_split), generator=gen)[:train_samples])
    flag = trained.extra.get("certificate_heuristic")
    heuristic = (flag is not None and float(flag.flatten()[0]) != 0) or mixes_modalities(trained.model)
    started = time.perf_counter()
    with stopping_rule(trained.model, CERTIFY_STOPPING) as coding:
        cert = certify(
            trained.model,
            train_split,
            test_split,
            ds.specs,
            tau=tau,
            tau_source=source or None,
            batch_size=batch_size,
            device=dev,
            honesty_steps=honesty_steps,
            honesty=honesty,
            heuristic=heuristic,
            notes=notes,
            progress=progress,
        )
    log.info(
        "certified %s (seed %d) on %d test samples in %.1f s",
        label,
        seed,
        len(test_split),
        time.perf_counter() - started,
    )
    identity = {
        "dataset": ds.name,
        "defense": label,
        "defense_id": defense,
        "seed": seed,
        "checkpoint_sha256": trained.sha256,
        "config_hash": trained.key.config_hash,
        "head": cert.head,
        "suite_version": __version__,
        "timestamp": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        **certificate_provenance(dev),
    }
    identity[STOPPING_COLUMN] = CERTIFY_STOPPING if coding else ""
    summary = cert.summary_frame(radii)
    pairs = cert.pairs_frame()
    for frame in (summary, pairs):
        for i, (k, v) in enumerate(identity.items()):
            frame.insert(i, k, v)
    directory = root / "certify" / file_slug(ds.name) / file_slug(label) / f"seed{seed}-{trained.sha256[:12]}"
    text = f"{ds.name} · {label} ({defense}, seed {seed}) · checkpoint sha256 {trained.sha256[:12]}…\n" + cert.format(
        radii
    )
    atomic_write_text(directory / "certificate.md", f"made by: {command}\n\n{text}\n")
    for name, frame in (("summary.csv", summary), ("pairs.csv", pairs), ("samples.csv", cert.samples_frame())):
        with atomic_path(directory / name) as tmp:
            frame.to_csv(tmp, index=False)
    certified_path, eta_path = root / CERTIFIED_CSV, root / ETA_PAIRS_CSV
    replace_certificate_rows(certified_path, summary)
    replace_model_rows(eta_path, pairs)
    return CertifyOutcome(cert, trained, directory, certified_path, eta_path, text)


def _head_name(model: Any) -> str:
    try:
        return head_kind(model)
    except ValueError:  # smoothing needs no particular head
        return type(getattr(model, "head", model)).__name__


def smoothed_label(modalities: Sequence[str], names: Sequence[str]) -> str:
    """The ``modality`` column of a smoothing row: ``all`` for noise on every modality, else names joined by +."""
    return ALL_MODALITIES if len(modalities) > 1 and set(modalities) == set(names) else "+".join(modalities)


def noise_set(spec: str, names: Sequence[str]) -> tuple[str, ...]:
    """The modalities one smoothing run puts noise on: ``a``, ``a,v`` or ``all`` (validated, in dataset order)."""
    specs = [ModalitySpec(n, (1,)) for n in names]
    return ThreatModel.parse(spec, 0.0, specs).modalities


def _certify_smoothing(
    trained: TrainedModel,
    ds: Any,
    test_split: Any,
    *,
    defense: str,
    label: str,
    seed: int,
    root: Path,
    device: torch.device,
    radii: Sequence[float],
    config: SmoothingConfig,
    noise_sets: Sequence[str],
    n_attack: int,
    attack_steps: int,
    attack_samples: int,
    progress: bool,
    command: str,
) -> CertifyOutcome:
    """Randomized smoothing for each noise set; files per set and rows replacing the same (model, set, σ),
    written as each set finishes (a set takes minutes: an interruption loses only the set in progress)."""
    names = [s.name for s in ds.specs]
    sets = [noise_set(str(m), names) for m in noise_sets]
    if not sets:
        raise ValueError("smoothing: give at least one modality (e.g. --modality a or --modality all)")
    radii = capped_radii(radii, config.sigma, config.n, config.alpha)  # warned once here, not per set and file
    identity = {
        "dataset": ds.name,
        "defense": label,
        "defense_id": defense,
        "seed": seed,
        "checkpoint_sha256": trained.sha256,
        "config_hash": trained.key.config_hash,
        "head": _head_name(trained.model),
        "suite_version": __version__,
        "timestamp": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        **certificate_provenance(device),
    }
    base = root / "certify" / file_slug(ds.name) / file_slug(label) / f"seed{seed}-{trained.sha256[:12]}"
    inputs, labels = test_split.inputs, test_split.labels
    certified_path = root / CERTIFIED_CSV
    certs, texts, directory = [], [], base
    for mods in sets:
        started = time.perf_counter()
        with stopping_rule(trained.model, CERTIFY_STOPPING) as coding:
            cert = smooth_certify(trained.model, inputs, labels, mods, config, device=device, progress=progress)
            if n_attack > 0:
                cert.honesty = smoothed_honesty_check(
                    trained.model,
                    inputs,
                    cert,
                    n_attack=n_attack,
                    steps=attack_steps,
                    device=device,
                    max_samples=attack_samples,
                    progress=progress,
                )
        identity[STOPPING_COLUMN] = CERTIFY_STOPPING if coding else ""
        log.info(
            "smoothed %s (seed %d, σ %g, noise on %s) on %d test samples in %.1f s",
            label,
            seed,
            config.sigma,
            "+".join(mods),
            cert.n,
            time.perf_counter() - started,
        )
        summary = cert.summary_frame(radii)
        for i, (k, v) in enumerate(identity.items()):
            summary.insert(i, k, v)
        directory = base / f"smoothing-{cert.modality_label}-sigma{config.sigma:g}"
        text = (
            f"{ds.name} · {label} ({defense}, seed {seed}) · checkpoint sha256 {trained.sha256[:12]}…\n"
            + cert.format(radii)
        )
        atomic_write_text(directory / "certificate.md", f"made by: {command}\n\n{text}\n")
        for name, frame in (("summary.csv", summary), ("samples.csv", cert.samples_frame())):
            with atomic_path(directory / name) as tmp:
                frame.to_csv(tmp, index=False)
        replace_certificate_rows(certified_path, summary)
        certs.append(cert)
        texts.append(text)
    return CertifyOutcome(
        certs, trained, directory if len(sets) == 1 else base, certified_path, root / ETA_PAIRS_CSV, "\n\n".join(texts)
    )


__all__ = [
    "CertifyOutcome",
    "certify_defense",
    "certify_model",
    "read_table",
    "read_certified",
    "model_keys",
    "has_certificate",
    "certificate_rows",
    "settings_mismatch",
    "replace_model_rows",
    "replace_certificate_rows",
    "with_certificate_kinds",
    "noise_set",
    "smoothed_label",
    "CERTIFIED_CSV",
    "PROVENANCE_DEFAULTS",
    "certificate_provenance",
    "with_provenance_defaults",
    "ETA_PAIRS_CSV",
    "EMPIRICAL_METHOD",
    "METHODS",
    "MODEL_COLUMNS",
    "CERTIFY_STOPPING",
    "STOPPING_COLUMN",
]
