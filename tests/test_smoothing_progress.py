"""Randomized smoothing's progress bars follow docs/cli.md: drawn on a terminal, never into a redirected stderr
(a log file or CI output would otherwise fill with \\r redraws), and off with progress=False."""

from __future__ import annotations

import io
import sys

import pytest
import torch
from torch import nn

from mmrobust_bench import progress
from mmrobust_bench.certify.smoothing import SmoothingConfig, smooth_certify, smoothed_honesty_check


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class Linear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(3, 2)
        self.v = nn.Linear(2, 2)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.a(batch["a"]) + self.v(batch["v"])


def certify_and_check(enabled: bool) -> None:
    torch.manual_seed(0)
    model = Linear()
    inputs = {"a": torch.randn(4, 3) * 5, "v": torch.randn(4, 2)}
    cert = smooth_certify(
        model, inputs, None, ["a"], SmoothingConfig(sigma=0.1, n0=10, n=50, batch=50), progress=enabled
    )
    smoothed_honesty_check(model, inputs, cert, n_attack=2, steps=1, n_predict=20, progress=enabled)


@pytest.mark.parametrize("terminal, enabled, drawn", [(False, True, False), (True, True, True), (True, False, False)])
def test_smoothing_bars_only_on_a_terminal(monkeypatch, terminal: bool, enabled: bool, drawn: bool) -> None:
    stream = Terminal() if terminal else io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    progress.set_enabled(True)
    certify_and_check(enabled)
    assert ("smoothing σ=0.1" in stream.getvalue()) is drawn
    assert ("\r" in stream.getvalue()) is drawn
