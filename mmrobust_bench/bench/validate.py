"""A run's settings checked before any work: names, output locations, and the whole run at once.

A run that fails on a typo after generating a dataset or training a model wastes minutes; a run
that accepts ``n_train=0``, ``lr=nan`` or ``--batch-size -4`` writes wrong rows. Everything here is
cheap and runs first (``check_run_settings``), so a bad value costs a one-line error naming the fix.

The checks of single values that every layer shares (types, counts, ε, overrides) live in
:mod:`mmrobust_bench.config`; they are re-exported here for the callers of the bench layer.
"""

from __future__ import annotations

import os
import tempfile
import unicodedata
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..config import MAX_EPS, check_count, check_eps, check_fields, check_nonnegative, coerce_floats
from ..data import DATASETS
from ..safe_yaml import load_yaml, preview

# Longest label or dataset name accepted: it names files (as a slug), legends and table rows.
MAX_NAME = 200
# Unicode categories refused in names: control (newline, tab, NUL, escape), format (bidi overrides, zero-width),
# surrogates (not UTF-8 text) and line/paragraph separators; each would break a CSV line, a table or a legend.
_REFUSED_CATEGORIES = {
    "Cc": "a control character",
    "Cf": "an invisible formatting character",
    "Cs": "a lone surrogate",
    "Zl": "a line separator",
    "Zp": "a paragraph separator",
}


def check_name(value: Any, what: str) -> str:
    """A label or dataset name as rows store it: text of 1 to :data:`MAX_NAME` characters, no control or formatting
    characters (newlines, tabs, NUL, bidi overrides), no spaces at either end. Returns it; one-line ValueError
    naming ``what`` otherwise. Anything else (``<``, ``/``, quotes, ``=``) is allowed: reports escape it."""
    if not isinstance(value, str):
        raise ValueError(f"{what} must be text, got {preview(value)}")
    if not value.strip():
        raise ValueError(f"{what} must not be empty or blank")
    if len(value) > MAX_NAME:
        raise ValueError(f"{what} has {len(value)} characters; give at most {MAX_NAME}: {preview(value)}")
    for i, ch in enumerate(value):
        category = unicodedata.category(ch)
        if category in _REFUSED_CATEGORIES:
            raise ValueError(
                f"{what} holds {_REFUSED_CATEGORIES[category]} (U+{ord(ch):04X}) at position {i + 1}: "
                f"{preview(value)}; give a name on one line of visible characters"
            )
    if value != value.strip():
        raise ValueError(f"{what} starts or ends with spaces: {preview(value)}; remove them")
    return value


def check_output_dir(path: Path | str, flag: str) -> Path:
    """Make sure files can be created in the directory ``path`` (created if missing) before any work
    starts: a file in its place, a read-only or immutable folder is a one-line error now, not lost
    rows after an hour of evaluation."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{flag} {path} is a file, not a directory; give a directory (it is created if missing)")
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".mmrobust-write-test.", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ValueError(f"{flag} {path} is not writable ({exc.strerror or exc}); give a writable directory") from None
    return path


def check_output_file(path: Path | str, flag: str) -> Path:
    """``path`` can be (re)written atomically: not a directory, its folder writable, itself writable if present."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{flag} {path} is a directory; give a file path such as {path / 'results.csv'}")
    target = Path(os.path.realpath(path)) if path.is_symlink() else path  # rows are written through a link
    check_output_dir(target.parent if str(target.parent) else Path("."), f"the folder of {flag}")
    if path.exists() and not os.access(path, os.W_OK):
        raise ValueError(f"{flag} {path} is not writable; fix its permissions or give another file")
    return path


def check_dataset_options(dataset: str, options: Mapping[str, Any] | None) -> None:
    """Validate dataset options without building the dataset, when the dataset offers a check
    (a ``check_options(**options)`` attribute on its builder); unknown datasets are a RegistryError."""
    builder = DATASETS.get(dataset)
    check = getattr(builder, "check_options", None)
    if check is not None:
        check(**dict(options or {}))


def check_dataset_modality_choice(dataset: str, modality: str | Sequence[str]) -> None:
    """Validate the attacked modalities without building the dataset, when its builder names its modalities
    (a ``modality_names`` attribute); otherwise they are checked against the built dataset's specs."""
    from ..contracts import check_modality_choice  # torch: the report command reads YAML here without it

    names = getattr(DATASETS.get(dataset), "modality_names", None)
    if names:
        check_modality_choice(modality, names)


def check_run_settings(
    *,
    defense: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    dataset: str | None = None,
    dataset_options: Mapping[str, Any] | None = None,
    eps: Sequence[Any] | None = None,
    batch_size: Any = None,
    seed: Any = None,
    root: Path | None = None,
    results: Path | None = None,
    modality: str | Sequence[str] | None = None,
    label: str | None = None,
) -> None:
    """Everything about a run that can be checked before data is generated or a model trained."""
    if label is not None:
        check_name(label, "label")
    if seed is not None:
        check_count(seed, "seed", minimum=0)
    if batch_size is not None:
        check_count(batch_size, "batch size")
    if eps is not None:
        check_eps(eps)
    if dataset is not None:
        check_dataset_options(dataset, dataset_options)
        if modality is not None:
            check_dataset_modality_choice(dataset, modality)
    if defense is not None:
        from ..defenses import build_defense  # torch: the report command reads YAML here without it

        build_defense(defense, overrides)
    if root is not None:
        check_output_dir(root, "--root")
    if results is not None:
        check_output_file(results, "--results")
        if Path(results).is_file():  # a damaged results file is refused now, not after the evaluation
            from .result_readers import read_rows  # pandas, only when a results file exists

            read_rows(results)


def read_yaml_mapping(path: Path | str, what: str) -> dict[str, Any]:
    """A YAML file holding a mapping, read by ``safe_yaml.load_yaml`` (no aliases, no repeated keys); a missing
    file, bad YAML (with its line and column) or another kind of document is a ValueError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{what} {path} does not exist" if not path.exists() else f"{what} {path} is not a file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{what} {path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    loaded = load_yaml(text, f"{what} {path}")
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ValueError(f"{what} {path} must hold a mapping of key: value, got a {type(loaded).__name__}")
    return loaded


def check_certify_settings(*, train_samples: Any = -1, honesty_steps: Any = 20, batch_size: Any = 64) -> None:
    """``train_samples``: -1 (all) or >= 1 (0 used to mean "all" silently); ``honesty_steps`` >= 0 (0 skips
    the check); ``batch_size`` >= 1."""
    check_count(train_samples, "--train-samples (training samples for the constants; -1 = all)", sentinel=-1)
    check_count(honesty_steps, "--honesty-steps (0 skips the honesty check)", minimum=0)
    check_count(batch_size, "--batch-size")


__all__ = [
    "MAX_EPS",
    "MAX_NAME",
    "check_fields",
    "coerce_floats",
    "check_count",
    "check_eps",
    "check_nonnegative",
    "check_name",
    "check_output_dir",
    "check_output_file",
    "check_dataset_options",
    "check_run_settings",
    "read_yaml_mapping",
    "check_certify_settings",
]
