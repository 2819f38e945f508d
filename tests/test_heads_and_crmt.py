"""CRMT head, step-1 margin, step-2 objective and Lipschitz estimates: exact answers."""

import math

import pytest
import torch

from mmrobust_bench.certify import estimate_lipschitz
from mmrobust_bench.defenses.crmt import margin_regulariser, step2_objective
from mmrobust_bench.models import CRMTHead, centred_unit_rows, orthonormal_rows

from helpers import linear_model


def test_per_class_rows_are_centred_and_unit_norm():
    w = torch.randn(7, 20)
    r = centred_unit_rows(w)
    assert torch.allclose(r.mean(1), torch.zeros(7), atol=1e-6)
    assert torch.allclose(r.norm(dim=1), torch.ones(7), atol=1e-5)
    # the reference (groups = K) is not orthogonal: off-diagonal Gram entries are non-zero
    assert (r @ r.t() - torch.eye(7)).abs().max() > 1e-3


def test_full_orthogonalisation_gives_orthonormal_rows():
    r = orthonormal_rows(torch.randn(7, 20))
    assert torch.allclose(r @ r.t(), torch.eye(7), atol=1e-4)
    assert torch.allclose(r.mean(1), torch.zeros(7), atol=1e-5)


def test_crmt_head_is_fp32_under_autocast():
    head = CRMTHead(["v", "a"], [8, 8], 3)
    feats = {"v": torch.randn(4, 8), "a": torch.randn(4, 8)}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, uni = head(feats)
    assert logits.dtype == torch.float32 and uni["v"].dtype == torch.float32


def naive_margin(unimodal, labels):
    total = 0
    for z in unimodal.values():
        e = torch.exp(z - z.gather(1, labels[:, None]))
        total = total + e.sum(1) - 1.0  # the reference: Σ_k e^{z_k} e^{-z_y} − 1
    return torch.log(total + 1e-5).mean()


def test_stable_margin_equals_naive_formula_and_survives_large_logits():
    z = {"v": torch.randn(16, 5, dtype=torch.float64), "a": torch.randn(16, 5, dtype=torch.float64)}
    y = torch.randint(0, 5, (16,))
    assert torch.allclose(margin_regulariser(z, y).double(), naive_margin(z, y), atol=1e-5)
    huge = {m: v.float() * 1e4 for m, v in z.items()}
    assert torch.isfinite(margin_regulariser(huge, y))
    assert not torch.isfinite(naive_margin(huge, y))


def test_lipschitz_of_linear_concat_model_is_row_norm():
    model = linear_model({"v": 6, "a": 4}, 3)
    batches = [({"v": torch.randn(10, 6), "a": torch.randn(10, 4)}, torch.zeros(10, dtype=torch.long))]
    tau = estimate_lipschitz(model, batches, ["v", "a"])
    for m, w in model.head.blocks().items():
        assert torch.allclose(tau[m], w.norm(dim=1), atol=1e-6)


def test_lipschitz_of_crmt_head_and_official_mode_bugs():
    model = linear_model({"v": 6, "a": 4}, 3, head="crmt")
    batches = [({"v": torch.randn(10, 6), "a": torch.randn(10, 4)}, torch.zeros(10, dtype=torch.long))]
    tau = estimate_lipschitz(model, batches, ["v", "a"])
    for m in ("v", "a"):
        assert torch.allclose(tau[m], torch.ones(3), atol=1e-5)  # centred unit rows
    official = estimate_lipschitz(model, batches, ["v", "a"], mode="official")
    assert torch.equal(official["a"], torch.zeros(3))  # τ^(a) ≡ 0
    w = model.head.normalised_blocks()["v"] * model.head.integration["v"].detach()[:, None]
    expected = torch.stack([w[: k + 1].sum(0).norm() for k in range(3)])  # accumulated over classes
    assert torch.allclose(official["v"], expected, atol=1e-5)


