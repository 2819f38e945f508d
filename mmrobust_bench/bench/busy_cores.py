"""How many intra-op threads a CPU run uses when the user names none, and a warning when a named count
would share busy cores.

torch's CPU kernels run on OpenMP threads (one per core by default) that spin while they wait for each
other. When other processes occupy the cores (say two sweep shards on a 2-core machine), a spinning thread
burns the time slice its partner needs: ``benchmarks/busy_cores.py`` measured one small JT training at 60.5 s
with torch's default 2 threads beside two busy processes against 2.2 s at ``--threads 1``, while on idle
cores the default was the fastest (``benchmarks/results/busy_cores-*.json``). So without ``--threads`` a
CPU run takes the cores that are idle when it starts (:func:`auto_threads`): torch's own count on an idle
machine, fewer beside busy processes. The count orders float reductions, so it is recorded in every row
(the ``threads`` column) and ``--threads N`` pins it for bit-for-bit reruns; a pinned count that would
share busy cores gets :func:`busy_cores_warning`, naming the remedies. The Python API changes no thread count
(the caller's numbers depend on it): its long calls warn instead (:func:`api_busy_cores_warning`).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

PROC_STAT = Path("/proc/stat")


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS reports one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def other_runnable(samples: int = 5, interval: float = 0.01, stat: Path = PROC_STAT) -> int | None:
    """Runnable tasks other than this one right now (median of ``samples`` reads of ``procs_running``), or
    None where the kernel does not report it (not Linux). Instantaneous, unlike the load average, so a
    process that just ended does not count."""
    counts = []
    for i in range(samples):
        try:
            text = stat.read_text()
        except OSError:
            return None
        line = next((ln for ln in text.splitlines() if ln.startswith("procs_running")), None)
        if line is None:
            return None
        counts.append(int(line.split()[1]) - 1)  # this process is running while it reads
        if i + 1 < samples:
            time.sleep(interval)
    counts.sort()
    return max(counts[len(counts) // 2], 0)


def contended(threads: int, cores: int, others: int) -> bool:
    """True when ``threads`` intra-op threads cannot each have a core: more than one thread, and the cores
    left by ``others`` busy tasks are fewer than the threads."""
    return threads > 1 and cores - others < threads


def auto_threads(ceiling: int, cores: int | None = None, others: int | None = None, stat: Path = PROC_STAT) -> int:
    """Intra-op threads for a CPU run without ``--threads``: the cores that ``others`` runnable tasks leave
    idle (read from ``stat`` when not given), at least 1 and at most ``ceiling`` (torch's own count, which
    follows ``OMP_NUM_THREADS``). Where the kernel reports no runnable count, ``ceiling``."""
    cores = usable_cores() if cores is None else cores
    others = other_runnable(stat=stat) if others is None else others
    if others is None:
        return max(1, ceiling)
    return max(1, min(ceiling, cores - others))


CLI_REMEDY = "Pass --threads 1 (recorded in the rows), leave --threads out (the idle cores are used)"
# The Python API leaves torch's thread count to its caller (it orders float reductions, so a library call that
# changed it would change the caller's later numbers): it names the call that does.
API_REMEDY = "Call torch.set_num_threads(1) before this call (the count is recorded in the rows)"


def busy_cores_warning(
    threads: int, cores: int | None = None, others: int | None = None, remedy: str = CLI_REMEDY
) -> str | None:
    """The warning to print for ``threads`` intra-op threads on this machine now, or None; ``remedy`` names the
    way to a smaller count where the warning is read (the CLI's option, the API's call)."""
    cores = usable_cores() if cores is None else cores
    others = other_runnable() if others is None else others
    if others is None or not contended(threads, cores, others):
        return None
    if os.environ.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE":
        return None  # the threads sleep instead of spinning: the measured slowdown does not apply
    return (
        f"{others} other runnable process(es) share this machine's {cores} core(s) with {threads} torch "
        f"threads: spinning OpenMP threads can make this run tens of times slower (27x measured, "
        f"benchmarks/busy_cores.py). {remedy}, or set OMP_WAIT_POLICY=PASSIVE (changes no number)"
    )


_API_WARNED: set[int] = set()


def api_busy_cores_warning(on_cpu: bool, threads: int) -> str | None:
    """:func:`busy_cores_warning` for a Python API call that runs on the CPU at torch's current ``threads``, with the
    API's remedy; once per process and thread count, so that a loop of calls does not repeat it."""
    if not on_cpu or threads in _API_WARNED:
        return None
    message = busy_cores_warning(threads, remedy=API_REMEDY)
    if message:
        _API_WARNED.add(threads)
    return message


def warn_api_busy_cores(call: str, on_cpu: bool, threads: int, logger: logging.Logger) -> None:
    """Log :func:`api_busy_cores_warning` on ``logger`` as ``"<call>: <message>"``, when there is one."""
    message = api_busy_cores_warning(on_cpu, threads)
    if message:
        logger.warning("%s: %s", call, message)


__all__ = [
    "API_REMEDY",
    "CLI_REMEDY",
    "api_busy_cores_warning",
    "auto_threads",
    "busy_cores_warning",
    "contended",
    "other_runnable",
    "usable_cores",
    "warn_api_busy_cores",
]
