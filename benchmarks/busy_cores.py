"""Wall time of one fixed training run on idle and on busy cores, by intra-op threads and OpenMP wait policy.

Why: on the 2-core machine the main job took 15 min instead of ~40 s while two 1-thread sweep processes kept
both cores busy (torch's default of one intra-op thread per core: OpenMP threads spin-wait for a partner that
is not scheduled). This measures the effect, the remedies (``--threads 1``, ``OMP_WAIT_POLICY=PASSIVE``) and
the CLI's own choice without ``--threads`` ("auto": ``cli.common.choose_threads``, the cores idle at start),
so the CLI's default rests on numbers.

Each configuration runs in a fresh Python process (the wait policy is read when OpenMP starts): it trains JT
for ``--epochs`` on a small synthav and reports the wall time of the training alone. "busy" starts
``--busy`` background processes (default: one per core) that each run 1-thread float32 matmuls, like sweep
shards. Each row records the 1-minute load average and the kernel's other runnable tasks just before it (on
a shared machine an "idle" row is only as idle as those say). Prints one JSON object. Usage:
``python benchmarks/busy_cores.py [--n-train 2048] [--epochs 3]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from mmrobust_bench.bench.busy_cores import other_runnable
from mmrobust_bench.bench.environment import benchmark_machine, cpu_name

WORKLOAD = r"""
import sys, time, torch
if sys.argv[1] == "auto":  # what the CLI does without --threads
    from mmrobust_bench.cli.common import choose_threads
    choose_threads("cpu", None)
elif int(sys.argv[1]) > 0:
    torch.set_num_threads(int(sys.argv[1]))
from mmrobust_bench.bench.api import train_defense
root, n_train, epochs = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
opts = {"n_train": n_train, "n_test": 64}
# warm-up, outside the timing: the dataset (generated once) and one epoch, so one-time costs (kernel and
# allocator set-up) are not counted
train_defense("jt", dataset="synthav", dataset_options=opts, overrides={"epochs": 1}, root=root, progress=False,
              seed=99, force=True)
start = time.perf_counter()
train_defense("jt", dataset="synthav", dataset_options=opts, overrides={"epochs": epochs}, root=root,
              progress=False, force=True)
print(time.perf_counter() - start, torch.get_num_threads())
"""

BUSY = r"""
import torch
torch.set_num_threads(1)
a = torch.randn(256, 256)
while True:
    a = torch.tanh(a @ a)
"""


OPENMP_VARIABLES = ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "GOMP_SPINCOUNT")


def run_once(threads: int | str, policy: str | None, root: str, n_train: int, epochs: int) -> tuple[float, int]:
    """``threads``: a count, 0 (torch's default) or "auto"; ``policy``: None (OpenMP's default), or
    ``NAME=VALUE`` of one OpenMP variable."""
    env = {k: v for k, v in os.environ.items() if k not in OPENMP_VARIABLES}
    if policy is not None:
        name, value = policy.split("=", 1)
        env[name] = value
    out = subprocess.run(
        [sys.executable, "-c", WORKLOAD, str(threads), root, str(n_train), str(epochs)],
        check=True,
        env=env,
        capture_output=True,
        text=True,
    ).stdout.split()
    return float(out[-2]), int(out[-1])


# threads 0 = torch's default (one per core); GOMP_SPINCOUNT: how long libgomp's idle threads spin before they
# sleep (OMP_WAIT_POLICY=PASSIVE: not at all); auto: the CLI without --threads
SETTINGS: dict[str, tuple[int | str, str | None]] = {
    "default": (0, None),
    "passive": (0, "OMP_WAIT_POLICY=PASSIVE"),
    "spin10000": (0, "GOMP_SPINCOUNT=10000"),
    "spin100000": (0, "GOMP_SPINCOUNT=100000"),
    "threads1": (1, None),
    "auto": ("auto", None),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n-train", type=int, default=2048)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--busy", type=int, default=os.cpu_count() or 1, help="background processes when busy")
    parser.add_argument(
        "--idle-repeats",
        type=int,
        default=1,
        help="runs of each setting on idle cores; the row keeps the fastest (on a shared machine the "
        "least disturbed) and lists all",
    )
    parser.add_argument(
        "--settings",
        default=",".join(SETTINGS),
        help=f"comma-separated settings to measure, of {', '.join(SETTINGS)} (default: all)",
    )
    args = parser.parse_args()
    names = [n.strip() for n in args.settings.split(",") if n.strip()]
    unknown = [n for n in names if n not in SETTINGS]
    if unknown or not names:
        parser.error(f"unknown setting {', '.join(unknown) or repr(args.settings)}; valid: {', '.join(SETTINGS)}")
    configs = [SETTINGS[n] for n in names]
    rows = []
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="mmrobust-busy-") as root:
        for load in ("idle", "busy"):
            procs = []
            if load == "busy":
                procs = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(args.busy)]
                time.sleep(2)
            try:
                # (seconds, threads used, 1-minute load before, other runnable tasks before) per setting; repeats
                # go round the settings, so that a burst of foreign load disturbs each setting alike
                runs: list[list[tuple[float, int, float, int | None]]] = [[] for _ in configs]
                for _ in range(max(1, args.idle_repeats) if load == "idle" else 1):
                    for i, (threads, policy) in enumerate(configs):
                        load_1min, others = os.getloadavg()[0], other_runnable()
                        seconds, used = run_once(threads, policy, root, args.n_train, args.epochs)
                        runs[i].append((round(seconds, 2), used, round(load_1min, 2), others))
                for (threads, policy), setting_runs in zip(configs, runs):
                    seconds, used, load_1min, others = min(setting_runs, key=lambda run: run[0])
                    rows.append(
                        {
                            "cores": load,
                            "threads": used,
                            "requested_threads": threads or "default",
                            "openmp_env": policy or "unset",
                            "train_seconds": seconds,
                            "load_1min_before": load_1min,
                            "other_runnable_before": others,
                            **(
                                {
                                    "runs": [
                                        dict(
                                            zip(
                                                (
                                                    "train_seconds",
                                                    "threads",
                                                    "load_1min_before",
                                                    "other_runnable_before",
                                                ),
                                                r,
                                            )
                                        )
                                        for r in setting_runs
                                    ]
                                }
                                if len(setting_runs) > 1
                                else {}
                            ),
                        }
                    )
            finally:
                for p in procs:
                    p.kill()
                    p.wait()
    print(
        json.dumps(
            {
                "benchmark": "busy_cores",
                "workload": f"train jt, synthav n_train={args.n_train}, {args.epochs} epoch(s)",
                "busy_processes": args.busy,
                "rows": rows,
                "date": time.strftime("%Y-%m-%d"),
                "load_average_before": [round(x, 2) for x in load_before],
                "load_average_after": [round(x, 2) for x in os.getloadavg()],
                "cpu_model": cpu_name(),
                "machine": benchmark_machine(),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
