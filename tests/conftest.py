"""Shared fixtures: tiny seeded models and specs built inside the tests (no downloads)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from mmrobust_bench.contracts import ModalitySpec
from mmrobust_bench.models import ConcatHead, CRMTHead, MultiModalNet

torch.set_num_threads(1)  # tiny models: one thread avoids oversubscribing the 2-core CI machine


def linear_model(dims: dict[str, int], num_classes: int, head: str = "concat", seed: int = 0) -> MultiModalNet:
    """Identity encoders (flatten) + a fusion head: every quantity has a closed form."""
    torch.manual_seed(seed)
    names = list(dims)
    encoders = {m: nn.Flatten() for m in names}
    if head == "concat":
        fusion = ConcatHead(names, [dims[m] for m in names], num_classes)
    else:
        fusion = CRMTHead(names, [dims[m] for m in names], num_classes)
        with torch.no_grad():
            for m in names:
                fusion.integration[m].uniform_(0.5, 2.0)
    return MultiModalNet(encoders, fusion).eval()


def flat_specs(dims: dict[str, int]) -> tuple[ModalitySpec, ...]:
    return tuple(ModalitySpec(m, (d,)) for m, d in dims.items())


@pytest.fixture
def tiny_root(tmp_path):
    return tmp_path / "runs"


@pytest.fixture
def one_thread():
    """One intra-op thread for the test, restored after it (the command line's ``--threads`` may change it):
    tiny models and convolutions run far slower with several OpenMP threads on busy shared cores. A module
    opts in with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def pytest_collection_modifyitems(config, items):
    """Tests marked ``cuda`` need a CUDA device: skipped (with the reason) on machines without one."""
    import pytest
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (run on the GPU machine: pytest -m cuda)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
