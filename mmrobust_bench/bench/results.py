"""Tidy result rows: one row per measurement, appended atomically to a CSV with pandas."""
from __future__ import annotations

import dataclasses
import datetime as _dt
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import pandas as pd

from ..io import atomic_path

CLEAN = "clean"
NO_MODALITY = "none"


@dataclass
class ResultRow:
    dataset: str
    defense: str
    seed: int
    checkpoint_sha256: str
    config_hash: str
    attack: str
    attack_config: str
    library: str
    library_version: str
    modality: str  # attacked modalities joined by "+", "none" for clean
    norm: str
    eps: float
    n: int
    accuracy: float
    wall_seconds: float
    device: str
    suite_version: str
    # Validity flags of the measurement (bench.flags), ";"-separated, empty when none.
    flags: str = ""
    timestamp: str = dataclasses.field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))


COLUMNS = [f.name for f in dataclasses.fields(ResultRow)]
# Columns added after the first release, with the value old rows get.
DEFAULTS = {"flags": ""}


def rows_frame(rows: Iterable[ResultRow]) -> pd.DataFrame:
    return pd.DataFrame([dataclasses.asdict(r) for r in rows], columns=COLUMNS)


def read_rows(path: str | Path) -> pd.DataFrame:
    """The rows of the CSV at ``path`` (none if it does not exist). CSVs written before a column existed
    read with that column at its default (``flags``: empty); the known columns come first, in order."""
    path = Path(path)
    if not path.exists():
        return pd.DataFrame(columns=COLUMNS)
    frame = pd.read_csv(path)
    for name, default in DEFAULTS.items():
        if name not in frame:
            frame[name] = default
    frame["flags"] = frame["flags"].astype(object).where(frame["flags"].notna(), "").astype(str)
    extra = [c for c in frame.columns if c not in COLUMNS]
    return frame[[c for c in COLUMNS if c in frame] + extra]


def append_rows(path: str | Path, rows: Iterable[ResultRow]) -> pd.DataFrame:
    """Append rows to the CSV at ``path``: old content + new rows, written to a temporary file and
    swapped in atomically, so a crash never loses or tears what was already there."""
    new = rows_frame(rows)
    old = read_rows(path)
    frame = new if old.empty else pd.concat([old, new], ignore_index=True)
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
    return frame
