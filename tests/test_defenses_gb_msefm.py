"""Gradient Blending, sparse coding and MSEFM: closed forms, hand-computed weights, literal formulas."""

import math
from typing import ClassVar

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mmrobust_bench.bench.api import train_defense
from mmrobust_bench.bench.evaluate import clean_accuracy
from mmrobust_bench.contracts import ModalitySpec
from mmrobust_bench.data.base import InMemoryDataset, TensorSplit
from mmrobust_bench.defenses import TrainConfig, TrainContext, build_defense
from mmrobust_bench.defenses.gb import (
    FUSED,
    WEIGHT_FLOOR,
    GradientBlending,
    Losses,
    attach_aux_heads,
    blend_weights,
    holdout_split,
    super_epoch_length,
)
from mmrobust_bench.defenses.msefm import MSEFM, OFFICIAL_KS_STEPS, ExFMemNet, mean_cosine
from mmrobust_bench.models import ConcatHead, MultiModalNet, sparse_coding
from mmrobust_bench.models.sparse_coding import (
    FORMS,
    STOPPING,
    StoppingRule,
    check_step,
    data_gradient,
    fista,
    ista,
    lipschitz_step,
    max_eigenvalue,
    soft_threshold,
    stopping_rule,
)

from helpers import linear_model

SOLVERS = {"ista": ista, "fista": fista}


def orthonormal_columns(rows: int, cols: int, seed: int = 0, scale: float = 1.0) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    return scale * q


