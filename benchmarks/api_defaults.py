"""How long the Python API's certificate calls take at their defaults: ``mmr.smooth_certify`` and ``mmr.certificates``.

Prints one JSON object (and writes it to ``--out`` when given). Usage::

    python benchmarks/api_defaults.py --data-root FSDD/recordings --samples 100

A leaderboard model (``--entry``, seed 0, from the avdigits zoo: a user's model as ``mmr.load_model`` gives it) is
certified on the first ``--samples`` test samples, with every argument the README shows left at its default:
``smooth_certify`` with the noise on each modality alone and on both, and ``certificates`` with the constants
from the first ``--train-samples`` training samples, with the default honesty check and with the leaderboards'
cheaper one (50 steps towards the top 3 runner-ups). Per call: process CPU seconds,
seconds per test sample, the extrapolation to the whole test split and the call's own up-front estimate
(``plug.estimate``). CPU time (not wall time) so that other jobs on a shared machine do not inflate it;
``--threads`` intra-op threads (default 1).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import torch

import mmrobust_bench as mmr
from mmrobust_bench.bench.environment import benchmark_machine
from mmrobust_bench.certify.honesty import HonestyConfig

LEADERBOARD_CHECK = HonestyConfig(steps=50, targeted_classes=3)  # the leaderboards' sweep.yaml honesty settings


class First:
    """The first ``n`` samples of a loader, in its batches (the last one cut)."""

    def __init__(self, loader, n: int) -> None:
        self.loader, self.n = loader, int(n)

    def __iter__(self):
        left = self.n
        for batch in self.loader:
            if left <= 0:
                return
            size = int(batch["label"].shape[0])
            yield batch if size <= left else {k: v[:left] for k, v in batch.items()}
            left -= size

    def __len__(self) -> int:  # batches, as a DataLoader says: what the calls' up-front estimates read
        return math.ceil(self.n / self.loader.batch_size)


def timed(call):
    start = time.process_time()
    value = call()
    return value, time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entry", default="jt", help="avdigits leaderboard entry (default: jt)")
    parser.add_argument(
        "--data-root",
        default=os.environ.get("MMROBUST_FSDD_ROOT"),
        help="FSDD recordings (default: $MMROBUST_FSDD_ROOT)",
    )
    parser.add_argument("--samples", type=int, default=100, help="test samples certified (default: 100)")
    parser.add_argument("--train-samples", type=int, default=1000, help="training samples for certificates' constants")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    if not args.data_root:
        parser.error("--data-root (FSDD's recordings/ folder) or $MMROBUST_FSDD_ROOT is needed")
    torch.set_num_threads(args.threads)
    model = mmr.load_model("avdigits", args.entry, seed=0)
    test_all = mmr.load_dataset("avdigits", split="test", data_root=args.data_root)
    train_all = mmr.load_dataset("avdigits", split="train", data_root=args.data_root)
    test, train = First(test_all, args.samples), First(train_all, args.train_samples)
    scale = test_all.n / args.samples
    calls = {}
    for modality in [s.name for s in test_all.specs] + ["all"]:
        result, seconds = timed(lambda m=modality: mmr.smooth_certify(model, test, modality=m))
        calls[f"smooth_certify[{modality}]"] = {
            "seconds": round(seconds, 1),
            "seconds_per_sample": round(seconds / args.samples, 3),
            "whole_test_split_minutes": round(seconds * scale / 60, 1),
            "largest_radius": round(result.largest_radius, 3),
        }
    # the default honesty check (100 steps towards every runner-up), then the leaderboards' cheaper one
    for name, honesty in (("certificates", None), ("certificates[leaderboard check]", LEADERBOARD_CHECK)):
        result, seconds = timed(lambda h=honesty: mmr.certificates(model, train, test, honesty=h))
        calls[name] = {
            "seconds": round(seconds, 1),
            "seconds_per_sample": round(seconds / args.samples, 3),
            "whole_test_split_minutes": round(seconds * scale / 60, 1),
            "train_samples": args.train_samples,
            "honesty_attack": str(result.summary["honesty_attack"].iloc[0]),
        }
    out = {
        "benchmark": "api_defaults",
        "threads": args.threads,
        "machine": benchmark_machine(),
        "model": {"dataset": "avdigits", **model.zoo_entry},  # type: ignore[dict-item]
        "samples": args.samples,
        "test_samples": test_all.n,
        "calls": calls,
    }
    text = json.dumps(out, indent=1, default=str)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
