"""A model zoo's index (``zoo.json``): where zoos live, reading and writing the index, checking the files it lists,
and linking leaderboard model cards to them. No model is built here (``bench.zoo`` loads and exports models), so
the reports may link their cards to a zoo."""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..hints import did_you_mean, name_matcher
from ..io import atomic_write_json, json_normalised, sha256_file

ZOO_SCHEMA = "mmrobust-bench/zoo/1"
MODEL_SCHEMA = "mmrobust-bench/zoo-model/1"
INDEX = "zoo.json"
# Dataset options that name a place on the exporting machine, not the data: never written to the index.
LOCAL_OPTIONS = ("data_root",)
ENV_LEADERBOARDS = "MMROBUST_LEADERBOARDS"


class ZooError(ValueError):
    """A zoo that cannot be used as it is; the message is one line naming the file and the fix."""


@dataclass(frozen=True)
class ZooEntry:
    """One model of a zoo, as the index lists it."""

    entry: str  # the leaderboard's label
    defense: str  # the registry id
    seed: int
    config_hash: str
    sha256: str
    file: str
    config: str
    size: int

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class Zoo:
    """A zoo folder's index."""

    directory: Path
    dataset: str
    dataset_options: dict[str, Any]
    dataset_config: dict[str, Any]
    entries: list[ZooEntry]
    results: str = ""  # the leaderboard's results CSV, relative to the zoo folder ("" when unknown)
    made_by: str = ""
    batch_size: int = 500  # the sweep's evaluation batch (MSEFM's outputs depend on it)

    @property
    def index_path(self) -> Path:
        return self.directory / INDEX

    @property
    def results_path(self) -> Path | None:
        return (self.directory / self.results).resolve() if self.results else None

    def labels(self) -> list[str]:
        return sorted({e.entry for e in self.entries})

    def find(self, entry: str, seed: int) -> ZooEntry:
        """The entry ``entry`` (a label) of ``seed``; an unknown label or seed is one line listing what exists."""
        mine = [e for e in self.entries if e.entry == entry]
        if not mine:
            labels = self.labels()
            raise ZooError(
                f"the {self.dataset} zoo ({self.index_path}) has no entry {entry!r}"
                f"{did_you_mean(entry, labels)}; entries: {', '.join(labels) or 'none'}"
            )
        for e in mine:
            if e.seed == int(seed):
                return e
        raise ZooError(
            f"the {self.dataset} zoo has {entry!r} for seed {', '.join(str(e.seed) for e in mine)}, not seed {seed}"
        )

    def match(self, pattern: str | None = None) -> list[ZooEntry]:
        """Entries whose label or ``dataset/label`` matches ``pattern`` by ``list``'s rule
        (:func:`~mmrobust_bench.hints.name_matcher`: a shell pattern, case-insensitive; without a wildcard, names
        containing it), all when None."""
        keep = name_matcher(pattern)
        return [e for e in self.entries if keep(e.entry) or keep(f"{self.dataset}/{e.entry}")]


# ----------------------------------------------------------------------------------------------- locations


def leaderboards_dir() -> Path:
    """Where ``leaderboards/<dataset>/zoo`` folders are found: ``$MMROBUST_LEADERBOARDS``, else the ``leaderboards``
    folder of the checkout this package runs from, else ``./leaderboards``."""
    env = os.environ.get(ENV_LEADERBOARDS)
    if env:
        return Path(env)
    checkout = Path(__file__).resolve().parents[2] / "leaderboards"
    return checkout if checkout.is_dir() else Path("leaderboards")


def zoo_dir(dataset: str, zoo: str | os.PathLike | None = None) -> Path:
    """The zoo folder of ``dataset``: ``zoo`` when given, else ``<leaderboards>/<dataset>/zoo``."""
    return Path(zoo) if zoo is not None else leaderboards_dir() / dataset / "zoo"


