"""Threads on busy cores: the default count without --threads (the idle cores, from the kernel's runnable count
read from a file), the warning for a pinned count, both through the CLI's helper."""

import logging

import pytest
import torch

from mmrobust_bench.bench import busy_cores
from mmrobust_bench.bench.busy_cores import auto_threads, busy_cores_warning, contended, other_runnable
from mmrobust_bench.cli.common import choose_threads


def fake_stat(tmp_path, running: int):
    """/proc/stat as the kernel writes it, with ``running`` runnable tasks (this process among them)."""
    stat = tmp_path / "stat"
    stat.write_text(
        f"cpu  10 0 5 100 0 0 0 0 0 0\nctxt 1234\nbtime 1700000000\nprocesses 99\n"
        f"procs_running {running}\nprocs_blocked 0\n"
    )
    return stat


@pytest.mark.parametrize(
    "threads,cores,others,expected",
    [
        (1, 2, 5, False),  # one thread never waits on a partner
        (2, 2, 0, False),  # idle machine
        (2, 2, 1, True),  # one core taken: a thread shares it
        (2, 4, 2, False),  # two cores left for two threads
        (16, 16, 1, True),
        (4, 16, 12, False),
    ],
)
def test_contended_when_the_threads_cannot_each_have_a_core(threads, cores, others, expected):
    assert contended(threads, cores, others) is expected


def test_other_runnable_is_the_median_of_procs_running_minus_this_process(tmp_path):
    stat = tmp_path / "stat"
    stat.write_text("cpu  1 2 3\nprocs_running 4\nprocs_blocked 0\n")
    assert other_runnable(samples=3, interval=0, stat=stat) == 3
    stat.write_text("cpu  1 2 3\n")
    assert other_runnable(samples=1, stat=stat) is None
    assert other_runnable(samples=1, stat=tmp_path / "absent") is None


@pytest.mark.parametrize(
    "running,cores,ceiling,expected",
    [
        (1, 2, 2, 2),  # idle 2-core machine: torch's own count
        (3, 2, 2, 1),  # beside two busy processes: one thread
        (2, 2, 2, 1),  # one core taken
        (9, 2, 2, 1),  # never fewer than one
        (3, 8, 8, 6),  # 8 cores, 2 busy: the 6 idle ones
        (1, 16, 8, 8),  # never more than torch's own count (OMP_NUM_THREADS, physical cores)
    ],
)
def test_auto_threads_takes_the_idle_cores_read_from_proc_stat(tmp_path, running, cores, ceiling, expected):
    assert auto_threads(ceiling, cores=cores, stat=fake_stat(tmp_path, running)) == expected


def test_auto_threads_keeps_torchs_count_where_the_kernel_says_nothing(tmp_path):
    stat = tmp_path / "stat"
    stat.write_text("cpu  1 2 3\n")  # no procs_running line
    assert auto_threads(4, cores=4, stat=stat) == 4
    assert auto_threads(4, cores=4, stat=tmp_path / "absent") == 4


def test_warning_names_the_remedies_and_stays_quiet_when_they_apply(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    text = busy_cores_warning(2, cores=2, others=2)
    assert "2 other runnable process(es)" in text and "--threads 1" in text and "OMP_WAIT_POLICY=PASSIVE" in text
    assert busy_cores_warning(1, cores=2, others=2) is None
    assert busy_cores_warning(2, cores=2, others=0) is None
    monkeypatch.setenv("OMP_WAIT_POLICY", "passive")
    assert busy_cores_warning(2, cores=2, others=2) is None


@pytest.fixture
def threads_restored():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_the_cli_warns_for_a_pinned_count_on_busy_cores(monkeypatch, caplog, threads_restored):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.setattr(busy_cores, "other_runnable", lambda: 8)
    monkeypatch.setattr(busy_cores, "usable_cores", lambda: 2)
    with caplog.at_level(logging.WARNING, logger="mmrobust_bench.cli"):
        assert choose_threads("cpu", 2) == 2
    assert torch.get_num_threads() == 2 and "8 other runnable" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="mmrobust_bench.cli"):
        assert choose_threads("cpu", 1) == 1
    assert torch.get_num_threads() == 1 and caplog.text == ""


