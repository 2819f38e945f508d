"""What the standard strong evaluation costs, and what ``fast`` gives up: seconds per model and threat set.

Prints one JSON object (and writes it to ``--out`` when given). Usage::

    python benchmarks/autoattack_cost.py --dataset synthav --samples 200
    python benchmarks/autoattack_cost.py --dataset avdigits --data-root FSDD/recordings --samples 200

For each dataset a model of ``--defense`` (seed ``--seed``, the dataset's schedule; trained or loaded from
``--root``) is attacked on the first ``--samples`` test samples at ``--eps`` on each modality alone, jointly
(``all``) and ``any`` (the per-sample worst case, combined from the sets at no cost; only when every set is
attacked: ``--sets`` restricts them, e.g. to the modality whose samples the ensemble breaks), with the paper's
4-step ℓ2-PGD (``pgd_l2``) and ``autoattack`` ``fast``, ``fast-all-targets`` and ``standard``. Per attack and
set: robust accuracy, process CPU seconds on the subset and extrapolated to the whole test split
(``seconds_per_model``), and the samples each autoattack member broke (``--versions`` picks the versions).
``gap``: per version, the reference's robust accuracy minus its own per set, and how many samples the two disagree
on; the reference (``gap_reference``) is standard when measured, else the last version named. ``leaderboard_hours``: the
extrapolated CPU hours of one ε per set for every model of a 15-entry × 3-seed leaderboard on one core. CPU time
(not wall time) so that other jobs on a shared machine do not inflate it; ``--threads`` intra-op threads
(default 1, as the leaderboards run).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from mmrobust_bench.attacks import build_attack
from mmrobust_bench.attacks.autoattack import check_version
from mmrobust_bench.bench.api import train_defense
from mmrobust_bench.bench.environment import benchmark_machine
from mmrobust_bench.bench.evaluate import robust_accuracy
from mmrobust_bench.bench.threat_sets import ANY, combine_any, threat_sets
from mmrobust_bench.contracts import ThreatModel

VERSIONS = ("fast", "fast-all-targets", "standard")  # the autoattack versions measured by default, cheapest first
LEADERBOARD_MODELS = 15 * 3


def measure(
    dataset: str,
    *,
    defense: str,
    samples: int,
    eps: float,
    root: Path,
    data_root: str | None,
    batch_size: int,
    seed: int = 0,
    only_sets: list[str] | None = None,
    dataset_options: dict | None = None,
    overrides: dict | None = None,
    versions: tuple[str, ...] = VERSIONS,
) -> dict:
    options = dict(dataset_options or {}) | ({"data_root": data_root} if data_root else {})
    trained = train_defense(
        defense,
        dataset=dataset,
        seed=seed,
        dataset_options=options,
        overrides=overrides,
        root=root,
        device="cpu",
        progress=False,
    )
    ds = trained.dataset  # type: ignore[attr-defined]
    test = ds.test.subset(torch.arange(min(samples, len(ds.test))))
    scale = len(ds.test) / len(test)
    every = threat_sets([s.name for s in ds.specs])
    unknown = sorted(set(only_sets or []) - set(every))
    if unknown:
        raise SystemExit(f"--sets: {', '.join(unknown)} not among {dataset}'s threat sets {', '.join(every)}")
    sets = [s for s in every if not only_sets or s in only_sets]
    whole = sets == every  # `any` (and the per-model totals) only over every set: a subset's worst case is not it
    out: dict = {
        "dataset": dataset,
        "defense": defense,
        "seed": seed,
        "checkpoint_sha256": trained.sha256,
        "eps": eps,
        "samples": len(test),
        "test_samples": len(ds.test),
        "attacks": {},
    }
    outcomes: dict[str, dict] = {}
    attacks = [("pgd_l2", {})] + [("autoattack", {"version": v}) for v in versions]
    for name, options_ in attacks:
        key = name if not options_ else f"{name}:{options_['version']}"
        atk = build_attack(name, ds.specs, seed=0, **options_)
        per_set, rows = {}, {}
        for choice in sets:
            threat = ThreatModel.parse(choice, eps, ds.specs)
            start = time.process_time()
            measured = robust_accuracy(trained.model, test, atk, threat, [eps], batch_size, torch.device("cpu"))
            seconds = time.process_time() - start
            per_set[choice] = measured
            rows[choice] = {
                "accuracy": measured[0].accuracy,
                "seconds": round(seconds, 2),
                "seconds_per_model": round(seconds * scale, 1),
                "breaks": (measured[0].details or {}).get("breaks"),
            }
        outcomes[key] = {s: per_set[s][0].outcomes for s in sets}
        if whole:
            any_measured = combine_any(per_set)[0]
            rows[ANY] = {
                "accuracy": any_measured.accuracy,
                "seconds": round(sum(r["seconds"] for r in rows.values()), 2),
                "seconds_per_model": round(sum(r["seconds_per_model"] for r in rows.values()), 1),
            }
            outcomes[key][ANY] = any_measured.outcomes
        out["attacks"][key] = rows
    # each version's gap to the reference: standard when measured, else the last version named
    reference = "standard" if "standard" in versions else versions[-1]
    ref = f"autoattack:{reference}"
    out["gap_reference"] = reference
    out["gap"] = {
        version: {
            s: {
                "accuracy": round(
                    out["attacks"][ref][s]["accuracy"] - out["attacks"][f"autoattack:{version}"][s]["accuracy"], 4
                ),
                "samples_disagreeing": int((outcomes[ref][s] != outcomes[f"autoattack:{version}"][s]).sum()),
            }
            for s in outcomes[ref]
        }
        for version in versions
        if version != reference
    }
    if whole:
        out["leaderboard_hours"] = {
            key: round(rows[ANY]["seconds_per_model"] * LEADERBOARD_MODELS / 3600, 2)
            for key, rows in out["attacks"].items()
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dataset",
        action="append",
        choices=("synthav", "avdigits"),
        help="dataset(s) to measure (repeat the option; default synthav)",
    )
    parser.add_argument("--defense", default="jt")
    parser.add_argument(
        "--versions",
        default=",".join(VERSIONS),
        help="comma list of the autoattack versions to measure; each one's gap is to standard when it is measured, "
        f"else to the last one named (default: {','.join(VERSIONS)})",
    )
    parser.add_argument("--seed", type=int, default=0, help="training seed of the model (default: 0)")
    parser.add_argument(
        "--sets",
        help="comma list of the threat sets to attack, e.g. a (default: every modality alone and all; `any` and "
        "leaderboard_hours only then)",
    )
    parser.add_argument("--n-train", type=int, help="training samples (default: the dataset's own)")
    parser.add_argument("--n-test", type=int, help="test samples built (default: the dataset's own)")
    parser.add_argument("--epochs", type=int, help="training epochs (default: the dataset's schedule)")
    parser.add_argument("--samples", type=int, default=200, help="test samples attacked (default: 200)")
    parser.add_argument("--eps", type=float, default=0.5, help="the headline ℓ2 radius (default: 0.5)")
    parser.add_argument(
        "--data-root",
        default=os.environ.get("MMROBUST_FSDD_ROOT"),
        help="FSDD recordings for avdigits (default: $MMROBUST_FSDD_ROOT)",
    )
    parser.add_argument("--root", type=Path, default=Path("runs"), help="checkpoint and dataset cache (default: runs)")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    result = {
        "benchmark": "autoattack_cost",
        "threads": args.threads,
        "machine": benchmark_machine(),
        "datasets": [],
    }
    sizes = {"n_train": args.n_train, "n_test": args.n_test}
    versions = tuple(v.strip() for v in args.versions.split(",") if v.strip())
    for version in versions:
        check_version(version)  # an unknown name fails here, before any training
    for dataset in args.dataset or ["synthav"]:
        result["datasets"].append(
            measure(
                dataset,
                defense=args.defense,
                samples=args.samples,
                eps=args.eps,
                root=args.root,
                data_root=args.data_root if dataset == "avdigits" else None,
                batch_size=args.batch_size,
                seed=args.seed,
                only_sets=args.sets.split(",") if args.sets else None,
                dataset_options={k: v for k, v in sizes.items() if v is not None},
                overrides={"epochs": args.epochs} if args.epochs is not None else None,
                versions=versions,
            )
        )
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
