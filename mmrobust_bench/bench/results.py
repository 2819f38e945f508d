"""The result store: tidy rows, one per measurement, in a CSV that any number of processes append to.

Every read-modify-write of the CSV (local processes, torchrun ranks, cluster jobs on a shared
filesystem) runs under an inter-process ``filelock`` and ends in an atomic replace, so no row is
lost and a crash leaves the old file or the new one. Rows are deduplicated by their *cell key*
(dataset, label, seed, checkpoint sha256, attack, attack config, attacked modalities, ε): a row
whose cell is already stored is not written again, unless the caller replaces the cell (``run
--force``). A row with a missing value (NaN accuracy, no checkpoint) does not count as done, and a
measured row replaces it. A CSV that does not parse is refused with its name and line number;
nothing is rewritten from a file that was not read in full. A results file that is a symbolic link is
written through to its target (the lock beside the target), so a shared store linked into a run
folder gets the rows. When the final write fails (a full disk), the rows measured now are saved to a
fallback file in the current directory or $TMPDIR, and the error names both files.

Size: over 400 lines because the store's two readers share its one CSV format, columns and errors: the store's own
(lenient: a row with a missing value is not done) and the strict one the reports read through (every number in its
range, ``read_checked_*``). :func:`clean_row` and :func:`attack_rows` are the one place result rows are built.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import dataclasses
import datetime as _dt
import json
import math
import os
import sys
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from .._version import __version__
from ..io import atomic_path, file_lock
from .environment import cpu_capability, device_name, torch_build

CLEAN = "clean"
NO_MODALITY = "none"


@dataclass
class ResultRow:
    dataset: str
    defense: str  # the registry id of the defense
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
    # What the attack reported about the measurement, as JSON (``autoattack``: the version and how many samples
    # each member broke; ``any``: how many samples each threat set left misclassified); empty when nothing.
    details: str = ""
    # Each sample's correctness under the attack, in split order (``encode_outcomes``), so the ``any`` threat is
    # combined from stored rows at no extra cost; empty for clean rows and rows measured before it existed.
    outcomes: str = ""
    # The name of the configuration (``run --label``, a sweep entry's ``label``); the defense id when not given.
    label: str = ""
    # Provenance of the measurement: what it takes to reproduce it bit for bit.
    torch_version: str = dataclasses.field(default_factory=lambda: torch.__version__)
    dtype: str = "float32"
    threads: int = dataclasses.field(default_factory=torch.get_num_threads)  # intra-op threads
    timestamp: str = dataclasses.field(
        default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    )
    # What explains a rerun's difference (bench.environment): the CPU kernels torch dispatched to, a digest of
    # torch's build, and the CPU or GPU model (filled from ``device`` when not given).
    cpu_capability: str = dataclasses.field(default_factory=cpu_capability)
    torch_build: str = dataclasses.field(default_factory=lambda: torch_build()["sha256"])
    device_name: str = ""

    def __post_init__(self) -> None:
        if not self.label:
            self.label = self.defense
        if not self.device_name:
            self.device_name = device_name(self.device)


COLUMNS = [f.name for f in dataclasses.fields(ResultRow)]
# Columns added after the first release, with the value old rows get (``label``: their ``defense``;
# provenance: "" / 0 = not recorded).
DEFAULTS: dict[str, Any] = {
    "flags": "",
    "details": "",
    "outcomes": "",
    "label": None,
    "torch_version": "",
    "dtype": "",
    "threads": 0,
    "cpu_capability": "",
    "torch_build": "",
    "device_name": "",
}
NUMERIC = ("seed", "eps", "n", "accuracy", "wall_seconds", "threads")
TEXT = tuple(c for c in COLUMNS if c not in NUMERIC)
REQUIRED = tuple(c for c in COLUMNS if c not in DEFAULTS)
CELL_COLUMNS = ("dataset", "label", "seed", "checkpoint_sha256", "attack", "attack_config", "modality", "eps", "norm")
# A row missing any of these is not a finished measurement (ε is NaN by design for unbounded attacks).
MEASURED = ("dataset", "label", "seed", "checkpoint_sha256", "attack", "attack_config", "modality", "n", "accuracy")


class ResultsFileError(ValueError):
    """A results CSV that cannot be read as rows; the message names the file and the line."""


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


def eps_key(eps: Any) -> str:
    """ε as it identifies a cell: ``-`` for unbounded attacks (NaN in the rows), else 10 significant digits."""
    value = float(eps)
    return "-" if math.isnan(value) else f"{value:.10g}"


def cell_key(
    dataset: Any,
    label: Any,
    seed: Any,
    sha: Any,
    attack: Any,
    attack_config: Any,
    modality: Any,
    eps: Any,
    norm: Any = "l2",
) -> tuple:
    """The identity of a measurement: two rows with one key measure the same thing. The norm is part of it
    (an attack such as APGD describes itself the same way under ℓ2 and ℓ∞), except for the clean row,
    which no threat changes."""
    return (
        str(dataset),
        str(label),
        int(seed),
        str(sha),
        str(attack),
        str(attack_config),
        str(modality),
        eps_key(eps),
        "" if str(attack) == CLEAN else str(norm),
    )


def with_defaults(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with the columns added after the first release filled in for rows written before them."""
    frame = frame.copy()
    for name, default in DEFAULTS.items():
        if name not in frame:
            frame[name] = frame["defense"] if name == "label" and "defense" in frame else default
    if "label" in frame and "defense" in frame:
        blank = frame["label"].isna() | (frame["label"].astype(str) == "")
        frame.loc[blank, "label"] = frame.loc[blank, "defense"]
    return frame


