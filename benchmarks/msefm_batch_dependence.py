"""Does an MSEFM model's output depend on the evaluation's batch? Batch 1 against a larger batch, per stopping rule.

Prints one JSON object. Usage: ``python benchmarks/msefm_batch_dependence.py [--dataset synthav]
[--dataset-set KEY=VALUE ...] [--set KEY=VALUE ...] [--seed 0] [--n 200] [--batch 500] [--root DIR] [--threads 1]``.
Trains (or reuses, from ``--root``'s checkpoints) the MSEFM model of ``--dataset`` with the dataset's schedule and
``--set`` overrides, exactly as ``mmrobust-bench run`` does, then evaluates the first ``--n`` test samples one at
a time and in batches of ``--batch``, once with each sparse-coding stopping rule (``models/sparse_coding.py``;
the rule is a solver option, not a learned weight, so the same checkpoint serves both) and once with every
iteration run (``none_tol_0``: no stopping, so only float rounding can differ). For each it reports how many
feature vectors' codes stopped before ``max_iter`` (the only way the batch enters a code), the largest logit
difference between the two batch sizes, the predictions that differ, the relative difference of the input
gradients of the cross-entropy (what a white-box attack follows), and how far the large batch is from running
every iteration. The model's own settings are restored afterwards and reported as ``stopping`` and ``tol``. The
avdigits leaderboard's model, for example:
``--dataset avdigits --dataset-set data_root=DIR --root leaderboards/avdigits/runs --seed 2 --n 900``.
"""

from __future__ import annotations

import argparse
import json

import torch
import torch.nn.functional as F

from mmrobust_bench.bench.api import train_defense
from mmrobust_bench.bench.environment import benchmark_machine
from mmrobust_bench.cli.common import key_values
from mmrobust_bench.defenses.msefm import ExFMemNet
from mmrobust_bench.models.sparse_coding import STOPPING


def evaluate(model: ExFMemNet, inputs: dict, labels: torch.Tensor, batch: int) -> tuple[torch.Tensor, dict, list]:
    """Logits and input gradients of the summed cross-entropy, in batches of ``batch``; the iterations each
    feature vector's code took (``column_iterations`` of the solver's stats, every modality)."""
    iterations: list[int] = []
    solver = model.solver

    def counted(*args, **kwargs):
        stats: dict = {}
        codes = solver(*args, stats=stats, **kwargs)
        iterations.extend(stats["column_iterations"])
        return codes

    model.solver = counted
    try:
        logits, grads = [], {m: [] for m in inputs}
        for start in range(0, len(labels), batch):
            part = {m: t[start : start + batch].clone().requires_grad_(True) for m, t in inputs.items()}
            out = model(part).logits
            loss = F.cross_entropy(out, labels[start : start + batch], reduction="sum")
            for m, g in zip(part, torch.autograd.grad(loss, list(part.values()))):
                grads[m].append(g)
            logits.append(out.detach())
    finally:
        model.solver = solver
    return torch.cat(logits), {m: torch.cat(g) for m, g in grads.items()}, iterations


def relative_gap(a: dict, b: dict) -> float:
    """The largest per-modality ‖a − b‖ / ‖b‖ of two gradient dicts."""
    return max(float((a[m] - b[m]).norm() / b[m].norm().clamp_min(1e-30)) for m in b)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="synthav")
    parser.add_argument("--dataset-set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="MSEFM/schedule override")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n", type=int, default=200, help="test samples evaluated")
    parser.add_argument("--batch", type=int, default=500, help="the larger batch (the sweeps evaluate at 500)")
    parser.add_argument("--root", default=None)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    trained = train_defense(
        "msefm",
        dataset=args.dataset,
        seed=args.seed,
        overrides=key_values(args.set, "--set"),
        dataset_options=key_values(args.dataset_set, "--dataset-set"),
        root=args.root,
        device="cpu",
        progress=False,
    )
    model = trained.model.eval()
    test = trained.dataset.test  # type: ignore[attr-defined]
    n = min(args.n, len(test))
    inputs = {m: t[:n] for m, t in test.inputs.items()}
    labels = test.labels[:n]
    configured = (model.stopping, model.tol)
    # each stopping rule at the model's tol, then every iteration run (tol 0): the float-rounding floor
    settings = [(rule, rule, configured[1]) for rule in STOPPING] + [("none_tol_0", "batch", 0.0)]
    measured = {}
    try:
        for name, rule, tol in settings:
            model.stopping, model.tol = rule, tol
            measured[name] = {bs: evaluate(model, inputs, labels, bs) for bs in (1, args.batch)}
    finally:
        model.stopping, model.tol = configured
    floor_logits, floor_grads, _ = measured["none_tol_0"][args.batch]
    rules = {}
    for name, by_batch in measured.items():
        (one_logits, one_grads, one_iters), (big_logits, big_grads, big_iters) = by_batch[1], by_batch[args.batch]
        rules[name] = {
            "codes": len(one_iters),
            "codes_stopped_early_batch_1": sum(i < model.max_iter for i in one_iters),
            "codes_stopped_early_large_batch": sum(i < model.max_iter for i in big_iters),
            "fewest_iterations_batch_1": min(one_iters),
            "max_abs_logit_difference": float((one_logits - big_logits).abs().max()),
            "predictions_differing": int((one_logits.argmax(1) != big_logits.argmax(1)).sum()),
            "input_gradient_relative_difference": relative_gap(one_grads, big_grads),
            "large_batch_vs_no_stopping_max_abs_logit_difference": float((big_logits - floor_logits).abs().max()),
            "large_batch_vs_no_stopping_input_gradient_relative_difference": relative_gap(big_grads, floor_grads),
            "accuracy_batch_1": float((one_logits.argmax(1) == labels).float().mean()),
            "accuracy_large_batch": float((big_logits.argmax(1) == labels).float().mean()),
        }
    print(
        json.dumps(
            {
                "benchmark": "msefm_batch_dependence",
                "dataset": args.dataset,
                "seed": args.seed,
                "samples": n,
                "large_batch": args.batch,
                "max_iter": model.max_iter,
                "tol": model.tol,
                "stopping": model.stopping,
                "solver": model.solver.__name__,
                "checkpoint_sha256": trained.sha256,
                "cached": trained.cached,
                "rules": rules,
                "threads": torch.get_num_threads(),
                "machine": benchmark_machine(),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
