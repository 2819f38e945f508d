"""The model zoo: a leaderboard's final checkpoints, committed beside its rows, loadable anywhere.

``export_zoo`` copies the final checkpoint of every model of a sweep root (``<root>/checkpoints/...``, which is
not committed) into ``leaderboards/<dataset>/zoo/``, byte for byte, so each file's sha256 is the rows'
``checkpoint_sha256``::

    zoo/zoo.json                      the index: dataset, its options, the evaluation batch size, one entry per
                                      model (label, defense id, seed, config hash, sha256, file, size)
    zoo/<label>-seed<k>.safetensors   the weights (and extra tensors) exactly as training saved them
    zoo/<label>-seed<k>.json          what rebuilds the model: the checkpoint key, the full defense and schedule
                                      settings, the modality specs, and the training provenance

``load_trained`` rebuilds a model from these files without the dataset (the specs are in the JSON) and
refuses, with one line naming the file, anything that is not exactly what the index lists: a missing file, a
file whose sha256 differs (a bit flip, two files swapped), a JSON that does not rebuild the recorded key.
Nothing is unpickled: safetensors and JSON only.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from ..checked_tensors import META, READ_ERRORS
from ..contracts import ModalitySpec
from ..data import build_dataset
from ..defenses import DEFENSES, TrainConfig, apply_overrides
from ..defenses.base import key_dict
from ..io import atomic_path, atomic_write_json, json_normalised, sha256_file, stable_hash
from .checkpoints import CheckpointKey, load_stage
from .result_readers import read_rows
from .result_rows import complete
from .sweep_plan import unit_checkpoint
from .train import TrainedModel, select_device
from .zoo_index import (
    INDEX,
    LOCAL_OPTIONS,
    MODEL_SCHEMA,
    ZOO_SCHEMA,
    Zoo,
    ZooEntry,
    ZooError,
    check_file,
    config_difference,
    file_stem,
    leaderboards_dir,
    link_cards,
    load_record,
    read_zoo,
    write_index,
    zoo_dir,
)

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------- export


@dataclass
class ExportOutcome:
    zoo: Zoo
    written: list[Path] = field(default_factory=list)  # files copied or rewritten
    unchanged: int = 0  # models whose file was already in the zoo with this sha256
    removed: list[Path] = field(default_factory=list)  # files of models the rows no longer hold
    kept: int = 0  # models of the old index this export left as they were (--only/--skip)


def _spec_dict(spec: ModalitySpec) -> dict[str, Any]:
    return {
        "name": spec.name,
        "shape": list(spec.shape),
        "lower": None if spec.lower is None else list(spec.lower),
        "upper": None if spec.upper is None else list(spec.upper),
        "description": spec.description,
    }


def _newest_sha(rows: pd.DataFrame) -> dict[tuple[str, int], tuple[str, str, str]]:
    """(label, seed) -> (sha256, defense id, config hash) of the newest model with finished rows."""
    out: dict[tuple[str, int], tuple[str, str, str]] = {}
    for r in rows.itertuples(index=False):
        out[(str(r.label), int(r.seed))] = (str(r.checkpoint_sha256), str(r.defense), str(r.config_hash))
    return out


def _kept_entries(
    old: Zoo | None, planned: set[tuple[str, int]], newest: Mapping[tuple[str, int], tuple[str, str, str]]
) -> list[ZooEntry]:
    """The old index's entries this export leaves as they are: models the plan does not export (``--only``/
    ``--skip``, or an entry no longer in the YAML) whose rows the results still hold."""
    if old is None:
        return []
    return [e for e in old.entries if (e.entry, e.seed) not in planned and (e.entry, e.seed) in newest]


def _refuse_collisions(entries: list[ZooEntry]) -> None:
    """Two labels that map to one file name (``jt/v2`` and ``jt_v2``, or names differing only in case on a
    case-insensitive disk) would overwrite each other's files: refuse before writing anything."""
    owner: dict[str, ZooEntry] = {}
    for e in entries:
        for name in (e.file, e.config):
            other = owner.setdefault(name.casefold(), e)
            if other is not e and (other.entry, other.seed) != (e.entry, e.seed):
                raise ZooError(
                    f"zoo export: {other.entry!r} seed {other.seed} and {e.entry!r} seed {e.seed} would both be "
                    f"written to {name}; rename one of the labels in the sweep YAML"
                )


