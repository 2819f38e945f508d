"""Wall time of the main job, cold (fresh root: generate synthav, train, attack) and cached.

Prints one JSON object. Usage: ``python benchmarks/main_job.py [--defense crmt_at] [--attack pgd_l2]``.
Runs the real console script in subprocesses so imports and start-up are counted.
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

from mmrobust_bench.bench.environment import benchmark_machine


def timed(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--defense", default="crmt_at")
    parser.add_argument("--attack", default="pgd_l2")
    parser.add_argument("--modality", default="a")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="mmrobust-bench-"))
    exe = shutil.which("mmrobust-bench") or str(Path(sys.executable).with_name("mmrobust-bench"))
    cmd = [
        exe,
        "run",
        "--defense",
        args.defense,
        "--attack",
        args.attack,
        "--modality",
        args.modality,
        "--root",
        str(root),
        "--no-progress",
    ]
    env = dict(os.environ)
    load_before = os.getloadavg()
    try:
        cold = timed(cmd, env)
        cached = timed(cmd, env)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(
        json.dumps(
            {
                "benchmark": "main_job",
                "command": " ".join(["mmrobust-bench"] + cmd[1:-3] + ["--no-progress"]),
                "cold_seconds": round(cold, 2),
                "cached_seconds": round(cached, 2),
                "date": time.strftime("%Y-%m-%d"),
                "load_average_before": [round(x, 2) for x in load_before],
                "load_average_after": [round(x, 2) for x in os.getloadavg()],
                "machine": benchmark_machine(),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
