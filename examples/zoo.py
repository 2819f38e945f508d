"""Attack a leaderboard model with your own attack: the model and its test split come from the leaderboard's zoo.

``python examples/zoo.py --dataset avdigits --data-root free-spoken-digit-dataset/recordings`` loads the avdigits
leaderboard's JT model (seed 0) from ``leaderboards/avdigits/zoo``; without ``--dataset`` it takes synthav's
(``--leaderboards DIR`` or ``$MMROBUST_LEADERBOARDS`` for another copy; ``mmrobust-bench zoo list`` shows what
is there). It attacks the audio with a one-step gradient attack written here in five lines, and prints its
accuracy beside the suite's FGM through ``mmr.evaluate`` and the leaderboard's own stored row for that cell.
Loading checks the file's sha256 against the zoo's index; synthav is generated, so nothing needs downloading.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

import mmrobust_bench as mmr
from mmrobust_bench.bench.zoo_index import ZooError


def my_attack(model: torch.nn.Module, batch: dict, eps: float) -> dict:
    """The user's own attack: one gradient step of ℓ2 length ``eps`` on the audio (``a``) of each sample."""
    audio = batch["a"].clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(model({**batch, "a": audio}).logits, batch["label"]), audio)
    step = grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (grad.dim() - 1))
    return {**batch, "a": (audio + eps * step).detach()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="synthav", help="which leaderboard: synthav or avdigits")
    parser.add_argument("--data-root", help="avdigits: FSDD's recordings/ folder (default: $MMROBUST_FSDD_ROOT)")
    parser.add_argument("--leaderboards", help="folder holding <dataset>/zoo (default: the checkout's leaderboards/)")
    parser.add_argument("--entry", default="jt", help="leaderboard entry (its label)")
    parser.add_argument("--seed", type=int, default=0, help="which seed's model")
    parser.add_argument("--eps", type=float, default=1.0, help="ℓ2 budget on the audio, in model-input space")
    args = parser.parse_args()
    zoo = f"{args.leaderboards}/{args.dataset}/zoo" if args.leaderboards else None

    try:
        model = mmr.load_model(args.dataset, args.entry, seed=args.seed, zoo=zoo)  # sha256 checked against the index
    except ZooError as exc:
        raise SystemExit(f"examples/zoo.py: {exc}") from None
    # the leaderboard's test split, in its batches
    test = mmr.load_dataset(args.dataset, split="test", zoo=zoo, data_root=args.data_root)
    correct = sum(int((model(my_attack(model, b, args.eps)).logits.argmax(1) == b["label"]).sum()) for b in test)
    print(f"my attack: accuracy {correct / test.n:.4f} on {test.n} test samples at eps {args.eps:g} (audio)")

    rows = mmr.evaluate(
        model,
        test,
        attack="fgm",
        modality="a",
        eps=[args.eps],
        label=args.entry,
        dataset=args.dataset,
        seed=args.seed,
        check_flags=False,
    )
    print(mmr.format_table(rows))
    from mmrobust_bench.bench.zoo import read_zoo, show_rows, zoo_dir

    found = read_zoo(zoo_dir(args.dataset, zoo))
    stored = show_rows(found, found.find(args.entry, args.seed))
    cell = stored[(stored["attack"] == "fgm") & (stored["modality"] == "a") & (stored["eps"] == args.eps)]
    for r in cell.itertuples(index=False):
        print(f"leaderboard row: fgm on a at eps {r.eps:g}: accuracy {r.accuracy:.4f} (n {r.n})")


if __name__ == "__main__":
    main()
