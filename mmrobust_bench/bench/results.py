"""The result store: tidy rows (``bench.result_rows``), one per measurement, in a CSV that any number of processes
append to.

Every read-modify-write of the CSV (local processes, torchrun ranks, cluster jobs on a shared
filesystem) runs under an inter-process ``filelock`` and ends in an atomic replace, so no row is
lost and a crash leaves the old file or the new one. Rows are deduplicated by their *cell key*
(dataset, label, seed, checkpoint sha256, attack, attack config, attacked modalities, ε): a row
whose cell is already stored is not written again, unless the caller replaces the cell (``run
--force``). A row with a missing value (NaN accuracy, no checkpoint) does not count as done, and a
measured row replaces it. A CSV that does not parse is refused with its name and line number
(``bench.result_readers``); nothing is rewritten from a file that was not read in full. A results file that is a
symbolic link is written through to its target (the lock beside the target), so a shared store linked into a run
folder gets the rows. When the final write fails (a full disk), the rows measured now are saved to a
fallback file in the current directory or $TMPDIR, and the error names both files.

The row schema and the readers live beside it; their names stay importable from here, the store's public face.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import sys
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ..io import atomic_path, file_lock
from .result_readers import (
    CERTIFICATE_COLUMNS,
    CERTIFICATE_RANGES,
    ETA_COLUMNS,
    ETA_RANGES,
    RESULT_RANGES,
    Range,
    ResultsFileError,
    check_ranges,
    read_checked_certificates,
    read_checked_eta_pairs,
    read_checked_rows,
    read_checked_table,
    read_rows,
    read_table,
)
from .result_rows import (
    CELL_COLUMNS,
    CLEAN,
    COLUMNS,
    DEFAULTS,
    NO_MODALITY,
    ResultRow,
    attack_rows,
    cell_key,
    clean_row,
    complete,
    decode_outcomes,
    done_cells,
    encode_outcomes,
    eps_key,
    frame_keys,
    rows_frame,
    with_defaults,
)


class ResultsWriteError(ValueError):
    """Storing rows failed (a full disk, a folder made read-only); the message names the file, the reason and
    where the rows measured now were saved instead. ``fallback``: that file (None: printed to stderr)."""

    def __init__(self, message: str, fallback: Path | None) -> None:
        super().__init__(message)
        self.fallback = fallback


def store_path(path: str | Path) -> Path:
    """Where rows for ``path`` are written: the target of a symbolic link (a link is never replaced by a
    regular file, which would leave the linked store without the rows), else ``path`` itself."""
    path = Path(path)
    return Path(os.path.realpath(path)) if path.is_symlink() else path


def _save_fallback(path: Path, rows: pd.DataFrame) -> Path | None:
    """``rows`` in a new file ``mmrobust-unsaved-rows-<name>-<time>-<pid>.csv`` in the first writable place of the
    current directory and $TMPDIR; None (and the CSV printed to stderr) when neither can take it."""
    stamp = _dt.datetime.now().strftime("%Y%m%dT%H%M%S")
    name = f"mmrobust-unsaved-rows-{path.stem}-{stamp}-{os.getpid()}.csv"
    text = rows.to_csv(index=False)
    places = [Path(tempfile.gettempdir())]
    with contextlib.suppress(OSError):  # the current directory was removed
        places.insert(0, Path.cwd())
    for folder in dict.fromkeys(places):
        target = folder / name
        try:
            fh = open(target, "x", encoding="utf-8")  # noqa: SIM115 (closed below; "x" refuses an existing file)
        except OSError:
            continue
        try:
            with fh:
                fh.write(text)
            return target
        except OSError:  # full there too: no half file left behind
            target.unlink(missing_ok=True)
    sys.stderr.write(text)
    return None


def _write_rows(path: Path, frame: pd.DataFrame, measured: pd.DataFrame) -> None:
    """Write ``frame`` to ``path`` atomically; if that fails, save ``measured`` (the rows this call brought) to a
    fallback file and raise :class:`ResultsWriteError` naming both: nothing measured is lost."""
    try:
        with atomic_path(path) as tmp:
            frame.to_csv(tmp, index=False)
    except OSError as exc:
        fallback = _save_fallback(path, measured)
        kept = (
            f"the {len(measured)} row(s) measured now were saved to {fallback}"
            if fallback is not None
            else f"the {len(measured)} row(s) measured now are printed above (no writable place for a file)"
        )
        raise ResultsWriteError(
            f"cannot write {path}: {exc.strerror or exc}; {kept}. Free space or fix the "
            f"permissions, then append that file's rows to {path} (or rerun to measure them again)",
            fallback,
        ) from exc


def _as_frame(rows: Iterable[ResultRow] | pd.DataFrame) -> pd.DataFrame:
    return with_defaults(rows) if isinstance(rows, pd.DataFrame) else rows_frame(rows)


def append_rows(path: str | Path, rows: Iterable[ResultRow] | pd.DataFrame, *, replace: bool = False) -> pd.DataFrame:
    """Store rows in the CSV at ``path`` under its lock; return the whole stored frame.

    Rows whose cell is already stored (finished) are not written again; with ``replace`` they replace
    the stored rows of their cells instead (a forced re-evaluation). Stored rows of unfinished cells
    (missing values) are replaced by new rows of the same cell. ``frame.attrs["written"]`` counts the
    rows written. A crash at any point leaves the old file or the new one (atomic replace); a failed write
    raises :class:`ResultsWriteError` after saving the new rows elsewhere."""
    path = store_path(path)
    new = _as_frame(rows)
    new_keys = pd.Series(frame_keys(new), index=new.index, dtype=object)
    keep = ~new_keys.duplicated(keep="last")  # one row per cell within one call
    new, new_keys = new[keep], new_keys[keep]
    with file_lock(path):
        old = read_rows(path)
        old_keys = pd.Series(frame_keys(old), index=old.index, dtype=object)
        if replace:
            drop = old_keys.isin(set(new_keys))
        else:
            finished = set(old_keys[complete(old)]) if not old.empty else set()
            fresh = ~new_keys.isin(finished)
            new, new_keys = new[fresh], new_keys[fresh]
            drop = old_keys.isin(set(new_keys))  # unfinished rows of the cells measured now
        old = old[~drop]
        if new.empty and not drop.any():
            old.attrs["written"] = 0
            return old
        frame = new if old.empty else pd.concat([old, new], ignore_index=True)
        _write_rows(path, frame, new)
    frame.attrs["written"] = len(new)
    return frame


def rewrite_rows(path: str | Path, update: Any, *, any_table: bool = False) -> pd.DataFrame:
    """Read the CSV at ``path`` under its lock, apply ``update(frame) -> frame | None`` and write the result
    atomically when it returned a frame (None: nothing to write). For changes that need all rows at once.
    ``any_table``: any table of the suite (certificates too), read without the results-header check."""
    path = store_path(path)
    with file_lock(path):
        frame = read_table(path) if any_table else read_rows(path)
        changed = update(frame)
        if changed is None:
            return frame
        with atomic_path(path) as tmp:
            changed.to_csv(tmp, index=False)
        return changed


def replace_keyed_rows(
    path: str | Path, new: pd.DataFrame, key_columns: Sequence[str], defaults: dict[str, Any] | None = None
) -> pd.DataFrame:
    """Write ``new`` into the CSV at ``path`` in place of the stored rows that share their ``key_columns``
    values (a model's certificate rows), under the file's lock, atomically. Any table, not only results.
    ``defaults``: columns stored rows lack (or leave empty), with the value they get. A failed write raises
    :class:`ResultsWriteError` after saving ``new`` elsewhere."""
    path = store_path(path)
    columns = list(key_columns)
    with file_lock(path):
        old = read_table(path)
        if not old.empty:
            for name, default in (defaults or {}).items():
                old[name] = old[name].where(old[name].notna(), default) if name in old else default
        if not old.empty:
            stale = old[columns].astype(str).agg("|".join, axis=1)
            fresh = set(new[columns].astype(str).agg("|".join, axis=1))
            old = old[~stale.isin(fresh)]
        frame = new if old.empty else pd.concat([old, new], ignore_index=True)
        _write_rows(path, frame, new)
    return frame


def stored_rows(frame: pd.DataFrame, keys: Iterable[tuple]) -> pd.DataFrame:
    """The finished rows of ``frame`` whose cell key is one of ``keys``, in ``frame``'s order."""
    if frame.empty:
        return frame
    wanted = set(keys)
    mask = complete(frame) & pd.Series([k in wanted for k in frame_keys(frame)], index=frame.index)
    return frame[mask]


def stored_run(
    frame: pd.DataFrame,
    *,
    dataset: str,
    label: str,
    seed: int,
    sha: str,
    attack: str,
    attack_config: str,
    modality: str,
    eps: Sequence[float],
    norm_bounded: bool = True,
    prefix: bool = False,
    norm: str = "l2",
) -> pd.DataFrame | None:
    """The stored finished rows of one ``run`` (its clean row and the attack at every ε of ``eps``), or None
    when any of them is missing. ``prefix``: ``attack_config`` only starts the stored one (a minimal-norm
    curve records the radius it found)."""
    if frame.empty:
        return None
    rows = frame[complete(frame)]
    rows = rows[
        (rows["dataset"].astype(str) == str(dataset))
        & (rows["label"].astype(str) == str(label))
        & (rows["seed"].astype(int) == int(seed))
        & (rows["checkpoint_sha256"].astype(str) == str(sha))
    ]
    clean = rows[rows["attack"].astype(str) == CLEAN]
    attacked = rows[
        (rows["attack"].astype(str) == attack)
        & (rows["modality"].astype(str) == modality)
        & (rows["norm"].astype(str) == str(norm))
    ]
    configs = attacked["attack_config"].astype(str)
    attacked = attacked[configs.str.startswith(attack_config) if prefix else configs == attack_config]
    if clean.empty or attacked.empty:
        return None
    have = {eps_key(e): i for i, e in attacked["eps"].items()}
    wanted = [eps_key(e) for e in eps] if norm_bounded else ["-"]
    if any(k not in have for k in wanted):
        return None
    return pd.concat([clean.tail(1), attacked.loc[[have[k] for k in dict.fromkeys(wanted)]]], ignore_index=True)


__all__ = [
    "ResultRow",
    "COLUMNS",
    "DEFAULTS",
    "CELL_COLUMNS",
    "CLEAN",
    "NO_MODALITY",
    "ResultsFileError",
    "ResultsWriteError",
    "store_path",
    "eps_key",
    "cell_key",
    "done_cells",
    "complete",
    "frame_keys",
    "rows_frame",
    "read_rows",
    "append_rows",
    "rewrite_rows",
    "replace_keyed_rows",
    "read_table",
    "stored_rows",
    "stored_run",
    "with_defaults",
    "clean_row",
    "attack_rows",
    "encode_outcomes",
    "decode_outcomes",
]
__all__ += [
    "Range",
    "RESULT_RANGES",
    "CERTIFICATE_COLUMNS",
    "CERTIFICATE_RANGES",
    "ETA_COLUMNS",
    "ETA_RANGES",
    "check_ranges",
    "read_checked_rows",
    "read_checked_table",
    "read_checked_certificates",
    "read_checked_eta_pairs",
]
