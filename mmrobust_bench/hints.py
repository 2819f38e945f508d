"""Spelling hints for unknown names, decided and worded in one place.

Every "unknown X" error of the suite names the valid choices and, when one of them is close to what was
typed, suggests it: ``unknown norm 'Linf' (did you mean 'linf'?); valid: l2, linf``. This module imports
nothing of the package, so the lowest layers (contracts, registry, heads, datasets, attack adapters) and
the settings checks of ``bench.validate`` share it.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable, Iterable

#: ``difflib``'s default similarity cutoff (0..1): below it no suggestion is made.
CUTOFF = 0.6


def closest(name: object, valid: Iterable[str], *, cutoff: float = CUTOFF) -> str | None:
    """The valid name most similar to ``name``, or None when none reaches ``cutoff``."""
    close = difflib.get_close_matches(str(name), list(valid), n=1, cutoff=cutoff)
    return close[0] if close else None


def nearest(name: object, valid: Iterable[str], *, n: int = 3) -> list[str]:
    """The ``n`` valid names most similar to ``name``, best first, however far (for "nothing matches" messages,
    where the nearest names are the best lead even when none is a likely typo)."""
    return difflib.get_close_matches(str(name), list(valid), n=n, cutoff=0.0)


def name_matcher(pattern: str | None) -> Callable[[str], bool]:
    """The one rule every listing filters names by (``list``, ``zoo list``): a shell pattern on lower-cased names; a
    pattern without ``*?[`` matches the names that contain it (``synthav`` finds ``synthav/jt``); None: every name."""
    if not pattern:
        return lambda name: True
    pat = pattern.lower()
    if not any(c in pat for c in "*?["):
        pat = f"*{pat}*"
    return lambda name: fnmatch.fnmatchcase(name.lower(), pat)


def nearest_to_pattern(pattern: str, names: Iterable[str]) -> list[str]:
    """The names nearest a listing pattern that matched nothing (see :func:`name_matcher`), compared without its
    wildcards and case, returned as spelled: the lead a "nothing matches" message gives."""
    by_lower = {name.lower(): name for name in names}
    typed = pattern.lower().strip("*?[]") or pattern.lower()
    return [by_lower[n] for n in nearest(typed, sorted(by_lower))]


def did_you_mean(name: object, valid: Iterable[str], *, prefix: str = "", cutoff: float = CUTOFF) -> str:
    """``" (did you mean 'epochs'?)"`` when a valid name is close to ``name``, else ``""``.

    ``prefix`` is shown before the suggestion but not compared (``art:`` + an ART class name)."""
    close = closest(name, valid, cutoff=cutoff)
    return f" (did you mean {prefix + close!r}?)" if close else ""


def unknown_message(
    what: str,
    unknown: Iterable[str],
    valid: Iterable[str],
    *,
    pool: Callable[[str], Iterable[str]] | None = None,
    cutoff: float = CUTOFF,
) -> str:
    """``"defense 'jt': unknown option(s) epoch (did you mean 'epochs'?); valid: epochs, lr"``.

    ``pool(name)``, when given, narrows the names suggested for one unknown name (to those taking a value
    of its type, say); every valid name is still listed."""
    valid = sorted(set(valid))
    parts = [f"{k}{did_you_mean(k, pool(k) if pool else valid, cutoff=cutoff)}" for k in sorted(set(unknown))]
    return f"{what}: unknown option(s) {', '.join(parts)}; valid: {', '.join(valid) or 'none'}"


__all__ = ["CUTOFF", "closest", "did_you_mean", "nearest", "unknown_message"]
