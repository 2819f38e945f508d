"""Put a zoo's checkpoints back where a sweep looks for them, so a fresh clone resumes or extends a leaderboard's
sweep with the very models its rows were measured with instead of training them again (bit for bit only on the
kind of machine that made them).

Each zoo model goes to ``<root>/checkpoints/<dataset>/<defense>/<key>/final.safetensors`` (the file byte for byte)
with the ``config.json`` its zoo JSON recorded, and must then pass the sweep's own check (``load_stage``: the
sha256 of the file, its embedded key, every recorded setting). A checkpoint folder that already holds an intact
final stage is left alone, whether it is the same model or another (that one is named: the sweep would use it)."""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from ..io import atomic_path, atomic_write_json
from .checkpoints import load_stage
from .train import checkpoint_lock
from .zoo import rebuild_record
from .zoo_index import Zoo, ZooError, check_file, load_record, read_zoo

log = logging.getLogger(__name__)


@dataclass
class RestoreOutcome:
    """Models written, already there (the same file), and held by another model's intact checkpoint."""

    restored: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)
    other: list[str] = field(default_factory=list)


def restore_zoo(zoo: Zoo | str | os.PathLike, root: str | os.PathLike) -> RestoreOutcome:
    """Copy every model of ``zoo`` into the checkpoint folders of the sweep root ``root`` (see the module
    docstring); refuses, writing nothing more, a zoo file whose sha256 is not its index's."""
    zoo = zoo if isinstance(zoo, Zoo) else read_zoo(zoo)
    root = Path(root)
    outcome = RestoreOutcome()
    for item in zoo.entries:
        name = f"{item.entry} seed {item.seed}"
        source = check_file(zoo, item)
        record = load_record(zoo, item)
        _, _, key = rebuild_record(record, zoo.directory / item.config)
        directory = key.directory(root)
        directory.mkdir(parents=True, exist_ok=True)
        with checkpoint_lock(directory):
            found = load_stage(directory, "final", key)
            if found is not None:
                (outcome.present if found[2] == item.sha256 else outcome.other).append(name)
                if found[2] != item.sha256:
                    log.warning(
                        "%s: %s already holds another intact model (sha256 %s…, the zoo's is %s…); left as is",
                        name,
                        directory,
                        found[2][:12],
                        item.sha256[:12],
                    )
                continue
            config = {**record["key"], "stages": {"final": record["stages"]["final"]}}
            config["provenance"] = {"final": (record.get("provenance") or {}).get("final", {})}
            with atomic_path(directory / "final.safetensors") as tmp:
                shutil.copyfile(source, tmp)
            atomic_write_json(directory / "config.json", config)
            restored = load_stage(directory, "final", key)
            if restored is None or restored[2] != item.sha256:
                raise ZooError(
                    f"zoo restore: {name} copied to {directory} does not pass the sweep's checkpoint check; "
                    f"the zoo and this suite version disagree (use the version that exported the zoo)"
                )
            outcome.restored.append(name)
    return outcome


__all__ = ["RestoreOutcome", "restore_zoo"]
