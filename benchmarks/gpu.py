"""GPU speed against the reference's numbers (docs/design.md §11, "Performance anchors"), as one JSON object.

KS-shaped inputs (3 frames 3×224×224 + a 1×1024×128 fbank, 31 classes, ResNet-18 encoders, batch 32),
random tensors from per-class templates so a briefly trained model has an accuracy worth attacking.
Everything is measured in this one run, on this one device, so the ratios are like for like:

* ``train``: samples/s of a JT and a CRMT-JT train step, reference-style (fp32, contiguous, and for
  CRMT the reference's per-class SVD loop in the head) and tuned (bf16 autocast + channels-last,
  optionally ``torch.compile``); targets JT ≥ 1500, CRMT-JT ≥ 1400 samples/s on an H100.
* ``pgd``: 4-step ℓ2-PGD (ε = 1 on audio) samples/s fp32 vs bf16, and both robust accuracies on the
  same model and samples (target: bf16 ≥ 1.5× the fp32 reference, accuracy within 0.5 points).
* ``lipschitz``: the intended per-class uni-modal τ with one batched backward per modality vs the
  reference's K-class loop (8 samples, K = 31; target ≥ 5×).
* ``msefm_sparse_coding``: ExFMem's FISTA (a 1024-column memory of KS-sized features, the default
  tolerance) forward + backward with the stopping flag read on the host every iteration (the
  reference's loop) vs every 16 (this suite's accelerator setting; identical codes and gradients).
* peak memory per section.

Usage: ``python benchmarks/gpu.py [--out benchmarks/results/gpu-<name>.json] [--compile]``;
``--quick`` shrinks shapes and iterations so the script itself is tested on the CPU (its numbers then
mean nothing). Runs in well under 5 minutes on one H100.
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from mmrobust_bench.attacks.native import PGDL2
from mmrobust_bench.bench.environment import benchmark_machine
from mmrobust_bench.bench.train import speed_setup
from mmrobust_bench.contracts import ModalitySpec, ThreatModel
from mmrobust_bench.defenses import TrainConfig
from mmrobust_bench.defenses.crmt import margin_regulariser
from mmrobust_bench.models import build_model
from mmrobust_bench.models.heads import CRMTHead
from mmrobust_bench.models.lipschitz import _official_batch, batch_unimodal_gradient_norms
from mmrobust_bench.models.sparse_coding import fista, lipschitz_step


@dataclass(frozen=True)
class Shapes:
    frames: int
    image: int
    fbank: tuple[int, int]
    classes: int
    batch: int
    feature_dim: int
    warmup: int
    iters: int


FULL = Shapes(frames=3, image=224, fbank=(1024, 128), classes=31, batch=32, feature_dim=512, warmup=5, iters=20)
QUICK = Shapes(frames=2, image=32, fbank=(64, 32), classes=5, batch=4, feature_dim=16, warmup=1, iters=2)


def specs_for(s: Shapes) -> tuple[ModalitySpec, ...]:
    return (
        ModalitySpec("v", (3, s.frames, s.image, s.image), (-3.0,) * 3, (3.0,) * 3),
        ModalitySpec("a", (1,) + s.fbank),
    )


class ReferenceOrthHead(CRMTHead):
    """The reference's OWN with norm_groups = K: a Python loop of K tiny SVDs per modality block (fp32
    only; it fails under bf16 autocast). Same numbers as the vectorised head, for timing only."""

    def normalised_blocks(self) -> dict[str, torch.Tensor]:
        with torch.autocast(device_type=self.weight.device.type, enabled=False):
            out = {}
            for m, w in zip(self.names, self.weight.float().split(self.dims, dim=1)):
                rows = []
                for k in range(w.shape[0]):
                    z = w[k : k + 1] - w[k : k + 1].mean()
                    u, sv, _ = torch.linalg.svd(z @ z.t())
                    rows.append(u @ torch.diag(sv.rsqrt()) @ u.t() @ z)
                out[m] = torch.cat(rows, 0)
            return out


def make_model(s: Shapes, head: str, device: torch.device, reference_head: bool = False) -> nn.Module:
    torch.manual_seed(0)
    model = build_model(
        specs_for(s), s.classes, {"v": "resnet18_visual", "a": "resnet18_audio"}, head=head, feature_dim=s.feature_dim
    )
    if reference_head:
        ref = ReferenceOrthHead(model.head.names, model.head.dims, s.classes)
        ref.load_state_dict(model.head.state_dict())
        model.head = ref
    return model.to(device)


def templated_data(s: Shapes, n: int, device: torch.device, seed: int) -> tuple[dict, torch.Tensor]:
    """Inputs = class template + noise, so a few hundred steps give a model with real accuracy."""
    gen = torch.Generator().manual_seed(1234)
    templates = {sp.name: torch.randn((s.classes,) + sp.shape, generator=gen) for sp in specs_for(s)}
    gen.manual_seed(seed)
    y = torch.randint(0, s.classes, (n,), generator=gen)
    x = {m: (0.5 * t[y] + torch.randn((n,) + t.shape[1:], generator=gen)).to(device) for m, t in templates.items()}
    return x, y.to(device)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], s: Shapes, device: torch.device) -> float:
    """Seconds per call after warm-up (the device is synchronised around the timed loop only)."""
    for _ in range(s.warmup):
        fn()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(s.iters):
        fn()
    synchronize(device)
    return (time.perf_counter() - start) / s.iters


def peak_reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> float | None:
    return round(torch.cuda.max_memory_allocated(device) / 2**30, 3) if device.type == "cuda" else None


def train_step_rate(
    s: Shapes, device: torch.device, head: str, *, tuned: bool, compile_: bool, reference_head: bool = False
) -> dict:
    cfg = TrainConfig(precision="bf16" if tuned else "fp32", channels_last=tuned, compile=compile_)
    model = speed_setup(make_model(s, head, device, reference_head), cfg).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    x, y = templated_data(s, s.batch, device, seed=1)
    bf16 = cfg.precision == "bf16"

    def step() -> None:
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16):
            out = model(x)
            loss = F.cross_entropy(out.logits.float(), y)
            if head == "crmt":
                loss = loss + 2.0 * margin_regulariser(out.unimodal, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    peak_reset(device)
    seconds = timed(step, s, device)
    return {
        "ms_per_step": round(1e3 * seconds, 3),
        "samples_per_s": round(s.batch / seconds, 1),
        "precision": cfg.precision,
        "channels_last": cfg.channels_last,
        "compile": compile_,
        "peak_gib": peak_gib(device),
    }


def fit(model: nn.Module, s: Shapes, device: torch.device, steps: int) -> None:
    """A short bf16 training on templated data: a model whose robust accuracy is neither 0 nor 1."""
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model.train()
    for i in range(steps):
        x, y = templated_data(s, s.batch, device, seed=100 + i)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = F.cross_entropy(model(x).logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()


def pgd_section(s: Shapes, device: torch.device, fit_steps: int, eval_batches: int) -> dict:
    model = make_model(s, "concat", device)
    fit(model, s, device, fit_steps)
    specs = specs_for(s)
    threat = ThreatModel(("a",), 1.0)
    out: dict = {"fit_steps": fit_steps, "eps": 1.0, "modality": "a", "steps": 4}
    x, y = templated_data(s, s.batch, device, seed=7)
    for precision in ("fp32", "bf16"):
        attack = PGDL2(specs, steps=4, precision=precision)
        if precision == "bf16":
            speed_setup(model, TrainConfig(channels_last=True))
        peak_reset(device)
        seconds = timed(functools.partial(attack, model, x, y, threat), s, device)
        correct = total = 0
        for b in range(eval_batches):
            xb, yb = templated_data(s, s.batch, device, seed=1000 + b)
            adv = attack(model, xb, yb, threat)
            with torch.no_grad():
                correct += int((model({**xb, **adv}).logits.argmax(1) == yb).sum())
            total += yb.numel()
        out[precision] = {
            "ms_per_batch": round(1e3 * seconds, 3),
            "samples_per_s": round(s.batch / seconds, 1),
            "robust_accuracy": round(correct / total, 4),
            "n": total,
            "peak_gib": peak_gib(device),
        }
    with torch.no_grad():
        clean = sum(
            int(
                (
                    model(templated_data(s, s.batch, device, seed=1000 + b)[0]).logits.argmax(1)
                    == templated_data(s, s.batch, device, seed=1000 + b)[1]
                ).sum()
            )
            for b in range(eval_batches)
        )
    out["clean_accuracy"] = round(clean / (eval_batches * s.batch), 4)
    out["bf16_speedup"] = round(out["bf16"]["samples_per_s"] / out["fp32"]["samples_per_s"], 3)
    out["accuracy_gap_points"] = round(100 * abs(out["bf16"]["robust_accuracy"] - out["fp32"]["robust_accuracy"]), 2)
    return out


def lipschitz_section(s: Shapes, device: torch.device) -> dict:
    model = make_model(s, "crmt", device).eval()
    x, _ = templated_data(s, min(8, s.batch), device, seed=3)
    mods = ("v", "a")
    peak_reset(device)
    batched = timed(lambda: batch_unimodal_gradient_norms(model, x, mods), s, device)
    reference = timed(lambda: _official_batch(model, x, mods), s, device)
    return {
        "samples": x["v"].shape[0],
        "classes": s.classes,
        "batched_ms": round(1e3 * batched, 3),
        "reference_loop_ms": round(1e3 * reference, 3),
        "speedup": round(reference / batched, 2),
        "peak_gib": peak_gib(device),
    }


def msefm_section(s: Shapes, device: torch.device, memory_size: int) -> dict:
    """FISTA through a fixed memory, as in every MSEFM forward; check_every only sets how often the
    host waits for the stopping flag, so both runs must return the same codes and gradients.

    Memory and signals are unit-norm ReLU(Gaussian) columns with λ = 0.3, so the default tolerance
    stops FISTA well before max_iter and between two reads (114 of 200 iterations at the full shape,
    52 at --quick's): the run that reads every 16 iterations really does freeze converged codes.
    """
    gen = torch.Generator().manual_seed(4)

    def unit_relu_columns(rows: int, cols: int) -> torch.Tensor:
        x = torch.randn(rows, cols, generator=gen).relu()
        return (x / x.norm(dim=0).clamp_min(1e-12)).to(device)

    memory, signals = unit_relu_columns(s.feature_dim, memory_size), unit_relu_columns(s.feature_dim, s.batch)
    step = lipschitz_step(memory)

    def code_and_grad(check_every: int, stats: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        x = signals.clone().requires_grad_(True)
        codes = fista(memory, x, 0.3, step, max_iter=200, tol=8e-4, check_every=check_every, stats=stats)
        (grad,) = torch.autograd.grad(codes.sum(), x)
        return codes, grad

    peak_reset(device)
    every = timed(lambda: code_and_grad(1), s, device)
    sixteen = timed(lambda: code_and_grad(16), s, device)
    stats_1: dict = {}
    stats_16: dict = {}
    same = all(torch.equal(a, b) for a, b in zip(code_and_grad(1, stats_1), code_and_grad(16, stats_16)))
    return {
        "memory": [s.feature_dim, memory_size],
        "batch": s.batch,
        "max_iter": 200,
        "iterations_every_1": stats_1["iterations"],
        "iterations_every_16": stats_16["iterations"],
        "check_every_1_ms": round(1e3 * every, 3),
        "check_every_16_ms": round(1e3 * sixteen, 3),
        "speedup": round(every / sixteen, 2),
        "identical_codes_and_gradients": same,
        "peak_gib": peak_gib(device),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="tiny shapes (tests the script on CPU)")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile'd encoders")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    device = torch.device(args.device)
    s = QUICK if args.quick else FULL
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    start = time.perf_counter()
    result: dict = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "cuda": torch.version.cuda,
        "machine": benchmark_machine(device),
        "shapes": {
            "visual": [3, s.frames, s.image, s.image],
            "audio": [1, *s.fbank],
            "classes": s.classes,
            "batch": s.batch,
        },
        "quick": args.quick,
        "reference_anchors_h100": {
            "jt_samples_per_s": 825,
            "crmt_samples_per_s": 375,
            "pgd4_ms_per_batch_concat": 107,
            "lipschitz_ms_concat": 329,
            "lipschitz_ms_orth": 1044,
        },
    }
    train: dict = {}
    train["jt_reference_style"] = train_step_rate(s, device, "concat", tuned=False, compile_=False)
    train["jt_tuned"] = train_step_rate(s, device, "concat", tuned=True, compile_=False)
    train["crmt_reference_svd_loop"] = train_step_rate(
        s, device, "crmt", tuned=False, compile_=False, reference_head=True
    )
    train["crmt_tuned"] = train_step_rate(s, device, "crmt", tuned=True, compile_=False)
    if args.compile:
        train["jt_tuned_compiled"] = train_step_rate(s, device, "concat", tuned=True, compile_=True)
        train["crmt_tuned_compiled"] = train_step_rate(s, device, "crmt", tuned=True, compile_=True)
    train["crmt_head_cost"] = round(train["jt_tuned"]["samples_per_s"] / train["crmt_tuned"]["samples_per_s"], 3)
    result["train"] = train
    result["pgd"] = pgd_section(s, device, fit_steps=5 if args.quick else 150, eval_batches=2 if args.quick else 16)
    result["lipschitz"] = lipschitz_section(s, device)
    result["msefm_sparse_coding"] = msefm_section(s, device, memory_size=32 if args.quick else 1024)
    result["targets_met"] = {
        "jt_ge_1500": train["jt_tuned"]["samples_per_s"] >= 1500,
        "crmt_ge_1400": train["crmt_tuned"]["samples_per_s"] >= 1400,
        "pgd_bf16_ge_1.5x_fp32": result["pgd"]["bf16_speedup"] >= 1.5,
        "pgd_accuracy_within_0.5_points": result["pgd"]["accuracy_gap_points"] <= 0.5,
        "lipschitz_ge_5x": result["lipschitz"]["speedup"] >= 5,
    }
    result["seconds"] = round(time.perf_counter() - start, 1)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
