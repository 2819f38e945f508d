"""What a white-box attack through MSEFM's unrolled FISTA costs: the solvers' masked soft threshold against the
formula recorded op by op (``sign(x) * clamp(|x| − t, 0)``, what autograd kept before).

Prints one JSON object. Usage: ``python benchmarks/sparse_coding_backward.py [--dim 64] [--atoms 1024]
[--batch 500] [--iterations 200] [--repeats 3] [--threads 1]``. The defaults are synthav's memories at the sweep's
evaluation batch; FISTA runs all iterations (``tol=0``) on random unit-norm atoms and signals that require a
gradient, then backpropagates a random linear functional of the codes. Each variant runs in its own process:
process CPU seconds of the forward and the backward of its first solve (fresh memory: the page faults count)
and the median of ``--repeats`` more (memory the allocator already holds, as in a long sweep), the bytes the
graph keeps for the backward (exact, from ``saved_tensors_hooks``), the growth of the process's peak resident
memory over the first solve, and whether every solve of both variants gave bit-identical codes and input
gradients (sha256 of their bytes). ``speedup_masked_over_op_by_op`` compares the repeated solves.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import statistics
import subprocess
import sys
import time

VARIANTS = ("masked", "op_by_op")


def solve(sparse_coding, dictionary, signals, weights, iterations: int) -> dict:
    """One forward and backward through FISTA: CPU seconds, the graph's saved bytes and the outputs."""
    import torch

    x = signals.clone().requires_grad_(True)
    kept: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        kept[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    step = sparse_coding.lipschitz_step(dictionary)
    start = time.process_time()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        codes = sparse_coding.fista(dictionary, x, 0.1, step, max_iter=iterations, tol=0.0)
    middle = time.process_time()
    (grad,) = torch.autograd.grad((codes * weights).sum(), x)
    end = time.process_time()
    digest = hashlib.sha256(codes.detach().numpy().tobytes() + grad.numpy().tobytes()).hexdigest()
    return {"forward": middle - start, "backward": end - middle, "graph_bytes": sum(kept.values()), "sha256": digest}


def measure(args: argparse.Namespace) -> dict:
    """``args.variant`` in this process: a first solve (fresh memory), then ``args.repeats`` more (memory the
    allocator already holds, as in a long sweep)."""
    import torch

    from mmrobust_bench.models import sparse_coding

    torch.set_num_threads(args.threads)
    if args.variant == "op_by_op":
        sparse_coding.soft_threshold = lambda x, t: torch.sign(x) * torch.clamp(x.abs() - t, min=0)
    gen = torch.Generator().manual_seed(0)
    dictionary = torch.randn(args.dim, args.atoms, generator=gen)
    dictionary = dictionary / dictionary.norm(dim=0, keepdim=True)
    signals = torch.randn(args.dim, args.batch, generator=gen)
    weights = torch.randn(args.atoms, args.batch, generator=gen)
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    first = solve(sparse_coding, dictionary, signals, weights, args.iterations)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before
    again = [solve(sparse_coding, dictionary, signals, weights, args.iterations) for _ in range(args.repeats)]
    return {
        "first": {k: first[k] for k in ("forward", "backward")},
        "again_median": {k: statistics.median(r[k] for r in again) for k in ("forward", "backward")},
        "graph_bytes": first["graph_bytes"],
        "peak_rss_growth_kib": peak,
        "sha256": sorted({first["sha256"], *(r["sha256"] for r in again)}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--atoms", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)  # one run, in a child process
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(measure(args)))
        return
    shape = [f"--{k}={getattr(args, k)}" for k in ("dim", "atoms", "batch", "iterations", "repeats", "threads")]
    runs = {}
    for variant in VARIANTS:
        child = subprocess.run(
            [sys.executable, __file__, *shape, f"--variant={variant}"], check=True, capture_output=True, text=True
        )
        runs[variant] = json.loads(child.stdout)
    total = {v: r["again_median"]["forward"] + r["again_median"]["backward"] for v, r in runs.items()}
    digests = {d for r in runs.values() for d in r.pop("sha256")}
    from mmrobust_bench.bench.environment import benchmark_machine  # torch: imported in functions here, as in measure()

    print(
        json.dumps(
            {
                "benchmark": "sparse_coding_backward",
                **{k: getattr(args, k) for k in ("dim", "atoms", "batch", "iterations", "repeats", "threads")},
                "cpu_seconds": runs,
                "speedup_masked_over_op_by_op": total["op_by_op"] / total["masked"],
                "graph_bytes_ratio": runs["op_by_op"]["graph_bytes"] / runs["masked"]["graph_bytes"],
                "bit_identical": len(digests) == 1,
                "machine": benchmark_machine(),
                "loadavg_1min_at_end": os.getloadavg()[0],
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
