"""Names of the files reports write, made from names found in the rows (datasets, labels, entries).

A row's ``dataset`` or ``label`` is whatever a user or a CSV said it is: ``../../x``, ``a/b``, 5,000
characters, ``<img …>``. A file name made from one is therefore always a :func:`slug`, and every path is
checked by :func:`output_path` to lie inside the output directory before anything is written.

:func:`slug` is deterministic and injective in practice: a name that is already a plain slug (lower-case
letters, digits, ``_`` and ``.``, such as ``jt``, ``synthav``, ``crmt_jt_step1_only``) is its own slug;
any other name (upper case, spaces, ``/``, a leading dot, too long) becomes its simplified form plus
``-`` and a hash of the raw name. Plain slugs never contain ``-``, so ``a/b`` (``a_b-…``) and ``a_b``
(``a_b``) never share a file, and two changed names share one only if their hashes collide, which
:func:`check_unique` turns into an error rather than an overwrite.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from ..io import MAX_SLUG, name_hash
from ..io import file_slug as slug


def output_path(out_dir: str | Path, name: str) -> Path:
    """``out_dir / name``, refused (ValueError) unless it resolves to a place inside ``out_dir``."""
    out = Path(out_dir)
    root = out.resolve()
    target = (root / name).resolve()
    if target == root or not target.is_relative_to(root):
        raise ValueError(f"refusing to write {name!r}: it lies outside the output directory {out}")
    return out / name


def check_unique(paths: Iterable[tuple[Path, str]]) -> None:
    """Refuse (ValueError) a list of (path, what it holds) where one path would hold two different things:
    a report never overwrites one file with another of its own."""
    owners: dict[Path, str] = {}
    for path, owner in paths:
        first = owners.setdefault(Path(path), owner)
        if first != owner:
            raise ValueError(f"{first!r} and {owner!r} would both be written to {path}; rename one of them")


__all__ = ["MAX_SLUG", "check_unique", "name_hash", "output_path", "slug"]
