"""Leaderboard models and datasets for the public API: ``mmr.load_model`` and ``mmr.load_dataset``.

A leaderboard's models live in its zoo (``leaderboards/<dataset>/zoo``, ``bench.zoo``); ``load_model`` gives one
back as a :class:`~mmrobust_bench.plug.WrappedModel`, so ``mmr.attack``, ``mmr.evaluate`` and the user's own
attacks take it like any wrapped model::

    model = mmr.load_model("avdigits", "crmt_jt", seed=0)
    test = mmr.load_dataset("avdigits", split="test", data_root="FSDD/recordings")
    rows = mmr.evaluate(model, test, attack=MyAttack, modality="a", eps=[0.5, 1.0], label="crmt_jt")

``load_dataset`` builds the dataset with the options the zoo's models were evaluated on (read from the zoo's
index), so a clean row of the leaderboard comes out again exactly.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from .bench.zoo import INDEX, config_difference, load_record, load_trained, model_shape, read_zoo, zoo_dir
from .data import build_dataset
from .io import default_root
from .plug.declare import Modality, WrappedModel, wrap

log = logging.getLogger(__name__)

SPLITS = ("train", "test")


def load_model(
    dataset: str,
    entry: str,
    seed: int = 0,
    *,
    zoo: str | os.PathLike[str] | None = None,
    device: str | torch.device = "cpu",
) -> WrappedModel:
    """The leaderboard model ``entry`` (its label, e.g. ``"crmt_jt"``) of ``seed``, in eval mode on ``device``,
    wrapped for ``mmr.attack`` / ``mmr.evaluate``. ``zoo``: the zoo folder (default
    ``leaderboards/<dataset>/zoo``; ``$MMROBUST_LEADERBOARDS`` moves ``leaderboards``). The file must have the
    sha256 the zoo's index lists (a damaged or swapped file is refused); ``model.zoo_entry`` says which it is."""
    found = read_zoo(zoo_dir(dataset, zoo))
    if found.dataset != dataset:
        raise ValueError(f"the zoo at {found.directory} holds {found.dataset!r} models, not {dataset!r}")
    trained = load_trained(found, entry, seed, device=device)
    specs = _specs(found, entry, seed)
    wrapped = wrap(
        trained.model,
        {s.name: Modality(s.shape, None if s.lower is None else (s.lower, s.upper), s.description) for s in specs},
        call="dict",
    )
    wrapped.eval()
    wrapped.zoo_entry = {"dataset": dataset, **found.find(entry, seed).as_dict()}  # type: ignore[assignment]
    return wrapped


def _specs(found: Any, entry: str, seed: int) -> tuple[Any, ...]:
    return model_shape(load_record(found, found.find(entry, seed))).specs


class DatasetLoader:
    """One split of a dataset as an iterable of dict batches ``{modality: tensor, "label": labels}`` (what
    ``mmr.evaluate`` reads), in the split's order; iterate it as often as needed."""

    def __init__(self, split: Any, batch_size: int, name: str, specs: tuple[Any, ...]) -> None:
        self.split = split
        self.batch_size = int(batch_size)
        self.name = name
        self.specs = specs

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        for batch, labels in self.split.batches(self.batch_size):
            yield {**batch, "label": labels}

    def __len__(self) -> int:
        return math.ceil(len(self.split) / self.batch_size)

    @property
    def n(self) -> int:
        """The number of samples."""
        return len(self.split)


def load_dataset(
    dataset: str,
    split: str = "test",
    *,
    data_root: str | os.PathLike[str] | None = None,
    batch_size: int | None = None,
    n: int | None = None,
    zoo: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    **options: Any,
) -> DatasetLoader:
    """``split`` (``"test"`` or ``"train"``) of ``dataset`` as a :class:`DatasetLoader` of ``batch_size`` (default:
    the leaderboard's evaluation batch, from the zoo's index, else 500; MSEFM's outputs depend on the batch). The
    dataset options are those of the zoo's index when there is one (so the leaderboard's samples come back), then
    ``options``;
    ``data_root`` is where a real dataset's files are (synthav needs none). ``n``: only the first ``n``
    samples. The built dataset is cached in ``cache_dir`` (default ``$MMROBUST_HOME/datasets``)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    where = zoo_dir(dataset, zoo)
    found = read_zoo(where) if (where / INDEX).exists() else None
    if batch_size is None:
        batch_size = found.batch_size if found is not None else 500
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size!r}")
    chosen = {**(found.dataset_options if found is not None else {}), **options}
    if data_root is not None:
        chosen["data_root"] = str(data_root)
    cache = Path(cache_dir) if cache_dir is not None else default_root() / "datasets"
    ds = build_dataset(dataset, cache_dir=cache, **chosen)
    if found is not None and not options:
        built: dict[str, Any] = ds.config  # type: ignore[attr-defined]  # every registered dataset has one
        differ = config_difference(found.dataset_config, built)
        if differ:
            log.warning(
                "%s built here differs from the data the zoo's models were evaluated on (%s); its "
                "numbers will not match the leaderboard's",
                dataset,
                ", ".join(differ),
            )
    part = getattr(ds, split)
    if n is not None:
        if not 0 < int(n) <= len(part):
            raise ValueError(f"n must be between 1 and the split's {len(part)} samples, got {n!r}")
        part = part.subset(torch.arange(int(n)))
    return DatasetLoader(part, batch_size, ds.name, tuple(ds.specs))


__all__ = ["load_model", "load_dataset", "DatasetLoader", "SPLITS"]
