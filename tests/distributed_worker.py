"""Run by tests/test_distributed.py under ``torchrun --nproc-per-node 2`` (gloo on CPU); also runs alone.

Each rank (or the single process) builds the same seeded model and tiny synthav, then writes
``<out>/rank<r>.pt`` with: the synchronised gradients of one uneven global batch, clean / FGM / PGD
accuracies measured sharded, the minimal-norm per-sample norms, and a JT model after two data-parallel
epochs (BatchNorm: per-process statistics, rank 0's running statistics).
"""

import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from mmrobust_bench.attacks import build_attack
from mmrobust_bench.bench import distributed
from mmrobust_bench.bench.checkpoints import CheckpointKey
from mmrobust_bench.bench.evaluate import clean_accuracy, minimal_norm_curve, robust_accuracy
from mmrobust_bench.bench.train import _train_stage1, train
from mmrobust_bench.contracts import ThreatModel
from mmrobust_bench.data import build_dataset
from mmrobust_bench.defenses import TrainConfig, TrainContext, build_defense


def main(out: Path) -> None:
    world = distributed.init_from_env("cpu")
    torch.set_num_threads(1)  # the same kernels in every process, so identical computations give identical bits
    torch.manual_seed(0)
    ds = build_dataset("synthav", cache_dir=out / "datasets", n_train=96, n_test=70)
    defense, cfg = build_defense("jt", {"epochs": 2, "batch_size": 20, "feature_dim": 16}, TrainConfig(**{"lr": 0.05}))
    model = defense.build_model(ds, cfg)
    result: dict = {"world": world.world_size}
    # the same few full-batch steps in every process (no communication): a model worth attacking
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(40):
        opt.zero_grad()
        F.cross_entropy(model(ds.train.inputs).logits, ds.train.labels).backward()
        opt.step()

    # gradients of the mean loss over one global batch of 7 samples (split 4 + 3 over two ranks)
    model.eval()  # BatchNorm in eval mode: per-sample computation, so the split cannot change the gradient
    idx = torch.arange(7)
    part = distributed.shard_slice(idx, world.shard)
    batch = {m: x[part] for m, x in ds.train.inputs.items()}
    loss = F.cross_entropy(model(batch).logits, ds.train.labels[part])
    model.zero_grad()
    loss.backward()
    params = list(model.parameters())
    distributed.sync_gradients(params, len(part), len(idx))
    result["grads"] = [p.grad.clone() for p in params]

    # sharded evaluation, merged: batch size 16 over 70 samples gives 5 batches (3 on rank 0, 2 on rank 1)
    dev = torch.device("cpu")
    result["clean"] = clean_accuracy(model, ds.test, 16, dev).correct
    for name in ("fgm", "pgd_l2"):
        atk = build_attack(name, ds.specs, seed=3)
        ms = robust_accuracy(model, ds.test, atk, ThreatModel.parse("a", 0.5, ds.specs), [0.25, 0.5, 1.0], 16, dev)
        result[name] = [m.correct for m in ms]
    fmn = build_attack("fmn_l2", ds.specs, seed=3, steps=10)
    result["norms"] = minimal_norm_curve(
        model, ds.test, fmn, ThreatModel.parse("all", 1.0, ds.specs), [0.5, 1.0], 16, dev
    ).norms

    # two data-parallel epochs of JT (20 = 10 + 10 per global batch; the last global batch of 96 is 16)
    trained = train(defense, ds, cfg, seed=0, root=out / f"root{world.world_size}", device="cpu", progress=False)
    result["state"] = {k: v.clone() for k, v in trained.model.state_dict().items()}
    result["sha256"] = trained.sha256
    # the same two epochs on this rank's own copy, before anything is loaded from rank 0's checkpoint
    local = defense.build_model(ds, cfg)
    local.load_state_dict(model.state_dict())
    ctx = TrainContext(dataset=ds, train=cfg, device=dev, generator=torch.Generator().manual_seed(0))
    key = CheckpointKey("synthav", {}, "jt", {}, {"world": world.world_size}, 0)
    _train_stage1(defense, local, ctx, out / f"local{world.world_size}", key, resume=False, seed=0)
    result["local_state"] = {k: v.clone() for k, v in local.state_dict().items()}
    # a model without BatchNorm or dropout (MMT, LayerNorm): data-parallel training equals one process
    mmt, mmt_cfg = build_defense("mmt", {"epochs": 2, "batch_size": 24, "dropout": 0.0}, TrainConfig())
    trained = train(mmt, ds, mmt_cfg, seed=0, root=out / f"root{world.world_size}", device="cpu", progress=False)
    result["mmt_state"] = {k: v.clone() for k, v in trained.model.state_dict().items()}
    torch.save(result, out / f"{'single' if not world.active else f'rank{world.rank}'}.pt")
    distributed.shutdown()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
