"""Checkpoints: safetensors weights + JSON config + sha256, keyed by what determines the model.

Layout: ``<root>/checkpoints/<dataset>/<defense>/<key>/{stage1,final}.safetensors`` with
``config.json`` beside them and ``resume.safetensors`` while training is under way. The key hashes the
dataset config, defense name and hyperparameters, training schedule and seed, so a second run
with the same settings reuses the model.

Nothing here unpickles: a checkpoint folder may come from anywhere (a shared drive, a download), so
every file is safetensors or JSON. A stage is used only when its sha256 matches ``config.json`` and
both the file's embedded key and the recorded configuration match the requested one; anything else
(another seed's files copied in, a crmt_jt checkpoint in a jt folder, a bit flip, a truncation, a
garbled ``config.json``, tensors that do not fit the model: a shape changed, a key missing or added) is
retrained with a warning naming the file. A checkpoint never holds NaN or inf: a diverged model is refused
when saved and, written by anything else, retrained when loaded.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from ..checked_tensors import META as _META
from ..checked_tensors import READ_ERRORS, tensor_digest
from ..io import atomic_path, atomic_write_json, json_normalised, non_finite_entries, sha256_file, stable_hash

log = logging.getLogger(__name__)

TRAINING_CODE_VERSION = 1  # bump when a change to training invalidates cached checkpoints
RESUME_FILE = "resume.safetensors"
LEGACY_RESUME_FILE = "resume.pt"  # written by suite versions before 0.x; pickle, never loaded
RESUME_FORMAT = 1


@dataclass(frozen=True)
class CheckpointKey:
    dataset: str
    dataset_config: dict
    defense: str
    defense_config: dict
    train_config: dict
    seed: int

    def __post_init__(self) -> None:
        # refused before training, not after it when config.json is written
        settings = {"dataset": self.dataset_config, "defense": self.defense_config, "train": self.train_config}
        bad = non_finite_entries(settings)
        if bad:
            raise ValueError(
                f"{self.defense}: the setting(s) {', '.join(bad)} are not finite numbers, which a checkpoint's "
                f"config.json cannot record; give finite values"
            )

    def as_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "dataset_config": self.dataset_config,
            "defense": self.defense,
            "defense_config": self.defense_config,
            "train_config": self.train_config,
            "seed": self.seed,
            "training_code_version": TRAINING_CODE_VERSION,
        }

    @property
    def digest(self) -> str:
        return stable_hash(self.as_dict())

    @property
    def config_hash(self) -> str:
        return config_hash_of(self.defense_config, self.train_config)

    def directory(self, root: Path) -> Path:
        return root / "checkpoints" / self.dataset / self.defense / self.digest


def config_hash_of(defense_config: dict[str, Any], train_config: dict[str, Any]) -> str:
    """The ``config_hash`` of result rows: the defense's keyed settings and the schedule (no dataset, no seed)."""
    return stable_hash({"defense_config": defense_config, "train_config": train_config}, 12)


_WARNED: set[tuple[str, float]] = set()  # (path, mtime) already reported: one warning per damaged file, not per stage


def _warn_once(path: Path, message: str, *args: Any) -> None:
    try:
        stamp = path.stat().st_mtime
    except OSError:
        stamp = 0.0
    if (str(path), stamp) not in _WARNED:
        _WARNED.add((str(path), stamp))
        log.warning(message, path, *args)


def _read_config(directory: Path) -> dict[str, Any] | None:
    """config.json of a checkpoint folder, or None (with one warning per damaged file) when it is absent or
    unreadable."""
    path = directory / "config.json"
    if not path.exists():
        return None
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        _warn_once(path, "ignoring %s: cannot read it (%s); the model is retrained and the file rewritten", exc)
        return None
    if not isinstance(config, dict):
        _warn_once(path, "ignoring %s: not a JSON object; the model is retrained and the file rewritten")
        return None
    return config


def config_mismatch(config: dict[str, Any], key: CheckpointKey) -> list[str]:
    """The settings on which ``config`` (a config.json) differs from ``key`` (empty: it is this model's)."""
    wanted = json_normalised(key.as_dict())
    return sorted(name for name, value in wanted.items() if config.get(name) != value)


def _embedded_key(path: Path) -> str | None:
    """The key digest written into a stage file's metadata (read from the header only)."""
    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata() or {}
    return json.loads(meta.get(_META, "{}")).get("key")


def non_finite_tensors(tensors: Mapping[str, torch.Tensor]) -> list[str]:
    """The names of the floating-point tensors holding a NaN or inf (one device synchronisation in all)."""
    names = [k for k, v in tensors.items() if v.is_floating_point() and v.numel()]
    if not names:
        return []
    flags = [torch.isfinite(tensors[k]).all() for k in names]
    finite = torch.stack(flags if len({f.device for f in flags}) == 1 else [f.cpu() for f in flags]).tolist()
    return [k for k, ok in zip(names, finite) if not ok]


