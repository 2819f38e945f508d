"""Progress bars that stay out of logs: every bar of the package goes through :func:`progress_bar`.

A bar is drawn only when its caller asks for one, the process has not turned bars off
(:func:`set_enabled`, which the CLI's ``-q`` and ``--no-progress`` call), and stderr is a terminal:
redirected to a file or a CI log, tqdm's ``\\r`` redraws would otherwise fill it with partial lines.
"""
from __future__ import annotations

import sys
from typing import Any, Iterable

from tqdm.auto import tqdm

_enabled = True


def set_enabled(enabled: bool) -> None:
    """Turn every later bar of this process on (the default: terminal permitting) or off."""
    global _enabled
    _enabled = bool(enabled)


def bars_enabled() -> bool:
    return _enabled


def disable_flag(enabled: bool = True) -> bool | None:
    """tqdm's ``disable`` for a bar its caller wants (``enabled``): True (off), or None, which lets tqdm
    turn it off when its stream is not a terminal."""
    return None if enabled and _enabled else True


def progress_bar(iterable: Iterable[Any] | None = None, *, enabled: bool = True, **kwargs: Any) -> tqdm:
    """``tqdm(iterable, **kwargs)``, off unless ``enabled``, bars are on for this process, and stderr
    (or ``file``) is a terminal."""
    kwargs.setdefault("file", sys.stderr)
    return tqdm(iterable, disable=disable_flag(enabled), **kwargs)


__all__ = ["progress_bar", "set_enabled", "bars_enabled", "disable_flag"]
