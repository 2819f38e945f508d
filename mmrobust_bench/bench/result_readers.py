"""Reading the suite's CSV tables back: a file that does not parse is refused with its name and line number, so
nothing is rewritten from a file that was not read in full.

Two strengths over one format: :func:`read_rows` / :func:`read_table` for the store (lenient: a row with a missing
value is read, it is just not done), and ``read_checked_*`` for the reports (every number in its range).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .result_rows import COLUMNS, NUMERIC, REQUIRED, with_defaults


class ResultsFileError(ValueError):
    """A results CSV that cannot be read as rows; the message names the file and the line."""


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
    for column in ("threads", "batch_size"):  # whole numbers, 0 = not recorded (a blank from an older writer too)
        frame[column] = pd.to_numeric(frame[column]).fillna(0).astype(int)
    extra = [c for c in frame.columns if c not in COLUMNS]
    return frame[[c for c in COLUMNS if c in frame] + extra]


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
    "ResultsFileError",
    "read_rows",
    "read_table",
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
