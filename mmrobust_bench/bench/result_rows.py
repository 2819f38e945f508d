"""The result row: one tidy row per measurement, its columns, the key that identifies its cell, and the one place
rows are built (:func:`clean_row`, :func:`attack_rows`) with each sample's outcome packed into a CSV cell.

Rows are deduplicated by their *cell key* (dataset, label, seed, checkpoint sha256, attack, attack config, attacked
modalities, ε, norm); a row with a missing value (NaN accuracy, no checkpoint) is not a finished measurement.
The store (``bench.results``) writes these rows, ``bench.result_readers`` reads them back.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as _dt
import json
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from .._version import __version__
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
    # Samples per attack call: randomized attacks (``autoattack``'s members, random starts) are reseeded per batch,
    # so it is part of the numbers; 0 = not recorded (rows written before the column, or a loader without one).
    batch_size: int = 0

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
    "batch_size": 0,
}
NUMERIC = ("seed", "eps", "n", "accuracy", "wall_seconds", "threads", "batch_size")
TEXT = tuple(c for c in COLUMNS if c not in NUMERIC)
REQUIRED = tuple(c for c in COLUMNS if c not in DEFAULTS)
CELL_COLUMNS = ("dataset", "label", "seed", "checkpoint_sha256", "attack", "attack_config", "modality", "eps", "norm")
# A row missing any of these is not a finished measurement (ε is NaN by design for unbounded attacks).
MEASURED = ("dataset", "label", "seed", "checkpoint_sha256", "attack", "attack_config", "modality", "n", "accuracy")


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


def _batch_sizes(frame: pd.DataFrame) -> pd.Series:
    """Each row's recorded batch size as a whole number, 0 where not recorded (or the column is absent)."""
    if "batch_size" not in frame:
        return pd.Series(0, index=frame.index, dtype=int)
    return pd.to_numeric(frame["batch_size"], errors="coerce").fillna(0).astype(int)


def other_batch_size(frame: pd.DataFrame, batch_size: int) -> pd.Series:
    """Which rows of ``frame`` were measured at another batch size than ``batch_size`` (rows that did not record
    one say nothing): a randomized attack reseeds per batch, so such a row is another measurement of its cell."""
    sizes = _batch_sizes(frame)
    return (sizes > 0) & (sizes != int(batch_size))


def recorded_batch_sizes(frame: pd.DataFrame | None, *, other_than: int) -> list[int]:
    """The batch sizes ``frame``'s rows were measured at, other than ``other_than`` (:func:`other_batch_size`)."""
    if frame is None or frame.empty:
        return []
    return sorted({int(b) for b in _batch_sizes(frame)[other_batch_size(frame, other_than)]})


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


__all__ = [
    "ResultRow",
    "COLUMNS",
    "DEFAULTS",
    "NUMERIC",
    "other_batch_size",
    "recorded_batch_sizes",
    "TEXT",
    "REQUIRED",
    "CELL_COLUMNS",
    "MEASURED",
    "CLEAN",
    "NO_MODALITY",
    "eps_key",
    "cell_key",
    "with_defaults",
    "complete",
    "frame_keys",
    "done_cells",
    "clean_row",
    "attack_rows",
    "encode_outcomes",
    "decode_outcomes",
    "rows_frame",
]