def complete(frame: pd.DataFrame) -> pd.Series:
    """Which rows are finished measurements (no missing value in the columns that define and measure them)."""
    mask = pd.Series(True, index=frame.index)
    for column in MEASURED:
        if column in frame:
            values = frame[column]
            mask &= values.notna() & (values.astype(str) != "")
    return mask


def frame_keys(frame: pd.DataFrame) -> list[tuple]:
    """Cell keys of the rows of ``frame`` (old CSVs: label = defense)."""
    if frame.empty:
        return []
    frame = with_defaults(frame) if "label" not in frame else frame
    if "norm" not in frame:  # a frame of ℓ2 rows built by hand (every CSV the suite writes has the column)
        frame = frame.assign(norm="l2")
    return [cell_key(*values) for values in frame[list(CELL_COLUMNS)].itertuples(index=False, name=None)]


def done_cells(frame: pd.DataFrame) -> set[tuple]:
    """Keys of the finished cells of a results frame (rows with missing values are not done)."""
    if frame.empty:
        return set()
    frame = with_defaults(frame) if "label" not in frame else frame
    return set(frame_keys(frame[complete(frame)]))


def clean_row(clean: Any, *, norm: str, flags: str, common: Mapping[str, Any]) -> ResultRow:
    """The clean-accuracy row of one model from its ``bench.evaluate.Measurement`` (``flags``: its flags cell,
    ``bench.flags.clean_row_flags``). The one place ``run``, the sweep and the public API's ``evaluate`` build it."""
    return ResultRow(
        attack=CLEAN,
        attack_config=CLEAN,
        library="native",
        library_version=__version__,
        modality=NO_MODALITY,
        norm=norm,
        eps=0.0,
        n=clean.n,
        accuracy=clean.accuracy,
        wall_seconds=clean.seconds,
        flags=flags,
        **common,
    )


