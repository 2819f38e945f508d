"""MMT: tokenisers and their grids, hierarchical attention, training defaults, CRMT on MMT, attacks."""

import itertools
import logging
import math

import pytest
import torch

from mmrobust_bench.attacks import build_attack
from mmrobust_bench.bench.api import train_defense
from mmrobust_bench.bench.checkpoints import load_stage
from mmrobust_bench.bench.evaluate import clean_accuracy
from mmrobust_bench.bench.train import _scheduler, lr_factor
from mmrobust_bench.certify import estimate_lipschitz
from mmrobust_bench.contracts import ModalitySpec, ModelOutput, ThreatModel, joint_l2_norm
from mmrobust_bench.data.synthav import SynthAVConfig, audio_spec, visual_spec
from mmrobust_bench.defenses import TrainConfig, build_defense
from mmrobust_bench.models.mmt import PRESETS, MMTNet, PatchTokenizer, build_mmt, resolve_preset

SYNTH_SPECS = (visual_spec(SynthAVConfig()), audio_spec(SynthAVConfig()))
PAPER_SPECS = (ModalitySpec("v", (3, 3, 224, 224)), ModalitySpec("a", (1, 1024, 128)))
SYNTH_TRAIN = {"epochs": 6, "batch_size": 64, "lr": 0.05, "lr_step": 0, "optimizer": "sgd"}  # synthav's defaults


