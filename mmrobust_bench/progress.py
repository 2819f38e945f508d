"""Progress that suits where stderr goes: tqdm bars on a terminal, one log line per step in a log file.

Every bar of the package goes through :func:`progress_bar`. A bar is drawn only when its caller asks for
one, the process has not turned progress off (:func:`set_enabled`, which the CLI's ``-q`` and
``--no-progress`` call), and stderr is a terminal: redirected to a file or a CI log, tqdm's ``\\r`` redraws
would fill it with partial lines. There, a long step (a training epoch, a sweep cell, a certification
chunk) is logged instead, once, with the time spent so far and an estimate of the time left
(:class:`StepLog`, or ``progress_bar(..., log_steps=...)``), so that a log file shows the run is alive.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TextIO

from tqdm.auto import tqdm

_enabled = True
log = logging.getLogger(__name__)


def set_enabled(enabled: bool) -> None:
    """Turn every later bar and step line of this process on (the default: terminal permitting) or off."""
    global _enabled
    _enabled = bool(enabled)


def bars_enabled() -> bool:
    return _enabled


def disable_flag(enabled: bool = True) -> bool | None:
    """tqdm's ``disable`` for a bar its caller wants (``enabled``): True (off), or None, which lets tqdm
    turn it off when its stream is not a terminal."""
    return None if enabled and _enabled else True


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def duration(seconds: float) -> str:
    """``"42.0 s"``, ``"3 min 05 s"``, ``"2 h 04 min"``: short and unambiguous in a log line."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = int(round(seconds))
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"


class StepLog:
    """One INFO line per finished step (``"train jt: epoch 2/10 (loss 0.412), elapsed 8.1 s, ETA 32.4 s"``)
    where a bar cannot be drawn: on when the caller wants progress (``enabled``), the process has it on and
    ``stream`` (default stderr) is not a terminal. The ETA extrapolates the steps done since this object was
    made (``done``: steps already finished before, such as the epochs of a resumed training). ``every`` (seconds):
    log a step only once that long has passed since the last line (or the start), so that steps of a second each
    (an attack's batches) give a line a minute in a long loop and none in a short one."""

    def __init__(
        self,
        what: str,
        total: int | None,
        *,
        unit: str = "",
        enabled: bool = True,
        done: int = 0,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
        every: float = 0.0,
    ) -> None:
        self.what, self.total, self.unit = what, total, unit
        self.done = self._first = int(done)
        self.active = enabled and _enabled and not _is_terminal(sys.stderr if stream is None else stream)
        self._clock = clock
        self._start = self._logged = clock()
        self.every = float(every)

    def line(self, detail: str = "") -> str:
        """The line for the progress so far (what :meth:`step` logs)."""
        elapsed = self._clock() - self._start
        count = f"{self.done}/{self.total}" if self.total else str(self.done)
        text = f"{self.what}: {self.unit + ' ' if self.unit else ''}{count}"
        if detail:
            text += f" ({detail})"
        text += f", elapsed {duration(elapsed)}"
        made = self.done - self._first
        if self.total and made > 0 and self.done < self.total:
            text += f", ETA {duration(elapsed / made * (self.total - self.done))}"
        elif self.total and self.done >= self.total:
            text += ", done"
        return text

    def step(self, n: int = 1, detail: str = "") -> None:
        """``n`` more steps are finished; log the line when active."""
        self.done += n
        now = self._clock()
        if self.active and now - self._logged >= self.every:
            self._logged = now
            log.info("%s", self.line(detail))


class _LoggedBar(tqdm):
    """A tqdm bar that also feeds a :class:`StepLog` (active only where the bar is not drawn): every
    ``update`` is a step, and so is every item of an iterated bar once its loop body has run."""

    def __init__(self, *args: Any, step_log: StepLog, **kwargs: Any) -> None:
        self._step_log = step_log
        super().__init__(*args, **kwargs)

    def update(self, n: float | None = 1) -> bool | None:
        shown = super().update(n)
        self._step_log.step(int(n or 0), str(getattr(self, "postfix", None) or ""))
        return shown

    def __iter__(self) -> Iterator[Any]:
        if not self.disable or not self._step_log.active:
            yield from super().__iter__()
            return
        for item in super().__iter__():  # a disabled bar yields without update(): count the item afterwards
            yield item
            self._step_log.step(1, str(getattr(self, "postfix", None) or ""))


def progress_bar(
    iterable: Iterable[Any] | None = None,
    *,
    enabled: bool = True,
    log_steps: str | None = None,
    log_every: float = 0.0,
    **kwargs: Any,
) -> tqdm:
    """``tqdm(iterable, **kwargs)``, off unless ``enabled``, progress is on for this process, and stderr
    (or ``file``) is a terminal. ``log_steps`` (the unit's name, e.g. ``"cell"``): where the bar is not
    drawn, log each update (or item) as a :class:`StepLog` line named by ``desc`` instead, at most one per
    ``log_every`` seconds."""
    kwargs.setdefault("file", sys.stderr)
    if log_steps is None:
        return tqdm(iterable, disable=disable_flag(enabled), **kwargs)
    total = kwargs.get("total")
    if total is None and iterable is not None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    steps = StepLog(
        kwargs.get("desc") or "progress",
        total,
        unit=log_steps,
        enabled=enabled,
        done=int(kwargs.get("initial") or 0),
        stream=kwargs["file"],
        every=log_every,
    )
    return _LoggedBar(iterable, disable=disable_flag(enabled), step_log=steps, **kwargs)


__all__ = ["progress_bar", "set_enabled", "bars_enabled", "disable_flag", "StepLog", "duration"]