def attack_rows(
    measured: Iterable[Any],
    *,
    attack: str,
    attack_config: str,
    library: str,
    library_version: str,
    modality: str,
    norm: str,
    norm_bounded: bool,
    flags_at: Callable[[float | None], str],
    common: Mapping[str, Any],
) -> list[ResultRow]:
    """The rows of one attack's measurements (``bench.evaluate.Measurement``): ε is NaN for attacks without a budget,
    ``flags_at(ε)`` gives each row's flags cell, the attack's report goes into ``details`` as JSON. The one place
    ``run``, the sweep and the public API's ``evaluate`` build attack rows."""
    rows = []
    for m in measured:
        eps = m.eps if norm_bounded else None
        rows.append(
            ResultRow(
                attack=attack,
                attack_config=attack_config,
                library=library,
                library_version=library_version,
                modality=modality,
                norm=norm,
                eps=math.nan if eps is None else eps,
                n=m.n,
                accuracy=m.accuracy,
                wall_seconds=m.seconds,
                flags=flags_at(eps),
                details=json.dumps(m.details, sort_keys=True) if m.details else "",
                outcomes=encode_outcomes(m.outcomes) if m.outcomes is not None else "",
                **common,
            )
        )
    return rows


def encode_outcomes(correct: torch.Tensor) -> str:
    """Per-sample correctness (N,) as text for a CSV cell: the bits packed 8 to a byte, base64 (N = the row's n)."""
    bits = np.packbits(correct.detach().cpu().bool().numpy().astype(np.uint8))
    return base64.b64encode(bits.tobytes()).decode("ascii")


def decode_outcomes(text: str, n: int) -> torch.Tensor:
    """The (N,) bool tensor of :func:`encode_outcomes`; a cell that does not decode to ``n`` samples is refused."""
    try:
        raw = np.frombuffer(base64.b64decode(str(text), validate=True), dtype=np.uint8)
    except ValueError as exc:
        raise ValueError(f"an outcomes cell is not base64 ({exc}); rerun the cell to measure it again") from exc
    if raw.size != (int(n) + 7) // 8:
        raise ValueError(f"an outcomes cell holds {raw.size * 8} bits for n = {n} samples; rerun the cell")
    return torch.from_numpy(np.unpackbits(raw)[: int(n)].astype(bool))


def rows_frame(rows: Iterable[ResultRow]) -> pd.DataFrame:
    return pd.DataFrame([dataclasses.asdict(r) for r in rows], columns=COLUMNS)


def _check_csv(
    path: Path, required: Sequence[str] = REQUIRED, numbers: Sequence[str] = NUMERIC, what: str = "a results file"
) -> list[str]:
    """Parse ``path`` strictly with the csv module: every record has the header's width and numbers where
    numbers belong. Returns the header; raises ResultsFileError naming the file and line otherwise."""
    fix = "fix or remove that line (the file was not modified)"
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh, strict=True)
        try:
            header = next(reader, None)
            if header is None:
                return []
            missing = [c for c in required if c not in header]
            if missing:
                raise ResultsFileError(f"{path} line 1: not {what}, the header lacks {', '.join(missing)}")
            numeric = [(c, header.index(c)) for c in numbers if c in header]
            for record in reader:
                if not record:
                    continue
                if len(record) != len(header):
                    raise ResultsFileError(
                        f"{path} line {reader.line_num}: {len(record)} fields where the header has {len(header)}; {fix}"
                    )
                for column, i in numeric:
                    value = record[i]
                    if value in ("", "nan", "NaN"):
                        continue
                    try:
                        float(value)
                    except ValueError:
                        raise ResultsFileError(
                            f"{path} line {reader.line_num}: {column} is {value!r}, not a number; {fix}"
                        ) from None
        except csv.Error as exc:
            raise ResultsFileError(f"{path} line {reader.line_num}: {exc}; {fix}") from None
        except UnicodeDecodeError as exc:
            raise ResultsFileError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    return header


