"""What the multi-modal layer costs: adapter vs direct library calls, and a batched radius sweep.

Prints one JSON object. Usage: ``python benchmarks/attack_overhead.py [--batch 32] [--repeats 5] [--device cpu]``.

* ``adapters``: torchattacks PGDL2 and ART ProjectedGradientDescent (ℓ2, 10 steps, no random start) through the
  adapter (``torchattacks:PGDL2``, ``art:ProjectedGradientDescent``) against the same library attack called
  directly on a hand-written single-input model of the same multi-modal model (the audio modality mapped
  affinely into [0, 1], the video closed over as the whole batch: only right for full-batch attacks like
  these). Target: adapter overhead within 5 %.
* ``sweep``: native ``pgd_l2`` over R = 10 radii as one batched call (per-sample ε, what
  ``bench.evaluate.robust_accuracy`` does) against R sequential calls and one call at a single radius.
  Target: the batched sweep within 2× one radius, which needs a device with idle parallelism (a GPU at
  batch 32); on a CPU the batched sweep costs about R single radii, since the compute is R× larger.

Timings are medians (and minima, ``*_min``) over ``--repeats`` interleaved runs after one warm-up: wall time on a
GPU, this process's CPU time on a CPU (``--threads``, default 1), so that other jobs on a shared machine do not skew
them; on the synthav-shaped model (3 frames 32×32 + 64×40 fbank, small CNN encoders, 10 classes, random weights).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch
from torch import nn

from mmrobust_bench.attacks import build_attack
from mmrobust_bench.bench.environment import benchmark_machine
from mmrobust_bench.contracts import ThreatModel
from mmrobust_bench.data.synthav import SynthAVConfig, audio_spec, visual_spec
from mmrobust_bench.models import build_model

EPS = 1.0
STEPS = 10
LIB_EPS = 0.35
R = 10


class AffineAudio(nn.Module):
    """The hand-written single-input model: x in [0, 1] → audio ``centre + s (x − 0.5)``, video closed over."""

    def __init__(self, model: nn.Module, video: torch.Tensor, centre: torch.Tensor, scale: float) -> None:
        super().__init__()
        self.model, self.video, self.centre, self.scale = model, video, centre, scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model({"v": self.video, "a": self.centre + self.scale * (x - 0.5)}).logits


def _timed(fn, device: torch.device) -> float:
    """Wall time on a GPU; CPU time of this process on a CPU, which other jobs on a shared machine do not inflate."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        return time.perf_counter() - start
    start = time.process_time()
    fn()
    return time.process_time() - start


