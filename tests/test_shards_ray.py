"""Sweeps fanned out: deterministic shards against one root (also killed mid-cell), one trainer per checkpoint,
and Ray workers, all giving exactly the rows of one sequential run."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from mmrobust_bench.bench.results import CELL_COLUMNS, read_rows
from mmrobust_bench.bench.sweep import DefenseEntry, build_plan, parse_shard, run_sweep
from mmrobust_bench.bench.sweep_plan import shard_units

REPO = Path(__file__).resolve().parents[1]

SWEEP = {
    "dataset": "synthav",
    "dataset_set": {"n_train": 128, "n_test": 32},
    "seeds": [0, 1],
    "threads": 1,
    "set": {"epochs": 1, "batch_size": 32},
    "batch_size": 32,
    "defenses": ["jt", {"defense": "jt", "label": "jt_lr002", "set": {"lr": 0.02}}],
    "grid": [
        {"attacks": ["fgm"], "modalities": ["v", "a"], "eps": [0.5, 1.0]},
        {"attacks": ["pgd_l2"], "modalities": ["v", "a"], "eps": [0.5, 1.0], "attack_set": {"steps": 10}},
        {"attacks": ["missing"], "modalities": ["v"]},
    ],
}
ROWS_PER_UNIT = 1 + 2 * 2 * 2 + 1


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "mmrobust_bench.cli", "-q", *args]


def _as_set(frame: pd.DataFrame) -> set:
    frame = frame.drop(columns=["wall_seconds", "timestamp"])
    return set(frame[sorted(frame.columns)].astype(str).itertuples(index=False, name=None))


def _reference(tmp_path: Path) -> pd.DataFrame:
    root = tmp_path / "sequential"
    run_sweep(build_plan(SWEEP), root=root, progress=False)
    return read_rows(root / "results.csv")


def test_shards_partition_units_deterministically_and_evenly():
    entries = [DefenseEntry(f"d{i}", f"d{i}") for i in range(7)]
    units = [(e, s) for e in entries for s in (0, 1, 2)]
    for count in (1, 2, 3, 4, 5):
        parts = [shard_units(units, i, count) for i in range(count)]
        flat = [(e.label, s) for part in parts for e, s in part]
        assert sorted(flat) == sorted((e.label, s) for e, s in units)  # every unit in exactly one shard
        assert max(map(len, parts)) - min(map(len, parts)) <= 1  # dealt evenly
        assert parts == [shard_units(list(reversed(units)), i, count)[::-1] for i in range(count)]  # order-free
    # the assignment is a pure function of the units (processes agree without talking)
    code = (
        "from mmrobust_bench.bench.sweep import DefenseEntry; from mmrobust_bench.bench.sweep_plan import shard_units; "
        "u=[(DefenseEntry(f'd{i}', f'd{i}'), s) for i in range(7) for s in (0, 1, 2)]; "
        "print([(e.label, s) for e, s in shard_units(u, 1, 3)])"
    )
    other = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**_env(), "PYTHONHASHSEED": "123"},
    ).stdout.strip()
    assert other == str([(e.label, s) for e, s in shard_units(units, 1, 3)])
    assert parse_shard("0/4") == (0, 4) and parse_shard(None) is None
    for bad in ("4/4", "-1/2", "1", "a/b", "0/0"):
        with pytest.raises(ValueError, match="--shard"):
            parse_shard(bad)


@pytest.mark.slow
def test_two_shards_on_one_root_killed_mid_cell_then_rerun_give_the_rows_of_one_run(tmp_path):
    config = tmp_path / "sweep.yaml"
    config.write_text(yaml.safe_dump(SWEEP))
    root = tmp_path / "sharded"
    results = root / "results.csv"
    plan = build_plan(SWEEP)
    first = {(e.label, s) for e, s in plan.work_units((0, 2))}
    assert first and first != {(e.label, s) for e, s in plan.work_units()}

    def shard(i):
        return _cli("sweep", "--config", str(config), "--root", str(root), "--shard", f"{i}/2", "--no-progress")

    victim = subprocess.Popen(shard(0), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    other = subprocess.Popen(shard(1), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline and victim.poll() is None:
        if results.exists():
            rows = pd.read_csv(results)
            if set(zip(rows["label"], rows["seed"])) & first:
                break
        time.sleep(0.05)
    assert victim.poll() is None, f"shard 0 ended before it could be killed: {victim.stderr.read().decode()[-2000:]}"
    os.kill(victim.pid, signal.SIGKILL)  # between two cells' appends at worst, holding a lock at worst
    assert victim.wait() == -signal.SIGKILL
    _out, err = other.communicate(timeout=900)
    assert other.returncode == 0, err.decode()[-2000:]
    partial = read_rows(results)
    assert 1 <= len(partial) < 4 * ROWS_PER_UNIT

    rerun = subprocess.run(shard(0), env=_env(), capture_output=True, text=True, timeout=900)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    sharded = read_rows(results)
    assert len(sharded) == 4 * ROWS_PER_UNIT and not sharded.duplicated(list(CELL_COLUMNS)).any()
    assert _as_set(partial) <= _as_set(sharded)  # rows written before the kill were kept as they were
    reference = _reference(tmp_path)
    assert _as_set(sharded) == _as_set(reference)  # exactly the rows of one unsharded run
    # a further run of either shard finds nothing to do
    again = subprocess.run(shard(1), env=_env(), capture_output=True, text=True, check=True, timeout=900).stdout
    assert "0 rows evaluated" in again and len(read_rows(results)) == len(sharded)


_TRAIN = """
import json, sys
from mmrobust_bench.bench.api import train_defense
t = train_defense("jt", seed=0, overrides={"epochs": 1, "batch_size": 32}, root=sys.argv[1], progress=False,
                  dataset_options={"n_train": 128, "n_test": 32})
