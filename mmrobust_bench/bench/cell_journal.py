"""The journal of an attack cell under way: each finished batch's per-sample outcomes, and the cell's validity checks,
kept on disk so that a cell stopped part-way (a job's time limit, a pre-emption, Ctrl-C) resumes at its first
unfinished batch instead of from its start. A strong evaluation of a slow model can take hours a cell.

Exact by construction: every attack call reseeds the RNGs from the attack's seed (``attacks.base.preserved_state``),
so a batch's outcome depends only on its samples, the model and the attack, and a resumed cell gives the numbers of
an uninterrupted one. The journal's folder is named by a hash of everything that could make a stored batch another
cell's (the cell's row keys, the batch size, the samples, threads, dtype, device, the suite's and torch's versions,
torch's build, the CPU capability and the device's name); a stored batch whose labels differ from the batch read
now is refused and measured again. Files are safetensors and JSON, each written atomically; the folder is removed
once the cell's rows are stored."""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from ..io import atomic_path, atomic_write_json, json_normalised, stable_hash
from .evaluate import BatchOutcome

log = logging.getLogger(__name__)

JOURNAL_DIR = "partial"  # under the sweep root, beside results.csv
FORMAT = 1  # of the files: part of a journal's identity, so a journal in another format is never read
IDENTITY_FILE = "identity.json"
CHECKS_FILE = "checks.json"


class CellJournal:
    """Finished batches of one cell in ``folder`` (see the module docstring); ``restored`` counts the batches read
    back, for the cell's log line."""

    def __init__(self, folder: Path, identity: Mapping[str, Any]) -> None:
        self.folder = folder
        self.identity = dict(identity)
        # as the identity file reads back (JSON's types), what a stored journal must equal to be this one
        self._expected = json_normalised(self.identity)
        self.restored = 0

    @classmethod
    def open(cls, root: str | Path, identity: Mapping[str, Any]) -> CellJournal:
        """The journal of the cell ``identity`` describes, under ``root/partial``; its identity is written on the
        first batch stored."""
        identity = {**identity, "journal_format": FORMAT}
        return cls(Path(root) / JOURNAL_DIR / stable_hash(identity), identity)

    def _batch_path(self, step: int) -> Path:
        return self.folder / f"batch-{int(step):06d}.safetensors"

    def _matches(self) -> bool:
        try:
            stored = json.loads((self.folder / IDENTITY_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        return bool(stored == self._expected)

    def _write_identity(self) -> None:
        """The identity file, on the journal's first write."""
        if not (self.folder / IDENTITY_FILE).is_file():
            atomic_write_json(self.folder / IDENTITY_FILE, self.identity)

    def batch(self, step: int, labels: Tensor) -> BatchOutcome | None:
        """Batch ``step`` as stored, or None when it is not (or is unreadable, or was made on other labels)."""
        path = self._batch_path(step)
        if not path.is_file() or not self._matches():
            return None
        try:
            tensors = load_file(str(path))
            meta = json.loads((self.folder / f"{path.stem}.json").read_text(encoding="utf-8"))
            seconds, details, bad = list(meta["seconds"]), list(meta["details"]), list(meta["non_finite"])
        except (OSError, ValueError, KeyError, TypeError, SafetensorError) as exc:
            log.warning("journal %s: batch %d is unreadable (%s); measuring it again", self.folder, step, exc)
            return None
        if not torch.equal(tensors["labels"], labels.detach().cpu().to(torch.int64)):
            log.warning("journal %s: batch %d was stored for other samples; measuring it again", self.folder, step)
            return None
        self.restored += 1
        hits = tensors["hits"].to(device=labels.device, dtype=torch.bool)
        return BatchOutcome(hits, [float(s) for s in seconds], details, [int(b) for b in bad])

    def store_batch(self, step: int, labels: Tensor, outcome: BatchOutcome) -> None:
        """Keep batch ``step``: its JSON first, then its tensors (a batch counts as stored once both are there).

        Best effort: a journal that cannot be written (a full disk; the folder removed by a worker that finished
        the same cell, as a Ray ``any`` cell and a set's own cell can) costs the resume, never the measurement."""
        try:
            self._store_batch(step, labels, outcome)
        except OSError as exc:
            log.warning("journal %s: could not keep batch %d (%s); the cell goes on without it", self.folder, step, exc)

    def _store_batch(self, step: int, labels: Tensor, outcome: BatchOutcome) -> None:
        self._write_identity()
        path = self._batch_path(step)
        meta = {
            "seconds": [float(s) for s in outcome.seconds],
            "details": list(outcome.details),
            "non_finite": [int(b) for b in outcome.non_finite],
        }
        atomic_write_json(self.folder / f"{path.stem}.json", meta)
        tensors = {"labels": labels.detach().cpu().to(torch.int64), "hits": outcome.hits.detach().cpu().to(torch.uint8)}
        with atomic_path(path) as tmp:
            save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp))

    def checks(self) -> list[dict] | None:
        """The cell's validity flags as stored (each a Flag's fields), or None when they were not checked yet."""
        path = self.folder / CHECKS_FILE
        if not path.is_file() or not self._matches():
            return None
        try:
            return list(json.loads(path.read_text(encoding="utf-8"))["flags"])
        except (OSError, ValueError, KeyError):
            return None

    def store_checks(self, flags: Sequence[Mapping[str, Any]]) -> None:
        """Keep the cell's validity flags (each a Flag's fields); best effort, as :meth:`store_batch`."""
        try:
            self._write_identity()
            atomic_write_json(self.folder / CHECKS_FILE, {"flags": [dict(f) for f in flags]})
        except OSError as exc:
            log.warning("journal %s: could not keep the validity checks (%s)", self.folder, exc)

    def discard(self) -> None:
        """Remove the journal (the cell's rows are stored), and the journals other settings left for the same rows
        (another machine's, another thread count's: the rows they were for are stored now); the ``partial``
        parent too once empty."""
        shutil.rmtree(self.folder, ignore_errors=True)
        rows = self._expected.get("rows")
        for other in self.folder.parent.glob(f"*/{IDENTITY_FILE}") if rows is not None else ():
            with contextlib.suppress(OSError, ValueError):
                if json.loads(other.read_text(encoding="utf-8")).get("rows") == rows:
                    shutil.rmtree(other.parent, ignore_errors=True)
        with contextlib.suppress(OSError):  # other cells' journals are still there
            self.folder.parent.rmdir()


def journal_identities(folder: Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    """Each journal folder under ``folder`` (a sweep's ``partial/``) with its identity, in name order; a journal whose
    identity is being written or damaged is left out (its cell measures it again)."""
    for path in sorted(folder.glob(f"*/{IDENTITY_FILE}")):
        try:
            identity = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(identity, dict):
            yield path.parent, identity


__all__ = ["CellJournal", "JOURNAL_DIR", "journal_identities"]
