"""How far CRMT's step 2 moves the model, per number of step-2 epochs. Prints one JSON object.

Usage: ``python benchmarks/crmt_step2_epochs.py [--defense crmt_jt] [--dataset synthav] [--dataset-set KEY=VALUE ...]
[--set KEY=VALUE ...] [--step2-set KEY=VALUE ...] [--seed 0] [--counts 0,1,2,3,4,6,10] [--modality v]
[--eps 0.25,0.5,1,1.5,2] [--root DIR] [--threads 1]``. Trains (or reuses, from ``--root``'s checkpoints) the
defense with ``step2=false``: the same step-1 model and τ that ``mmrobust-bench run`` trains whatever
``step2_epochs`` is (step 2 runs after both). Then, for each
count N, it runs step 2 (``CRMTBase.train_integration_weights``, with ``--step2-set`` settings such as
``clamp_nonnegative=true`` on top of ``--set``) on a copy of that model with the generator seeded as ``bench/train.py``
seeds post-training stages, so count N is the model of ``run --set step2_epochs=N``. For each count it reports the
change of the integration weights a^(m) (ℓ2 norm relative to the step-1 values, the largest absolute change, how many
are negative), the step-2 objective (−mean num/den of Eq. 10, lower is better) over the training and the test split,
and clean and ℓ2-PGD accuracy on the test split.
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import torch

from mmrobust_bench.attacks import build_attack
from mmrobust_bench.bench.api import train_defense
from mmrobust_bench.bench.environment import benchmark_machine
from mmrobust_bench.bench.evaluate import clean_accuracy, robust_accuracy
from mmrobust_bench.cli.common import key_values
from mmrobust_bench.contracts import ThreatModel
from mmrobust_bench.defenses import TrainContext, build_defense, dataset_schedule
from mmrobust_bench.defenses.crmt import CRMTBase, step2_objective


def objective(model, defense: CRMTBase, split, tau: dict, batch_size: int) -> float:
    """The step-2 objective over a whole split (eval mode, fixed z), as step 2 computes it per batch."""
    model.eval()
    z, y = defense._unimodal_scores(model, split.batches(batch_size))
    head = model.head
    with torch.no_grad():
        a = {m: head.integration[m].detach().float() for m in model.modalities}
        return float(step2_objective(z, a, tau, head.bias.detach().float(), y))


def integration(model) -> torch.Tensor:
    return torch.cat([model.head.integration[m].detach().flatten() for m in model.modalities])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--defense", default="crmt_jt")
    parser.add_argument("--dataset", default="synthav")
    parser.add_argument("--dataset-set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="defense/schedule override")
    parser.add_argument(
        "--step2-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a step-2 setting applied after step 1 only (e.g. clamp_nonnegative=true)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--counts", default="0,1,2,3,4,6,10", help="step-2 epoch counts, comma separated")
    parser.add_argument("--modality", default="v", help="the attacked modality (a name, comma list or all)")
    parser.add_argument("--eps", default="0.25,0.5,1,1.5,2")
    parser.add_argument("--batch", type=int, default=500, help="evaluation batch")
    parser.add_argument("--root", default=None)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    counts = [int(c) for c in args.counts.split(",")]
    grid = [float(e) for e in args.eps.split(",")]
    overrides = key_values(args.set, "--set")
    step2_overrides = key_values(args.step2_set, "--step2-set")

    trained = train_defense(
        args.defense,
        dataset=args.dataset,
        seed=args.seed,
        overrides={**overrides, "step2": False},
        dataset_options=key_values(args.dataset_set, "--dataset-set"),
        root=args.root,
        device="cpu",
        progress=False,
    )
    ds = trained.dataset  # type: ignore[attr-defined]
    step1 = trained.model.eval()
    tau = {m: trained.extra[f"lipschitz.{m}"] for m in step1.modalities}
    attack = build_attack("pgd_l2", ds.specs, seed=args.seed)
    threat = ThreatModel.parse(args.modality, grid[0], ds.specs)
    start = integration(step1)
    measured = []
    for count in counts:
        defense, train_cfg = build_defense(
            args.defense, {**overrides, **step2_overrides, "step2_epochs": count}, dataset_schedule(ds)
        )
        assert isinstance(defense, CRMTBase)
        model = copy.deepcopy(step1)
        ctx = TrainContext(
            dataset=ds,
            train=train_cfg,
            device=torch.device("cpu"),
            generator=torch.Generator().manual_seed(args.seed + 1),
        )  # as bench/train.py seeds step 2
        began = time.perf_counter()
        defense.train_integration_weights(model, tau, ctx)
        seconds = time.perf_counter() - began
        a = integration(model)
        clean = clean_accuracy(model, ds.test, args.batch, torch.device("cpu"))
        robust = robust_accuracy(model, ds.test, attack, threat, grid, args.batch, torch.device("cpu"))
        measured.append(
            {
                "step2_epochs": count,
                "optimizer_steps": count * -(-len(ds.train) // train_cfg.batch_size),
                "step2_seconds": round(seconds, 2),
                "integration_relative_change": float((a - start).norm() / start.norm()),
                "integration_max_abs_change": float((a - start).abs().max()),
                "integration_mean": {m: float(model.head.integration[m].detach().mean()) for m in model.modalities},
                "integration_negative": int((a < 0).sum()),
                "objective_train": objective(model, defense, ds.train, tau, args.batch),
                "objective_test": objective(model, defense, ds.test, tau, args.batch),
                "clean_accuracy": clean.accuracy,
                "pgd_l2_accuracy": {f"{m.eps:g}": m.accuracy for m in robust},
            }
        )
    print(
        json.dumps(
            {
                "benchmark": "crmt_step2_epochs",
                "defense": args.defense,
                "dataset": args.dataset,
                "seed": args.seed,
                "overrides": overrides,
                "step2_overrides": step2_overrides,
                "schedule_epochs": train_cfg.epochs,
                "train_batch_size": train_cfg.batch_size,
                "step2_lr": defense.config.step2_lr_ratio * train_cfg.lr,
                "attacked": args.modality,
                "step1_checkpoint_sha256": trained.sha256,
                "n_train": len(ds.train),
                "n_test": len(ds.test),
                "counts": measured,
                "threads": torch.get_num_threads(),
                "machine": benchmark_machine(),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