def export_zoo(
    plan: Any,
    *,
    root: str | os.PathLike,
    out: str | os.PathLike,
    results: str | os.PathLike | None = None,
    command: str = "",
) -> ExportOutcome:
    """Copy the final checkpoint of every (entry, seed) of ``plan`` (a ``bench.sweep.SweepPlan``) with rows in
    ``results`` (default ``<root>/results.csv``) into the zoo folder ``out``, with its JSON and the index.

    Each model's checkpoint is found by its key (the sweep's settings), must be intact (``load_stage``'s checks)
    and must be the one the newest rows were measured with; it is then loaded into a model rebuilt from the JSON
    alone, so a zoo that exports is a zoo that loads. Nothing is written unless every model passes.

    Models of an existing index that the plan does not export (``--only``/``--skip``) are kept with their files
    while their rows remain; only files of the folder that the old index listed are ever removed."""
    root, out = Path(root), Path(out)
    results_path = Path(results) if results is not None else root / "results.csv"
    stored = read_rows(results_path)
    stored = stored[complete(stored) & (stored["dataset"].astype(str) == plan.dataset)]
    newest = _newest_sha(stored)
    ds = build_dataset(plan.dataset, cache_dir=root / "datasets", **plan.dataset_options)
    options = {k: v for k, v in plan.dataset_options.items() if k not in LOCAL_OPTIONS}
    model_info = {
        "specs": [_spec_dict(s) for s in ds.specs],
        "num_classes": int(ds.num_classes),
        "encoders": dict(getattr(ds, "encoders", {}) or {}),
        "n_train": len(ds.train),
    }
    staged: list[tuple[ZooEntry, Path, dict[str, Any]]] = []
    problems: list[str] = []
    without_rows = 0
    for entry, seed in plan.work_units():
        unit = newest.get((entry.label, seed))
        if unit is None:
            without_rows += 1
            continue
        sha, _, config_hash = unit
        defense, train_cfg, key = unit_checkpoint(plan, ds, entry, seed)
        directory = key.directory(root)
        found = load_stage(directory, "final", key)
        if found is None:
            problems.append(f"{entry.label} seed {seed}: no intact final checkpoint in {directory}")
            continue
        if found[2] != sha or config_hash != key.config_hash:
            problems.append(
                f"{entry.label} seed {seed}: the newest rows were made by checkpoint {sha[:12]}… "
                f"(config {config_hash}), the sweep's is {found[2][:12]}… (config {key.config_hash})"
            )
            continue
        config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
        stem = file_stem(entry.label, seed)
        record = {
            "schema": MODEL_SCHEMA,
            "dataset": ds.name,
            "entry": entry.label,
            "defense": defense.name,
            "seed": seed,
            "config_hash": key.config_hash,
            "sha256": sha,
            "file": f"{stem}.safetensors",
            "key": {k: v for k, v in config.items() if k not in ("stages", "provenance")},
            "settings": {"defense": dataclasses.asdict(defense.config), "train": dataclasses.asdict(train_cfg)},
            "model": model_info,
            "stages": config.get("stages", {}),
            "provenance": config.get("provenance", {}),
        }
        size = (directory / "final.safetensors").stat().st_size
        zoo_entry = ZooEntry(
            entry.label, defense.name, seed, key.config_hash, sha, record["file"], f"{stem}.json", size
        )
        _check_loads(record, directory / "final.safetensors")
        staged.append((zoo_entry, directory / "final.safetensors", record))
    if without_rows:
        log.info(
            "zoo export: %d (entry, seed) model(s) of the sweep have no rows in %s and are left out",
            without_rows,
            results_path,
        )
    if problems:
        raise ZooError(
            f"zoo export: {len(problems)} model(s) cannot be exported ({problems[0]}"
            f"{'; …' if len(problems) > 1 else ''}); rerun the sweep for them (training is deterministic) "
            f"or leave them out with --only/--skip"
        )
    if not staged:
        raise ZooError(f"zoo export: {results_path} holds no rows of this sweep's entries; run the sweep first")
    old = read_zoo(out) if (out / INDEX).exists() else None
    if old is not None and old.dataset != ds.name:
        raise ZooError(f"zoo export: {out} holds the {old.dataset} zoo, not {ds.name}'s; export into another folder")
    kept = _kept_entries(old, {(e.label, s) for e, s in plan.work_units()}, newest)
    entries = [e for e, _, _ in staged] + kept
    _refuse_collisions(entries)
    zoo = Zoo(
        out,
        ds.name,
        options,
        json.loads(json.dumps(ds.config, default=str)),
        entries,
        os.path.relpath(results_path.resolve(), out.resolve()),
        command,
        int(plan.batch_size),
    )
    outcome = ExportOutcome(zoo, kept=len(kept))
    for entry_, source, record in staged:
        target = out / entry_.file
        if target.exists() and sha256_file(target) == entry_.sha256:
            outcome.unchanged += 1
        else:
            with atomic_path(target) as tmp:
                shutil.copyfile(source, tmp)
            if sha256_file(target) != entry_.sha256:
                raise ZooError(f"zoo export: {target} changed while it was copied; export again")
            outcome.written.append(target)
        atomic_write_json(out / entry_.config, record)
    keep = {name.casefold() for e in zoo.entries for name in (e.file, e.config)}
    for stale in old.entries if old is not None else []:
        if stale in kept:
            continue
        for name in (stale.file, stale.config):
            # only a file the old index listed (read_zoo refused any outside this folder) that no entry still lists
            if name.casefold() not in keep and (out / name).is_file():
                (out / name).unlink()
                outcome.removed.append(out / name)
    write_index(zoo)
    return outcome


