"""The two ways the sparse-coding solvers compute Dᵀ(D H − X), timed on MSEFM's shapes: ``residual`` vs ``gram``.

Prints one JSON object. Usage: ``python benchmarks/fista_forms.py [--dim 64] [--atoms 1024] [--batch 500]
[--iterations 200] [--repeats 3] [--threads 1]``. The defaults are synthav's memories (64-d pooled features,
1024 atoms) at the sweep's evaluation batch; FISTA runs all iterations (``tol=0``) on random unit-norm atoms and
signals that require a gradient, then backpropagates a random linear functional of the codes, as a white-box
attack through MSEFM does. Reports process CPU seconds of the forward and the backward per form (median of
``--repeats`` interleaved runs after one warm-up each) and the relative differences between the two forms' codes
and input gradients (float32 rounding, amplified by the iterations).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch

from mmrobust_bench.bench.environment import benchmark_machine
from mmrobust_bench.models.sparse_coding import FORMS, fista, lipschitz_step


def run(form: str, dictionary: torch.Tensor, signals: torch.Tensor, weights: torch.Tensor, iterations: int):
    x = signals.clone().requires_grad_(True)
    start = time.process_time()
    codes = fista(dictionary, x, 0.1, lipschitz_step(dictionary), max_iter=iterations, tol=0.0, form=form)
    middle = time.process_time()
    (grad,) = torch.autograd.grad((codes * weights).sum(), x)
    end = time.process_time()
    return middle - start, end - middle, codes.detach(), grad


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--atoms", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    dictionary = torch.randn(args.dim, args.atoms, generator=gen)
    dictionary = dictionary / dictionary.norm(dim=0, keepdim=True)
    signals = torch.randn(args.dim, args.batch, generator=gen)
    weights = torch.randn(args.atoms, args.batch, generator=gen)
    times: dict[str, dict[str, list[float]]] = {f: {"forward": [], "backward": []} for f in FORMS}
    out = {}
    for form in FORMS:  # warm-up
        run(form, dictionary, signals, weights, args.iterations)
    for _ in range(args.repeats):
        for form in FORMS:
            fwd, bwd, codes, grad = run(form, dictionary, signals, weights, args.iterations)
            times[form]["forward"].append(fwd)
            times[form]["backward"].append(bwd)
            out[form] = (codes, grad)
    (c_res, g_res), (c_gram, g_gram) = out["residual"], out["gram"]
    median = {f: {k: statistics.median(v) for k, v in t.items()} for f, t in times.items()}
    total = {f: m["forward"] + m["backward"] for f, m in median.items()}
    print(
        json.dumps(
            {
                "benchmark": "fista_forms",
                "dim": args.dim,
                "atoms": args.atoms,
                "batch": args.batch,
                "iterations": args.iterations,
                "repeats": args.repeats,
                "threads": args.threads,
                "cpu_seconds_median": median,
                "speedup_residual_over_gram": total["gram"] / total["residual"],
                "codes_relative_difference": float((c_res - c_gram).norm() / c_gram.norm()),
                "input_gradient_relative_difference": float((g_res - g_gram).norm() / g_gram.norm()),
                "machine": benchmark_machine(),
                "loadavg_1min_at_end": os.getloadavg()[0],
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