def _listed(names: list[str], limit: int = 3) -> str:
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def save_stage(
    directory: Path, stage: str, model: torch.nn.Module, extra: dict[str, torch.Tensor], key: CheckpointKey
) -> str:
    """Write ``<stage>.safetensors`` atomically, then record its sha256 in config.json.

    An existing config.json of another configuration (or an unreadable one) is replaced, with its
    stage records, rather than merged: a folder only ever describes one model. A model or extra tensor
    holding NaN or inf is refused (ValueError) and nothing is written."""
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tensors.update({f"extra.{k}": v.detach().cpu().contiguous() for k, v in extra.items()})
    path = directory / f"{stage}.safetensors"
    broken = non_finite_tensors(tensors)
    if broken:
        raise ValueError(
            f"training {key.defense} (seed {key.seed}) diverged: its {stage} stage holds NaN or inf in "
            f"{_listed(broken)}; lower the learning rate (--set lr=...) or check the data; no checkpoint "
            f"was written"
        )
    with atomic_path(path) as tmp:
        # one metadata entry: safetensors does not keep the order of several, and the sha256 must be reproducible
        save_file(tensors, str(tmp), metadata={_META: json.dumps({"stage": stage, "key": key.digest})})
    digest = sha256_file(path)
    config = _read_config(directory)
    if config is None or config_mismatch(config, key):
        config = key.as_dict()
    config.setdefault("stages", {})[stage] = {"file": path.name, "sha256": digest}
    atomic_write_json(directory / "config.json", config)
    return digest


def state_mismatch(expected: Mapping[str, torch.Tensor], found: Mapping[str, torch.Tensor]) -> list[str]:
    """How the state dict ``found`` fails to fit a model whose own state dict is ``expected`` (what a strict
    ``load_state_dict`` would refuse: missing and unexpected keys, other shapes); empty when it fits."""
    problems = [f"missing {_listed(sorted(set(expected) - set(found)))}"] if set(expected) - set(found) else []
    if set(found) - set(expected):
        problems.append(f"unexpected {_listed(sorted(set(found) - set(expected)))}")
    shapes = [
        f"{k} {tuple(found[k].shape)} where the model has {tuple(v.shape)}"
        for k, v in expected.items()
        if k in found and isinstance(v, torch.Tensor) and tuple(found[k].shape) != tuple(v.shape)
    ]
    if shapes:
        problems.append(f"shape of {_listed(shapes, 2)}")
    return problems


def load_stage(
    directory: Path, stage: str, key: CheckpointKey | None = None, model: torch.nn.Module | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], str] | None:
    """(model state, extra tensors, sha256) of a finished stage, or None if it is absent, corrupt or
    another model's.

    The file must match the sha256 recorded in config.json, and the key embedded in it must be the
    folder's (``directory.name``, or ``key.digest`` when ``key`` is given, which also checks every
    recorded setting of config.json against ``key``); given ``model``, its tensors must fit that model
    (same keys and shapes: a consistent checksum does not make a crafted or foreign file loadable).
    Anything else is logged and reported as absent, so the caller retrains."""
    path = directory / f"{stage}.safetensors"
    if not path.exists():
        return None
    config = _read_config(directory)
    if config is None:
        return None
    if key is not None:
        differs = config_mismatch(config, key)
        if differs:
            log.warning(
                "not reusing %s: its config.json records another configuration (%s differ from the "
                "requested run); retraining",
                directory,
                ", ".join(differs),
            )
            return None
    recorded = (
        (config.get("stages") or {}).get(stage, {}).get("sha256") if isinstance(config.get("stages"), dict) else None
    )
    try:
        digest = sha256_file(path)
    except OSError as exc:
        log.warning("cannot read %s (%s); retraining", path, exc)
        return None
    if recorded != digest:
        log.warning("not reusing %s: its sha256 does not match config.json (corrupt or replaced); retraining", path)
        return None
    expected = key.digest if key is not None else directory.name
    try:
        embedded = _embedded_key(path)
        if embedded != expected:
            log.warning(
                "not reusing %s: it was saved for another configuration (key %s, expected %s); retraining",
                path,
                embedded,
                expected,
            )
            return None
        tensors = load_file(str(path))
    except READ_ERRORS as exc:
        log.warning("not reusing %s: cannot read it (%s); retraining", path, exc)
        return None
    broken = non_finite_tensors(tensors)
    if broken:
        log.warning("not reusing %s: it holds NaN or inf in %s (a diverged model); retraining", path, _listed(broken))
        return None
    state = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    extra = {k[len("extra.") :]: v for k, v in tensors.items() if k.startswith("extra.")}
    misfit = state_mismatch(model.state_dict(), state) if model is not None else []
    if misfit:
        log.warning(
            "not reusing %s: its tensors do not fit the model this configuration builds (%s); retraining",
            path,
            "; ".join(misfit),
        )
        return None
    return state, extra, digest


