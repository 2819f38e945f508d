"""Wall time of the README's first command on a fresh clone, on an idle machine and beside busy processes.

Prints one JSON object (and writes it to ``--out`` when given). Usage::

    python benchmarks/readme_first_command.py --busy 0 --busy 2 --out benchmarks/results/readme_first_command.json

For each ``--busy N`` it clones the repository (``--repo``, default: this checkout's committed HEAD) into a fresh
temporary folder, starts N busy processes (pure-Python spin loops, one core each), runs the README's first line
(``bash scripts/install.sh && .venv/bin/mmrobust-bench run --defense crmt_at --attack pgd_l2 --modality a``)
and times the install and the main job separately. pip's download cache is shared between runs, as it is for a
user who installs twice. Run it on an otherwise idle machine: the other load is recorded (``load_before``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mmrobust_bench.bench.environment import benchmark_machine

INSTALL = ["bash", "scripts/install.sh"]
MAIN_JOB = [".venv/bin/mmrobust-bench", "run", "--defense", "crmt_at", "--attack", "pgd_l2", "--modality", "a"]
SPIN = "while True: pass"


def timed(cmd: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def measure(repo: str, busy: int) -> dict:
    spinners = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(busy)]
    try:
        with tempfile.TemporaryDirectory(prefix="mmrobust-readme-") as tmp:
            clone = Path(tmp) / "mmrobust-bench"
            subprocess.run(["git", "clone", "-q", repo, str(clone)], check=True)
            load = os.getloadavg()
            install = timed(INSTALL, clone)
            main_job = timed(MAIN_JOB, clone)
    finally:
        for s in spinners:
            s.kill()
            s.wait()
    return {
        "busy_processes": busy,
        "install_seconds": round(install, 1),
        "main_job_seconds": round(main_job, 1),
        "total_seconds": round(install + main_job, 1),
        "load_before": [round(x, 2) for x in load],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", default=str(Path(__file__).resolve().parents[1]))
    parser.add_argument("--busy", type=int, action="append", help="busy processes beside the command (repeatable)")
    parser.add_argument("--out")
    args = parser.parse_args()
    rows = [measure(args.repo, n) for n in (args.busy or [0, 2])]
    idle = next((r for r in rows if r["busy_processes"] == 0), None)
    if idle is not None:
        for r in rows:
            r["total_vs_idle"] = round(r["total_seconds"] / idle["total_seconds"], 2)
            r["main_job_vs_idle"] = round(r["main_job_seconds"] / idle["main_job_seconds"], 2)
    out = {
        "benchmark": "readme_first_command",
        "command": " ".join(INSTALL) + " && " + " ".join(MAIN_JOB),
        "machine": benchmark_machine(),
        "rows": rows,
    }
    text = json.dumps(out, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