# ----------------------------------------------------------------------------------------------- loading


@dataclass
class _Sized:
    """Stands for a split whose length is all a model's construction reads (MSEFM's memory size)."""

    n: int

    def __len__(self) -> int:
        return self.n


@dataclass
class ModelShape:
    """What building a model reads of a dataset, from the zoo JSON (so loading needs no data)."""

    name: str
    specs: tuple[ModalitySpec, ...]
    num_classes: int
    encoders: dict[str, str]
    train: _Sized
    config: dict[str, Any]


def model_shape(record: Mapping[str, Any]) -> ModelShape:
    info = record["model"]
    specs = tuple(
        ModalitySpec(
            s["name"],
            tuple(s["shape"]),
            None if s["lower"] is None else tuple(s["lower"]),
            None if s["upper"] is None else tuple(s["upper"]),
            s.get("description", ""),
        )
        for s in info["specs"]
    )
    return ModelShape(
        str(record["dataset"]),
        specs,
        int(info["num_classes"]),
        dict(info["encoders"]),
        _Sized(int(info["n_train"])),
        dict(record["key"].get("dataset_config") or {}),
    )


def rebuild_record(record: Mapping[str, Any], where: Path) -> tuple[Any, TrainConfig, CheckpointKey]:
    """(defense, schedule, checkpoint key) from a zoo JSON, checked to give back the recorded key."""
    key_dict_ = record["key"]
    cls = DEFENSES.get(str(record["defense"]))
    config, rest = apply_overrides(cls.Config(), record["settings"]["defense"], f"defense {record['defense']!r}")
    train_cfg, rest_train = apply_overrides(TrainConfig(), record["settings"]["train"], "training schedule")
    if rest or rest_train:
        raise ZooError(
            f"{where}: settings {', '.join(sorted({**rest, **rest_train}))} are not settings of "
            f"{record['defense']!r} in this suite version; use the suite version that exported the zoo"
        )
    defense = cls(config)
    key = CheckpointKey(
        str(key_dict_["dataset"]),
        dict(key_dict_["dataset_config"]),
        defense.name,
        defense.config_dict(),
        key_dict(train_cfg),
        int(key_dict_["seed"]),
    )
    if json_normalised(key.defense_config) != json_normalised(key_dict_["defense_config"]) or json_normalised(
        key.train_config
    ) != json_normalised(key_dict_["train_config"]):
        raise ZooError(
            f"{where}: its settings do not rebuild its checkpoint key (a hand-edited or damaged file); "
            f"restore it or re-export the zoo"
        )
    return defense, train_cfg, key