def read_rows(path: str | Path) -> pd.DataFrame:
    """The rows of the CSV at ``path`` (none if it does not exist). CSVs written before a column existed
    read with that column at its default; the known columns come first, in order. Text columns are read
    as text exactly (a hash of digits stays a string, ``NA`` stays ``NA``), so writing back is lossless.
    Raises ResultsFileError (file and line) on a file that does not parse."""
    path = Path(path)
    if not path.exists():
        return pd.DataFrame(columns=COLUMNS)
    header = _check_csv(path)
    if not header:
        return pd.DataFrame(columns=COLUMNS)
    frame = pd.read_csv(
        path,
        keep_default_na=False,
        na_values={c: ["", "nan", "NaN"] for c in NUMERIC if c in header},
        dtype={c: str for c in header if c not in NUMERIC},
    )
    frame = with_defaults(frame)
    for column in frame.columns:
        if column not in NUMERIC:  # plain Python strings, as rows built in memory hold them
            frame[column] = frame[column].astype(object)
    frame["threads"] = pd.to_numeric(frame["threads"]).fillna(0).astype(int)
    extra = [c for c in frame.columns if c not in COLUMNS]
    return frame[[c for c in COLUMNS if c in frame] + extra]


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


def read_table(path: str | Path) -> pd.DataFrame:
    """Any CSV table of the suite (empty if absent); a file that does not parse is refused with its name and line."""
    path = Path(path)
    if not path.exists():
        return pd.DataFrame()
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()
    except pd.errors.ParserError as exc:
        raise ResultsFileError(f"{path}: {exc}; fix or remove that line (the file was not modified)") from None


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


# ----------------------------------------------------------------------------- strict reading for reports
# Reports show what they read, so they read more strictly than the store: every number finite and in its range,
# seeds whole, the columns a report needs present; the first bad value is one line naming the file and the line.


@dataclass(frozen=True)
class Range:
    """What a numeric column may hold: ``low`` to ``high``; ``whole`` numbers only; empty cells when ``optional``;
    +inf when ``infinite`` (a radius no perturbation reaches). ``text`` says it in an error message."""

    text: str
    low: float = -math.inf
    high: float = math.inf
    whole: bool = False
    optional: bool = True
    infinite: bool = False

    def broken(self, values: np.ndarray) -> np.ndarray:
        """Which of ``values`` (floats, NaN = empty) break the range."""
        empty, finite = np.isnan(values), np.isfinite(values)
        bad = (empty & (not self.optional)) | (np.isinf(values) & ~((values > 0) & self.infinite))
        with np.errstate(invalid="ignore"):
            bad |= finite & ((values < self.low) | (values > self.high))
            if self.whole:
                bad |= finite & (values != np.floor(values))
        return bad


SEED = Range("a whole number >= 0", 0, whole=True, optional=False)
COUNT = Range("a whole number >= 0", 0, whole=True)
FRACTION = Range("a number in [0, 1]", 0, 1)
NONNEGATIVE = Range("a finite number >= 0", 0)
CHECK_COUNT = Range("a whole number >= 0 (-1: not run)", -1, whole=True)
RADIUS = Range("a number >= 0 (inf: no perturbation reaches the boundary)", 0, infinite=True)

RESULT_RANGES: dict[str, Range] = {
    "seed": SEED,
    "eps": NONNEGATIVE,
    "n": COUNT,
    "accuracy": FRACTION,
    "wall_seconds": NONNEGATIVE,
    "threads": COUNT,
}
# certified.csv (bench.certification): the columns some report reads without asking, and the numbers' ranges
CERTIFICATE_COLUMNS = (
    "dataset",
    "defense",
    "seed",
    "certificate",
    "equation",
    "variant",
    "modality",
    "radius",
    "certified_accuracy",
    "median_certified_radius",
    "honesty_certified",
    "honesty_violations",
)
CERTIFICATE_RANGES: dict[str, Range] = {
    "seed": SEED,
    "radius": NONNEGATIVE,
    "n": COUNT,
    "certified_accuracy": FRACTION,
    "median_certified_radius": RADIUS,
    "honesty_certified": CHECK_COUNT,
    "honesty_violations": CHECK_COUNT,
    "honesty_fraction": FRACTION,
    "sigma": NONNEGATIVE,
    "n0": COUNT,
    "n_noise": COUNT,
    "alpha": FRACTION,
    "confidence": FRACTION,
    "abstained": FRACTION,
}
# eta_pairs.csv (per class pair η, Figure 3)
ETA_COLUMNS = ("dataset", "defense", "seed", "modality", "class_y", "class_j", "eta_pair")
ETA_RANGES: dict[str, Range] = {
    "seed": SEED,
    "class_y": SEED,
    "class_j": SEED,
    "eta_pair": NONNEGATIVE,
    "eta_eq10": NONNEGATIVE,
    "eta_local_mean": NONNEGATIVE,
    "tau_y": NONNEGATIVE,
    "tau_j": NONNEGATIVE,
}


