"""Real-dataset loaders (ks, vggsound, ucf101) on tiny fixture folders written here, and the ResNet-18s."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torchvision import transforms

from mmrobust_bench.data import build_dataset
from mmrobust_bench.data.av_clips import FLOW_MEAN, FLOW_STD, IMAGENET_MEAN, IMAGENET_STD, SegmentRule, decode_frame
from mmrobust_bench.models.encoders import build_encoder
from mmrobust_bench.models.resnet import ResNet18Trunk

FRAME_H, FRAME_W = 24, 32  # original frames are not square, so crops are computed in original pixels


def _level(t: int) -> int:
    return 20 * t + 10  # a flat frame's grey level tells which frame number was sampled


def _write_manifest(root: Path, rows: list[dict], columns: list[str]) -> None:
    with open(root / "manifest.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def make_av_root(root: Path, frames_per_clip=(10, 3, 12, 7, 10, 5), n_test=3, classes=("cat", "dog")) -> Path:
    """A KS/VGGSound-style folder: flat-grey JPEG frames (level encodes t) and random fbank .npy files."""
    rng = np.random.default_rng(0)
    rows = []
    for k, n in enumerate(frames_per_clip + (10,) * n_test):
        split = "train" if k < len(frames_per_clip) else "test"
        cid = f"clip{k:02d}"
        folder = root / "frames" / split / cid
        folder.mkdir(parents=True)
        for t in range(1, n + 1):
            Image.new("RGB", (FRAME_W, FRAME_H), (_level(t),) * 3).save(folder / f"frame_{t:05d}.jpg", quality=95)
        audio = root / "audio" / split / f"{cid}.npy"
        audio.parent.mkdir(parents=True, exist_ok=True)
        np.save(audio, rng.standard_normal((1024, 128)).astype(np.float32))
        rows.append(
            {
                "id": cid,
                "label": classes[k % len(classes)],
                "split": split,
                "frames": f"frames/{split}/{cid}",
                "audio": f"audio/{split}/{cid}.npy",
            }
        )
    _write_manifest(root, rows, ["id", "label", "split", "frames", "audio"])
    return root


def make_ucf_root(root: Path, n_train=4, n_test=2) -> Path:
    """A UCF-style folder: every frame of a clip is the same noise image (RGB, u and v), 6 RGB / 7 flow files."""
    rng = np.random.default_rng(1)
    rows = []
    for k in range(n_train + n_test):
        split = "train" if k < n_train else "test"
        cid = f"v_{k:02d}"
        images = {
            "frames": Image.fromarray(rng.integers(0, 256, (FRAME_H, FRAME_W, 3), dtype=np.uint8)),
            "flow_u": Image.fromarray(rng.integers(0, 256, (FRAME_H, FRAME_W), dtype=np.uint8)),
            "flow_v": Image.fromarray(rng.integers(0, 256, (FRAME_H, FRAME_W), dtype=np.uint8)),
        }
        row = {"id": cid, "label": ("Archery", "Biking", "Diving")[k % 3], "split": split}
        for column, img in images.items():
            folder = root / column / split / cid
            folder.mkdir(parents=True)
            for t in range(1, (6 if column == "frames" else 7) + 1):
                img.save(folder / f"frame_{t:05d}.jpg", quality=95)
            row[column] = f"{column}/{split}/{cid}"
        rows.append(row)
    _write_manifest(root, rows, ["id", "label", "split", "frames", "flow_u", "flow_v"])
    return root


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py: tiny convolutions, one thread is plenty


@pytest.fixture(scope="module")
def ks_root(tmp_path_factory) -> Path:
    return make_av_root(tmp_path_factory.mktemp("ks"))


@pytest.fixture(scope="module")
def ucf_root(tmp_path_factory) -> Path:
    return make_ucf_root(tmp_path_factory.mktemp("ucf"))


def _ks(root, tmp_path, **options):
    opts = dict(data_root=str(root), image_size=16, num_workers=0, frame_cache=False)
    opts.update(options)
    return build_dataset("ks", cache_dir=tmp_path, **opts)


def _frame_levels(x: torch.Tensor) -> list[int]:
    """(3, T, H, W) normalised frames -> the grey level of each frame (they are flat)."""
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1, 1)
    pixels = (x * std + mean) * 255
    return [round(float(v)) for v in pixels.mean(dim=(0, 2, 3))]


# ----------------------------------------------------------------------------- sampling rules


def test_segment_rule_matches_reference_formulas():
    ks = SegmentRule(picks=3, few_files=6, train_cap=9, min_files=4)
    assert ks.indices(10, False, None) == [1, 4, 7]
    assert ks.indices(5, False, None) == [1, 1, 1]
    assert ks.indices(30, False, None) == [5, 15, 25]  # test picks are not capped
    import random

    rng = random.Random(0)
    for _ in range(50):
        t = ks.indices(30, True, rng)
        assert 1 <= t[0] <= 9 and t[1] == 9 and t[2] == 9  # train picks capped at 9
    assert ks.reachable(30, True) == list(range(1, 10)) and ks.reachable(5, True) == [1]
    ucf = SegmentRule(picks=3, fixed_count=6)
    assert ucf.indices(6, False, None) == [1, 3, 5] and ucf.reachable(6, True) == [1, 2, 3, 4, 5, 6]
    assert all(t in ((1, 2), (3, 4), (5, 6))[i] for _ in range(20) for i, t in enumerate(ucf.indices(6, True, rng)))


# ----------------------------------------------------------------------------- ks / vggsound


def test_ks_shapes_specs_and_test_normalisation(ks_root, tmp_path):
    ds = _ks(ks_root, tmp_path)
    v, a = ds.specs
    assert (v.name, v.shape, a.name, a.shape) == ("v", (3, 3, 16, 16), "a", (1, 1024, 128))
    assert not a.bounded
    assert v.lower == pytest.approx(tuple(-m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)))
    assert v.upper == pytest.approx(tuple((1 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)))
    assert ds.class_names == ("cat", "dog") and ds.num_classes == 2
    assert len(ds.train) == 5 and len(ds.test) == 3  # the 3-frame clip is left out (needs more than 3 frames)
    assert ds.encoders == {"v": "resnet18_visual", "a": "resnet18_audio"}
    assert ds.train_defaults["epochs"] == 140 and ds.train_defaults["lr_step"] == 60
    batch, labels = next(ds.test.batches(8))
    assert batch["v"].shape == (3, 3, 3, 16, 16) and batch["a"].shape == (3, 1, 1024, 128)
    assert list(batch) == ["v", "a"] and labels.tolist() == [0, 1, 0]
    reference = transforms.Compose(
        [transforms.Resize((16, 16)), transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    )
    folder = ks_root / "frames" / "test" / "clip06"
    expected = torch.stack([reference(Image.open(folder / f"frame_{t:05d}.jpg").convert("RGB")) for t in (1, 4, 7)], 1)
    assert torch.equal(batch["v"][0], expected)  # test frames = Resize -> ToTensor -> Normalize, bit for bit
    assert torch.equal(batch["a"][0, 0], torch.from_numpy(np.load(ks_root / "audio" / "test" / "clip06.npy")))
    again, _ = next(ds.test.batches(8))
    assert torch.equal(again["v"], batch["v"])


def test_ks_train_sampling_and_augmentation(ks_root, tmp_path):
    ds = _ks(ks_root, tmp_path)
    counts = dict(zip(ds.train.ids, ds.train.source.table.counts["v"].tolist()))
    for seed in range(4):
        gen = torch.Generator().manual_seed(seed)
        for batch, _ in ds.train.batches(5, generator=gen):
            for cid, clip in zip(ds.train.ids, batch["v"]):
                n, levels = counts[cid], _frame_levels(clip)
                seg = n // 3
                for i, level in enumerate(levels):
                    t = round((level - 10) / 20)
                    assert abs(level - _level(t)) <= 2
                    allowed = {1} if n <= 6 else {min(x, 9) for x in range(i * seg + 1, i * seg + seg + 1)}
                    assert t in allowed
                assert torch.equal(ds.specs[0].clamp(clip[None])[0], clip)  # inside the valid box
    a = [b["v"] for b, _ in ds.train.batches(5, shuffle=True, generator=torch.Generator().manual_seed(7))]
    b = [b["v"] for b, _ in ds.train.batches(5, shuffle=True, generator=torch.Generator().manual_seed(7))]
    assert all(torch.equal(x, y) for x, y in zip(a, b))  # same generator, same epoch


def test_crop_and_flip_follow_the_per_sample_rng(tmp_path):
    """Non-flat frames: the train sample is RandomResizedCrop + flip of the frame, reproduced by hand."""
    import random

    from mmrobust_bench.data.av_clips import random_resized_crop_box

    root = make_av_root(tmp_path / "noise", frames_per_clip=(7, 7), n_test=1)
    rng_np = np.random.default_rng(3)
    img = Image.fromarray(rng_np.integers(0, 256, (FRAME_H, FRAME_W, 3), dtype=np.uint8))
    for folder in (root / "frames").glob("*/*"):
        for f in folder.iterdir():
            img.save(f, quality=95)
    ds = _ks(root, tmp_path, image_size=FRAME_H)
    source = ds.train.source
    sample, _ = source[(0, 123)]
    rng = random.Random("123:0")
    SegmentRule(picks=3, few_files=6, train_cap=9, min_files=4).indices(7, True, rng)
    base, _ = decode_frame([root / "frames" / "train" / "clip00"], ["frame_00001.jpg"], "RGB", FRAME_H)
    for t in range(3):
        top, left, h, w = random_resized_crop_box(FRAME_H, FRAME_W, rng)
        s = FRAME_H / FRAME_H, FRAME_H / FRAME_W
        box = (left * s[1], top * s[0], (left + w) * s[1], (top + h) * s[0])
        want = np.asarray(Image.fromarray(base).resize((FRAME_H, FRAME_H), Image.BILINEAR, box=box))
        if rng.random() < 0.5:
            want = want[:, ::-1]
        assert torch.equal(sample["v"][:, t], torch.from_numpy(np.array(want)).permute(2, 0, 1))


def test_rrc_box_matches_torchvision_distribution():
    import random

    from mmrobust_bench.data.av_clips import random_resized_crop_box

    rng = random.Random(0)
    boxes = [random_resized_crop_box(240, 320, rng) for _ in range(300)]
    for top, left, h, w in boxes:
        assert 0 <= top <= 240 - h and 0 <= left <= 320 - w
        assert 3 / 4 - 0.05 <= w / h <= 4 / 3 + 0.05 or h == 240 or w == 320
    areas = [h * w / (240 * 320) for _, _, h, w in boxes]
    assert min(areas) < 0.2 and max(areas) > 0.6


def test_uint8_cache_equals_decoded_frames(ks_root, tmp_path):
    cached = _ks(ks_root, tmp_path, frame_cache=True, frame_cache_dir=str(tmp_path / "cache"))
    plain = _ks(ks_root, tmp_path)
    for split in ("train", "test"):
        c, p = getattr(cached, split), getattr(plain, split)
        gen_c, gen_p = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
        for (bc, lc), (bp, lp) in zip(
            c.batches(3, shuffle=True, generator=gen_c), p.batches(3, shuffle=True, generator=gen_p)
        ):
            assert torch.equal(bc["v"], bp["v"]) and torch.equal(bc["a"], bp["a"]) and torch.equal(lc, lp)
        cache = c.source.caches["v"]
        data = np.load(cache.data_path, mmap_mode="r")
        for clip in range(len(c)):
            for k in range(int(cache.counts[clip])):
                t = int(cache.frame_t[cache.offsets[clip] + k])
                frame, orig = p.source.decode(p.source.profile.frames[0], clip, t)
                assert np.array_equal(data[cache.offsets[clip] + k], frame) and orig == (FRAME_H, FRAME_W)
    assert len(list((tmp_path / "cache").glob("ks-*.npy"))) == 2
    assert sum(cached.train.source.caches["v"].counts) == 9 + 9 + 6 + 9 + 1  # reachable train frames only
    reopened = _ks(ks_root, tmp_path, frame_cache=True, frame_cache_dir=str(tmp_path / "cache"))
    next(reopened.test.batches(2))
    assert reopened.test.source.caches["v"].data_path == cached.test.source.caches["v"].data_path


def test_worker_loader_and_subset(ks_root, tmp_path):
    ds = _ks(ks_root, tmp_path, num_workers=1)
    sub = ds.test.subset(torch.tensor([2, 0]))
    assert len(sub) == 2 and sub.ids == ["clip08", "clip06"] and sub.labels.tolist() == [0, 0]
    ((batch, _labels),) = list(sub.batches(4))
    full, _ = next(_ks(ks_root, tmp_path).test.batches(4))
    assert torch.equal(batch["v"], full["v"][[2, 0]])
    assert torch.equal(sub.inputs["a"], batch["a"])


def test_vggsound_uses_the_ks_pipeline_and_frame_pattern(ks_root, tmp_path):
    ds = build_dataset(
        "vggsound",
        cache_dir=tmp_path,
        data_root=str(ks_root),
        image_size=16,
        num_workers=0,
        frame_cache=False,
        frame_pattern="frame_{t:05d}.jpg",
    )
    assert ds.name == "vggsound" and [s.shape for s in ds.specs] == [(3, 3, 16, 16), (1, 1024, 128)]
    batch, _ = next(ds.test.batches(1))
    assert _frame_levels(batch["v"][0]) == [_level(1), _level(4), _level(7)]
    zero_based = build_dataset(
        "vggsound",
        cache_dir=tmp_path,
        data_root=str(ks_root),
        image_size=16,
        num_workers=0,
        frame_cache=False,
        frame_pattern="{i:06d}.jpg",
    )
    source = zero_based.test.source  # {i} is 0-based, as the CRMT extractor's %06d names
    assert source.frame_names(source.profile.frames[0], 0, 4) == ["000003.jpg"]


# ----------------------------------------------------------------------------- ucf101


def test_ucf_specs_normalisation_and_shared_flip(ucf_root, tmp_path):
    ds = build_dataset(
        "ucf101", cache_dir=tmp_path, data_root=str(ucf_root), image_size=FRAME_H, num_workers=0, frame_cache=False
    )
    v, flow = ds.specs
    assert (v.name, v.shape, flow.name, flow.shape) == ("v", (3, 3, FRAME_H, FRAME_H), "flow", (2, 3, FRAME_H, FRAME_H))
    assert flow.lower == pytest.approx(((0 - FLOW_MEAN[0]) / FLOW_STD[0],) * 2)
    assert flow.upper == pytest.approx(((1 - FLOW_MEAN[0]) / FLOW_STD[0],) * 2)
    assert ds.encoders == {"v": "resnet18_visual", "flow": "resnet18_flow"} and ds.num_classes == 3

    def plain(split, cid):
        rgb, _ = decode_frame([ucf_root / "frames" / split / cid], ["frame_00001.jpg"], "RGB", FRAME_H)
        uv, _ = decode_frame(
            [ucf_root / "flow_u" / split / cid, ucf_root / "flow_v" / split / cid],
            ["frame_00001.jpg"] * 2,
            "L",
            FRAME_H,
        )
        return torch.from_numpy(rgb).permute(2, 0, 1), torch.from_numpy(uv).permute(2, 0, 1)

    test_batch, _ = next(ds.test.batches(4))
    rgb, uv = plain("test", ds.test.ids[0])
    mean, std = torch.tensor(FLOW_MEAN).view(2, 1, 1), torch.tensor(FLOW_STD).view(2, 1, 1)
    assert torch.equal(test_batch["flow"][0, :, 1], (uv.float() / 255 - mean) / std)
    flips = set()
    for seed in range(6):
        for k in range(len(ds.train)):
            sample, _ = ds.train.source[(k, seed)]
            rgb, uv = plain("train", ds.train.ids[k])
            flipped = not torch.equal(sample["v"][:, 0], rgb)
            flips.add(flipped)
            for t in range(3):
                if flipped:
                    assert torch.equal(sample["v"][:, t], rgb.flip(-1))
                    assert torch.equal(sample["flow"][0, t], 255 - uv[0].flip(-1))  # u -> 1 - u
                    assert torch.equal(sample["flow"][1, t], uv[1].flip(-1))
                else:
                    assert torch.equal(sample["v"][:, t], rgb) and torch.equal(sample["flow"][:, t], uv)
    assert flips == {True, False}


# ----------------------------------------------------------------------------- errors


def test_missing_or_malformed_roots_say_what_to_do(tmp_path, monkeypatch):
    monkeypatch.delenv("MMROBUST_KS_ROOT", raising=False)
    with pytest.raises(ValueError, match=r"data_root=DIR.*MMROBUST_KS_ROOT.*prepare ks --raw"):
        build_dataset("ks", cache_dir=tmp_path)
    with pytest.raises(ValueError, match=r"does not exist.*manifest.csv.*prepare ks"):
        build_dataset("ks", cache_dir=tmp_path, data_root=str(tmp_path / "nope"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match=r"no manifest at .*manifest.csv.*id,label,split,frames,audio.*prepare ks"):
        build_dataset("ks", cache_dir=tmp_path, data_root=str(empty))
    (empty / "manifest.csv").write_text("id,label,split,frames\nx,cat,train,frames/x\n")
    with pytest.raises(ValueError, match=r"lacks column\(s\) audio"):
        build_dataset("ks", cache_dir=tmp_path, data_root=str(empty))
    (empty / "manifest.csv").write_text(
        "id,label,split,frames,audio\nx,cat,train,f/x,a/x.npy\ny,dog,test,f/y,a/y.npy\n"
    )
    with pytest.raises(ValueError, match=r"no usable 'train' clips"):
        build_dataset("ks", cache_dir=tmp_path, data_root=str(empty))
    monkeypatch.setenv("MMROBUST_UCF101_ROOT", str(empty))
    with pytest.raises(ValueError, match=r"lacks column\(s\) flow_u, flow_v.*prepare ucf101"):
        build_dataset("ucf101", cache_dir=tmp_path)
    with pytest.raises(ValueError, match=r"unknown option.*flow_pattern.*valid:"):
        build_dataset("ks", cache_dir=tmp_path, data_root=str(empty), flow_pattern="x")


def test_bad_fbank_shape_is_reported(tmp_path):
    root = make_av_root(tmp_path / "bad", frames_per_clip=(7, 7), n_test=2)
    np.save(root / "audio" / "test" / "clip02.npy", np.zeros((100, 128), dtype=np.float32))
    ds = _ks(root, tmp_path)
    with pytest.raises(ValueError, match=r"clip02.npy has shape \(100, 128\), expected \(1024, 128\)"):
        next(ds.test.batches(2))


def test_env_var_fallback_and_encoder_override(ks_root, tmp_path, monkeypatch):
    monkeypatch.setenv("MMROBUST_KS_ROOT", str(ks_root))
    ds = build_dataset("ks", cache_dir=tmp_path, image_size=16, num_workers=0, encoders={"a": "small_cnn2d"})
    assert ds.data_root == ks_root and len(ds.test) == 3
    assert ds.encoders == {"v": "resnet18_visual", "a": "small_cnn2d"} and ds.config["encoders"] == ds.encoders
    with pytest.raises(ValueError, match="encoders for unknown modality flow"):
        build_dataset("ks", cache_dir=tmp_path, encoders={"flow": "resnet18_flow"})


# ----------------------------------------------------------------------------- encoders and end to end


def test_resnet18_encoders_are_torchvision_resnet18():
    with torch.device("meta"):  # shapes only: no need to initialise 11M weights twice
        ref = {k: v.shape for k, v in torchvision.models.resnet18().state_dict().items() if not k.startswith("fc.")}
        mine = {k: v.shape for k, v in ResNet18Trunk(3, 64).state_dict().items()}
    assert mine == ref
    from mmrobust_bench.contracts import ModalitySpec

    flow = build_encoder("resnet18_flow", ModalitySpec("flow", (2, 3, 32, 32)), 64)
    audio = build_encoder("resnet18_audio", ModalitySpec("a", (1, 64, 32)), 64)
    assert flow(torch.randn(2, 2, 3, 32, 32)).shape == (2, 64) and audio(torch.randn(2, 1, 64, 32)).shape == (2, 64)
    assert flow.trunk.conv1.in_channels == 2 and audio.trunk.conv1.in_channels == 1
    bn = flow.trunk.bn1.weight.detach()
    assert abs(float(bn.mean()) - 1) < 0.02 and float(flow.trunk.bn1.bias.detach().abs().max()) == 0
    with pytest.raises(ValueError, match="C=3"):
        build_encoder("resnet18_visual", ModalitySpec("flow", (2, 3, 32, 32)), 64)
    with pytest.raises(ValueError, match="divisible by 8"):
        build_encoder("resnet18_visual", ModalitySpec("v", (3, 3, 32, 32)), 60)


@pytest.mark.slow
def test_end_to_end_run_on_ks_fixture(ks_root, tmp_path):
    from mmrobust_bench.bench.api import run

    result = run(
        defense="jt",
        attack="fgm",
        modality="a",
        dataset="ks",
        dataset_options=dict(data_root=str(ks_root), image_size=32, num_workers=0),
        overrides={"epochs": 1, "feature_dim": 64, "batch_size": 4},
        eps=[0.5],
        root=tmp_path / "runs",
        device="cpu",
        progress=False,
    )
    rows = result.rows
    assert list(rows["attack"]) == ["clean", "fgm"] and (rows["n"] == 3).all() and (rows["dataset"] == "ks").all()
    assert all(0 <= a <= 1 and not math.isnan(a) for a in rows["accuracy"])
    assert result.trained.train_config.epochs == 1 and result.trained.train_config.lr == 1e-3
    encoders = result.trained.model.encoders  # ResNet-18s, slimmed by feature_dim 64 to stage widths 8..64
    assert type(encoders["v"]).__name__ == "ResNet18Clip" and type(encoders["a"]).__name__ == "ResNet18Image"
    assert list((tmp_path / "runs" / "datasets" / "clip-cache").glob("ks-train-v-*.npy"))  # built on first use


def test_sharded_clip_batches_reassemble_the_batches_with_the_same_augmentation(ks_root, tmp_path):
    """Under torchrun each rank loads its part of every batch (possibly empty); together the ranks load
    exactly the one-process batches, augmentation included (it depends on the clip and one seed)."""
    train = _ks(ks_root, tmp_path).train
    n = len(train)

    def gen():
        return torch.Generator().manual_seed(3)

    whole = list(train.batches(n - 1, shuffle=True, generator=gen()))  # a full batch, then a 1-clip batch
    parts = [list(train.batches(n - 1, shuffle=True, generator=gen(), shard=(r, 2))) for r in range(2)]
    assert [len(p) for p in parts] == [len(whole)] * 2
    assert parts[1][-1][1].numel() == 0 and parts[1][-1][0]["v"].shape[1:] == whole[0][0]["v"].shape[1:]
    for k, (batch, labels) in enumerate(whole):
        assert torch.equal(torch.cat([p[k][1] for p in parts]), labels)
        for m in batch:
            assert torch.equal(torch.cat([p[k][0][m] for p in parts]), batch[m])
