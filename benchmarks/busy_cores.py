"""Wall time of one fixed training run on idle and on busy cores, by intra-op threads and OpenMP wait policy.

Why: on the 2-core machine the main job took 15 min instead of ~40 s while two 1-thread sweep processes kept
both cores busy (torch's default of one intra-op thread per core: OpenMP threads spin-wait for a partner that
is not scheduled). This measures the effect and the candidate remedies (``--threads 1``, ``OMP_WAIT_POLICY=
PASSIVE``) so any change of the CLI's defaults rests on numbers.

Each configuration runs in a fresh Python process (the wait policy is read when OpenMP starts): it trains JT
for ``--epochs`` on a small synthav and reports the wall time of the training alone. "busy" starts
``--busy`` background processes (default: one per core) that each run 1-thread float32 matmuls, like sweep
shards. Prints one JSON object. Usage: ``python benchmarks/busy_cores.py [--n-train 2048] [--epochs 3]``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import torch

WORKLOAD = r"""
import sys, time, torch
threads = int(sys.argv[1])
if threads > 0:
    torch.set_num_threads(threads)
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


def run_once(threads: int, policy: str | None, root: str, n_train: int, epochs: int) -> tuple[float, int]:
    """``policy``: None (OpenMP's default), or ``NAME=VALUE`` of one OpenMP variable."""
    env = {k: v for k, v in os.environ.items() if k not in OPENMP_VARIABLES}
    if policy is not None:
        name, value = policy.split("=", 1)
        env[name] = value
    out = subprocess.run([sys.executable, "-c", WORKLOAD, str(threads), root, str(n_train), str(epochs)],
                         check=True, env=env, capture_output=True, text=True).stdout.split()
    return float(out[-2]), int(out[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n-train", type=int, default=2048)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--busy", type=int, default=os.cpu_count() or 1, help="background processes when busy")
    args = parser.parse_args()
    # threads 0 = torch's default (one per core); GOMP_SPINCOUNT: how long libgomp's idle threads spin before
    # they sleep (OMP_WAIT_POLICY=PASSIVE: not at all)
    configs = [(0, None), (0, "OMP_WAIT_POLICY=PASSIVE"), (0, "GOMP_SPINCOUNT=10000"), (0, "GOMP_SPINCOUNT=100000"),
               (1, None)]
    rows = []
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="mmrobust-busy-") as root:
        for load in ("idle", "busy"):
            procs = []
            if load == "busy":
                procs = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(args.busy)]
                time.sleep(2)
            try:
                for threads, policy in configs:
                    seconds, used = run_once(threads, policy, root, args.n_train, args.epochs)
                    rows.append({"cores": load, "threads": used, "requested_threads": threads or "default",
                                 "openmp_env": policy or "unset", "train_seconds": round(seconds, 2)})
            finally:
                for p in procs:
                    p.kill()
                    p.wait()
    print(json.dumps({
        "benchmark": "busy_cores", "workload": f"train jt, synthav n_train={args.n_train}, {args.epochs} epoch(s)",
        "busy_processes": args.busy, "rows": rows, "date": time.strftime("%Y-%m-%d"),
        "load_average_before": [round(x, 2) for x in load_before], "cpu_count": os.cpu_count(),
        "torch": torch.__version__, "python": platform.python_version(), "machine": platform.machine(),
    }, indent=2))


if __name__ == "__main__":
    main()