def test_the_cli_takes_the_idle_cores_without_a_count(monkeypatch, caplog, threads_restored):
    from mmrobust_bench.cli import common

    monkeypatch.setattr(common, "_TORCH_THREADS", [2])  # torch's own count on a 2-core machine
    monkeypatch.setattr(busy_cores, "usable_cores", lambda: 2)
    monkeypatch.setattr(busy_cores, "other_runnable", lambda: 2)
    with caplog.at_level(logging.INFO, logger="mmrobust_bench.cli"):
        assert choose_threads("cpu") == 1
    assert torch.get_num_threads() == 1
    assert (
        "2 other runnable process(es) on 2 core(s): using 1 torch thread(s) instead of 2 (--threads N pins a count)"
    ) in caplog.text
    caplog.clear()
    monkeypatch.setattr(busy_cores, "other_runnable", lambda: 0)
    with caplog.at_level(logging.INFO, logger="mmrobust_bench.cli"):
        assert choose_threads("cpu") == 2
    assert torch.get_num_threads() == 2 and caplog.text == ""  # idle: torch's own count, nothing to say


@pytest.mark.slow
def test_a_run_without_threads_records_the_count_it_chose(tmp_path, monkeypatch, threads_restored):
    """Beside busy processes, `run` without --threads trains and evaluates on the idle core and says so in
    every row's threads column."""
    import pandas as pd

    from mmrobust_bench.cli import common, main

    monkeypatch.setattr(common, "_TORCH_THREADS", [2])
    monkeypatch.setattr(busy_cores, "usable_cores", lambda: 2)
    monkeypatch.setattr(busy_cores, "other_runnable", lambda: 3)
    args = [
        "run",
        "--defense",
        "jt",
        "--set",
        "epochs=1",
        "--eps",
        "0.5",
        "--dataset-set",
        "n_train=96",
        "--dataset-set",
        "n_test=32",
        "--device",
        "cpu",
        "--root",
        str(tmp_path),
        "--no-progress",
    ]
    assert main(args) == 0
    assert pd.read_csv(tmp_path / "results.csv")["threads"].tolist() == [1, 1]


@pytest.mark.parametrize("argv,expected", [([], 1), (["--threads", "2"], 2)])
def test_certify_takes_the_idle_cores_or_the_count_given(monkeypatch, threads_restored, argv, expected, capsys):
    """`certify` trains and certifies under the same thread policy as `run`: the idle cores without --threads."""
    from types import SimpleNamespace

    from mmrobust_bench.bench import certification
    from mmrobust_bench.cli import common, main

    monkeypatch.setattr(common, "_TORCH_THREADS", [2])
    monkeypatch.setattr(busy_cores, "usable_cores", lambda: 2)
    monkeypatch.setattr(busy_cores, "other_runnable", lambda: 1)
    seen = []

    def certify_model(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return SimpleNamespace(
            trained=SimpleNamespace(status="reused"), text="", directory="d", certified_path="c", eta_path="e"
        )

    monkeypatch.setattr(certification, "certify_model", certify_model)
    assert main(["certify", "--defense", "jt", "--device", "cpu", *argv]) == 0
    assert seen == [expected]


def test_the_api_warns_once_on_busy_cores_and_leaves_the_thread_count_alone(monkeypatch, caplog, threads_restored):
    """mmr.evaluate on the CPU with 2 torch threads beside busy processes: one warning naming the API's remedy (also
    over a second call), and torch's count is not changed behind the caller's back."""
    from torch.utils.data import DataLoader, TensorDataset

    import mmrobust_bench as mmr

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.setattr(busy_cores, "usable_cores", lambda: 2)
    monkeypatch.setattr(busy_cores, "other_runnable", lambda: 2)
    monkeypatch.setattr(busy_cores, "_API_WARNED", set())
    torch.set_num_threads(2)

    class Sum(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(6, 3)

        def forward(self, a, v):
            return self.linear(a + v)

    wrapped = mmr.wrap(Sum(), modalities={"a": mmr.Modality((6,)), "v": mmr.Modality((6,))}, call="positional")
    gen = torch.Generator().manual_seed(0)
    loader = DataLoader(
        TensorDataset(
            torch.randn(8, 6, generator=gen), torch.randn(8, 6, generator=gen), torch.randint(0, 3, (8,), generator=gen)
        ),
        batch_size=4,
    )
    with caplog.at_level(logging.WARNING, logger="mmrobust_bench.plug"):
        for _ in range(2):
            mmr.evaluate(wrapped, loader, attack="fgm", modality="a", eps=[0.1], device="cpu", check_flags=False)
    warned = [r.getMessage() for r in caplog.records if "other runnable" in r.getMessage()]
    assert len(warned) == 1 and warned[0].startswith("evaluate: 2 other runnable process(es)")
    assert busy_cores.API_REMEDY in warned[0] and "--threads" not in warned[0]
    assert torch.get_num_threads() == 2
    monkeypatch.setattr(busy_cores, "_API_WARNED", set())
    assert busy_cores.api_busy_cores_warning(False, 2) is None  # not on the CPU: nothing to say
    assert busy_cores.api_busy_cores_warning(True, 1) is None  # one thread cannot spin-wait on a partner