def test_step2_objective_matches_eq10_by_hand():
    z = {"v": torch.tensor([[1.0, 0.2, -0.5]]), "a": torch.tensor([[0.3, 0.9, 0.0]])}
    a = {"v": torch.tensor([1.0, 2.0, 0.5]), "a": torch.tensor([0.5, 1.0, 1.5])}
    tau = {"v": torch.tensor([1.0, 2.0, 3.0]), "a": torch.tensor([0.5, 0.5, 0.5])}
    bias = torch.tensor([0.1, 0.0, -0.1])
    y = torch.tensor([0])
    # h = [1.0+0.15+0.1, 0.4+0.9, -0.25+0-0.1] = [1.25, 1.3, -0.35] -> runner-up j = 1
    num = (1.0 * 1.0 - 2.0 * 0.2) + (0.5 * 0.3 - 1.0 * 0.9) + 0.1
    den = math.sqrt((1.0 * 1.0 + 2.0 * 2.0) ** 2 + (0.5 * 0.5 + 1.0 * 0.5) ** 2)
    assert math.isclose(step2_objective(z, a, tau, bias, y).item(), -num / den, rel_tol=1e-6)


def test_every_crmt_variant_defaults_to_the_orthogonal_head_and_it_stays_orthogonal_under_training():
    import warnings

    import pytest

    from mmrobust_bench.defenses import build_defense

    for name in ("crmt_jt", "crmt_at", "crmt_mix", "crmt_mmt"):
        defense, _ = build_defense(name)
        assert defense.config.own_groups == "full" and defense.config_dict()["own_groups"] == "full"
    # the default head: W̃^(m) W̃^(m)ᵀ = I to float tolerance after several SGD steps on the CRMT loss
    torch.manual_seed(0)
    head = CRMTHead(["v", "a"], [12, 9], 5)
    assert head.own_groups == "full"
    opt = torch.optim.SGD(head.parameters(), lr=0.5, momentum=0.9)
    for _ in range(25):
        feats = {"v": torch.randn(16, 12), "a": torch.randn(16, 9)}
        y = torch.randint(0, 5, (16,))
        logits, uni = head(feats)
        loss = torch.nn.functional.cross_entropy(logits, y) + 2.0 * margin_regulariser(uni, y)
        opt.zero_grad()
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in head.parameters())
        opt.step()
    for w in head.normalised_blocks().values():
        assert torch.allclose(w @ w.t(), torch.eye(5), atol=1e-5)
    # the reference rows are an option named for what they are; the old name still loads (deprecated)
    with pytest.warns(DeprecationWarning, match="per_class_unit_rows"):
        legacy, _ = build_defense("crmt_jt", {"own_groups": "per_class"})
    assert legacy.config.own_groups == "per_class_unit_rows"
    renamed, _ = build_defense("crmt_jt", {"own_groups": "per_class_unit_rows"})
    # both spellings key the same checkpoint as the committed leaderboard configs ("per_class")
    assert legacy.config_dict() == renamed.config_dict() and renamed.config_dict()["own_groups"] == "per_class"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        unit = CRMTHead(["v", "a"], [8, 8], 3, own_groups="per_class_unit_rows")
    w = unit.normalised_blocks()["v"]
    assert torch.allclose(w.norm(dim=1), torch.ones(3), atol=1e-5)
    with pytest.raises(ValueError, match="did you mean 'full'"):
        build_defense("crmt_jt", {"own_groups": "ful"})
    with pytest.raises(ValueError, match="needs K < feature dim"):
        CRMTHead(["v"], [4], 4)


SYNTHAV_SCHEDULE = {"epochs": 6, "batch_size": 64, "lr": 0.05, "lr_step": 0, "optimizer": "sgd", "feature_dim": 64}


def test_automatic_step2_epochs_are_the_references_count():
    from mmrobust_bench.defenses.crmt import STEP2_AUTO, step2_epoch_count

    assert STEP2_AUTO == -1
    assert [step2_epoch_count(-1, e) for e in (1, 2, 3, 4, 5, 6, 8, 10, 140)] == [1, 1, 1, 1, 1, 1, 1, 2, 45]
    assert [step2_epoch_count(n, 6) for n in (0, 1, 3, 45)] == [0, 1, 3, 45]  # an explicit count is itself