def _record(path: Path, position: int) -> tuple[int, dict[str, str]]:
    """The line on which data record ``position`` (0-based, blank lines skipped as pandas does) ends, and the
    record as written (column → text)."""
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader, [])
        seen = -1
        for record in reader:
            seen += bool(record)
            if seen == position:
                return reader.line_num, dict(zip(header, record))
    return 0, {}


def check_ranges(frame: pd.DataFrame, path: str | Path, ranges: Mapping[str, Range]) -> pd.DataFrame:
    """``frame`` (read from ``path``) with every column of ``ranges`` checked, whole-number columns without empty
    cells as integers; ResultsFileError naming the file, the line and the column at the first bad value."""
    frame = frame.copy()
    for column, rule in ranges.items():
        if column not in frame:
            continue
        values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=float)
        bad = np.flatnonzero(rule.broken(values))
        if bad.size:
            line, record = _record(Path(path), int(bad[0]))
            shown = record.get(column) or "empty"
            raise ResultsFileError(
                f"{path} line {line}: {column} is {shown}, not {rule.text}; fix or remove that "
                "line (the file was not modified)"
            )
        frame[column] = values.astype(np.int64) if rule.whole and not np.isnan(values).any() else values
    return frame


def read_checked_rows(path: str | Path) -> pd.DataFrame:
    """The rows of a results CSV as reports show them: :func:`read_rows` (text exactly as written, ``NA`` stays
    ``NA``), then every number checked against :data:`RESULT_RANGES` (accuracy in [0, 1], finite ε, whole seeds)."""
    return check_ranges(read_rows(path), path, RESULT_RANGES)


def read_checked_table(
    path: str | Path, required: Sequence[str], ranges: Mapping[str, Range], what: str
) -> pd.DataFrame:
    """Another table of the suite (certificates, η pairs) read as strictly as :func:`read_checked_rows`: parsed
    record by record, ``required`` columns present, text kept as written, numbers checked against ``ranges``.
    Empty (with the ``required`` columns) when the file is absent or empty."""
    path = Path(path)
    header = _check_csv(path, required, tuple(ranges), what) if path.exists() else []
    if not header:
        return pd.DataFrame(columns=list(required))
    frame = pd.read_csv(
        path,
        keep_default_na=False,
        na_values={c: ["", "nan", "NaN"] for c in header if c in ranges},
        dtype={c: str for c in header if c not in ranges},
    )
    for column in frame.columns:
        if column not in ranges:
            frame[column] = frame[column].astype(object)
    return check_ranges(frame, path, ranges)


def read_checked_certificates(path: str | Path) -> pd.DataFrame:
    """certified.csv as reports read it (:func:`read_checked_table` with :data:`CERTIFICATE_COLUMNS`)."""
    return read_checked_table(path, CERTIFICATE_COLUMNS, CERTIFICATE_RANGES, "a certificates file (certified.csv)")


def read_checked_eta_pairs(path: str | Path) -> pd.DataFrame:
    """eta_pairs.csv as reports read it (:func:`read_checked_table` with :data:`ETA_COLUMNS`)."""
    return read_checked_table(path, ETA_COLUMNS, ETA_RANGES, "an η-pairs file (eta_pairs.csv)")


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