def inside(directory: Path, name: str) -> bool:
    """Whether ``name`` (a file an index lists) is a file of the zoo folder ``directory`` itself: an edited or
    foreign index must never make export delete, or a load read, a file elsewhere."""
    if not name or name == INDEX:
        return False
    base = Path(directory).resolve()
    path = (base / name).resolve()
    return path.parent == base


def file_stem(label: str, seed: int) -> str:
    """``<label>-seed<k>`` with every character outside ``[A-Za-z0-9_.-]`` replaced by ``_``."""
    return f"{re.sub(r'[^A-Za-z0-9_.-]', '_', str(label))}-seed{int(seed)}"


# ----------------------------------------------------------------------------------------------- the index


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ZooError(f"{what} {path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ZooError(f"{what} {path} cannot be read ({exc}); restore it or re-export the zoo") from None
    if not isinstance(data, dict):
        raise ZooError(f"{what} {path} is not a JSON object; restore it or re-export the zoo")
    return data


def read_zoo(directory: str | os.PathLike) -> Zoo:
    """The zoo in ``directory`` (its ``zoo.json``); a missing or malformed index is one line naming it."""
    directory = Path(directory)
    path = directory / INDEX
    if not path.exists():
        raise ZooError(
            f"no model zoo at {directory} ({INDEX} missing): export one with `mmrobust-bench zoo export "
            f"--root leaderboards/<dataset>/runs --out {directory}`, or point at another folder"
        )
    data = _read_json(path, "zoo index")
    if data.get("schema") != ZOO_SCHEMA:
        raise ZooError(f"{path} is not a model zoo index (schema {data.get('schema')!r}, expected {ZOO_SCHEMA!r})")
    names = [f.name for f in dataclasses.fields(ZooEntry)]
    entries = []
    for i, raw in enumerate(data.get("entries") or []):
        if not isinstance(raw, dict) or any(k not in raw for k in names):
            raise ZooError(
                f"{path}: entry {i} lacks {', '.join(k for k in names if k not in (raw or {}))}; re-export the zoo"
            )
        for name in (str(raw["file"]), str(raw["config"])):
            if not inside(directory, name):
                raise ZooError(
                    f"{path}: entry {i} lists {name!r}, which is not a file of the zoo folder; restore the "
                    f"index or remove it and re-export the zoo"
                )
        entries.append(
            ZooEntry(
                str(raw["entry"]),
                str(raw["defense"]),
                int(raw["seed"]),
                str(raw["config_hash"]),
                str(raw["sha256"]),
                str(raw["file"]),
                str(raw["config"]),
                int(raw["size"]),
            )
        )
    return Zoo(
        directory,
        str(data.get("dataset", "")),
        dict(data.get("dataset_options") or {}),
        dict(data.get("dataset_config") or {}),
        entries,
        str(data.get("results") or ""),
        str(data.get("made_by") or ""),
        int(data.get("batch_size") or 500),
    )


def write_index(zoo: Zoo) -> None:
    """Write the index of ``zoo`` atomically, its entries sorted by label and seed."""
    atomic_write_json(
        zoo.index_path,
        {
            "schema": ZOO_SCHEMA,
            "dataset": zoo.dataset,
            "dataset_options": zoo.dataset_options,
            "dataset_config": zoo.dataset_config,
            "results": zoo.results,
            "batch_size": zoo.batch_size,
            "made_by": zoo.made_by,
            "entries": [e.as_dict() for e in sorted(zoo.entries, key=lambda e: (e.entry, e.seed))],
        },
    )


def config_difference(recorded: dict[str, Any], built: dict[str, Any]) -> list[str]:
    """The keys on which two dataset configs differ, compared as JSON reads them back (so a mapping's key order,
    a tuple against a list or a path object against its text is no difference)."""
    a, b = json_normalised(recorded), json_normalised(built)
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def link_cards(
    cards: list[dict[str, Any]],
    directory: str | os.PathLike,
    card_folder: Callable[[dict[str, Any]], Path] | None = None,
) -> int:
    """Point each model card whose checkpoint the zoo in ``directory`` holds at its committed files: ``zoo`` (the
    weights' path, sha256 and size) and ``config``/``config_source`` from the zoo's JSON. Paths are relative to
    ``card_folder(card)``, the folder the card is written to (so a committed card names no machine's folders and
    its links resolve wherever the repository is), else as ``directory`` is given. Cards of other models are left
    as they are; returns how many were linked (0 without a zoo). A listed file that is missing or whose sha256 is
    not the index's is a ZooError (one line naming it)."""
    directory = Path(directory)
    if not (directory / INDEX).exists():
        return 0
    zoo = read_zoo(directory)
    by_sha = {e.sha256: e for e in zoo.entries}
    linked = 0
    for card in cards:
        item = by_sha.get(str(card.get("checkpoint_sha256")))
        if item is None or str(card.get("dataset")) != zoo.dataset:
            continue
        record = load_record(zoo, item)
        check_file(zoo, item)  # a card never links weights that are missing or not the listed ones
        folder = card_folder(card) if card_folder is not None else None
        config = _link(directory / item.config, folder)
        card["zoo"] = {
            "file": _link(directory / item.file, folder),
            "sha256": item.sha256,
            "size": item.size,
            "config": config,
        }
        card["config"] = {
            **record["key"],
            "stages": record.get("stages", {}),
            "provenance": record.get("provenance", {}),
        }
        card["config_source"] = config
        linked += 1
    return linked


def _link(target: Path, folder: Path | None) -> str:
    """``target`` relative to ``folder`` (a link from a file there), or as given without one."""
    return str(target) if folder is None else Path(os.path.relpath(target.resolve(), folder.resolve())).as_posix()


def _listed(zoo: Zoo, entry: ZooEntry, name: str) -> Path:
    """The path of a file the index lists for ``entry`` (``name``: its weights or its JSON), which must exist."""
    path = zoo.directory / name
    if not path.exists():
        raise ZooError(
            f"zoo index {zoo.index_path} lists {name} for {entry.entry} seed {entry.seed}, but "
            f"{path} does not exist; restore it (git checkout) or re-export the zoo"
        )
    return path


def check_file(zoo: Zoo, entry: ZooEntry) -> Path:
    """The path of ``entry``'s weights after checking it exists and has the sha256 the index lists."""
    path = _listed(zoo, entry, entry.file)
    digest = sha256_file(path)
    if digest != entry.sha256:
        raise ZooError(
            f"refusing {path}: its sha256 {digest[:12]}… is not the {entry.sha256[:12]}… the zoo index "
            f"lists for {entry.entry} seed {entry.seed} (damaged or another model's file); restore it "
            f"(git checkout) or re-export the zoo"
        )
    return path


def load_record(zoo: Zoo, entry: ZooEntry) -> dict[str, Any]:
    """The JSON of ``entry``, checked to describe the file the index lists."""
    path = _listed(zoo, entry, entry.config)
    record = _read_json(path, "zoo model file")
    if record.get("schema") != MODEL_SCHEMA:
        raise ZooError(f"{path} is not a zoo model file (schema {record.get('schema')!r})")
    for name, wanted in (("entry", entry.entry), ("seed", entry.seed), ("sha256", entry.sha256), ("file", entry.file)):
        if str(record.get(name)) != str(wanted):
            raise ZooError(
                f"refusing {path}: it records {name} {str(record.get(name))[:16]!r}, the zoo index "
                f"{str(wanted)[:16]!r} for this entry (files swapped or edited); restore it or re-export"
            )
    return record


__all__ = [
    "ENV_LEADERBOARDS",
    "INDEX",
    "LOCAL_OPTIONS",
    "MODEL_SCHEMA",
    "ZOO_SCHEMA",
    "Zoo",
    "ZooEntry",
    "ZooError",
    "check_file",
    "file_stem",
    "inside",
    "leaderboards_dir",
    "config_difference",
    "link_cards",
    "load_record",
    "read_zoo",
    "write_index",
    "zoo_dir",
]