def test_automatic_step2_epochs_key_as_the_stored_rows_and_an_explicit_count_as_itself():
    import pytest

    from mmrobust_bench.bench.checkpoints import config_hash_of
    from mmrobust_bench.bench.validate import check_fields
    from mmrobust_bench.data.avdigits import TRAIN_DEFAULTS
    from mmrobust_bench.defenses import TrainConfig, build_defense
    from mmrobust_bench.defenses.base import key_dict

    def keyed(name, overrides, schedule):
        defense, train_cfg = build_defense(name, overrides, TrainConfig(**schedule))
        return defense, config_hash_of(defense.config_dict(), key_dict(train_cfg))

    # config_hash of the stored rows (leaderboards/*/runs/results.csv): the default still makes these models
    stored = {
        ("crmt_jt", "synthav"): "c8bd1905aaa5",
        ("crmt_at", "synthav"): "aaefd5d1d05e",
        ("crmt_jt", "avdigits"): "a350b5f69006",
        ("crmt_at", "avdigits"): "2d5acf12b9f9",
    }
    schedules = {"synthav": SYNTHAV_SCHEDULE, "avdigits": dict(TRAIN_DEFAULTS)}
    for (name, dataset), old_hash in stored.items():
        default, new_hash = keyed(name, None, schedules[dataset])
        assert default.config.step2_epochs == -1 and default.config_dict()["step2_epochs"] == -1
        assert new_hash == old_hash
    explicit, explicit_hash = keyed("crmt_jt", {"step2_epochs": 3}, SYNTHAV_SCHEDULE)
    assert explicit.config_dict()["step2_epochs"] == 3 and explicit_hash == "f684c1de4b91"
    assert keyed("crmt_jt", {"step2_epochs": 3}, dict(TRAIN_DEFAULTS))[1] == "cd8d4b9482c5"
    check_fields(explicit.config, "crmt_jt")
    with pytest.raises(ValueError, match=r"step2_epochs must be >= 0 \(or -1: automatic\), got -2"):
        build_defense("crmt_jt", {"step2_epochs": -2})


@pytest.mark.slow
def test_step2_runs_its_count_and_moves_only_the_integration_weights(tmp_path, monkeypatch):
    """A tiny synthav training (6 epochs, 300 samples) with step2_epochs=2: 2 epochs of 5 batches, changes
    a^(m) (by 0.3 % of its norm when measured: 10 SGD steps at 0.03 × lr) and leaves every other weight and buffer as
    step 1 left it."""
    from mmrobust_bench.bench.api import train_defense
    from mmrobust_bench.defenses import crmt

    calls: list[int] = []
    snapshots: dict[str, dict[str, torch.Tensor]] = {}
    objective, train_weights = crmt.step2_objective, crmt.CRMTBase.train_integration_weights

    def counted(z, a, tau, bias, labels):
        calls.append(labels.shape[0])
        return objective(z, a, tau, bias, labels)

    def recorded(self, model, tau, ctx):
        snapshots["before"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        train_weights(self, model, tau, ctx)
        snapshots["after"] = {k: v.detach().clone() for k, v in model.state_dict().items()}

    monkeypatch.setattr(crmt, "step2_objective", counted)
    monkeypatch.setattr(crmt.CRMTBase, "train_integration_weights", recorded)
    trained = train_defense(
        "crmt_jt",
        dataset_options=dict(n_train=300, n_test=100),
        root=tmp_path,
        progress=False,
        overrides={"step2_epochs": 2},
    )
    assert trained.train_config.epochs == 6 and trained.train_config.batch_size == 64
    assert calls == [64, 64, 64, 64, 44] * 2  # 2 epochs over the 300 training samples
    before, after = snapshots["before"], snapshots["after"]
    moved = [k for k in before if not torch.equal(before[k], after[k])]
    assert sorted(moved) == ["head.integration.a", "head.integration.v"]
    a0 = torch.cat([before[k] for k in sorted(moved)])
    a1 = torch.cat([after[k] for k in sorted(moved)])
    assert float((a1 - a0).norm() / a0.norm()) > 1e-3
    for k, v in trained.model.state_dict().items():  # the final model is the one step 2 left
        assert torch.equal(v, after[k])
