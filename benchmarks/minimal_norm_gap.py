"""How far the one-run minimal-norm curve is from the per-ε PGD sweep, on synthav with a trained model (JT by default).

Prints one JSON object. Usage: ``python benchmarks/minimal_norm_gap.py [--defense jt] [--seed 0] [--n-train 1000]
[--n-test 200] [--epochs 3] [--modality a] [--eps 0.25,0.5,1,1.5,2] [--eval-samples N] [--deepfool-steps 50]
[--root DIR] [--threads 1]``. ``--epochs -1`` keeps the dataset's schedule, so with ``--n-train 4000 --n-test 1000
--root leaderboards/synthav/runs`` the leaderboard's own checkpoint is loaded, not retrained.

Trains (or loads from ``--root``) the defense via ``bench.api.train_defense`` and measures robust accuracy at every ε of
the grid four ways: the paper's ℓ2-PGD (4 steps of ε/3, one run per ε, batched), a stronger ℓ2-PGD (20 steps of
ε/8), the native minimal-norm attack ``fmn_l2`` (one run: robust at ε iff the sample's minimal norm exceeds ε)
and DeepFool through the torchattacks adapter (one run, same reading). ``gap_*`` is minimal-norm accuracy minus
PGD accuracy per ε: positive where the minimal-norm curve is the weaker attack, negative where it is stronger.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from mmrobust_bench.attacks import build_attack
from mmrobust_bench.bench.api import DEFAULT_EPS, train_defense
from mmrobust_bench.bench.environment import benchmark_machine
from mmrobust_bench.bench.evaluate import clean_accuracy, minimal_norm_curve, robust_accuracy
from mmrobust_bench.contracts import ThreatModel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--defense", default="jt")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-train", type=int, default=1000)
    parser.add_argument("--n-test", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=3, help="-1: the dataset's own schedule")
    parser.add_argument("--eval-samples", type=int, default=0, help="attack only the first N test clips (0: all)")
    parser.add_argument("--deepfool-steps", type=int, default=50, help="0 skips DeepFool")
    parser.add_argument("--modality", default="a")
    parser.add_argument("--eps", default=",".join(str(e) for e in DEFAULT_EPS))
    parser.add_argument("--fmn-steps", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=200)
    parser.add_argument("--root", help="runs folder (datasets, checkpoints); default: a temporary one")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1, as the leaderboards run)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)  # torch's default spins on busy cores (bench.busy_cores)
    grid = [float(e) for e in args.eps.split(",")]
    root = Path(args.root) if args.root else Path(tempfile.mkdtemp(prefix="mmrobust-gap-"))
    device = torch.device("cpu")
    start = time.perf_counter()
    trained = train_defense(
        args.defense,
        dataset_options={"n_train": args.n_train, "n_test": args.n_test},
        overrides={"epochs": args.epochs} if args.epochs >= 0 else {},
        seed=args.seed,
        root=root,
        device="cpu",
        progress=False,
    )
    train_seconds = time.perf_counter() - start
    ds = trained.dataset  # type: ignore[attr-defined]
    model = trained.model.eval()
    test = ds.test.subset(torch.arange(args.eval_samples)) if 0 < args.eval_samples < len(ds.test) else ds.test
    threat = ThreatModel.parse(args.modality, grid[0], ds.specs)

    curves, seconds = {}, {}
    for label, name, options in (
        ("pgd_l2", "pgd_l2", {}),
        ("pgd_l2_20steps", "pgd_l2", {"steps": 20, "step_ratio": 1 / 8}),
    ):
        start = time.perf_counter()
        measured = robust_accuracy(
            model, test, build_attack(name, ds.specs, **options), threat, grid, args.batch_size, device
        )
        seconds[label] = time.perf_counter() - start
        curves[label] = [m.accuracy for m in measured]
    minimal = {}
    minimal_attacks = [("fmn_l2", "fmn_l2", {"steps": args.fmn_steps})]
    if args.deepfool_steps > 0:
        minimal_attacks.append(("torchattacks:DeepFool", "torchattacks:DeepFool", {"steps": args.deepfool_steps}))
    for label, name, options in minimal_attacks:
        start = time.perf_counter()
        found = minimal_norm_curve(
            model, test, build_attack(name, ds.specs, **options), threat, grid, args.batch_size, device
        )
        seconds[label] = time.perf_counter() - start
        curves[label] = [m.accuracy for m in found.measurements]
        finite = found.norms[torch.isfinite(found.norms) & (found.norms > 0)]
        minimal[label] = {
            "radius": found.radius,
            "median_norm": float(finite.median()) if finite.numel() else None,
            "not_found": int(torch.isinf(found.norms).sum()),
        }
    gaps = {
        f"gap_{m}_minus_{p}": [round(a - b, 4) for a, b in zip(curves[m], curves[p])]
        for m, _, _ in minimal_attacks
        for p in ("pgd_l2", "pgd_l2_20steps")
    }
    print(
        json.dumps(
            {
                "benchmark": "minimal_norm_gap",
                "dataset": ds.name,
                "defense": args.defense,
                "seed": args.seed,
                "checkpoint_sha256": trained.sha256,
                "modality": "+".join(threat.modalities),
                "n_train": args.n_train,
                "n_test": args.n_test,
                "evaluated": len(test),
                "epochs": args.epochs,
                "train_seconds": round(train_seconds, 1),
                "cached": trained.cached,
                "clean_accuracy": clean_accuracy(model, test, args.batch_size, device).accuracy,
                "eps": grid,
                "accuracy": {k: [round(a, 4) for a in v] for k, v in curves.items()},
                **gaps,
                "max_abs_gap_fmn_vs_pgd": max(abs(g) for g in gaps["gap_fmn_l2_minus_pgd_l2"]),
                "minimal_norms": minimal,
                "seconds": {k: round(v, 2) for k, v in seconds.items()},
                "machine": benchmark_machine(device),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
