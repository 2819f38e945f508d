"""synthav: deterministic, cached, real fbank pipeline, and the modality-preference property."""

import pytest
import torch

from mmrobust_bench.attacks import build_attack
from mmrobust_bench.bench.api import train_defense
from mmrobust_bench.bench.evaluate import clean_accuracy, robust_accuracy
from mmrobust_bench.contracts import ThreatModel
from mmrobust_bench.data import build_dataset
from mmrobust_bench.data.synthav import SynthAVConfig, generate

SMALL = dict(n_train=300, n_test=100)


def test_generation_is_deterministic_and_seed_dependent():
    a, b = generate(SynthAVConfig(**SMALL)), generate(SynthAVConfig(**SMALL))
    assert all(torch.equal(a[k], b[k]) for k in a)
    c = generate(SynthAVConfig(**SMALL, seed=1))
    assert not torch.equal(a["a"], c["a"])


def test_specs_shapes_boxes_and_cache(tmp_path):
    ds = build_dataset("synthav", cache_dir=tmp_path, **SMALL)
    v, a = ds.specs
    assert ds.train.inputs["v"].shape[1:] == v.shape and ds.train.inputs["a"].shape[1:] == a.shape
    assert v.bounded and not a.bounded
    assert torch.equal(v.clamp(ds.train.inputs["v"]), ds.train.inputs["v"])  # frames live in their box
    assert len(list(tmp_path.glob("synthav-*.safetensors"))) == 1
    again = build_dataset("synthav", cache_dir=tmp_path, **SMALL)
    assert torch.equal(again.test.inputs["a"], ds.test.inputs["a"])


def test_reliability_knobs_follow_preference():
    cfg = SynthAVConfig(**SMALL)
    data = generate(cfg)
    agree_a = (data["audio_cues"] == data["labels"]).float().mean()
    agree_v = (data["visual_cues"] == data["labels"]).float().mean()
    assert agree_a > 0.9 and 0.6 < agree_v < 0.8
    flipped = generate(SynthAVConfig(**SMALL, prefer="visual"))
    assert (flipped["visual_cues"] == flipped["labels"]).float().mean() > 0.9


def test_unknown_option_lists_valid(tmp_path):
    with pytest.raises(ValueError, match=r"unknown option.*valid:.*n_train"):
        build_dataset("synthav", cache_dir=tmp_path, n_trian=3)


def _preference(prefer: str, root):
    trained = train_defense(
        "jt",
        dataset_options=dict(n_train=1500, n_test=400, prefer=prefer),
        overrides={"epochs": 4},
        root=root,
        progress=False,
    )
    ds, model = trained.dataset, trained.model
    dev = torch.device("cpu")
    clean = clean_accuracy(model, ds.test, 400, dev).accuracy
    missing = build_attack("missing", ds.specs)
    pgd = build_attack("pgd_l2", ds.specs)
    drop = {
        m: robust_accuracy(model, ds.test, missing, ThreatModel((m,), 0.0), [0.0], 400, dev)[0].accuracy
        for m in ("a", "v")
    }
    attacked = {
        m: robust_accuracy(model, ds.test, pgd, ThreatModel((m,), 1.5), [1.5], 400, dev)[0].accuracy for m in ("a", "v")
    }
    return clean, drop, attacked


@pytest.mark.slow
def test_joint_model_prefers_audio_and_audio_attack_is_stronger(tmp_path):
    clean, drop, attacked = _preference("audio", tmp_path)
    assert clean > 0.8
    assert drop["a"] < drop["v"] - 0.3  # removing audio costs far more than removing video
    assert attacked["a"] < attacked["v"] - 0.2  # ℓ2-PGD on audio is clearly more effective


@pytest.mark.slow
def test_preference_knob_flips_to_video(tmp_path):
    clean, drop, _ = _preference("visual", tmp_path)
    assert clean > 0.8
    assert drop["v"] < drop["a"] - 0.3