# ----------------------------------------------------------------------------- resume state, without pickle


def _flatten(obj: Any, path: str, tensors: dict[str, torch.Tensor]) -> Any:
    """A JSON structure for ``obj`` with every tensor moved into ``tensors`` (by path)."""
    if isinstance(obj, torch.Tensor):
        name = f"t{len(tensors)}"
        tensors[name] = obj.detach().cpu().contiguous().clone()
        return {"__tensor__": name}
    if isinstance(obj, dict):
        items = []
        for k, v in obj.items():
            if not isinstance(k, (str, int, float, bool)) and k is not None:
                raise TypeError(f"resume state: key {k!r} at {path} is not a JSON scalar")
            items.append([k, _flatten(v, f"{path}.{k}", tensors)])
        return {"__dict__": items}
    if isinstance(obj, (list, tuple)):
        values = [_flatten(v, f"{path}[{i}]", tensors) for i, v in enumerate(obj)]
        return {"__tuple__": values} if isinstance(obj, tuple) else values
    if obj is None or isinstance(obj, (str, bool, int, float)):
        return obj
    raise TypeError(
        f"resume state: {type(obj).__name__} at {path} cannot be stored without pickle; "
        f"keep tensors, numbers, strings, lists and dicts in the training state"
    )


def _unflatten(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, list):
        return [_unflatten(v, tensors) for v in obj]
    if isinstance(obj, dict):
        if set(obj) == {"__tensor__"}:
            return tensors[obj["__tensor__"]]
        if set(obj) == {"__tuple__"}:
            return tuple(_unflatten(v, tensors) for v in obj["__tuple__"])
        if set(obj) == {"__dict__"}:
            return {k: _unflatten(v, tensors) for k, v in obj["__dict__"]}
        raise ValueError(f"unexpected entry {sorted(obj)[:3]} in the resume structure")
    return obj


def save_resume(directory: Path, state: dict[str, Any]) -> None:
    """Write the training state (model, optimizer, scheduler, generators, defense state) as one
    safetensors file: the tensors, and in its metadata the JSON structure, the key and a sha256 of
    the tensors (so a bit flip in the data is caught, not only in the header)."""
    tensors: dict[str, torch.Tensor] = {}
    structure = _flatten(state, "state", tensors)
    meta = {"format": RESUME_FORMAT, "key": state.get("key"), "sha256": tensor_digest(tensors), "structure": structure}
    with atomic_path(directory / RESUME_FILE) as tmp:
        save_file(tensors, str(tmp), metadata={_META: json.dumps(meta)})


def load_resume(directory: Path, key: str | None = None) -> dict[str, Any] | None:
    """The saved training state, or None when there is none usable.

    The key is read from the header before any tensor, and a state of another key (when ``key`` is
    given), a damaged file or a legacy pickle ``resume.pt`` (never unpickled) gives None with a warning:
    training then starts from epoch 0."""
    legacy = directory / LEGACY_RESUME_FILE
    if legacy.exists():
        log.warning(
            "ignoring %s: resume files from older versions are pickles, which are never loaded "
            "(a crafted one could run code); delete it. Training restarts unless %s exists",
            legacy,
            RESUME_FILE,
        )
    path = directory / RESUME_FILE
    if not path.exists():
        return None
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = json.loads((fh.metadata() or {})[_META])
            if meta.get("format") != RESUME_FORMAT:
                raise ValueError(f"unknown resume format {meta.get('format')!r}")
            if key is not None and meta.get("key") != key:
                log.warning(
                    "ignoring %s: it was saved for another configuration or suite version; training from epoch 0", path
                )
                return None
            tensors = {name: fh.get_tensor(name) for name in fh.keys()}  # noqa: SIM118 (a safe_open handle is not iterable)
        if tensor_digest(tensors) != meta["sha256"]:
            raise ValueError("the tensors do not match their recorded sha256 (corrupt)")
        state = _unflatten(meta["structure"], tensors)
        if not isinstance(state, dict):
            raise ValueError("the state is not a mapping")
        broken = non_finite_tensors(state["model"]) if isinstance(state.get("model"), dict) else []
        if broken:
            raise ValueError(f"its model holds NaN or inf in {_listed(broken)} (a diverged training)")
    except READ_ERRORS as exc:
        log.warning(
            "ignoring %s: cannot read it (%s: %s); delete it or let training restart from epoch 0",
            path,
            type(exc).__name__,
            exc,
        )
        return None
    return state


def clear_resume(directory: Path) -> None:
    (directory / RESUME_FILE).unlink(missing_ok=True)
    (directory / LEGACY_RESUME_FILE).unlink(missing_ok=True)
