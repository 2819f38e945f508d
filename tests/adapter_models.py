"""The tiny two-modality model and checks shared by the library-adapter tests (torchattacks, ART)."""

import torch
from torch import nn

from mmrobust_bench.contracts import ModelOutput, joint_l2_norm

CLASSES = 4


class TwoModalNet(nn.Module):
    """A small MLP per modality ("v" 3×4×4, "a" 1×6×5), concatenated features, a linear head; records
    the batch sizes it sees (sub-batch and single-sample calls show up there)."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            self.enc = nn.ModuleDict(
                {
                    "v": nn.Sequential(nn.Flatten(), nn.Linear(48, 16), nn.Tanh(), nn.Dropout(0.1)),
                    "a": nn.Sequential(nn.Flatten(), nn.Linear(30, 16), nn.Tanh()),
                }
            )
            self.head = nn.Linear(32, CLASSES)
        self.batch_sizes: list[int] = []

    def forward(self, batch):
        self.batch_sizes.append(batch["v"].shape[0])
        return ModelOutput(self.head(torch.cat([self.enc[m](batch[m]) for m in ("v", "a")], 1)))


class SingleInput(nn.Module):
    """The obvious single-input model for attacking "v" alone: "a" closed over as the whole batch,
    which is only right for attacks that always call the model on the full batch (PGDL2, PGD, FGSM)."""

    def __init__(self, model: nn.Module, a: torch.Tensor) -> None:
        super().__init__()
        self.model = model
        self.a = a

    def forward(self, v):
        return self.model({"v": v, "a": self.a}).logits


def make_batch(
    n: int, seed: int, v_low: float = 0.0, v_high: float = 1.0, dtype=torch.float32, centre_channel: int | None = None
):
    """ "v" uniform in [v_low, v_high] (``centre_channel`` shifted down by their mean), "a" Gaussian."""
    g = torch.Generator().manual_seed(seed)
    v = v_low + (v_high - v_low) * torch.rand(n, 3, 4, 4, generator=g)
    if centre_channel is not None:
        v[:, centre_channel] -= 0.5 * (v_high + v_low)
    return {"v": v.to(dtype), "a": torch.randn(n, 1, 6, 5, generator=g).to(dtype)}


def predicted(model, batch):
    with torch.no_grad():
        return model(batch).logits.argmax(1)


def assert_invariants(batch, adv, threat, eps, spec):
    """docs/design.md §3 invariants (1)-(3) and (6): inside the ε ball, unattacked modalities bit-identical,
    inside every modality's box, dtype/device/shape kept. (4) and (5) need the call itself."""
    delta = {m: (adv[m] - batch[m]).double() for m in threat.modalities}
    if threat.norm == "l2":
        assert bool((joint_l2_norm(delta, threat.modalities) <= eps * (1 + 1e-5)).all())
    else:
        assert all(float(d.abs().max()) <= eps * (1 + 1e-5) for d in delta.values())
    for m, x in batch.items():
        if m not in threat.modalities:
            assert torch.equal(adv[m], x)
        assert torch.equal(spec[m].clamp(adv[m]), adv[m])
        assert (adv[m].dtype, adv[m].device, adv[m].shape) == (x.dtype, x.device, x.shape)
