"""Progress where stderr is not a terminal: one log line per step (epoch, sweep step, certification chunk) with
the time spent and an estimate of the time left, and none on a terminal (the bar is drawn there) or when
progress is off."""

from __future__ import annotations

import io
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mmrobust_bench import progress
from mmrobust_bench.progress import StepLog, duration, progress_bar

ROOT = Path(__file__).resolve().parents[1]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class Clock:
    """A hand-moved clock: each step's elapsed time is exact."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def progress_on():
    progress.set_enabled(True)
    yield
    progress.set_enabled(True)


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "mmrobust_bench.progress"]


@pytest.mark.parametrize(
    "seconds,text", [(0.04, "0.0 s"), (8.14, "8.1 s"), (59.94, "59.9 s"), (185, "3 min 05 s"), (7440, "2 h 04 min")]
)
def test_duration_is_short_and_unambiguous(seconds, text):
    assert duration(seconds) == text


def test_step_lines_have_elapsed_time_and_an_eta_from_the_steps_done_here(caplog):
    clock = Clock()
    steps = StepLog("train jt", 10, unit="epoch", done=2, stream=io.StringIO(), clock=clock)  # 2 resumed epochs
    with caplog.at_level(logging.INFO, logger="mmrobust_bench.progress"):
        clock.now += 4.0
        steps.step(detail="loss 0.693")
        clock.now += 4.0
        steps.step(detail="loss 0.512")
        clock.now += 32.5
        steps.step(6)
    assert messages(caplog) == [
        "train jt: epoch 3/10 (loss 0.693), elapsed 4.0 s, ETA 28.0 s",  # 7 epochs left at 4 s each
        "train jt: epoch 4/10 (loss 0.512), elapsed 8.0 s, ETA 24.0 s",
        "train jt: epoch 10/10, elapsed 40.5 s, done",
    ]


def test_every_throttles_the_lines_to_one_per_interval(caplog):
    """Steps of a few seconds with ``every=60``: a line once a minute has passed since the last one, with its ETA;
    a loop shorter than a minute logs nothing."""
    clock = Clock()
    steps = StepLog("attack pgd_l2 on a", 6, unit="batch", stream=io.StringIO(), clock=clock, every=60)
    with caplog.at_level(logging.INFO, logger="mmrobust_bench.progress"):
        for _ in range(6):
            clock.now += 25.0
            steps.step()
        short = StepLog("attack fgm on a", 3, unit="batch", stream=io.StringIO(), clock=clock, every=60)
        for _ in range(3):
            clock.now += 1.0
            short.step()
    assert messages(caplog) == [
        "attack pgd_l2 on a: batch 3/6, elapsed 1 min 15 s, ETA 1 min 15 s",  # 75 s since the start
        "attack pgd_l2 on a: batch 6/6, elapsed 2 min 30 s, done",  # 75 s since the last line
    ]


def test_a_long_attack_cell_logs_its_progress_where_no_bar_is_drawn(caplog, monkeypatch):
    """robust_accuracy on a log file: a line per batch when each takes longer than ATTACK_LOG_SECONDS (0 here)."""
    import torch

    from mmrobust_bench.attacks import build_attack
    from mmrobust_bench.bench import evaluate
    from mmrobust_bench.contracts import ModalitySpec, ThreatModel

    monkeypatch.setattr(evaluate, "ATTACK_LOG_SECONDS", 0.0)
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # a log file, not a terminal
    specs = [ModalitySpec("a", (4,)), ModalitySpec("v", (4,))]

    class Sum(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(4, 3)

        def forward(self, batch):
            from mmrobust_bench.contracts import ModelOutput

            return ModelOutput(logits=self.linear(batch["a"] + batch["v"]))

    from mmrobust_bench.data.base import TensorSplit

    gen = torch.Generator().manual_seed(0)
    split = TensorSplit(
        {"a": torch.randn(15, 4, generator=gen), "v": torch.randn(15, 4, generator=gen)}, torch.arange(15) % 3
    )
    threat = ThreatModel.parse("a", 0.5, specs)
    with caplog.at_level(logging.INFO, logger="mmrobust_bench.progress"):
        evaluate.robust_accuracy(
            Sum(), split, build_attack("fgm", specs), threat, [0.5], 5, torch.device("cpu"), progress=True
        )
    lines = [re.sub(r"elapsed [^,]+(, ETA [^,]+)?", "elapsed T", m) for m in messages(caplog)]
    assert lines == [f"attack fgm on a: batch {i}/3, elapsed T" for i in (1, 2)] + [
        "attack fgm on a: batch 3/3, elapsed T, done"
    ]


def test_no_step_lines_on_a_terminal_or_with_progress_off(caplog):
    with caplog.at_level(logging.INFO, logger="mmrobust_bench.progress"):
        StepLog("a", 2, stream=Terminal()).step()  # the bar is drawn there
        StepLog("b", 2, enabled=False, stream=io.StringIO()).step()  # the caller asked for no progress
        progress.set_enabled(False)  # -q / --no-progress
        StepLog("c", 2, stream=io.StringIO()).step()
    assert messages(caplog) == []


def test_a_bar_with_log_steps_logs_each_update_and_each_item_where_it_is_not_drawn(caplog):
    log_file = io.StringIO()
    with caplog.at_level(logging.INFO, logger="mmrobust_bench.progress"):
        bar = progress_bar(total=3, desc="sweep", log_steps="step", file=log_file)
        bar.set_postfix_str("jt seed 0: clean")
        bar.update(1)
        bar.set_postfix_str("jt seed 0: pgd_l2 on a")
        bar.update(2)
        bar.close()
        assert list(progress_bar(["x", "y"], desc="certify: radii", log_steps="bound", file=log_file)) == ["x", "y"]
    lines = [re.sub(r"elapsed [^,]+(, ETA [^,]+)?", "elapsed T", m) for m in messages(caplog)]
    assert lines == [
        "sweep: step 1/3 (jt seed 0: clean), elapsed T",
        "sweep: step 3/3 (jt seed 0: pgd_l2 on a), elapsed T, done",
        "certify: radii: bound 1/2, elapsed T",
        "certify: radii: bound 2/2, elapsed T, done",
    ]
    assert "ETA" in messages(caplog)[0] and log_file.getvalue() == ""  # no bar drawn into the log file


def test_a_bar_on_a_terminal_draws_and_logs_nothing(caplog):
    tty = Terminal()
    with caplog.at_level(logging.INFO, logger="mmrobust_bench.progress"):
        bar = progress_bar(total=2, desc="sweep", log_steps="step", file=tty)
        bar.update(2)
        bar.close()
    assert messages(caplog) == [] and "2/2" in tty.getvalue()


@pytest.mark.slow
def test_a_training_logged_to_a_file_shows_one_line_per_epoch(tmp_path):
    """The CLI with stderr redirected (a pipe, not a terminal): each epoch of a tiny training is one INFO line
    with its loss, the time so far and, before the last, the time left; no bar redraws."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    env.pop("RANK", None)
    cmd = [
        sys.executable,
        "-m",
        "mmrobust_bench.cli",
        "run",
        "--defense",
        "jt",
        "--set",
        "epochs=2",
        "--eps",
        "0.5",
        "--dataset-set",
        "n_train=300",
        "--dataset-set",
        "n_test=60",
        "--root",
        str(tmp_path),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    epochs = [line for line in done.stderr.splitlines() if "train jt: epoch" in line]
    assert len(epochs) == 2, done.stderr
    assert re.fullmatch(
        r"INFO mmrobust_bench\.progress: train jt: epoch 1/2 \(loss \d+\.\d{3}\), "
        r"elapsed \d+\.\d s, ETA \d+\.\d s",
        epochs[0],
    ), epochs[0]
    assert re.fullmatch(
        r"INFO mmrobust_bench\.progress: train jt: epoch 2/2 \(loss \d+\.\d{3}\), "
        r"elapsed \d+\.\d s, done",
        epochs[1],
    ), epochs[1]
    assert "\r" not in done.stderr
