"""``mmrobust-bench certify``: train or load a model, certify it, and write its files and tidy rows.

Writes ``<root>/certify/<dataset>/<label>/seed<seed>-<sha12>/`` (certificate.md, summary.csv, pairs.csv,
samples.csv) and replaces the model's rows in ``<root>/certified.csv`` (certified accuracy per
certificate and radius) and ``<root>/eta_pairs.csv`` (per class pair η, read by Figure 3). Sweeps
call it once per model.
"""
from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd
import torch

from .. import __version__
from ..certify.radii import DEFAULT_RADII, Certificate, certify
from ..io import atomic_path, atomic_write_text, default_root
from .api import invoked_command, train_defense, validate_eps
from .train import TrainedModel, select_device

MODEL_COLUMNS = ("dataset", "defense", "seed", "checkpoint_sha256")

CERTIFIED_CSV = "certified.csv"
ETA_PAIRS_CSV = "eta_pairs.csv"


@dataclass
class CertifyOutcome:
    certificate: Certificate
    trained: TrainedModel
    directory: Path
    certified_path: Path
    eta_path: Path
    text: str


def read_table(path: Path) -> pd.DataFrame:
    return pd.read_csv(path) if Path(path).exists() else pd.DataFrame()


def model_keys(frame: pd.DataFrame) -> set[tuple]:
    if frame.empty:
        return set()
    values = frame[list(MODEL_COLUMNS)].itertuples(index=False, name=None)
    return {(str(d), str(f), int(s), str(h)) for d, f, s, h in values}


def replace_model_rows(path: Path, new: pd.DataFrame) -> pd.DataFrame:
    """Write ``new`` into the CSV at ``path`` in place of earlier rows of the same models (atomic)."""
    old = read_table(path)
    if not old.empty:
        stale = old[list(MODEL_COLUMNS)].astype(str).agg("|".join, axis=1)
        fresh = set(new[list(MODEL_COLUMNS)].astype(str).agg("|".join, axis=1))
        old = old[~stale.isin(fresh)]
    frame = new if old.empty else pd.concat([old, new], ignore_index=True)
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
    return frame


def _checkpoint_tau(trained: TrainedModel,
                    modalities: Sequence[str]) -> tuple[dict[str, torch.Tensor] | None, str, list[str]]:
    """τ stored by CRMT's get_lip in the checkpoint when it is the intended estimate, else None."""
    keys = {m: f"lipschitz.{m}" for m in modalities}
    if not all(k in trained.extra for k in keys.values()):
        return None, "", []
    mode = getattr(trained.defense.config, "lip_mode", "intended")
    if mode != "intended":
        return None, "", [f"the checkpoint's τ comes from get_lip mode {mode!r} (τ of later modalities ≡ 0); "
                          "Eq. 10 uses a fresh intended estimate instead"]
    return {m: trained.extra[k] for m, k in keys.items()}, "checkpoint (lipschitz.<m>, intended get_lip)", []


def certify_defense(defense: str, *, dataset: str = "synthav", seed: int = 0, label: str | None = None,
                    overrides: Mapping[str, Any] | None = None, dataset_options: Mapping[str, Any] | None = None,
                    root: Path | None = None, device: str = "auto", radii: Sequence[float] = DEFAULT_RADII,
                    honesty_steps: int = 20, train_samples: int = -1, batch_size: int = 64, progress: bool = True,
                    trained: TrainedModel | None = None, command: str | None = None) -> CertifyOutcome:
    """Train (or load) ``defense``, certify it and write its files.

    Writes ``<root>/certify/<dataset>/<label>/seed<seed>-<sha12>/`` (certificate.md, summary.csv,
    pairs.csv, samples.csv) and replaces this model's rows in ``<root>/certified.csv`` and
    ``<root>/eta_pairs.csv``. ``train_samples > 0`` takes a seeded subset of the training split for
    the global constants (a speed/accuracy trade-off: fewer samples give smaller, less safe constants).
    """
    radii = validate_eps(radii)
    root = Path(root) if root is not None else default_root()
    command = command or invoked_command()
    label = label or defense
    dev = select_device(device)
    if trained is None:
        trained = train_defense(defense, dataset=dataset, seed=seed, overrides=overrides,
                                dataset_options=dataset_options, root=root, device=str(dev), progress=progress)
    ds = trained.dataset  # type: ignore[attr-defined]
    modalities = [s.name for s in ds.specs]
    tau, source, notes = _checkpoint_tau(trained, modalities)
    train_split = ds.train
    if 0 < train_samples < len(train_split):
        gen = torch.Generator().manual_seed(seed)
        train_split = train_split.subset(torch.randperm(len(train_split), generator=gen)[:train_samples])
    heuristic = trained.extra.get("certificate_heuristic")
    if heuristic is not None and float(heuristic.flatten()[0]) != 0:
        notes.append("the model mixes modalities before the head (MMT joint layers): uni-modal bounds are heuristic")
    cert = certify(trained.model, train_split, ds.test, ds.specs, tau=tau, tau_source=source or None,
                   batch_size=batch_size, device=dev, honesty_steps=honesty_steps, notes=notes)
    identity = {"dataset": ds.name, "defense": label, "defense_id": defense, "seed": seed,
                "checkpoint_sha256": trained.sha256, "config_hash": trained.key.config_hash, "head": cert.head,
                "suite_version": __version__,
                "timestamp": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    summary = cert.summary_frame(radii)
    pairs = cert.pairs_frame()
    for frame in (summary, pairs):
        for i, (k, v) in enumerate(identity.items()):
            frame.insert(i, k, v)
    directory = root / "certify" / ds.name / label / f"seed{seed}-{trained.sha256[:12]}"
    text = (f"{ds.name} · {label} ({defense}, seed {seed}) · checkpoint sha256 {trained.sha256[:12]}…\n"
            + cert.format(radii))
    atomic_write_text(directory / "certificate.md", f"made by: {command}\n\n{text}\n")
    for name, frame in (("summary.csv", summary), ("pairs.csv", pairs), ("samples.csv", cert.samples_frame())):
        with atomic_path(directory / name) as tmp:
            frame.to_csv(tmp, index=False)
    certified_path, eta_path = root / CERTIFIED_CSV, root / ETA_PAIRS_CSV
    replace_model_rows(certified_path, summary)
    replace_model_rows(eta_path, pairs)
    return CertifyOutcome(cert, trained, directory, certified_path, eta_path, text)


__all__ = ["CertifyOutcome", "certify_defense", "read_table", "model_keys", "replace_model_rows", "CERTIFIED_CSV",
           "ETA_PAIRS_CSV", "MODEL_COLUMNS"]
