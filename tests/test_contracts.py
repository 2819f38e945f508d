import pytest
import torch

from mmrobust_bench.contracts import ModalitySpec, ThreatModel, joint_l2_norm


def test_spec_box_clamps_per_channel():
    spec = ModalitySpec("v", (2, 3), lower=(-1.0, 0.0), upper=(1.0, 0.5))
    x = torch.tensor([[[-5.0, 0.5, 5.0], [-5.0, 0.25, 5.0]]])
    out = spec.clamp(x)
    assert torch.equal(out, torch.tensor([[[-1.0, 0.5, 1.0], [0.0, 0.25, 0.5]]]))


def test_unbounded_spec_is_identity():
    spec = ModalitySpec("a", (1, 4, 4))
    x = torch.randn(3, 1, 4, 4) * 100
    assert spec.clamp(x) is x and not spec.bounded


@pytest.mark.parametrize(
    "bad", [dict(lower=(0.0,)), dict(lower=(0.0, 0.0), upper=(1.0,)), dict(lower=(1.0, 0.0), upper=(0.0, 1.0))]
)
def test_spec_rejects_inconsistent_boxes(bad):
    kwargs = dict(lower=bad.get("lower"), upper=bad.get("upper", None))
    with pytest.raises(ValueError):
        ModalitySpec("v", (2, 3), **kwargs)


def test_threat_parse_names_valid_choices():
    specs = (ModalitySpec("v", (3,)), ModalitySpec("a", (2,)))
    assert ThreatModel.parse("all", 0.5, specs).modalities == ("v", "a")
    assert ThreatModel.parse("a,v", 0.5, specs).modalities == ("v", "a")  # order from the specs
    with pytest.raises(ValueError, match="valid: v, a or 'all'"):
        ThreatModel.parse("x", 0.5, specs)
    with pytest.raises(ValueError, match="eps"):
        ThreatModel(("v",), -1.0)
    with pytest.raises(ValueError, match="eps"):
        ThreatModel(("v",), float("nan"))


def test_joint_norm_is_norm_of_concatenation():
    d = {"v": torch.randn(4, 3, 2), "a": torch.randn(4, 5)}
    expected = torch.cat([d["v"].flatten(1), d["a"]], 1).norm(dim=1)
    assert torch.allclose(joint_l2_norm(d, ("v", "a")), expected)


def test_box_tensors_are_made_once_per_dtype_and_device_and_serve_autograd_after_inference_mode():
    spec = ModalitySpec("v", (3, 2, 2), (0.0, -1.0, 0.0), (1.0, 1.0, 0.5))
    with torch.inference_mode():  # first use inside inference mode must not poison the cache
        spec.clamp(torch.randn(2, 3, 2, 2))
    x = torch.randn(4, 3, 2, 2, requires_grad=True)
    lo, hi = spec.box(x)
    assert spec.box(x.detach())[0] is lo and spec.box(x.double())[0].dtype == torch.float64
    assert lo.flatten().tolist() == [0.0, -1.0, 0.0] and hi.flatten().tolist() == [1.0, 1.0, 0.5]
    spec.clamp(x).sum().backward()
    inside = (x > lo) & (x < hi)
    assert torch.equal(x.grad, inside.float())
