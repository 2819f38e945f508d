"""CUDA paths: bf16 training and attacks, device placement, the main job. Skipped without a GPU."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mmrobust_bench.attacks.native import PGDL2
from mmrobust_bench.bench.api import run, train_defense
from mmrobust_bench.bench.evaluate import robust_accuracy
from mmrobust_bench.contracts import ThreatModel

REPO = Path(__file__).resolve().parents[1]
TINY = {"n_train": 512, "n_test": 256}


@pytest.mark.cuda
def test_bf16_crmt_training_on_cuda_keeps_the_head_fp32(tmp_path):
    trained = train_defense(
        "crmt_jt",
        root=tmp_path,
        device="cuda",
        progress=False,
        dataset_options=TINY,
        overrides={"epochs": 2, "precision": "bf16", "channels_last": True},
    )
    model = trained.model
    assert next(model.parameters()).is_cuda
    batch, labels = next(trained.dataset.test.batches(64, device="cuda"))
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = model(batch)
    assert out.logits.dtype == torch.float32 and all(z.dtype == torch.float32 for z in out.unimodal.values())
    assert float((out.logits.argmax(1) == labels).float().mean()) > 0.3


@pytest.mark.cuda
def test_bf16_pgd_on_cuda_is_within_half_a_point_of_fp32(tmp_path):
    trained = train_defense(
        "jt", root=tmp_path, device="cuda", progress=False, dataset_options=TINY, overrides={"epochs": 3}
    )
    ds, dev = trained.dataset, torch.device("cuda")
    threat = ThreatModel.parse("a", 1.0, ds.specs)
    fp32 = robust_accuracy(trained.model, ds.test, PGDL2(ds.specs), threat, [0.5, 1.0], 256, dev)
    bf16 = robust_accuracy(trained.model, ds.test, PGDL2(ds.specs, precision="bf16"), threat, [0.5, 1.0], 256, dev)
    for a, b in zip(fp32, bf16):
        assert abs(a.accuracy - b.accuracy) <= 0.02  # 256 samples: a few flips at most


@pytest.mark.cuda
def test_main_job_on_cuda_writes_rows(tmp_path):
    result = run(
        "crmt_at",
        "pgd_l2",
        "a",
        device="cuda",
        root=tmp_path,
        progress=False,
        dataset_options=TINY,
        overrides={"epochs": 2},
    )
    assert set(result.rows["device"]) == {"cuda"} and result.rows["accuracy"].between(0, 1).all()


@pytest.mark.cuda
def test_gpu_benchmark_quick_on_cuda():
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "gpu.py"), "--quick", "--device", "cuda"],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    result = json.loads(done.stdout)
    assert result["train"]["jt_tuned"]["peak_gib"] > 0


@pytest.mark.slow
def test_gpu_benchmark_script_runs_and_prints_its_json_on_cpu():
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "gpu.py"), "--quick", "--device", "cpu"],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    result = json.loads(done.stdout)
    assert result["quick"] is True and result["shapes"]["classes"] == 5
    for key in ("jt_reference_style", "jt_tuned", "crmt_reference_svd_loop", "crmt_tuned"):
        assert result["train"][key]["samples_per_s"] > 0
    assert result["pgd"]["fp32"]["n"] == result["pgd"]["bf16"]["n"] > 0
    assert set(result["targets_met"]) == {
        "jt_ge_1500",
        "crmt_ge_1400",
        "pgd_bf16_ge_1.5x_fp32",
        "pgd_accuracy_within_0.5_points",
        "lipschitz_ge_5x",
    }
    coding = result["msefm_sparse_coding"]
    stopped = coding["iterations_every_1"]
    assert stopped < coding["max_iter"] and stopped % 16 != 0  # the flag is set between two reads
    assert coding["iterations_every_16"] == math.ceil(stopped / 16) * 16
    assert coding["identical_codes_and_gradients"] is True


def one_training_step(name: str, device: str, tmp_path) -> torch.Tensor:
    """loss → backward → after_backward on a fresh model; on CUDA under sync debug mode "error"."""
    from mmrobust_bench.data import build_dataset
    from mmrobust_bench.defenses import TrainConfig, TrainContext, build_defense

    ds = build_dataset("synthav", cache_dir=tmp_path, **TINY)
    defense, _ = build_defense(name)
    cfg = TrainConfig(batch_size=64)
    model = defense.build_model(ds, cfg).to(device).train()
    ctx = TrainContext(
        dataset=ds, train=cfg, device=torch.device(device), generator=torch.Generator().manual_seed(0), epoch=0
    )
    defense.on_epoch_start(model, ctx)  # PMR prototypes: a per-epoch pass, allowed to sync
    batch, labels = next(ds.train.batches(64, device=device))
    strict = device == "cuda"
    if strict:
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
    try:
        loss = defense.loss(model, batch, labels, ctx)
        loss.backward()
        defense.after_backward(model, ctx)
    finally:
        if strict:
            torch.cuda.set_sync_debug_mode("default")
    return loss.detach().cpu()


STEP_DEFENSES = ["jt", "ogm_ge", "ogm", "pmr", "crmt_jt", "mixup", "crmt_mix", "mmat"]


@pytest.mark.parametrize("name", STEP_DEFENSES)
def test_training_step_helper_runs_on_cpu(name, tmp_path):
    assert torch.isfinite(one_training_step(name, "cpu", tmp_path))


@pytest.mark.cuda
@pytest.mark.parametrize("name", STEP_DEFENSES)
def test_training_step_makes_no_host_sync(name, tmp_path):
    """No .item(), data-dependent branch or pageable copy in the step: torch raises on any synchronising call
    (MMAT's step runs the native ℓ2-PGD with the video box clamp inside it)."""
    assert torch.isfinite(one_training_step(name, "cuda", tmp_path))


@pytest.mark.cuda
@pytest.mark.parametrize("name", ["fgm", "pgd_l2"])
def test_native_attack_makes_no_host_sync(name, tmp_path):
    from mmrobust_bench.attacks import build_attack
    from mmrobust_bench.data import build_dataset
    from mmrobust_bench.defenses import TrainConfig, build_defense

    ds = build_dataset("synthav", cache_dir=tmp_path, **TINY)
    defense, _ = build_defense("jt")
    model = defense.build_model(ds, TrainConfig()).cuda().eval()
    batch, labels = next(ds.test.batches(64, device="cuda"))
    attack = build_attack(name, ds.specs)
    threat = ThreatModel.parse("all", 1.0, ds.specs)
    attack(model, batch, labels, threat)  # warm-up: the box tensors are made (and cached) here
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        adv = attack(model, batch, labels, threat)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert set(adv) == {"v", "a"}


def exfmem_on(device: str, tmp_path, **solver):
    """An MSEFM model on ``device`` with random memories installed, and one test batch."""
    from mmrobust_bench.data import build_dataset
    from mmrobust_bench.defenses import TrainConfig, build_defense
    from mmrobust_bench.models.sparse_coding import lipschitz_step

    ds = build_dataset("synthav", cache_dir=tmp_path, **TINY)
    defense, _ = build_defense("msefm", {"memory_size": 64, **solver})
    torch.manual_seed(0)
    model = defense.build_model(ds, TrainConfig()).to(device).eval()
    gen = torch.Generator().manual_seed(0)
    memories = {m: torch.rand(model.memory(m).shape, generator=gen).to(device) for m in model.modalities}
    model.set_memories(memories, {m: lipschitz_step(d) for m, d in memories.items()})
    batch, labels = next(ds.test.batches(64, device=device))
    return model, batch, labels


@pytest.mark.cuda
def test_msefm_forward_and_backward_without_a_tolerance_make_no_host_sync(tmp_path):
    model, batch, labels = exfmem_on("cuda", tmp_path, tol=0.0, max_iter=40)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        torch.nn.functional.cross_entropy(model(batch).logits, labels).backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.cuda
def test_msefm_reads_its_stopping_flag_once_per_check_interval_on_cuda(tmp_path):
    """A tolerance no batch meets: 64 iterations per modality, one host read every 16 of them."""
    import warnings

    from mmrobust_bench.defenses.msefm import ACCELERATOR_CHECK_EVERY

    model, batch, labels = exfmem_on("cuda", tmp_path, tol=1e-30, max_iter=64)
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            torch.nn.functional.cross_entropy(model(batch).logits, labels).backward()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    reads = [w for w in caught if "synchroniz" in str(w.message)]
    assert len(reads) == len(model.modalities) * 64 // ACCELERATOR_CHECK_EVERY


def test_msefm_logits_and_input_gradients_do_not_depend_on_the_check_interval(tmp_path, monkeypatch):
    """The CPU run of the helper above: reading the stopping flag every 16 iterations, as on an
    accelerator, gives bit-identical logits and input gradients to reading it every iteration."""
    from mmrobust_bench.defenses import msefm

    model, batch, labels = exfmem_on("cpu", tmp_path, tol=1e-3, max_iter=200)
    solver, iterations = model.solver, []

    def recorded(*args, **kwargs):
        stats: dict = {}
        codes = solver(*args, **kwargs, stats=stats)
        iterations.append(stats["iterations"])
        return codes

    model.solver = recorded

    def logits_and_grads() -> list[torch.Tensor]:
        iterations.clear()
        inputs = {m: x.clone().requires_grad_(True) for m, x in batch.items()}
        logits = model(inputs).logits
        grads = torch.autograd.grad(torch.nn.functional.cross_entropy(logits, labels), list(inputs.values()))
        return [logits.detach(), *grads]

    every_iteration = logits_and_grads()
    stopped = list(iterations)
    assert all(1 < n < 200 and n % 16 != 0 for n in stopped), stopped  # the tolerance stops each modality
    monkeypatch.setattr(msefm, "CHECK_EVERY", {"cpu": 16})
    assert all(torch.equal(a, b) for a, b in zip(logits_and_grads(), every_iteration))
    assert iterations == [math.ceil(n / 16) * 16 for n in stopped]