# ---------------------------------------------------------------- sparse coding


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("solver", SOLVERS)
def test_orthonormal_dictionary_gives_the_soft_threshold_solution(solver, form):
    d = orthonormal_columns(6, 4)
    x = torch.randn(6, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    step = lipschitz_step(d)
    assert step == pytest.approx(1.0, rel=1e-12)
    codes = SOLVERS[solver](d, x, 0.3, step, max_iter=50, tol=1e-12, form=form)
    assert torch.allclose(codes, soft_threshold(d.t() @ x, 0.3), atol=1e-12)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("solver", SOLVERS)
def test_recovers_a_known_sparse_code_exactly(solver, form):
    """On a well-conditioned dictionary with the right support and signs, the lasso solution is
    h_S = (D_Sᵀ D_S)⁻¹ (D_Sᵀ x − λ sign(h_S)), h elsewhere 0."""
    gen = torch.Generator().manual_seed(2)
    d = torch.randn(30, 8, generator=gen, dtype=torch.float64)
    d = d / d.norm(dim=0)
    truth = torch.tensor([0.0, 2.0, 0.0, -1.5, 0.0, 0.0, 1.0, 0.0], dtype=torch.float64)
    x = (d @ truth)[:, None]
    lam = 0.05
    support = truth != 0
    ds = d[:, support]
    expected = torch.zeros(8, dtype=torch.float64)
    expected[support] = torch.linalg.solve(ds.t() @ ds, ds.t() @ x[:, 0] - lam * truth[support].sign())
    codes = SOLVERS[solver](d, x, lam, lipschitz_step(d), max_iter=5000, tol=1e-13, form=form)
    assert torch.allclose(codes[:, 0], expected, atol=1e-9)


def test_step_check_rejects_official_constants_on_large_features():
    big = orthonormal_columns(8, 6, scale=1000.0)  # λ_max(DᵀD) = 1e6: α_v·λ_max = 2
    assert max_eigenvalue(big) == pytest.approx(1e6)
    with pytest.raises(ValueError, match=r"too large for this dictionary.*= 2 > 1"):
        check_step(big, OFFICIAL_KS_STEPS["v"])
    check_step(orthonormal_columns(8, 6, scale=math.sqrt(4e5)), OFFICIAL_KS_STEPS["v"])  # α·λ_max = 0.8
    check_step(big, lipschitz_step(big))  # the recommended step passes despite rounding
    defense = MSEFM(MSEFM.Config(solver="ista", step_rule="official", max_iter=2000))
    model = exfmem_model(defense, memory_size=6, dims=8)
    with pytest.raises(ValueError, match="too large"):
        model.set_memories({m: big.float() for m in "va"}, {m: defense.step_size(m, big) for m in "va"})


def test_ista_gradients_flow_through_the_unrolled_iterations():
    d = torch.randn(4, 6, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    x = torch.randn(4, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64, requires_grad=True)
    step = lipschitz_step(d)
    assert torch.autograd.gradcheck(lambda s: d @ ista(d, s, 0.1, step, max_iter=30, tol=0.0), (x,))


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("solver", SOLVERS)
def test_gradient_is_the_jacobian_of_the_lasso_solution(solver, form):
    """With support S fixed, ∂⟨w, h⟩/∂x = D_S (D_Sᵀ D_S)⁻¹ w_S: FISTA's derivative converges to it."""
    gen = torch.Generator().manual_seed(2)
    d = torch.randn(30, 8, generator=gen, dtype=torch.float64)
    d = d / d.norm(dim=0)
    truth = torch.tensor([0.0, 2.0, 0.0, -1.5, 0.0, 0.0, 1.0, 0.0], dtype=torch.float64)
    x = (d @ truth)[:, None].requires_grad_(True)
    w = torch.randn(8, 1, generator=gen, dtype=torch.float64)
    codes = SOLVERS[solver](d, x, 0.05, lipschitz_step(d), max_iter=5000, tol=1e-13, form=form)
    (grad,) = torch.autograd.grad((codes * w).sum(), x)
    ds = d[:, truth != 0]
    expected = ds @ torch.linalg.solve(ds.t() @ ds, w[truth != 0])
    assert torch.allclose(grad, expected, atol=1e-8)


def test_both_gradient_forms_are_the_data_term_gradient_and_agree_in_float64():
    """Dᵀ(DH − X) = DᵀD H − DᵀX: the forms agree to rounding on one step, and after 200 FISTA iterations in float64
    the codes and input gradients agree to 1e-9 (in float32 the difference is rounding amplified, ~1e-3 in the
    gradients: benchmarks/fista_forms.py)."""
    gen = torch.Generator().manual_seed(9)
    d = torch.randn(16, 64, generator=gen, dtype=torch.float64)
    x = torch.randn(16, 5, generator=gen, dtype=torch.float64)
    h = torch.randn(64, 5, generator=gen, dtype=torch.float64)
    exact = d.t() @ (d @ h - x)
    for form in FORMS:
        assert torch.allclose(data_gradient(d, x, form)(h), exact, atol=1e-12)
    with pytest.raises(ValueError, match="gradient form must be one of residual, gram, got 'gramm'"):
        data_gradient(d, x, "gramm")
    w = torch.randn(64, 5, generator=gen, dtype=torch.float64)
    results = []
    for form in FORMS:
        signals = x.clone().requires_grad_(True)
        codes = fista(d, signals, 0.1, lipschitz_step(d), max_iter=200, tol=0.0, form=form)
        results.append((codes.detach(), torch.autograd.grad((codes * w).sum(), signals)[0]))
    (c1, g1), (c2, g2) = results
    assert torch.allclose(c1, c2, atol=1e-9) and torch.allclose(g1, g2, atol=1e-9)


def test_msefm_defaults_to_the_residual_form_and_keys_the_gram_form_as_before():
    from mmrobust_bench.defenses import build_defense

    default, _ = build_defense("msefm")
    gram, _ = build_defense("msefm", {"gradient_form": "gram"})
    assert default.config.gradient_form == "residual" and default.config_dict()["gradient_form"] == "residual"
    # checkpoints made before the option existed used the Gram form and were keyed without the field
    assert "gradient_form" not in gram.config_dict()
    assert gram.config_dict() == {k: v for k, v in default.config_dict().items() if k != "gradient_form"}
    with pytest.raises(ValueError, match="gradient_form must be one of residual, gram"):
        build_defense("msefm", {"gradient_form": "dense"})
    # the model runs the configured form: its recall equals the solver called with that form
    gen = torch.Generator().manual_seed(4)
    memory = torch.randn(4, 6, generator=gen)
    features = torch.randn(3, 4, generator=gen)
    for form in FORMS:
        defense = MSEFM(MSEFM.Config(gradient_form=form))
        model = exfmem_model(defense, memory_size=6)
        assert model.gradient_form == form
        model.set_memories({m: memory for m in "va"}, {m: lipschitz_step(memory) for m in "va"})
        step = float(model.step_v)  # the step as the model stores it (a float32 buffer)
        codes = fista(memory, features.t(), defense.config.sparsity, step, max_iter=200, tol=8e-4, form=form)
        expected = defense.config.blend * (memory @ codes).t() + (1 - defense.config.blend) * features
        assert torch.equal(model.recall("v", features), expected)
        other = fista(
            memory,
            features.t(),
            defense.config.sparsity,
            step,
            max_iter=200,
            tol=8e-4,
            form=next(f for f in FORMS if f != form),
        )
        assert not torch.equal(codes, other)  # float32 rounding tells the forms apart: the check above has teeth


def test_fista_derivative_stays_bounded_on_an_overcomplete_dictionary():
    """D h* is a projection of x, so its derivative has norm ≤ 1; unrolled momentum would explode."""
    gen = torch.Generator().manual_seed(5)
    d = torch.rand(16, 48, generator=gen, dtype=torch.float64)  # non-negative, like pooled ReLU features
    x = torch.rand(16, 8, generator=gen, dtype=torch.float64).requires_grad_(True)
    w = torch.randn(16, 8, generator=gen, dtype=torch.float64)
    codes = fista(d, x, 0.01, lipschitz_step(d), max_iter=1000, tol=0.0)
    (grad,) = torch.autograd.grad(((d @ codes) * w).sum(), x)
    assert grad.norm() <= w.norm()


@pytest.mark.parametrize("stopping", STOPPING)
@pytest.mark.parametrize("solver", SOLVERS)
def test_reading_the_stopping_flag_less_often_changes_neither_codes_nor_gradients(solver, stopping, monkeypatch):
    """check_every = K stops at the first multiple of K at or after the per-iteration rule's stop,
    with bit-identical codes and input gradients (the converged codes are frozen on the device)."""
    iterations = []
    counted = sparse_coding.soft_threshold
    monkeypatch.setattr(sparse_coding, "soft_threshold", lambda x, t: iterations.append(1) or counted(x, t))
    gen = torch.Generator().manual_seed(6)
    d = torch.randn(30, 20, generator=gen)  # float32, as the memories
    d = d / d.norm(dim=0)
    x = torch.randn(30, 9, generator=gen)
    w = torch.randn(20, 9, generator=gen)

    def run(check_every: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        iterations.clear()
        signals = x.clone().requires_grad_(True)
        codes = SOLVERS[solver](
            d, signals, 0.3, lipschitz_step(d), max_iter=300, tol=3e-3, check_every=check_every, stopping=stopping
        )
        (grad,) = torch.autograd.grad((codes * w).sum(), signals)
        return codes.detach(), grad, len(iterations)

    codes, grad, stopped = run(1)
    assert 10 < stopped < 290  # the tolerance, not max_iter, ends the reference run
    for every in (2, 7, 16, 1000):
        c, g, n = run(every)
        assert torch.equal(c, codes) and torch.equal(g, grad)
        assert n == min(300, math.ceil(stopped / every) * every)


def spread_convergence_problem() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A dictionary and 6 signals whose codes converge at clearly different iterations (float64)."""
    gen = torch.Generator().manual_seed(11)
    d = torch.randn(24, 40, generator=gen, dtype=torch.float64)
    d = d / d.norm(dim=0)
    x = torch.randn(24, 6, generator=gen, dtype=torch.float64) * torch.tensor(
        [0.2, 0.3, 0.5, 0.7, 1.0, 1.2], dtype=torch.float64
    )
    w = torch.randn(40, 6, generator=gen, dtype=torch.float64)
    return d, x, w


def code_and_gradient(
    solver: str, d: torch.Tensor, x: torch.Tensor, w: torch.Tensor, stopping: str, stats: dict | None = None
) -> tuple[torch.Tensor, torch.Tensor, int]:
    signals = x.clone().requires_grad_(True)
    stats = {} if stats is None else stats
    codes = SOLVERS[solver](
        d, signals, 0.05, lipschitz_step(d), max_iter=1500, tol=1e-3, stopping=stopping, stats=stats
    )
    (grad,) = torch.autograd.grad((codes * w).sum(), signals)
    return codes.detach(), grad, stats["iterations"]


@pytest.mark.parametrize("solver", SOLVERS)
def test_per_sample_stopping_makes_every_code_and_its_gradient_independent_of_the_batch(solver):
    """stopping="sample": a column coded inside a batch equals the column coded alone, values and input
    gradients, although the columns alone stop at different iterations and the batch runs until the last."""
    d, x, w = spread_convergence_problem()
    stats: dict = {}
    codes, grad, batch_iterations = code_and_gradient(solver, d, x, w, "sample", stats)
    alone_iterations = []
    for j in range(x.shape[1]):
        c, g, n = code_and_gradient(solver, d, x[:, j : j + 1], w[:, j : j + 1], "sample")
        assert torch.allclose(codes[:, j : j + 1], c, rtol=0, atol=1e-12)
        assert torch.allclose(grad[:, j : j + 1], g, rtol=0, atol=1e-12)
        alone_iterations.append(n)
    assert len(set(alone_iterations)) > 1 and max(alone_iterations) < 1500  # tol, not max_iter, stops each
    assert batch_iterations == max(alone_iterations)
    assert stats["column_iterations"] == alone_iterations  # each column froze where it stops alone


@pytest.mark.parametrize("solver", SOLVERS)
def test_both_stopping_rules_agree_on_a_single_signal(solver):
    """With one signal the batch is the sample: same codes, gradients and iterations, bit for bit (a
    per-sample freeze one iteration late or early would show here)."""
    d, x, w = spread_convergence_problem()
    for j in range(x.shape[1]):
        batch_stats: dict = {}
        sample_stats: dict = {}
        b = code_and_gradient(solver, d, x[:, j : j + 1], w[:, j : j + 1], "batch", batch_stats)
        s = code_and_gradient(solver, d, x[:, j : j + 1], w[:, j : j + 1], "sample", sample_stats)
        assert torch.equal(b[0], s[0]) and torch.equal(b[1], s[1]) and b[2] == s[2]
        assert batch_stats["column_iterations"] == sample_stats["column_iterations"] == [b[2]]


@pytest.mark.parametrize("solver", SOLVERS)
def test_the_reference_batch_stopping_lets_the_batch_change_a_code(solver):
    """stopping="batch" (the reference's rule): the column that converges first alone keeps iterating
    inside the batch, so its code differs from its code alone — the reason "sample" exists."""
    d, x, w = spread_convergence_problem()
    codes, _, _ = code_and_gradient(solver, d, x, w, "batch")
    alone = [code_and_gradient(solver, d, x[:, j : j + 1], w[:, j : j + 1], "batch") for j in range(x.shape[1])]
    first = min(range(x.shape[1]), key=lambda j: alone[j][2])
    assert (codes[:, first] - alone[first][0][:, 0]).abs().max() > 1e-6


def test_stopping_rule_refuses_an_unknown_rule_and_msefm_keys_the_default_out():
    with pytest.raises(ValueError, match="stopping rule must be one of batch, sample, got 'column'"):
        StoppingRule(torch.zeros(3, 2), tol=1e-3, check_every=1, stopping="column")
    with pytest.raises(ValueError, match="stopping must be one of batch, sample"):
        MSEFM.Config(stopping="column")
    assert "stopping" not in MSEFM().config_dict()  # checkpoints made before the option keep their keys
    assert MSEFM(MSEFM.Config(stopping="sample")).config_dict()["stopping"] == "sample"


def test_exfmem_with_per_sample_stopping_classifies_each_sample_as_it_would_alone():
    """Through build_model (conv encoders, the memories of a trained model's shape): a batch's logits are
    each sample's logits alone; the solver's flags are the only batch coupling, float rounding apart."""
    gen = torch.Generator().manual_seed(3)
    split = TensorSplit({m: torch.rand(24, 1, 8, 8, generator=gen) for m in "va"}, torch.arange(24) % 3)
    ds = InMemoryDataset(
        "tiny_images",
        (ModalitySpec("v", (1, 8, 8)), ModalitySpec("a", (1, 8, 8))),
        3,
        split,
        split,
        encoders={"v": "small_cnn2d", "a": "small_cnn2d"},
    )
    defense = MSEFM(MSEFM.Config(stopping="sample", tol=1e-3, max_iter=500))
    torch.manual_seed(0)
    model = defense.build_model(ds, TrainConfig(feature_dim=8)).eval()
    assert model.stopping == "sample"
    with torch.no_grad():
        features = model.encode(split.inputs)
    model.set_memories(
        {m: f.t().contiguous() for m, f in features.items()}, {m: lipschitz_step(f.t()) for m, f in features.items()}
    )
    batch = {m: torch.rand(10, 1, 8, 8, generator=gen) * torch.linspace(0.2, 3, 10)[:, None, None, None] for m in "va"}
    with torch.no_grad():
        logits = model(batch).logits
        alone = torch.cat([model({m: t[i : i + 1] for m, t in batch.items()}).logits for i in range(10)])
    assert torch.allclose(logits, alone, rtol=0, atol=1e-5)


def test_stopping_rule_without_a_tolerance_never_stops_and_refuses_bad_intervals():
    """tol <= 0 runs all max_iter iterations: no host read, even when the codes no longer move."""
    rule = StoppingRule(torch.zeros(3, 2), tol=0.0, check_every=4)
    for _ in range(8):
        codes, stop = rule.advance(torch.ones(3, 2), torch.ones(3, 2))
        assert stop is False and torch.equal(codes, torch.ones(3, 2))
    strict = StoppingRule(torch.zeros(3, 2), tol=1e-3, check_every=4)
    stops = [strict.advance(torch.ones(3, 2), torch.ones(3, 2))[1] for _ in range(8)]
    assert stops == [False, False, False, True, False, False, False, True]
    with pytest.raises(ValueError, match="check_every must be >= 1"):
        StoppingRule(torch.zeros(1), tol=1e-3, check_every=0)


# ---------------------------------------------------------------- MSEFM


def tiny_dataset(n: int = 24, dims: int = 4, classes: int = 3) -> InMemoryDataset:
    gen = torch.Generator().manual_seed(0)
    ids = torch.arange(n, dtype=torch.float32)
    inputs = {m: torch.cat([ids[:, None], torch.randn(n, dims - 1, generator=gen)], dim=1) for m in ("v", "a")}
    split = TensorSplit(inputs, torch.arange(n) % classes)
    specs = (ModalitySpec("v", (dims,)), ModalitySpec("a", (dims,)))
    return InMemoryDataset("tiny", specs, classes, split, split)


def exfmem_model(defense: MSEFM, memory_size: int, dims: int = 4, classes: int = 3) -> ExFMemNet:
    base = linear_model({"v": dims, "a": dims}, classes)
    cfg = defense.config
    return ExFMemNet(
        base.encoders,
        base.head,
        {"v": dims, "a": dims},
        memory_size,
        sparsity=cfg.sparsity,
        blend=cfg.blend,
        solver=cfg.solver,
        max_iter=cfg.max_iter,
        tol=cfg.tol,
        gradient_form=cfg.gradient_form,
    ).eval()


def test_minsim_loss_is_ce_plus_weighted_mean_cosine():
    defense = MSEFM(MSEFM.Config(minsim_weight=0.8))
    model = exfmem_model(defense, memory_size=2, dims=2)
    batch = {"v": torch.tensor([[1.0, 0.0], [0.0, 2.0]]), "a": torch.tensor([[1.0, 1.0], [3.0, 0.0]])}
    labels = torch.tensor([0, 2])
    assert mean_cosine(batch).item() == pytest.approx((1 / math.sqrt(2) + 0.0) / 2)
    ce = F.cross_entropy(model.head.fc(torch.cat([batch["v"], batch["a"]], dim=1)), labels)
    loss = defense.loss(model, batch, labels, None)
    assert loss.item() == pytest.approx(ce.item() + 0.8 * (1 / math.sqrt(2)) / 2, rel=1e-6)


def test_exfmem_forward_blends_the_sparse_reconstruction():
    """φ̃ = γ D S_λ(Dᵀφ) + (1−γ) φ for an orthonormal memory (step 1), then the concat head."""
    defense = MSEFM(MSEFM.Config(blend=0.6, sparsity=0.1))
    model = exfmem_model(defense, memory_size=3, dims=4)
    batch = {"v": torch.randn(5, 4), "a": torch.randn(5, 4)}
    plain = MultiModalNet(model.encoders, model.head)(batch).logits
    assert torch.equal(model(batch).logits, plain)  # stage A: no memories yet
    memories = {m: orthonormal_columns(4, 3, seed=i).float() for i, m in enumerate("va")}
    model.set_memories(memories, {m: lipschitz_step(d) for m, d in memories.items()})
    blended = {
        m: 0.6 * (memories[m] @ soft_threshold(memories[m].t() @ batch[m].t(), 0.1)).t() + 0.4 * batch[m] for m in "va"
    }
    out = model(batch)
    assert torch.allclose(out.logits, model.head.fc(torch.cat([blended["v"], blended["a"]], dim=1)), atol=1e-5)
    assert torch.allclose(out.features["a"], blended["a"], atol=1e-5)


def test_memories_are_eval_features_of_distinct_training_samples_and_load_from_state():
    ds = tiny_dataset(n=24)
    defense = MSEFM(MSEFM.Config(memory_size=1024))  # more than the train set: every sample once
    model = exfmem_model(defense, memory_size=len(ds.train))
    ctx = TrainContext(
        dataset=ds,
        train=TrainConfig(batch_size=7),
        device=torch.device("cpu"),
        generator=torch.Generator().manual_seed(0),
    )
    memories = defense.extract_memories(model, ctx)
    for m in "va":
        assert memories[m].shape == (4, 24)
        assert sorted(memories[m][0].tolist()) == list(range(24))  # column i = φ(x_j), x_j[0] = id j
        ids = memories[m][0].long()
        assert torch.equal(memories[m].t(), ds.train.inputs[m][ids])
    model.set_memories(memories, {m: defense.step_size(m, d) for m, d in memories.items()})
    for m in "va":
        assert float(getattr(model, f"step_{m}")) * max_eigenvalue(memories[m]) == pytest.approx(1.0, rel=1e-6)
    clone = exfmem_model(defense, memory_size=24)
    clone.load_state_dict(model.state_dict())
    batch = {m: x[:5] for m, x in ds.test.inputs.items()}
    assert bool(clone.memory_ready) and torch.equal(clone(batch).logits, model(batch).logits)


def test_stopping_rule_switches_every_sparse_coding_layer_and_restores_it_even_on_error():
    model = exfmem_model(MSEFM(), memory_size=6)
    assert model.stopping == "batch"
    with stopping_rule(model, "sample") as layers:
        assert layers == [model] and model.stopping == "sample"
    assert model.stopping == "batch"
    with pytest.raises(RuntimeError, match="inside"), stopping_rule(model, "sample"):
        raise RuntimeError("inside")
    assert model.stopping == "batch"
    plain = linear_model({"v": 4, "a": 4}, 3)
    with stopping_rule(plain, "sample") as layers:
        assert layers == []
    with (
        pytest.raises(ValueError, match="stopping rule must be one of batch, sample, got 'column'"),
        stopping_rule(model, "column"),
    ):
        pass


def certifiable_msefm(tmp_path):
    """A trained-looking MSEFM (conv encoders, memories of training features) with the reference's batch rule,
    as bench.certification receives it from training."""
    from mmrobust_bench.bench.checkpoints import CheckpointKey
    from mmrobust_bench.bench.train import TrainedModel
    from mmrobust_bench.defenses.base import key_dict

    gen = torch.Generator().manual_seed(5)
    split = TensorSplit({m: torch.rand(12, 1, 8, 8, generator=gen) for m in "va"}, torch.arange(12) % 3)
    specs = (ModalitySpec("v", (1, 8, 8), (0.0,), (1.0,)), ModalitySpec("a", (1, 8, 8)))
    ds = InMemoryDataset("tiny_images", specs, 3, split, split, encoders={"v": "small_cnn2d", "a": "small_cnn2d"})
    defense = MSEFM(MSEFM.Config(memory_size=12, tol=1e-2, max_iter=50))
    train_cfg = TrainConfig(feature_dim=8, batch_size=4)
    torch.manual_seed(0)
    model = defense.build_model(ds, train_cfg).eval()
    with torch.no_grad():
        features = model.encode(split.inputs)
    model.set_memories(
        {m: f.t().contiguous() for m, f in features.items()}, {m: lipschitz_step(f.t()) for m, f in features.items()}
    )
    key = CheckpointKey(ds.name, {}, defense.name, defense.config_dict(), key_dict(train_cfg), 0)
    trained = TrainedModel(model, defense, train_cfg, key, tmp_path, "ab" * 32)
    trained.dataset = ds
    return trained


@pytest.mark.parametrize("method", ["smoothing", "empirical"])
def test_certification_codes_msefm_per_sample_and_restores_the_models_rule(tmp_path, method):
    """Every sparse-coding call made while certifying uses stopping="sample"; the model keeps "batch" outside,
    and the rows say which rule made them."""
    import pandas as pd

    from mmrobust_bench.bench.certification import STOPPING_COLUMN, certify_defense
    from mmrobust_bench.certify.smoothing import SmoothingConfig

    trained = certifiable_msefm(tmp_path)
    model = trained.model
    rules: list[tuple[str, str]] = []
    solver = model.solver

    def recording(*args, **kwargs):
        rules.append((kwargs["stopping"], model.stopping))
        return solver(*args, **kwargs)

    model.solver = recording
    options = (
        dict(smoothing=SmoothingConfig(sigma=0.25, n0=4, n=8, batch=8), n_attack=2, attack_steps=2, attack_samples=2)
        if method == "smoothing"
        else dict(honesty_steps=2)
    )
    outcome = certify_defense(
        "msefm",
        dataset="tiny_images",
        trained=trained,
        root=tmp_path,
        method=method,
        device="cpu",
        test_samples=3,
        progress=False,
        command="test",
        **options,
    )
    assert rules and set(rules) == {("sample", "sample")}
    assert model.stopping == "batch"
    rows = pd.read_csv(outcome.certified_path)
    assert rows[STOPPING_COLUMN].tolist() == ["sample"] * len(rows) and len(rows) > 0
    calls = len(rules)
    with torch.no_grad():
        model({m: t[:2] for m, t in trained.dataset.test.inputs.items()})
    assert rules[calls:] == [("batch", "batch")] * 2  # one call per modality, with the model's own rule again


def test_blend_weights_by_hand():
    before = {"v": Losses(2.0, 2.1), "a": Losses(1.8, 2.0), FUSED: Losses(1.5, 1.7)}
    after = {"v": Losses(1.5, 1.8), "a": Losses(1.0, 1.5), FUSED: Losses(1.0, 1.8)}
    # v: G = 0.3, O = 0.3 − 0.1 = 0.2 → 7.5;  a: G = 0.5, O = 0.5 − 0.2 = 0.3 → 50/9;  fused: G < 0 → floor
    weights = blend_weights(before, after)
    assert weights["v"] == pytest.approx((1 - WEIGHT_FLOOR) * 27 / 47, rel=1e-12)
    assert weights["a"] == pytest.approx((1 - WEIGHT_FLOOR) * 20 / 47, rel=1e-12)
    assert weights[FUSED] == WEIGHT_FLOOR
    assert sum(weights.values()) == pytest.approx(1.0, rel=1e-12)


def test_blend_weights_guard_zero_overfitting_and_no_gain():
    before = {"v": Losses(1.0, 1.5), "a": Losses(1.0, 1.5)}
    after = {"v": Losses(0.5, 1.0), "a": Losses(0.75, 1.25)}
    # v: G = 0.5, O = 0 → 0.5/1e-8 = 5e7;  a: G = 0.25, O = 0.5 − 0.5 = 0 → 2.5e7
    assert blend_weights(before, after) == pytest.approx({"v": 2 / 3, "a": 1 / 3}, rel=1e-12)
    worse = {"v": Losses(0.5, 1.5), "a": Losses(0.5, 1.6)}
    assert blend_weights(before, worse) == {"v": 0.5, "a": 0.5}


def test_holdout_split_is_a_seeded_partition():
    fit, held = holdout_split(50, 0.1, seed=3)
    assert len(held) == 5 and len(fit) == 45
    assert sorted(torch.cat([fit, held]).tolist()) == list(range(50))
    again = holdout_split(50, 0.1, seed=3)
    assert torch.equal(again[0], fit) and torch.equal(again[1], held)
    assert not torch.equal(holdout_split(50, 0.1, seed=4)[1], held)


def test_gb_loss_is_the_weighted_sum_of_the_three_cross_entropies():
    model = attach_aux_heads(linear_model({"v": 3, "a": 2}, 4), 4)
    batch = {"v": torch.randn(6, 3), "a": torch.randn(6, 2)}
    labels = torch.tensor([0, 1, 2, 3, 0, 1])
    ctx = TrainContext(dataset=None, train=TrainConfig(), device=torch.device("cpu"), generator=torch.Generator())
    ctx.state["gb_weights"] = {"v": 0.2, "a": 0.3, FUSED: 0.5}
    expected = (
        0.2 * F.cross_entropy(model.aux_heads["v"](batch["v"]), labels)
        + 0.3 * F.cross_entropy(model.aux_heads["a"](batch["a"]), labels)
        + 0.5 * F.cross_entropy(model.head.fc(torch.cat([batch["v"], batch["a"]], 1)), labels)
    )
    assert GradientBlending().loss(model, batch, labels, ctx).item() == pytest.approx(expected.item(), rel=1e-6)


class Recorder(nn.Module):
    """A linear encoder that logs which sample ids (input[:, 0]) it sees, and in which mode."""

    seen: ClassVar[list[tuple[bool, bool, list[int]]]] = []  # class-level: shared by deep copies

    def __init__(self, dims: int) -> None:
        super().__init__()
        self.fc = nn.Linear(dims, 3)

    def forward(self, x):
        Recorder.seen.append((self.training, torch.is_grad_enabled(), x[:, 0].round().long().tolist()))
        return self.fc(x)


def test_estimation_trains_on_fit_samples_and_validates_on_disjoint_held_out_ones():
    torch.manual_seed(0)
    ds = tiny_dataset(n=40)
    model = attach_aux_heads(MultiModalNet({"v": Recorder(4), "a": Recorder(4)}, ConcatHead(["v", "a"], [3, 3], 3)), 3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    defense = GradientBlending(GradientBlending.Config(super_epoch=2, holdout_fraction=0.25, holdout_seed=7))
    ctx = TrainContext(
        dataset=ds,
        train=TrainConfig(batch_size=8, lr=0.1, lr_step=0),
        device=torch.device("cpu"),
        generator=torch.Generator().manual_seed(0),
    )
    Recorder.seen.clear()
    defense.on_epoch_start(model, ctx)
    fit_ids, held_ids = (set(i.tolist()) for i in holdout_split(40, 0.25, seed=7))
    trained_on = {i for training, grad, ids in Recorder.seen if training and grad for i in ids}
    measured = {i for training, grad, ids in Recorder.seen if not training and not grad for i in ids}
    assert len(held_ids) == 10 and trained_on == fit_ids and not trained_on & held_ids
    assert held_ids <= measured
    # the shared loop trains on the fit part only (training_split); the model itself is untouched
    loop_split = defense.training_split(ctx.dataset.train, ctx)
    assert set(loop_split.inputs["v"][:, 0].long().tolist()) == fit_ids and len(ctx.dataset.train) == 40
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    weights = ctx.state["gb_weights"]
    assert set(weights) == {"v", "a", FUSED} and sum(weights.values()) == pytest.approx(1.0)
    # the next epoch keeps the split and, inside the super-epoch, the weights
    Recorder.seen.clear()
    ctx.epoch = 1
    defense.on_epoch_start(model, ctx)
    assert not Recorder.seen and ctx.state["gb_weights"] == weights
    assert defense.training_split(ctx.dataset.train, ctx) is loop_split


def test_gb_checkpoint_holds_the_extra_heads():
    defense, train_cfg = build_defense("gb", {"feature_dim": 8})
    ds = InMemoryDataset(
        "tiny",
        (ModalitySpec("v", (1, 6, 6)), ModalitySpec("a", (1, 6, 6))),
        3,
        TensorSplit({}, torch.zeros(0)),
        TensorSplit({}, torch.zeros(0)),
        encoders={"v": "small_cnn2d", "a": "small_cnn2d"},
    )
    first, second = defense.build_model(ds, train_cfg), defense.build_model(ds, train_cfg)
    assert {k for k in first.state_dict() if k.startswith("aux_heads.")} == {
        "aux_heads.v.weight",
        "aux_heads.v.bias",
        "aux_heads.a.weight",
        "aux_heads.a.bias",
    }
    assert first.aux_heads["v"].weight.shape == (3, 8)
    assert not torch.equal(first.aux_heads["v"].weight, second.aux_heads["v"].weight)  # two random inits
    second.load_state_dict(first.state_dict())  # strict: a missing or unexpected aux-head key would raise
    for m in ("v", "a"):
        assert torch.equal(second.aux_heads[m].weight, first.aux_heads[m].weight)
        assert torch.equal(second.aux_heads[m].bias, first.aux_heads[m].bias)


SYNTHAV_SCHEDULE = {"epochs": 6, "batch_size": 64, "lr": 0.05, "lr_step": 0, "optimizer": "sgd", "feature_dim": 64}


def estimate_epochs(monkeypatch, super_epoch: int, epochs: int) -> list[int]:
    """The epochs at which on_epoch_start re-estimates the blend over a schedule of ``epochs`` (estimation stubbed)."""
    estimated: list[int] = []

    def stub(self, model, fit, held, ctx):
        estimated.append(ctx.epoch)
        return {"v": 0.25, "a": 0.25, FUSED: 0.5}

    monkeypatch.setattr(GradientBlending, "estimate", stub)
    defense = GradientBlending(GradientBlending.Config(super_epoch=super_epoch))
    ctx = TrainContext(
        dataset=tiny_dataset(),
        train=TrainConfig(epochs=epochs),
        device=torch.device("cpu"),
        generator=torch.Generator(),
    )
    for epoch in range(epochs):
        ctx.epoch = epoch
        defense.on_epoch_start(None, ctx)
    return estimated


def test_automatic_super_epoch_is_a_third_of_the_schedule(monkeypatch):
    assert [super_epoch_length(-1, e) for e in (1, 2, 3, 5, 6, 9, 10, 140)] == [1, 1, 1, 1, 2, 3, 3, 46]
    assert super_epoch_length(10, 6) == 10 and super_epoch_length(4, 140) == 4
    assert GradientBlending.Config().super_epoch == -1
    assert estimate_epochs(monkeypatch, -1, 6) == [0, 2, 4]  # synthav's schedule
    assert estimate_epochs(monkeypatch, -1, 10) == [0, 3, 6, 9]  # avdigits'
    assert estimate_epochs(monkeypatch, -1, 2) == [0, 1]
    assert estimate_epochs(monkeypatch, 10, 6) == [0]  # a fixed 10 estimates once, on the untrained model
    assert estimate_epochs(monkeypatch, 2, 7) == [0, 2, 4, 6]
    for epochs in range(3, 60):  # at least three estimates on every schedule of three or more epochs
        s = super_epoch_length(-1, epochs)
        assert len(range(0, epochs, s)) >= 3


def test_super_epoch_accepts_automatic_and_refuses_other_non_positive_values():
    from mmrobust_bench.bench.validate import check_fields

    check_fields(GradientBlending.Config(super_epoch=-1), "gb")
    check_fields(GradientBlending.Config(super_epoch=1), "gb")
    for bad in (0, -2):
        with pytest.raises(
            ValueError,
            match=rf"^super_epoch must be >= 1 \(or -1: automatic, max\(1, epochs // 3\)\), "
            rf"got {bad}$",
        ):
            build_defense("gb", {"super_epoch": bad})


def test_automatic_super_epoch_moves_the_key_and_an_explicit_10_keys_as_the_leaderboard_rows():
    from mmrobust_bench.bench.checkpoints import config_hash_of
    from mmrobust_bench.data.avdigits import TRAIN_DEFAULTS
    from mmrobust_bench.defenses.base import key_dict

    # the config_hash of the stored gb rows of leaderboards/{synthav,avdigits}/runs (trained with super_epoch 10)
    for schedule, stored in ((SYNTHAV_SCHEDULE, "242bd8159234"), (dict(TRAIN_DEFAULTS), "e6e41303e2cf")):
        pinned, train_cfg = build_defense("gb", {"super_epoch": 10}, TrainConfig(**schedule))
        assert pinned.config_dict() == {"super_epoch": 10, "holdout_fraction": 0.1, "holdout_seed": 0}
        assert config_hash_of(pinned.config_dict(), key_dict(train_cfg)) == stored
        default, train_cfg = build_defense("gb", None, TrainConfig(**schedule))
        assert default.config_dict() == {"super_epoch": -1, "holdout_fraction": 0.1, "holdout_seed": 0}
        assert config_hash_of(default.config_dict(), key_dict(train_cfg)) != stored


# ---------------------------------------------------------------- end to end on synthav


@pytest.mark.slow
def test_gb_re_estimates_the_blend_at_epochs_0_2_4_of_synthavs_six_epoch_schedule(tmp_path, monkeypatch):
    """A real training (synthav's schedule, 300 samples): every estimate runs and its weights are the ones the
    loss uses until the next."""
    calls: list[tuple[int, dict[str, float]]] = []
    losses: list[tuple[int, dict[str, float]]] = []
    estimate, loss = GradientBlending.estimate, GradientBlending.loss

    def recorded_estimate(self, model, fit, held, ctx):
        weights = estimate(self, model, fit, held, ctx)
        calls.append((ctx.epoch, dict(weights)))
        return weights

    def recorded_loss(self, model, batch, labels, ctx):
        losses.append((ctx.epoch, dict(self.weights(model, ctx))))
        return loss(self, model, batch, labels, ctx)

    monkeypatch.setattr(GradientBlending, "estimate", recorded_estimate)
    monkeypatch.setattr(GradientBlending, "loss", recorded_loss)
    gb = train_defense("gb", dataset_options=dict(n_train=300, n_test=100), root=tmp_path, progress=False)
    assert gb.train_config.epochs == 6 and gb.defense.config.super_epoch == -1
    assert [epoch for epoch, _ in calls] == [0, 2, 4]
    by_epoch = dict(calls)
    for epoch, weights in losses:
        assert weights == by_epoch[epoch - epoch % 2]
    assert {epoch for epoch, _ in losses} == set(range(6))
    for _, weights in calls:
        assert set(weights) == {"v", "a", FUSED} and sum(weights.values()) == pytest.approx(1.0)
    assert calls[1][1] != calls[0][1] and calls[2][1] != calls[1][1]  # re-estimated on the training model


@pytest.mark.slow
@pytest.mark.slow
def test_gb_and_msefm_train_on_synthav_and_msefm_memories_are_checkpointed(tmp_path):
    data = dict(n_train=600, n_test=200)
    cpu = torch.device("cpu")
    # 4 epochs: with synthav's 64-d features even JT only reaches ≈ 0.5 clean accuracy after 2
    gb = train_defense(
        "gb", dataset_options=data, overrides={"epochs": 4, "super_epoch": 2}, root=tmp_path, progress=False
    )
    assert clean_accuracy(gb.model, gb.dataset.test, 500, cpu).accuracy >= 0.5
    settings = {"epochs": 4, "memory_size": 256, "exfmem_epochs": 1}
    msefm = train_defense("msefm", dataset_options=data, overrides=settings, root=tmp_path, progress=False)
    assert clean_accuracy(msefm.model, msefm.dataset.test, 500, cpu).accuracy >= 0.5
    reloaded = train_defense("msefm", dataset_options=data, overrides=settings, root=tmp_path, progress=False)
    assert reloaded.cached and bool(reloaded.model.memory_ready)
    assert reloaded.model.memory("a").abs().sum() > 0
    batch = {m: x[:32] for m, x in reloaded.dataset.test.inputs.items()}
    with torch.no_grad():
        assert torch.equal(reloaded.model(batch).logits, msefm.model(batch).logits)