def _build_model(defense: Any, record: Mapping[str, Any], train_cfg: TrainConfig, seed: int) -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):  # as training built it; the global RNG is left alone
        torch.manual_seed(seed)
        return defense.build_model(model_shape(record), train_cfg)


def _check_loads(record: Mapping[str, Any], path: Path) -> None:
    """Export's check: the file loads, strictly, into the model the record rebuilds."""
    defense, train_cfg, _ = rebuild_record(record, path)
    model = _build_model(defense, record, train_cfg, int(record["seed"]))
    tensors = load_file(str(path))
    state = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ZooError(
            f"zoo export: {path} does not load into the model its settings rebuild ({str(exc).splitlines()[0]})"
        ) from None


def load_trained(
    zoo: Zoo | str | os.PathLike, entry: str, seed: int, *, device: str | torch.device = "cpu", dataset: Any = None
) -> TrainedModel:
    """The zoo model ``entry`` (label) of ``seed``, in eval mode on ``device``, as a :class:`TrainedModel`
    (``dataset``, when given, is attached as training attaches it; it must be the zoo's dataset)."""
    zoo = zoo if isinstance(zoo, Zoo) else read_zoo(zoo)
    item = zoo.find(entry, seed)
    record = load_record(zoo, item)
    path = check_file(zoo, item)
    defense, train_cfg, key = rebuild_record(record, zoo.directory / item.config)
    try:
        with safe_open(str(path), framework="pt") as fh:
            embedded = json.loads((fh.metadata() or {}).get(META, "{}")).get("key")
        tensors = load_file(str(path))
    except READ_ERRORS as exc:
        raise ZooError(f"refusing {path}: not a readable safetensors file ({exc})") from None
    if embedded != stable_hash(record["key"]):
        raise ZooError(
            f"refusing {path}: it was saved for another configuration than {item.config} records; "
            f"restore it or re-export the zoo"
        )
    dev = select_device(device)
    model = _build_model(defense, record, train_cfg, item.seed)
    state = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    extra = {k[len("extra.") :]: v for k, v in tensors.items() if k.startswith("extra.")}
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ZooError(
            f"{path} does not load into {record['defense']!r} as this suite version builds it "
            f"({str(exc).splitlines()[0]})"
        ) from None
    model.to(dev).eval()
    trained = TrainedModel(model, defense, train_cfg, key, zoo.directory, item.sha256, extra, cached=True)
    if dataset is not None:
        if dataset.name != zoo.dataset:
            raise ZooError(f"load_trained: dataset {dataset.name!r} is not the zoo's {zoo.dataset!r}")
        trained.dataset = dataset  # type: ignore[attr-defined]
    return trained


def show_rows(zoo: Zoo, item: ZooEntry, results: str | os.PathLike | None = None) -> pd.DataFrame:
    """The rows of the leaderboard's results CSV (``results`` or the one the index names) made by ``item``."""
    path = Path(results) if results is not None else zoo.results_path
    if path is None:
        return pd.DataFrame()
    rows = read_rows(path)
    return rows[
        (rows["checkpoint_sha256"].astype(str) == item.sha256)
        & (rows["label"].astype(str) == item.entry)
        & (rows["seed"].astype(int) == item.seed)
    ]


__all__ = [
    "ZooError",
    "ZooEntry",
    "Zoo",
    "ExportOutcome",
    "ModelShape",
    "INDEX",
    "ZOO_SCHEMA",
    "MODEL_SCHEMA",
    "read_zoo",
    "export_zoo",
    "load_trained",
    "load_record",
    "check_file",
    "config_difference",
    "link_cards",
    "show_rows",
    "leaderboards_dir",
    "zoo_dir",
    "file_stem",
    "model_shape",
    "rebuild_record",
]
