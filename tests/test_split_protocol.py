"""A split that streams its batches (the real datasets' ClipSplit) is measured exactly like an in-memory one."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from mmrobust_bench.attacks import build_attack
from mmrobust_bench.bench.evaluate import robust_accuracy
from mmrobust_bench.contracts import ThreatModel
from mmrobust_bench.data.base import Split, TensorSplit, leading, leading_count

from helpers import flat_specs, linear_model

DIMS = {"a": 6, "v": 5}


class StreamedSplit:
    """The Split protocol without being a TensorSplit (as ClipSplit): batches come from a generator."""

    def __init__(self, inner: TensorSplit) -> None:
        self.inner = inner

    def __len__(self) -> int:
        return len(self.inner)

    def batches(self, batch_size: int, **kwargs) -> Iterator:
        yield from self.inner.batches(batch_size, **kwargs)


def _split(n: int = 37) -> TensorSplit:
    g = torch.Generator().manual_seed(3)
    return TensorSplit(
        {m: torch.randn(n, d, generator=g) for m, d in DIMS.items()}, torch.randint(0, 3, (n,), generator=g)
    )


def test_a_streamed_split_is_a_split_and_measures_the_same() -> None:
    model = linear_model(DIMS, 3).eval()
    split = _split()
    streamed = StreamedSplit(split)
    assert isinstance(streamed, Split) and not isinstance(streamed, TensorSplit)
    attack = build_attack("pgd_l2", flat_specs(DIMS), seed=0)
    threat = ThreatModel.parse("a", 0.5, flat_specs(DIMS))
    device = torch.device("cpu")
    ref = robust_accuracy(model, split, attack, threat, [0.0, 0.5], 10, device)
    got = robust_accuracy(model, streamed, attack, threat, [0.0, 0.5], 10, device)
    assert [(m.correct, m.n) for m in got] == [(m.correct, m.n) for m in ref]
    assert all(m.n == 37 for m in got)
    assert all(torch.equal(a.outcomes, b.outcomes) for a, b in zip(got, ref, strict=True))


def test_the_first_n_samples_is_one_rule_for_every_cap() -> None:
    """``leading`` keeps the first n samples in order; a non-positive or too-large cap keeps the split whole, and
    the certificate settings the sweep records count the same samples the subset holds."""
    split = _split(10)
    head = leading(split, 4)
    assert len(head) == 4 == leading_count(4, 10)
    assert torch.equal(head.labels, split.labels[:4])
    assert torch.equal(head.inputs["a"], split.inputs["a"][:4])
    for cap in (0, -1, 10, 25):
        assert leading(split, cap) is split
        assert leading_count(cap, 10) == 10
