"""`mmrobust-bench list | head`: when the reader of stdout goes away the command stops quietly (exit 141, as a
process ended by SIGPIPE), instead of reporting "error: Broken pipe (check the path and free space)"."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

from mmrobust_bench.cli import main

ROOT = Path(__file__).resolve().parents[1]


class ClosedPipe(io.StringIO):
    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")

    def flush(self) -> None:
        raise BrokenPipeError(32, "Broken pipe")


def test_main_returns_141_without_an_error_line_when_stdout_is_gone(monkeypatch, capsys):
    capsys.readouterr()
    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    assert main(["list", "pgd"]) == 141
    assert capsys.readouterr().err == ""


def test_a_real_process_writing_into_a_closed_pipe_prints_nothing_on_stderr():
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first byte is written: every write fails with EPIPE
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    try:
        done = subprocess.run(
            [sys.executable, "-m", "mmrobust_bench.cli", "list", "pgd"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            timeout=120,
        )
    finally:
        os.close(write_end)
    assert done.returncode == 141, done.stderr
    assert done.stderr == ""