def synth_batch(n: int, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {s.name: s.clamp(torch.randn((n,) + s.shape, generator=gen)) for s in SYNTH_SPECS}


def small_model(head: str = "concat", **changes) -> MMTNet:
    torch.manual_seed(0)
    return build_mmt(SYNTH_SPECS, 10, head=head, **changes).eval()


def test_synthav_picks_the_small_preset_with_expected_token_counts_and_shapes():
    model = small_model()
    assert model.size == "small" and model.preset == PRESETS["small"]
    width = model.preset.width
    assert model.encoders["v"].tokenizer.grid == (3, 4, 4) and model.encoders["v"].tokenizer.num_tokens == 48
    assert model.encoders["a"].tokenizer.grid == (1, 8, 5) and model.encoders["a"].tokenizer.num_tokens == 40
    batch = synth_batch(2)
    streams = model.stream_tokens(batch)
    assert streams["v"].shape == (2, 1 + 48, width) and streams["a"].shape == (2, 1 + 40, width)
    out = model(batch)
    assert isinstance(out, ModelOutput) and out.logits.shape == (2, 10)
    assert {m: tuple(t.shape) for m, t in out.unimodal.items()} == {"v": (2, 10), "a": (2, 10)}
    assert {m: tuple(t.shape) for m, t in out.features.items()} == {"v": (2, width), "a": (2, width)}


def test_paper_scale_tokenisers_give_588_visual_and_512_audio_tokens():
    name, preset = resolve_preset(PAPER_SPECS)
    assert name == "paper" and preset.width == 512 and preset.patch == 16
    assert (preset.heads, preset.mlp_ratio, preset.unimodal_layers, preset.fusion_layers) == (8, 4.0, 4, 2)
    video = PatchTokenizer(PAPER_SPECS[0], preset.patch, preset.width)
    audio = PatchTokenizer(PAPER_SPECS[1], preset.patch, preset.width)
    assert video.grid == (3, 14, 14) and video.num_tokens == 588
    assert audio.grid == (1, 64, 8) and audio.num_tokens == 512
    assert video.temporal_pos.shape == (1, 3, 1, 512) and video.spatial_pos.shape == (1, 1, 196, 512)
    assert audio.temporal_pos is None and audio.spatial_pos.shape == (1, 1, 512, 512)
    with torch.no_grad():
        assert video(torch.randn(1, 3, 3, 224, 224)).shape == (1, 588, 512)
        assert audio(torch.randn(1, 1, 1024, 128)).shape == (1, 512, 512)


def test_tokens_are_the_patches_in_time_then_row_major_order():
    spec = ModalitySpec("v", (2, 3, 4, 6))
    tok = PatchTokenizer(spec, patch=2, width=2 * 2 * 2)
    with torch.no_grad():
        tok.embed.weight.copy_(torch.eye(8))
        tok.embed.bias.zero_()
    x = torch.randn(1, *spec.shape)
    tokens = tok(x)
    assert tokens.shape == (1, 3 * 2 * 3, 8)
    for t in range(3):
        for i in range(2):
            for j in range(3):
                patch = x[0, :, t, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2].flatten()
                assert torch.equal(tokens[0, t * 6 + i * 3 + j], patch)


def test_patch_size_must_divide_the_frames():
    with pytest.raises(ValueError, match="not divisible into 16×16"):
        build_mmt(SYNTH_SPECS, 10, size="paper")
    assert build_mmt(SYNTH_SPECS, 10, size="small", patch=4).encoders["a"].tokenizer.num_tokens == 16 * 10


def _input_grads(output: torch.Tensor, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Gradients of a random projection (a plain sum of a LayerNorm output is constant)."""
    weights = torch.randn(output.shape, generator=torch.Generator().manual_seed(1))
    grads = torch.autograd.grad((output * weights).sum(), list(inputs.values()), retain_graph=True, allow_unused=True)
    return {m: torch.zeros_like(inputs[m]) if g is None else g for m, g in zip(inputs, grads)}


def test_cls_tokens_mix_modalities_only_in_the_joint_layers():
    model = small_model()
    inputs = {m: x.requires_grad_(True) for m, x in synth_batch(2).items()}
    streams = model.stream_tokens(inputs)
    feats = model.encode(inputs)
    for m, other in (("v", "a"), ("a", "v")):
        before = _input_grads(streams[m][:, 0], inputs)
        assert before[m].abs().sum() > 0 and torch.count_nonzero(before[other]) == 0
        after = _input_grads(feats[m], inputs)
        assert after[m].abs().sum() > 0 and after[other].abs().sum() > 0
    late = small_model(fusion_layers=0)
    feats = late.encode(inputs)
    assert torch.count_nonzero(_input_grads(feats["v"], inputs)["a"]) == 0


def test_dropped_features_are_zeroed_after_fusion():
    model = small_model()
    model.dropped_features = frozenset({"a"})
    out = model(synth_batch(2))
    assert torch.count_nonzero(out.features["a"]) == 0 and torch.count_nonzero(out.features["v"]) > 0


def test_bf16_autocast_forward_is_finite():
    model = small_model(head="crmt")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(synth_batch(2))
    assert torch.isfinite(out.logits).all() and out.logits.dtype == torch.float32  # the CRMT head runs in fp32


def test_training_defaults_follow_the_dataset_schedule_and_user_overrides_win():
    _, paper = build_defense("mmt", {}, TrainConfig())
    assert (paper.optimizer, paper.lr, paper.weight_decay, paper.warmup_epochs, paper.lr_schedule) == (
        "adamw",
        1e-4,
        0.05,
        5,
        "cosine",
    )
    synth = TrainConfig(**SYNTH_TRAIN)
    _, short = build_defense("mmt", {}, synth)
    assert (short.optimizer, short.lr, short.warmup_epochs, short.lr_schedule, short.epochs) == (
        "adamw",
        1e-3,
        1,
        "cosine",
        6,
    )
    defense, user = build_defense("crmt_mmt", {"lr": "0.0005", "warmup_epochs": 0, "rho": 1.0, "size": "small"}, synth)
    assert user.lr == 5e-4 and user.warmup_epochs == 0 and defense.config.rho == 1.0
    assert defense.config.step2 is False and defense.config.size == "small"
    _, jt = build_defense("jt", {}, synth)
    assert jt == synth  # defenses without train_defaults are unaffected
    with pytest.raises(ValueError, match="size must be one of"):
        build_defense("mmt", {"size": "huge"})
    with pytest.raises(ValueError, match="lr_schedule must be"):
        build_defense("mmt", {"lr_schedule": "linear"})


def test_warmup_then_cosine_schedule_and_unchanged_step_schedule():
    cfg = TrainConfig(epochs=10, warmup_epochs=2, lr_schedule="cosine")
    factors = [lr_factor(cfg, e) for e in range(10)]
    assert factors[:3] == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert factors[2:] == pytest.approx([0.5 * (1 + math.cos(math.pi * i / 8)) for i in range(8)])
    assert all(a > b > 0 for a, b in itertools.pairwise(factors[2:]))
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = _scheduler(opt, cfg)
    seen = []
    for _ in range(10):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx([0.1 * f for f in factors])
    step = TrainConfig(lr_step=3, lr_gamma=0.5)
    assert isinstance(_scheduler(opt, step), torch.optim.lr_scheduler.StepLR)
    assert _scheduler(opt, TrainConfig(lr_step=0)) is None
    with pytest.raises(ValueError, match="warmup_epochs"):
        TrainConfig(warmup_epochs=-1)


@pytest.mark.parametrize("modality", ["v", "a", "all"])
def test_native_pgd_runs_on_mmt(modality):
    model = small_model(head="crmt")
    batch = synth_batch(3)
    labels = model(batch).logits.argmax(1)
    threat = ThreatModel.parse(modality, 0.5, SYNTH_SPECS)
    adv = build_attack("pgd_l2", SYNTH_SPECS)(model, batch, labels, threat)
    assert {m: x.shape for m, x in adv.items()} == {m: x.shape for m, x in batch.items()}
    assert all(torch.isfinite(x).all() for x in adv.values())
    delta = {m: adv[m] - batch[m] for m in batch}
    assert bool((joint_l2_norm(delta, threat.modalities) <= 0.5 * (1 + 1e-5)).all())
    assert bool((joint_l2_norm(delta, threat.modalities) > 0).all())
    assert torch.isfinite(model(adv).logits).all()


def test_lipschitz_estimate_runs_on_mmt():
    model = small_model(head="crmt")
    batches = [(synth_batch(3, seed), torch.zeros(3, dtype=torch.long)) for seed in range(2)]
    tau = estimate_lipschitz(model, batches, ["v", "a"])
    assert set(tau) == {"v", "a"}
    assert all(t.shape == (10,) and torch.isfinite(t).all() and bool((t > 0).all()) for t in tau.values())
    assert not model.training


def test_crmt_mmt_step2_is_an_option_and_certificates_are_labelled_heuristic(tmp_path, caplog):
    options = dict(n_train=64, n_test=32)
    with caplog.at_level(logging.WARNING, logger="mmrobust_bench.defenses.mmt"):
        trained = train_defense(
            "crmt_mmt",
            dataset_options=options,
            overrides={"epochs": 1, "step2": True, "step2_epochs": 1, "lip_max_samples": 32},
            root=tmp_path,
            progress=False,
        )
    assert "heuristic for MMT" in caplog.text
    assert int(trained.extra["certificate_heuristic"]) == 1
    assert trained.extra["lipschitz.v"].shape == (10,) and trained.extra["lipschitz.a"].shape == (10,)
    final, extra, _ = load_stage(trained.directory, "final")
    assert int(extra["certificate_heuristic"]) == 1
    stage1, _, _ = load_stage(trained.directory, "stage1")
    changed = {k for k, v in final.items() if not torch.equal(v, stage1[k])}
    assert changed == {"head.integration.v", "head.integration.a"}


@pytest.fixture(scope="module")
def shared_root(tmp_path_factory):
    return tmp_path_factory.mktemp("mmt_runs")  # one synthav cache for both training tests


@pytest.mark.slow
@pytest.mark.parametrize("defense", ["mmt", "crmt_mmt"])
def test_mmt_trains_beyond_chance_on_synthav(defense, shared_root):
    overrides = {"epochs": 3} if defense == "mmt" else {"epochs": 3, "lip_max_samples": 64}
    trained = train_defense(
        defense, dataset_options=dict(n_train=600, n_test=200), overrides=overrides, root=shared_root, progress=False
    )
    assert trained.train_config.optimizer == "adamw" and trained.train_config.lr_schedule == "cosine"
    acc = clean_accuracy(trained.model, trained.dataset.test, 200, torch.device("cpu"))
    assert acc.accuracy >= 0.5
    if defense == "crmt_mmt":
        assert set(trained.extra) == {"lipschitz.v", "lipschitz.a", "certificate_heuristic"}
        assert all(torch.isfinite(trained.extra[f"lipschitz.{m}"]).all() for m in ("v", "a"))


@pytest.mark.parametrize(
    "attack,options,modality,eps",
    [
        ("fgm", {}, "a", 0.5),
        ("pgd_l2", {"precision": "bf16"}, "v", 0.5),
        ("missing", {}, "a", 0.0),
        ("missing", {"level": "feature"}, "v", 0.0),
        ("fmn_l2", {"steps": 5}, "all", 2.0),
        ("torchattacks:PGDL2", {"steps": 3}, "all", 0.5),
        ("torchattacks:FGSM", {}, "a", 0.05),
        ("art:FastGradientMethod", {}, "a", 0.5),
        ("art:ProjectedGradientDescent", {"max_iter": 3}, "v", 0.5),
    ],
)
def test_every_attack_family_runs_on_mmt_within_its_budget(attack, options, modality, eps):
    from mmrobust_bench.bench.evaluate import attack_setting

    model = small_model(head="crmt")
    batch = synth_batch(4, seed=1)
    labels = model(batch).logits.argmax(1)
    atk = build_attack(attack, SYNTH_SPECS, **options)
    norm = "linf" if attack == "torchattacks:FGSM" else "l2"
    threat = ThreatModel.parse(modality, eps, SYNTH_SPECS, norm=norm)
    with attack_setting(model, atk, threat):
        adv = atk(model, batch, labels, threat)
        logits = model({**batch, **adv}).logits
    assert torch.isfinite(logits).all()
    assert set(adv) == set(batch)
    for m, x in batch.items():
        assert (adv[m].shape, adv[m].dtype) == (x.shape, x.dtype)
        spec = {s.name: s for s in SYNTH_SPECS}[m]
        assert torch.equal(spec.clamp(adv[m]), adv[m])
        if m not in threat.modalities:
            assert torch.equal(adv[m], x)  # the modality that is not attacked is untouched
    if options.get("level") != "feature":  # a feature-level drop acts inside the model, not on its inputs
        assert all(not torch.equal(adv[m], batch[m]) for m in threat.modalities)
    if atk.norm_bounded:
        delta = {m: adv[m] - batch[m] for m in threat.modalities}
        size = (
            joint_l2_norm(delta, threat.modalities)
            if norm == "l2"
            else torch.stack([d.flatten(1).abs().amax(1) for d in delta.values()]).amax(0)
        )
        assert bool((size <= eps * (1 + 1e-4)).all())
