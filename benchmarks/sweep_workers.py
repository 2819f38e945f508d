"""Wall time of a small sweep on 1 worker and on 2 (two ``--shard I/2`` processes at once, and Ray with 2 workers).

Prints one JSON object. Usage: ``python benchmarks/sweep_workers.py [--seeds 4] [--modes 1,shards,ray]``.
Every mode runs the real console script from a fresh root (the synthav cache is generated once beforehand
and copied in, so only training and evaluation are timed) with the sweep's thread count pinned to 1 per
worker; the rows of every mode are checked to be identical to the 1-worker run's.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

from mmrobust_bench.bench.environment import benchmark_machine


def sweep_config(seeds: int, n_train: int, n_test: int) -> dict:
    return {
        "dataset": "synthav",
        "dataset_set": {"n_train": n_train, "n_test": n_test},
        "seeds": list(range(seeds)),
        "threads": 1,
        "set": {"epochs": 1},
        "batch_size": 250,
        "defenses": ["jt"],
        "grid": [{"attacks": ["pgd_l2"], "modalities": ["a", "v"], "eps": [0.5, 1.0]}],
    }


def rows(path: Path) -> set:
    frame = pd.read_csv(path).drop(columns=["wall_seconds", "timestamp"])
    return set(frame[sorted(frame.columns)].astype(str).itertuples(index=False, name=None))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=4, help="(jt, seed) units of the sweep")
    parser.add_argument("--n-train", type=int, default=512)
    parser.add_argument("--n-test", type=int, default=256)
    parser.add_argument("--modes", default="1,shards,ray", help="comma list of 1, shards, ray")
    parser.add_argument("--note", default="", help="a remark stored in the JSON (e.g. what else ran on the machine)")
    args = parser.parse_args()
    exe = shutil.which("mmrobust-bench") or str(Path(sys.executable).with_name("mmrobust-bench"))
    work = Path(tempfile.mkdtemp(prefix="mmrobust-sweep-workers-"))
    config = work / "sweep.yaml"
    config.write_text(yaml.safe_dump(sweep_config(args.seeds, args.n_train, args.n_test)))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    base = [exe, "-q", "sweep", "--config", str(config), "--no-progress"]
    template = work / "template"
    from mmrobust_bench.data import build_dataset

    build_dataset("synthav", cache_dir=template / "datasets", n_train=args.n_train, n_test=args.n_test)
    load_before = os.getloadavg()
    seconds: dict[str, float] = {}
    same: dict[str, bool] = {}
    try:
        for mode in [m.strip() for m in args.modes.split(",") if m.strip()]:
            root = work / mode
            shutil.copytree(template, root)
            start = time.perf_counter()
            if mode == "1":
                subprocess.run(base + ["--root", str(root)], check=True, env=env, stdout=subprocess.DEVNULL)
            elif mode == "shards":
                procs = [
                    subprocess.Popen(
                        base + ["--root", str(root), "--shard", f"{i}/2"], env=env, stdout=subprocess.DEVNULL
                    )
                    for i in range(2)
                ]
                if any(p.wait() != 0 for p in procs):
                    raise SystemExit("a shard failed")
            elif mode == "ray":
                subprocess.run(
                    base + ["--root", str(root), "--executor", "ray", "--workers", "2"],
                    check=True,
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            else:
                raise SystemExit(f"unknown mode {mode!r}; valid: 1, shards, ray")
            seconds[mode] = round(time.perf_counter() - start, 2)
            if "1" in seconds and mode != "1":
                same[mode] = rows(root / "results.csv") == rows(work / "1" / "results.csv")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out = {
        "benchmark": "sweep_workers",
        **({"note": args.note} if args.note else {}),
        "sweep": sweep_config(args.seeds, args.n_train, args.n_test),
        "wall_seconds": seconds,
        "speedup_vs_1_worker": {
            m: round(seconds["1"] / s, 2) for m, s in seconds.items() if m != "1" and "1" in seconds
        },
        "rows_identical_to_1_worker": same,
        "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
        "machine": benchmark_machine(),
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
