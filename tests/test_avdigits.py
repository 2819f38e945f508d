"""avdigits: FSDD-named WAVs the test writes + scikit-learn's digits; splits, pairing, cache, errors, CLI."""

import math
import wave
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torchaudio.compliance import kaldi

from mmrobust_bench.cli import main
from mmrobust_bench.data import avdigits, build_dataset
from mmrobust_bench.data.avdigits import AVDigitsConfig, fit_frames, load_images, load_tables, read_wav

SPEAKERS = ("alice", "bob")
INDICES = range(7)  # 0-4 test, 5-6 train
RATE = 8000


def write_wav(path: Path, samples: torch.Tensor, rate: int = RATE, channels: int = 1) -> None:
    pcm = (samples.clamp(-1, 1) * 32767).round().to(torch.int16).numpy()
    with wave.open(str(path), "wb") as fh:
        fh.setnchannels(channels)
        fh.setsampwidth(2)
        fh.setframerate(rate)
        fh.writeframes(np.repeat(pcm, channels).tobytes())


def tone(digit: int, speaker: int, index: int) -> torch.Tensor:
    """A digit-specific tone (300 + 150·digit Hz) with a speaker-specific overtone and seeded noise."""
    gen = torch.Generator().manual_seed(1000 * digit + 100 * speaker + index)
    n = 1600 + 160 * index + 40 * digit  # 0.2-0.4 s: 18-37 frames, all shorter than audio_frames
    t = torch.arange(n) / RATE
    f0 = 300.0 + 150.0 * digit
    x = 0.4 * torch.sin(2 * math.pi * f0 * t) + 0.1 * (speaker + 1) * torch.sin(4 * math.pi * f0 * t)
    return x + 0.02 * torch.randn(n, generator=gen)


