"""The busy-cores warning: exact rules on given counts, the kernel's runnable count read from a file."""
import logging

import pytest
import torch

from mmrobust_bench.bench import busy_cores
from mmrobust_bench.bench.busy_cores import busy_cores_warning, contended, other_runnable
from mmrobust_bench.cli.common import warn_busy_cores


@pytest.mark.parametrize("threads,cores,others,expected", [
    (1, 2, 5, False),   # one thread never waits on a partner
    (2, 2, 0, False),   # idle machine
    (2, 2, 1, True),    # one core taken: a thread shares it
    (2, 4, 2, False),   # two cores left for two threads
    (16, 16, 1, True),
    (4, 16, 12, False),
])
def test_contended_when_the_threads_cannot_each_have_a_core(threads, cores, others, expected):
    assert contended(threads, cores, others) is expected


def test_other_runnable_is_the_median_of_procs_running_minus_this_process(tmp_path):
    stat = tmp_path / "stat"
    stat.write_text("cpu  1 2 3\nprocs_running 4\nprocs_blocked 0\n")
    assert other_runnable(samples=3, interval=0, stat=stat) == 3
    stat.write_text("cpu  1 2 3\n")
    assert other_runnable(samples=1, stat=stat) is None
    assert other_runnable(samples=1, stat=tmp_path / "absent") is None


def test_warning_names_the_remedies_and_stays_quiet_when_they_apply(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    text = busy_cores_warning(2, cores=2, others=2)
    assert "2 other runnable process(es)" in text and "--threads 1" in text and "OMP_WAIT_POLICY=PASSIVE" in text
    assert busy_cores_warning(1, cores=2, others=2) is None
    assert busy_cores_warning(2, cores=2, others=0) is None
    monkeypatch.setenv("OMP_WAIT_POLICY", "passive")
    assert busy_cores_warning(2, cores=2, others=2) is None


def test_the_cli_logs_it_for_cpu_runs(monkeypatch, caplog):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.setattr(busy_cores, "other_runnable", lambda: 8)
    monkeypatch.setattr(busy_cores, "usable_cores", lambda: 2)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        with caplog.at_level(logging.WARNING, logger="mmrobust_bench.cli"):
            warn_busy_cores("cpu")
        assert "8 other runnable" in caplog.text
        caplog.clear()
        torch.set_num_threads(1)
        with caplog.at_level(logging.WARNING, logger="mmrobust_bench.cli"):
            warn_busy_cores("cpu")
        assert caplog.text == ""
    finally:
        torch.set_num_threads(before)