print(json.dumps({"cached": t.cached, "sha": t.sha256}))
"""


@pytest.mark.slow
def test_two_processes_never_train_one_checkpoint_twice(tmp_path):
    from mmrobust_bench.data import build_dataset

    build_dataset("synthav", cache_dir=tmp_path / "datasets", n_train=128, n_test=32)  # cached before the race
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _TRAIN, str(tmp_path)],
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outs = []
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-2000:]
        outs.append(json.loads(out.strip().splitlines()[-1]))
    assert sorted(o["cached"] for o in outs) == [False, True]  # one trained, the other waited and loaded it
    assert outs[0]["sha"] == outs[1]["sha"]


@pytest.mark.slow
def test_ray_workers_give_the_rows_of_the_sequential_sweep(tmp_path):
    pytest.importorskip("ray")
    config = tmp_path / "sweep.yaml"
    config.write_text(yaml.safe_dump(SWEEP))
    root = tmp_path / "ray"
    done = subprocess.run(
        _cli(
            "sweep",
            "--config",
            str(config),
            "--root",
            str(root),
            "--executor",
            "ray",
            "--workers",
            "2",
            "--no-progress",
        ),
        env=_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"4 models, {4 * ROWS_PER_UNIT} rows evaluated" in done.stdout
    rows = read_rows(root / "results.csv")
    assert not rows.duplicated(list(CELL_COLUMNS)).any()
    assert set(rows["threads"]) == {1}  # each worker set its own thread count
    assert _as_set(rows) == _as_set(_reference(tmp_path))
    # resumable like the local executor: nothing left to do
    again = subprocess.run(
        _cli(
            "sweep",
            "--config",
            str(config),
            "--root",
            str(root),
            "--executor",
            "ray",
            "--workers",
            "2",
            "--no-progress",
        ),
        env=_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert again.returncode == 0 and "0 rows evaluated" in again.stdout, again.stderr[-3000:]


def test_executor_options_are_checked(tmp_path):
    plan = build_plan({"defenses": ["jt"], "dataset_set": {"n_train": 64, "n_test": 16}})
    with pytest.raises(ValueError, match="unknown executor 'dask'; valid: local, ray"):
        run_sweep(plan, root=tmp_path, executor="dask", progress=False)
    with pytest.raises(ValueError, match="apply to --executor ray"):
        run_sweep(plan, root=tmp_path, workers=2, progress=False)


@pytest.mark.slow
def test_regenerate_script_runs_one_sweep_per_unit_first_labels_first(tmp_path):
    """scripts/regenerate.sh (a leaderboard's regeneration on N cores) gives exactly the rows of one sweep."""
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(SWEEP))
    root = tmp_path / "regenerated"
    # paths relative to where it is run from, as a user types them
    script = [str(REPO / "scripts" / "regenerate.sh"), "sweep.yaml", "regenerated", "2"]
    env = {**_env(), "PYTHON": sys.executable, "FIRST": "jt_lr002"}

    def regenerate(*extra: str, **changes: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["bash", *script, *extra], env={**env, **changes}, cwd=tmp_path, capture_output=True, text=True, timeout=900
        )

    done = regenerate()
    assert done.returncode == 0, done.stderr
    queue = (root / "logs" / "queue.txt").read_text().split("\n")
    assert queue[:4] == ["jt_lr002 0", "jt_lr002 1", "jt 0", "jt 1"]  # the $FIRST labels first, then YAML order
    finished = sorted(done.stdout.split("\n")[1:-1])
    assert finished == sorted(f"done   {line.replace(' ', ' seed ')}" for line in queue[:4])
    rows = read_rows(root / "results.csv")
    assert _as_set(rows) == _as_set(_reference(tmp_path))  # one process per unit: the rows of one sweep
    log_text = (root / "logs" / "jt-s1.log").read_text()
    assert "sweep: step 1/" in log_text and ", done" in log_text  # the log shows each cell as it finishes
    # a rerun finds nothing to do
    assert regenerate().returncode == 0
    done = [line for line in (root / "logs" / "jt-s1.log").read_text().split("\n") if "rows evaluated" in line]
    assert len(done) == 2 and "0 rows evaluated" in done[-1]
    # extra arguments reach every unit's sweep; units that fail are named and the script fails
    failed = regenerate("--batch-size", "0")
    assert failed.returncode == 1 and failed.stdout.count("FAILED") == 4 and "logs/jt-s1.log" in failed.stdout
    assert "some units failed" in failed.stderr
    assert "batch size must be >= 1" in (root / "logs" / "jt-s1.log").read_text()
    assert len(read_rows(root / "results.csv")) == len(rows)
    # bad input: one line naming the fix, nothing run
    for extra, changes, message in (
        ((), {"FIRST": "jt, nosuch"}, "FIRST names nosuch, not an entry"),
        (("--seeds", "0"), {}, "--seeds would change which units each process runs"),
        (("--shard=0/2",), {}, "--shard=0/2 would change"),
    ):
        bad = regenerate(*extra, **changes)
        assert bad.returncode == 2 and message in bad.stderr and not bad.stdout
    for jobs in ("0", "two"):
        bad = subprocess.run(["bash", script[0], "sweep.yaml", "x", jobs], cwd=tmp_path, capture_output=True, text=True)
        assert bad.returncode == 2 and "JOBS must be a whole number >= 1" in bad.stderr
    bad = subprocess.run(["bash", script[0], "no.yaml", "x", "2"], cwd=tmp_path, capture_output=True, text=True)
    assert bad.returncode == 2 and "no sweep YAML at no.yaml" in bad.stderr
    labels = {**SWEEP, "defenses": [{"defense": "jt", "label": "jt v2"}]}
    (tmp_path / "spaced.yaml").write_text(yaml.safe_dump(labels))
    bad = subprocess.run(
        ["bash", script[0], "spaced.yaml", "x", "1"], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert bad.returncode == 2 and "label(s) 'jt v2' cannot name a log file" in bad.stderr