def median_seconds(fns: dict, repeats: int, device: torch.device) -> dict[str, float]:
    """Median time of each function, run interleaved (A B A B ...) after one warm-up each, so that a
    machine whose load drifts (a shared CPU) biases none of them; also the minimum (``<name>_min``),
    the estimate least affected by other tenants of a shared machine, and for an adapter/direct pair the
    median paired difference."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(_timed(fn, device))
    medians = {name: statistics.median(values) for name, values in times.items()}
    out = {**medians, **{f"{name}_min": min(values) for name, values in times.items()}}
    if set(times) == {"adapter_s", "direct_s"}:
        out["paired_diff_s"] = statistics.median(a - d for a, d in zip(times["adapter_s"], times["direct_s"]))
    return out


def overhead(t: dict[str, float]) -> dict[str, float]:
    """Adapter over direct, in percent: from the medians, from the minima, and from the median of paired
    differences (adapter run i minus the direct run right after it, which cancels slow load drift)."""
    return {
        "overhead_pct": 100 * (t["adapter_s"] / t["direct_s"] - 1),
        "overhead_pct_min": 100 * (t["adapter_s_min"] / t["direct_s_min"] - 1),
        "overhead_pct_paired": 100 * t["paired_diff_s"] / t["direct_s"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (CPU time is summed over threads)")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = SynthAVConfig()
    specs = (visual_spec(cfg), audio_spec(cfg))
    model = (
        build_model(specs, cfg.n_classes, {"v": "small_cnn3d", "a": "small_cnn2d"}, feature_dim=64).to(device).eval()
    )
    for p in model.parameters():
        p.requires_grad_(False)
    g = torch.Generator().manual_seed(0)
    batch = {
        "v": torch.randn((args.batch,) + specs[0].shape, generator=g).clamp(-2, 2).to(device),
        "a": torch.randn((args.batch,) + specs[1].shape, generator=g).to(device),
    }
    with torch.no_grad():
        labels = model(batch).logits.argmax(1)
    threat = ThreatModel(("a",), EPS)
    scale = EPS / LIB_EPS
    single = AffineAudio(model, batch["v"], batch["a"], scale)
    x01 = torch.full_like(batch["a"], 0.5)
    results = {}

    import torchattacks

    ta_adapter = build_attack("torchattacks:PGDL2", specs, steps=STEPS, alpha=EPS / 4, random_start=False)
    ta_direct = torchattacks.PGDL2(single, eps=LIB_EPS, alpha=EPS / 4 / scale, steps=STEPS, random_start=False)
    t = median_seconds(
        {"adapter_s": lambda: ta_adapter(model, batch, labels, threat), "direct_s": lambda: ta_direct(x01, labels)},
        args.repeats,
        device,
    )
    results["torchattacks:PGDL2"] = {**t, **overhead(t)}

    from art.attacks.evasion import ProjectedGradientDescent
    from art.estimators.classification import PyTorchClassifier

    art_adapter = build_attack(
        "art:ProjectedGradientDescent", specs, eps_step=EPS / 4, max_iter=STEPS, num_random_init=0
    )
    estimator = PyTorchClassifier(
        single,
        loss=nn.CrossEntropyLoss(),
        input_shape=specs[1].shape,
        nb_classes=cfg.n_classes,
        clip_values=(0.0, 1.0),
        device_type="gpu" if device.type == "cuda" else "cpu",
    )
    art_direct = ProjectedGradientDescent(
        estimator,
        norm=2,
        eps=LIB_EPS,
        eps_step=EPS / 4 / scale,
        max_iter=STEPS,
        num_random_init=0,
        batch_size=args.batch,
        verbose=False,
    )
    x_np, y_np = x01.cpu().numpy().astype(np.float32), labels.cpu().numpy()
    t = median_seconds(
        {
            "adapter_s": lambda: art_adapter(model, batch, labels, threat),
            "direct_s": lambda: art_direct.generate(x_np, y_np),
        },
        args.repeats,
        device,
    )
    results["art:ProjectedGradientDescent"] = {**t, **overhead(t)}

    pgd = build_attack("pgd_l2", specs)
    radii = torch.linspace(0.2, 2.0, R).tolist()
    rep = {m: x.repeat((R,) + (1,) * (x.dim() - 1)) for m, x in batch.items()}
    eps_vec = torch.tensor(radii, device=device).repeat_interleave(args.batch)
    t = median_seconds(
        {
            "one_radius_s": lambda: pgd(model, batch, labels, threat.with_eps(radii[0])),
            "batched_s": lambda: pgd(model, rep, labels.repeat(R), threat, eps_vec),
            "sequential_s": lambda: [pgd(model, batch, labels, threat.with_eps(e)) for e in radii],
        },
        args.repeats,
        device,
    )
    sweep = {
        "radii": R,
        **t,
        "batched_over_one_radius": t["batched_s"] / t["one_radius_s"],
        "sequential_over_batched": t["sequential_s"] / t["batched_s"],
    }

    rounded = {
        k: {kk: round(vv, 4) if isinstance(vv, float) else vv for kk, vv in v.items()}
        for k, v in {**results, "sweep": sweep}.items()
    }
    print(
        json.dumps(
            {
                "benchmark": "attack_overhead",
                "device": str(device),
                "batch": args.batch,
                "steps": STEPS,
                "clock": "wall" if device.type == "cuda" else "process_cpu",
                "repeats": args.repeats,
                "adapters": {k: rounded[k] for k in results},
                "sweep": rounded["sweep"],
                "targets": {"adapter_overhead_pct": 5.0, "batched_over_one_radius": 2.0},
                "machine": benchmark_machine(device),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
