"""Shared fixtures and hooks (helpers that tests import live in tests/helpers.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)  # tiny models: one thread avoids oversubscribing the 2-core CI machine


@pytest.fixture
def tiny_root(tmp_path: Path) -> Path:
    return tmp_path / "runs"


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One intra-op thread for the test, restored after it (the command line's ``--threads`` may change it):
    tiny models and convolutions run far slower with several OpenMP threads on busy shared cores. A module
    opts in with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``cuda`` need a CUDA device: skipped (with the reason) on machines without one."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (run on the GPU machine: pytest -m cuda)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
