"""torchrun on CPU (gloo, 2 processes) against one process: gradients, sharded evaluation, training, CLI.

Tolerances: gradient sync and data-parallel training differ from one process only by the order of
floating-point sums (gradients 1e-6; MMT weights after two epochs 1e-4); sharded evaluation is exact
(each batch and each seeded attack on it is the one-process batch).
"""

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from mmrobust_bench.bench import distributed
from mmrobust_bench.data import build_dataset
from mmrobust_bench.data.base import shard_slice

REPO = Path(__file__).resolve().parents[1]
WORKER = REPO / "tests" / "distributed_worker.py"


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def _torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *args]


def test_shards_partition_every_batch_in_order():
    idx = torch.arange(7)
    parts = [shard_slice(idx, (r, 2)) for r in range(2)]
    assert parts[0].tolist() == [0, 1, 2, 3] and parts[1].tolist() == [4, 5, 6]
    assert shard_slice(torch.arange(1), (1, 2)).numel() == 0  # a short last batch leaves a rank empty
    with pytest.raises(ValueError, match="rank < world"):
        shard_slice(idx, (2, 2))
    assert [distributed.global_batch_size(20, 96, s) for s in range(6)] == [20, 20, 20, 20, 16, 0]


def test_sharded_batches_reassemble_the_single_process_batches(tmp_path):
    split = build_dataset("synthav", cache_dir=tmp_path, n_train=32, n_test=16).train

    def gen():
        return torch.Generator().manual_seed(5)

    whole = [y for _, y in split.batches(10, shuffle=True, generator=gen())]
    parts = [[y for _, y in split.batches(10, shuffle=True, generator=gen(), shard=(r, 3))] for r in range(3)]
    assert all(len(p) == len(whole) for p in parts)
    for k, y in enumerate(whole):
        assert torch.equal(torch.cat([p[k] for p in parts]), y)


def test_single_process_is_a_no_op():
    d = distributed.current()
    assert (d.rank, d.world_size, d.active, d.main, d.shard) == (0, 1, False, True, None)
    assert distributed.all_sum([1.0, 2.0]) == [1.0, 2.0] and distributed.all_gather(3) == [3]
    with pytest.raises(ValueError, match="SyncBatchNorm"):
        distributed.convert_sync_batchnorm(torch.nn.BatchNorm1d(2), torch.device("cpu"))


@pytest.fixture(scope="module")
def worker_outputs(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, str(WORKER), str(out / "one")], env=_env(), check=True, capture_output=True, timeout=600
    )
    done = subprocess.run(
        _torchrun(str(WORKER), str(out / "two")), env=_env(), capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]

    def load(p):
        return torch.load(p, weights_only=False)

    return load(out / "one" / "single.pt"), load(out / "two" / "rank0.pt"), load(out / "two" / "rank1.pt")


@pytest.mark.slow
def test_gradient_sync_equals_the_global_batch_gradient(worker_outputs):
    single, rank0, rank1 = worker_outputs
    assert rank0["world"] == rank1["world"] == 2
    for g1, g0, gr in zip(single["grads"], rank0["grads"], rank1["grads"]):
        assert torch.equal(g0, gr)  # every rank steps with the same gradient
        torch.testing.assert_close(g0, g1, atol=1e-6, rtol=1e-5)  # = the 7-sample mean despite a 4 + 3 split


@pytest.mark.slow
def test_sharded_evaluation_is_exactly_the_single_process_one(worker_outputs):
    single, rank0, rank1 = worker_outputs
    assert single["clean"] > 30  # a model worth attacking (of 70)
    for key in ("clean", "fgm", "pgd_l2"):
        assert single[key] == rank0[key] == rank1[key]
    assert single["pgd_l2"][-1] < single["clean"]
    assert torch.equal(single["norms"], rank0["norms"]) and torch.equal(rank0["norms"], rank1["norms"])
    assert torch.isfinite(single["norms"]).any() and (single["norms"] > 0).any()


@pytest.mark.slow
def test_data_parallel_training_keeps_ranks_identical_and_matches_one_process(worker_outputs):
    single, rank0, rank1 = worker_outputs
    # BatchNorm model (JT): per-process batch statistics, so close to one process but not equal; ranks agree
    for k in rank0["local_state"]:
        assert torch.equal(rank0["local_state"][k], rank1["local_state"][k]), k
    assert rank0["sha256"] == rank1["sha256"] != single["sha256"]
    # no BatchNorm, no dropout (MMT): two processes train what one process trains, up to summation order
    for k, v in single["mmt_state"].items():
        torch.testing.assert_close(rank0["mmt_state"][k], v, atol=1e-4, rtol=1e-4, msg=k)
        assert torch.equal(rank0["mmt_state"][k], rank1["mmt_state"][k])


@pytest.mark.slow
def test_torchrun_cli_run_writes_one_set_of_rows(tmp_path):
    common = [
        "run",
        "--defense",
        "jt",
        "--attack",
        "pgd_l2",
        "--modality",
        "a",
        "--eps",
        "0.5,1",
        "--set",
        "epochs=1",
        "--dataset-set",
        "n_train=128",
        "--dataset-set",
        "n_test=50",
        "--batch-size",
        "16",
        "--device",
        "cpu",
        "--no-progress",
        "--root",
        str(tmp_path),
    ]
    done = subprocess.run(
        _torchrun("-m", "mmrobust_bench.cli", *common), env=_env(), capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("checkpoint:") == 1  # only rank 0 prints
    rows = pd.read_csv(tmp_path / "results.csv")
    assert list(rows["attack"]) == ["clean", "pgd_l2", "pgd_l2"] and set(rows["n"]) == {50}
    config = (next((tmp_path / "checkpoints" / "synthav" / "jt").iterdir()) / "config.json").read_text()
    assert '"world_size": 2' in config


@pytest.mark.slow
def test_torchrun_sweep_writes_each_cell_once_and_resumes(tmp_path):
    args = [
        "-m",
        "mmrobust_bench.cli",
        "sweep",
        "--defenses",
        "jt",
        "--seeds",
        "0",
        "--attacks",
        "fgm,missing",
        "--modalities",
        "a",
        "--eps",
        "0.5,1",
        "--set",
        "epochs=1",
        "--dataset-set",
        "n_train=96",
        "--dataset-set",
        "n_test=40",
        "--batch-size",
        "16",
        "--device",
        "cpu",
        "--no-progress",
        "--root",
        str(tmp_path),
    ]
    first = subprocess.run(_torchrun(*args), env=_env(), capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "1 models, 4 rows evaluated" in first.stdout and first.stdout.count("sweep:") == 1
    rows = pd.read_csv(tmp_path / "results.csv")
    assert len(rows) == 4 and set(rows["n"]) == {40}
    again = subprocess.run(_torchrun(*args), env=_env(), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "0 rows evaluated, 4 already present" in again.stdout
    assert len(pd.read_csv(tmp_path / "results.csv")) == 4