@pytest.fixture(scope="module")
def fsdd(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fsdd") / "recordings"
    root.mkdir()
    for digit in range(10):
        for s, speaker in enumerate(SPEAKERS):
            for index in INDICES:
                write_wav(root / f"{digit}_{speaker}_{index}.wav", tone(digit, s, index))
    (root / "notes.txt").write_text("not a recording")  # other files are ignored
    return root


def tables(fsdd, cache, **options):
    return load_tables(AVDigitsConfig(data_root=str(fsdd), **options), cache)


def test_official_split_by_recording_index(fsdd, tmp_path):
    t = tables(fsdd, tmp_path)
    assert len(t.clip_names) == 140 and "notes.txt" not in t.clip_names
    for name, split in zip(t.clip_names, t.clip_split):
        assert split == ("test" if int(name[:-4].split("_")[2]) <= 4 else "train")
    assert sorted(set(t.pairs["train"][:, 0].tolist())) == [i for i, s in enumerate(t.clip_split) if s == "train"]
    assert sorted(set(t.pairs["test"][:, 0].tolist())) == [i for i, s in enumerate(t.clip_split) if s == "test"]
    ds = build_dataset("avdigits", cache_dir=tmp_path, data_root=str(fsdd))
    assert (len(ds.train), len(ds.test), ds.num_classes) == (
        40,
        300,
        10,
    )  # 2 train / 5 test clips per digit and speaker
    assert ds.config["n_train"] == 40 and ds.config["n_test"] == 300 and "data_root" not in ds.config


def test_disjoint_stratified_image_pools_and_consistent_labels(fsdd, tmp_path):
    t = tables(fsdd, tmp_path)
    train_images, test_images = set(t.pairs["train"][:, 1].tolist()), set(t.pairs["test"][:, 1].tolist())
    assert not train_images & test_images
    assert all(not t.image_is_test[i] for i in train_images) and all(t.image_is_test[i] for i in test_images)
    for digit in range(10):
        n = int((t.image_digit == digit).sum())
        assert int((t.image_is_test & (t.image_digit == digit)).sum()) == round(0.2 * n)
    for split in ("train", "test"):
        clip, image = t.pairs[split][:, 0], t.pairs[split][:, 1]
        assert torch.equal(t.clip_digit[clip], t.image_digit[image])
        assert torch.equal(t.split(split).labels, t.image_digit[image])
    for name, digit in zip(t.clip_names, t.clip_digit.tolist()):
        assert int(name[0]) == digit


def test_several_distinct_images_per_test_clip_used_evenly(fsdd, tmp_path):
    t = tables(fsdd, tmp_path, test_images_per_clip=4, train_images_per_clip=2)
    for split, k in (("test", 4), ("train", 2)):
        pairs = t.pairs[split]
        per_clip: dict[int, list[int]] = {}
        for clip, image in pairs.tolist():
            per_clip.setdefault(clip, []).append(image)
        assert all(len(v) == k and len(set(v)) == k for v in per_clip.values())
        # rows in a seeded random order, so a prefix of the split mixes the digits (recordings are listed by digit)
        assert pairs[:, 0].tolist() != sorted(pairs[:, 0].tolist())
        first = t.clip_digit[pairs[: len(pairs) // 4, 0]]
        assert first.unique().numel() >= 8
        uses = Counter(pairs[:, 1].tolist())
        pool = t.image_is_test if split == "test" else ~t.image_is_test
        for digit in range(10):
            counts = [uses.get(i, 0) for i in torch.nonzero(pool & (t.image_digit == digit)).flatten().tolist()]
            assert max(counts) - min(counts) <= 1  # every pool image used equally often +-1
    ds = build_dataset("avdigits", cache_dir=tmp_path, data_root=str(fsdd), test_images_per_clip=4)
    assert len(ds.test) == 400


def test_pairing_is_deterministic_by_seed(fsdd, tmp_path):
    a, b = tables(fsdd, tmp_path / "one"), tables(fsdd, tmp_path / "two")
    for split in ("train", "test"):
        assert torch.equal(a.pairs[split], b.pairs[split])
    assert torch.equal(a.audio, b.audio) and torch.equal(a.image_is_test, b.image_is_test)
    c = tables(fsdd, tmp_path / "three", seed=1)
    assert not torch.equal(a.pairs["test"], c.pairs["test"]) and not torch.equal(a.image_is_test, c.image_is_test)
    assert torch.equal(a.audio, c.audio)  # the seed moves images only


def test_images_are_the_uci_digits_in_their_box(fsdd, tmp_path):
    from sklearn.datasets import load_digits

    ds = build_dataset("avdigits", cache_dir=tmp_path, data_root=str(fsdd))
    v, a = ds.specs
    assert (v.name, v.shape, v.lower, v.upper) == ("v", (1, 8, 8), (0.0,), (1.0,)) and not a.bounded
    images = ds.test.inputs["v"]
    assert images.shape[1:] == (1, 8, 8) and images.min() >= 0 and images.max() <= 1
    assert torch.equal(v.clamp(images), images)
    digits = load_digits()
    t = tables(fsdd, tmp_path)
    first = int(t.pairs["test"][0, 1])
    assert np.array_equal(images[0, 0].numpy(), (digits.images[first] / 16.0).astype(np.float32))
    assert int(ds.test.labels[0]) == int(digits.target[first])


def test_fbank_pipeline_exactly_with_train_only_statistics(fsdd, tmp_path):
    t = tables(fsdd, tmp_path, audio_frames=32, mel_bins=24)
    assert t.audio.shape == (140, 1, 32, 24)
    feats = []
    for name in t.clip_names:
        x = read_wav(fsdd / name)
        feats.append(
            kaldi.fbank(
                x[None] - x.mean(),
                num_mel_bins=24,
                sample_frequency=8000,
                htk_compat=True,
                use_energy=False,
                dither=0.0,
                window_type="hanning",
                frame_length=25.0,
                frame_shift=10.0,
            )
        )
    train = torch.cat([f for f, s in zip(feats, t.clip_split) if s == "train"])
    assert torch.allclose(t.audio_norm, torch.stack([train.mean(), train.std()]))
    everything = torch.cat(feats)
    assert not torch.allclose(t.audio_norm[0], everything.mean())  # test frames did not enter the statistics
    for i in (0, 139):
        expected = fit_frames((feats[i] - train.mean()) / (2 * train.std()), 32)
        assert torch.allclose(t.audio[i, 0], expected, atol=1e-5)
    # a long clip is centre-cropped, a short one zero-padded (after normalisation: padding = the train mean)
    ramp = torch.arange(10.0)[:, None].expand(10, 3)
    assert torch.equal(fit_frames(ramp, 4)[:, 0], torch.tensor([3.0, 4.0, 5.0, 6.0]))
    assert torch.equal(fit_frames(ramp[1:4], 6)[:, 0], torch.tensor([0.0, 1.0, 2.0, 3.0, 0.0, 0.0]))
    assert torch.equal(fit_frames(ramp[1:4], 3), ramp[1:4])


def test_read_wav_scales_pcm_exactly(tmp_path):
    samples = torch.tensor([0.0, 0.5, -0.5, 1.0, -1.0] * 100)
    write_wav(tmp_path / "x.wav", samples)
    pcm = (samples * 32767).round()
    assert torch.equal(read_wav(tmp_path / "x.wav"), pcm / 32768)


def test_speaker_held_out_split(fsdd, tmp_path):
    t = tables(fsdd, tmp_path, split="speaker", test_speaker="bob")
    for name, split in zip(t.clip_names, t.clip_split):
        assert split == ("test" if "_bob_" in name else "train")
    ds = build_dataset("avdigits", cache_dir=tmp_path, data_root=str(fsdd), split="speaker", test_speaker="bob")
    assert (len(ds.train), len(ds.test)) == (70, 210)
    with pytest.raises(
        ValueError, match=r"test_speaker 'bobb' has no recordings \(did you mean 'bob'\?\); speakers: alice, bob"
    ):
        tables(fsdd, tmp_path, split="speaker", test_speaker="bobb")
    with pytest.raises(ValueError, match="split=speaker needs test_speaker"):
        tables(fsdd, tmp_path, split="speaker")


def test_cache_is_reused_keyed_by_files_and_rebuilt_when_corrupt(fsdd, tmp_path, monkeypatch, caplog):
    first = build_dataset("avdigits", cache_dir=tmp_path, data_root=str(fsdd))
    files = list(tmp_path.glob("avdigits-*.safetensors"))
    assert len(files) == 1

    def no_reading(path):
        raise AssertionError(f"read {path} although the cache exists")

    monkeypatch.setattr(avdigits, "read_wav", no_reading)
    again = build_dataset("avdigits", cache_dir=tmp_path, data_root=str(fsdd))
    assert torch.equal(again.train.inputs["a"], first.train.inputs["a"]) and again.config == first.config
    monkeypatch.undo()
    # a different file set (a copy with one recording fewer) has another key; the copy's location does not matter
    copy = tmp_path / "copy"
    copy.mkdir()
    for p in fsdd.glob("*.wav"):
        (copy / p.name).write_bytes(p.read_bytes())
    same = build_dataset("avdigits", cache_dir=tmp_path, data_root=str(copy))
    assert same.config == first.config and len(list(tmp_path.glob("avdigits-*.safetensors"))) == 1
    (copy / "3_alice_6.wav").unlink()
    fewer = build_dataset("avdigits", cache_dir=tmp_path, data_root=str(copy))
    assert fewer.config["recordings"] != first.config["recordings"] and len(fewer.train) == 39
    assert len(list(tmp_path.glob("avdigits-*.safetensors"))) == 2
    data = bytearray(files[0].read_bytes())
    data[-5] ^= 0x40  # a bit-flipped cache fails its checksum and is rebuilt, not trusted
    files[0].write_bytes(bytes(data))
    with caplog.at_level("WARNING"):
        rebuilt = build_dataset("avdigits", cache_dir=tmp_path, data_root=str(fsdd))
    assert "do not match its checksum" in caplog.text and str(files[0]) in caplog.text
    assert torch.equal(rebuilt.test.inputs["a"], first.test.inputs["a"])
    monkeypatch.setattr(avdigits, "read_wav", no_reading)  # the rewritten cache is intact again
    assert torch.equal(
        build_dataset("avdigits", cache_dir=tmp_path, data_root=str(fsdd)).train.inputs["v"], first.train.inputs["v"]
    )
    monkeypatch.undo()
    files[0].write_bytes(b"garbage")  # an unreadable cache is rebuilt too
    rebuilt = build_dataset("avdigits", cache_dir=tmp_path, data_root=str(fsdd))
    assert torch.equal(rebuilt.test.inputs["a"], first.test.inputs["a"])


def test_environment_variable_names_the_folder(fsdd, tmp_path, monkeypatch):
    monkeypatch.setenv("MMROBUST_FSDD_ROOT", str(fsdd))
    assert len(build_dataset("avdigits", cache_dir=tmp_path).test) == 300
    monkeypatch.delenv("MMROBUST_FSDD_ROOT")
    with pytest.raises(ValueError, match=r"no recordings folder given; clone https://github\.com/Jakobovski"):
        build_dataset("avdigits", cache_dir=tmp_path)


@pytest.mark.parametrize(
    "options,message",
    [
        ({"n_train": 3}, r"unknown option\(s\) n_train; valid: audio_frames, data_root, image_test_fraction"),
        ({"split": "random"}, "split must be one of index, speaker"),
        ({"test_speaker": "bob"}, "test_speaker only applies with split=speaker"),
        ({"test_images_per_clip": 0}, "must be >= 1"),
        ({"test_images_per_clip": 2.5}, "test_images_per_clip must be an integer"),
        ({"image_test_fraction": 1.0}, r"image_test_fraction must be a number in \(0, 1\)"),
        ({"mel_bins": 200}, r"mel_bins must be in \[8, 80\]"),
        ({"audio_frames": 4}, "audio_frames must be >= 8"),
        ({"test_images_per_clip": 60}, "test_images_per_clip=60 exceeds the .* test images of digit 0"),
    ],
)
def test_option_errors(fsdd, tmp_path, options, message):
    with pytest.raises(ValueError, match=message):
        build_dataset("avdigits", cache_dir=tmp_path, data_root=str(fsdd), **options)


def test_options_are_checked_before_anything_is_read(fsdd, tmp_path):
    from mmrobust_bench.bench.validate import check_dataset_options

    check_dataset_options("avdigits", {"data_root": str(fsdd), "split": "speaker", "test_speaker": "bob"})
    with pytest.raises(ValueError, match="unknown option"):
        check_dataset_options("avdigits", {"data_root": str(fsdd), "n_test": 5})
    with pytest.raises(ValueError, match="does not exist"):
        check_dataset_options("avdigits", {"data_root": str(tmp_path / "nowhere")})
    assert not list(tmp_path.iterdir())  # nothing built


def test_folder_errors_name_the_fix(fsdd, tmp_path):
    with pytest.raises(ValueError, match=r"recordings folder .*nowhere does not exist; clone https://github.com/"):
        build_dataset("avdigits", cache_dir=tmp_path, data_root=str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match=rf"holds no FSDD-named WAV files .*did you mean {fsdd}\?"):
        build_dataset("avdigits", cache_dir=tmp_path, data_root=str(fsdd.parent))
    partial = tmp_path / "partial"
    partial.mkdir()
    for index in INDICES:
        write_wav(partial / f"1_alice_{index}.wav", tone(1, 0, index))
    with pytest.raises(ValueError, match=r"the train split \(index split\) has no recordings of digit\(s\) 0, 2, "):
        build_dataset("avdigits", cache_dir=tmp_path, data_root=str(partial))


@pytest.mark.parametrize("problem", ["rate", "stereo", "garbage", "truncated", "short"])
def test_bad_recordings_are_named(fsdd, tmp_path, problem):
    bad = tmp_path / "bad"
    bad.mkdir()
    for p in fsdd.glob("*.wav"):
        (bad / p.name).write_bytes(p.read_bytes())
    target = bad / "4_bob_2.wav"
    if problem == "rate":
        write_wav(target, tone(4, 1, 2), rate=16000)
        message = "4_bob_2.wav is sampled at 16000 Hz, FSDD recordings are 8000 Hz"
    elif problem == "stereo":
        write_wav(target, tone(4, 1, 2), channels=2)
        message = "4_bob_2.wav has 2 channels"
    elif problem == "garbage":
        target.write_bytes(b"this is not a wav file at all")
        message = "cannot read .*4_bob_2.wav as a PCM WAV .*fresh clone of https://github.com/Jakobovski"
    elif problem == "truncated":
        target.write_bytes(target.read_bytes()[:-100])
        message = "4_bob_2.wav is truncated"
    else:
        write_wav(target, tone(4, 1, 2)[:150])
        message = "4_bob_2.wav holds 150 samples, fewer than one 25 ms frame"
    with pytest.raises(ValueError, match=message):
        build_dataset("avdigits", cache_dir=tmp_path, data_root=str(bad))


def test_default_encoders_fit_the_shapes(fsdd, tmp_path):
    from mmrobust_bench.models import build_model

    ds = build_dataset("avdigits", cache_dir=tmp_path, data_root=str(fsdd))
    assert ds.encoders == {"v": "small_cnn2d", "a": "small_cnn2d_deep"}
    model = build_model(ds.specs, ds.num_classes, ds.encoders, head="concat", feature_dim=16)
    batch, _labels = next(ds.test.batches(5))
    out = model(batch)
    assert out.logits.shape == (5, 10) and set(out.features) == {"v", "a"}
    convs = [m for m in model.encoders["a"].modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [16, 32, 64, 16] and all(c.stride == (2, 2) for c in convs)
    from mmrobust_bench.models.encoders import build_encoder

    with pytest.raises(ValueError, match="small_cnn2d_deep needs \\(C, H, W\\) inputs"):
        build_encoder("small_cnn2d_deep", ds.specs[0].__class__("x", (1, 2, 8, 8)), 8)
    assert ds.train_defaults == avdigits.TRAIN_DEFAULTS and ds.train_defaults["epochs"] >= 1


def test_load_images_matches_sklearn():
    from sklearn.datasets import load_digits

    images, targets = load_images()
    digits = load_digits()
    assert images.shape == (1797, 1, 8, 8) and images.dtype == torch.float32
    assert torch.equal(images[:, 0], torch.from_numpy(digits.images.astype(np.float32) / 16))
    assert torch.equal(targets, torch.from_numpy(digits.target).long())


@pytest.mark.slow
def test_cli_run_end_to_end(fsdd, tmp_path, capsys):
    args = [
        "run",
        "--dataset",
        "avdigits",
        "--data-root",
        str(fsdd),
        "--defense",
        "jt",
        "--set",
        "epochs=1",
        "--eps",
        "0.5",
        "--root",
        str(tmp_path),
        "--no-progress",
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "avdigits · defense jt (seed 0) · trained in" in out
    rows = pd.read_csv(tmp_path / "results.csv")
    assert list(rows["attack"]) == ["clean", "pgd_l2"] and (rows["n"] == 300).all()
    assert set(rows["dataset"]) == {"avdigits"} and rows["accuracy"].between(0, 1).all()
    assert len(list((tmp_path / "datasets").glob("avdigits-*.safetensors"))) == 1
