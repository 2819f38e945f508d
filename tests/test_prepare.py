"""``prepare``: raw media -> preprocessed layout + manifest (audio path end to end; video where a decoder exists)."""
from __future__ import annotations

import argparse
import math
import shutil
import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchaudio.compliance import kaldi
from torchaudio.functional import resample

from mmrobust_bench.data import build_dataset
from mmrobust_bench.data.prepare import (ERROR_LOG, MediaIndex, add_prepare_parser, clips_from_list, fbank_features,
                                         prepare, quantise_flow, read_wav, tvl1_factory, video_backend)

RATE = 8000  # the raw audio is not at 16 kHz, so the resampling step is exercised


def write_wav(path: Path, seconds: float, freq: float, channels: int = 1, rate: int = RATE) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    signal = np.stack([0.3 * np.sin(2 * math.pi * (freq * (c + 1)) * t) + 0.05 for c in range(channels)], 1)
    pcm = np.round(signal * 32767).astype("<i2")
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as fh:
        fh.setnchannels(channels)
        fh.setsampwidth(2)
        fh.setframerate(rate)
        fh.writeframes(pcm.tobytes())
    return pcm


def write_frames(folder: Path, n: int, level: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(n):
        Image.new("RGB", (20, 16), (level + 10 * k,) * 3).save(folder / f"img_{k:03d}.jpg", quality=95)


def make_raw(raw: Path) -> Path:
    """<raw>/<split>/<class>/<clip>.wav plus an already extracted <clip>/ frame folder."""
    for split, clips in (("train", ("a1", "a2", "b1", "b2")), ("val", ("a3", "b3"))):
        for k, cid in enumerate(clips):
            label = "alarm" if cid.startswith("a") else "bird"
            write_wav(raw / split / label / f"{cid}.wav", seconds=1.5 + 0.25 * k, freq=300 if label == "alarm" else 900)
            write_frames(raw / split / label / cid, n=7, level=40 + 5 * k)
    return raw


def reference_fbank(pcm: np.ndarray, rate: int) -> np.ndarray:
    """METHODS.md §2 written out independently: channel 0, 16 kHz, minus mean, fbank, pad, normalise."""
    wave_t = torch.from_numpy(pcm[:, 0].astype(np.float32) / 32768.0)[None]
    wave_t = resample(wave_t, rate, 16000)
    wave_t = wave_t - wave_t.mean()
    fb = kaldi.fbank(wave_t, htk_compat=True, sample_frequency=16000, use_energy=False, window_type="hanning",
                     num_mel_bins=128, dither=0.0, frame_shift=10, frame_length=25)
    fb = torch.cat([fb, torch.zeros(1024 - fb.shape[0], 128)])
    return ((fb + 4.503877) / (2 * 5.141276)).numpy()


def test_fbank_matches_the_reference_recipe(tmp_path):
    pcm = write_wav(tmp_path / "x.wav", seconds=1.0, freq=440, channels=2)
    waveform, rate = read_wav(tmp_path / "x.wav")
    assert waveform.shape == (2, RATE) and rate == RATE
    feats = fbank_features(waveform, rate)
    assert feats.shape == (1024, 128) and feats.dtype == np.float32
    np.testing.assert_allclose(feats, reference_fbank(pcm, RATE), rtol=0, atol=1e-5)  # channel 0 only
    assert np.allclose(feats[200:], 4.503877 / (2 * 5.141276))  # padding happens before normalising
    long = fbank_features(torch.randn(1, 16000 * 12), 16000)
    assert long.shape == (1024, 128)  # truncated to 10.24 s


def test_prepare_audio_path_end_to_end_resumable(tmp_path):
    raw, out = make_raw(tmp_path / "raw"), tmp_path / "ks"
    report = prepare("ks", raw, out, progress=False)
    assert (report.rows, report.processed, report.skipped, report.failed) == (6, 6, 0, [])
    manifest = (out / "manifest.csv").read_text().splitlines()
    assert manifest[0] == "id,label,split,frames,audio,n_frames"
    assert "a3,alarm,test,frames/test/a3,audio/test/a3.npy,7" in manifest  # val counts as test
    frames = sorted((out / "frames" / "train" / "a1").iterdir())
    assert [f.name for f in frames] == [f"frame_{t:05d}.jpg" for t in range(1, 8)]
    with wave.open(str(raw / "train" / "alarm" / "a1.wav")) as fh:
        pcm = np.frombuffer(fh.readframes(fh.getnframes()), dtype="<i2")[:, None]
    np.testing.assert_allclose(np.load(out / "audio" / "train" / "a1.npy"), reference_fbank(pcm, RATE), atol=1e-5)

    stamp = (out / "audio" / "train" / "a1.npy").stat().st_mtime_ns
    again = prepare("ks", raw, out, progress=False)
    assert (again.processed, again.skipped, again.rows) == (0, 6, 6)
    assert (out / "audio" / "train" / "a1.npy").stat().st_mtime_ns == stamp
    (out / "audio" / "train" / "b2.npy").unlink()
    third = prepare("ks", raw, out, progress=False)
    assert (third.processed, third.skipped) == (1, 5) and (out / "audio" / "train" / "b2.npy").exists()

    ds = build_dataset("ks", cache_dir=tmp_path / "runs", data_root=str(out), image_size=16, num_workers=0)
    assert ds.class_names == ("alarm", "bird") and len(ds.train) == 4 and len(ds.test) == 2
    batch, labels = next(ds.test.batches(2))
    assert batch["v"].shape == (2, 3, 3, 16, 16) and batch["a"].shape == (2, 1, 1024, 128)
    assert labels.tolist() == [0, 1]


def test_bad_files_are_logged_and_skipped(tmp_path):
    raw, out = make_raw(tmp_path / "raw"), tmp_path / "ks"
    (raw / "train" / "alarm" / "a2.wav").write_bytes(b"RIFF not really a wav")
    shutil.rmtree(raw / "train" / "bird" / "b1")
    (raw / "train" / "bird" / "b1").mkdir()
    (raw / "train" / "bird" / "b1" / "note.txt").write_text("no frames here")
    report = prepare("ks", raw, out, progress=False)
    assert sorted(cid for cid, _ in report.failed) == ["a2", "b1"] and report.rows == 4
    log = (out / ERROR_LOG).read_text()
    assert "a2" in log and "b1" in log
    assert "a2," not in (out / "manifest.csv").read_text()
    assert not list((out / "frames" / "train").glob(".*.tmp"))  # no half-written folders left behind


def test_cli_parser_and_main(tmp_path, capsys):
    raw, out = make_raw(tmp_path / "raw"), tmp_path / "ks"
    parser = argparse.ArgumentParser(prog="mmrobust-bench")
    add_prepare_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["prepare", "ks", "--raw", str(raw), "--out", str(out), "--limit", "2", "--no-progress"])
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert "(2 clips)" in printed and f"data_root={out}" in printed
    with pytest.raises(ValueError, match="is not a directory"):
        args.func(parser.parse_args(["prepare", "ks", "--raw", str(tmp_path / "nope"), "--out", str(out)]))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="found no clips"):
        args.func(parser.parse_args(["prepare", "ks", "--raw", str(tmp_path / "empty"), "--out", str(out)]))


def test_list_formats(tmp_path):
    raw = tmp_path / "raw"
    write_wav(raw / "abc_000030.wav", 0.2, 100)
    write_wav(raw / "v_Archery_g01_c01.wav", 0.2, 100)
    index = MediaIndex.scan(raw)
    (tmp_path / "vggsound.csv").write_text("abc,30,dog barking,train\nzzz,5,cat,test\n")
    clips = clips_from_list(tmp_path / "vggsound.csv", index, "vggsound")
    assert [(c.id, c.label, c.split) for c in clips] == [("abc_000030", "dog barking", "train"), ("zzz_000005", "cat", "test")]
    assert clips[0].audio == raw / "abc_000030.wav" and clips[1].audio is None
    lists = tmp_path / "ucfTrainTestlist"
    lists.mkdir()
    (lists / "trainlist01.txt").write_text("Archery/v_Archery_g01_c01.avi 3\n")
    (lists / "testlist01.txt").write_text("Biking/v_Biking_g02_c01.avi\n")
    ucf = clips_from_list(lists, index, "ucf101")
    assert [(c.id, c.label, c.split) for c in ucf] == [("v_Archery_g01_c01", "Archery", "train"),
                                                        ("v_Biking_g02_c01", "Biking", "test")]
    (tmp_path / "custom.csv").write_text("id,label,split\nabc_000030,dog,train\n")
    assert clips_from_list(tmp_path / "custom.csv", index, "ks")[0].label == "dog"
    (tmp_path / "bad.csv").write_text("a b\n")
    with pytest.raises(ValueError, match="header id,label,split"):
        clips_from_list(tmp_path / "bad.csv", index, "ks")


def test_flow_quantisation_is_the_reference_one():
    flow = np.array([[[-20.0, -15.0], [0.0, 7.5]], [[15.0, 30.0], [0.01, -0.06]]], dtype=np.float32)
    q = quantise_flow(flow)
    assert q.dtype == np.uint8
    assert q.tolist() == [[[0, 0], [128, 191]], [[255, 255], [128, 127]]]


def test_missing_tools_say_what_to_install(tmp_path):
    raw = tmp_path / "raw"
    (raw / "train" / "Archery").mkdir(parents=True)
    (raw / "train" / "Archery" / "v_a.avi").write_bytes(b"not a video")
    if tvl1_factory() is None:
        with pytest.raises(ValueError, match="pip install opencv-contrib-python-headless"):
            prepare("ucf101", raw, tmp_path / "ucf", progress=False)
    if video_backend() is None:
        with pytest.raises(ValueError, match="ffmpeg.*torchcodec"):
            prepare("ks", raw, tmp_path / "ks", progress=False)
    if tvl1_factory() is not None and video_backend() is not None:
        pytest.skip("every decoder is installed here: nothing is missing")


VIDEO_FPS = 4


def _make_video(path: Path, seconds: int) -> bool:
    """A tiny 4 fps test video with audio (ffmpeg) or without (OpenCV); False when neither can write one."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg:
        subprocess.run([ffmpeg, "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                        f"testsrc=duration={seconds}:size=64x48:rate={VIDEO_FPS}", "-f", "lavfi", "-i",
                        f"sine=frequency=440:duration={seconds}", "-shortest", str(path)], check=True)
        return True
    try:
        import cv2
    except ImportError:
        return False
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), VIDEO_FPS, (64, 48))
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (48, 72, 3), dtype=np.uint8)
    for k in range(VIDEO_FPS * seconds):
        writer.write(np.ascontiguousarray(base[:, k % 8:k % 8 + 64]))
    writer.release()
    return True


def test_video_path_end_to_end(tmp_path):
    if video_backend() is None:
        pytest.skip("no video decoder here (ffmpeg binary, torchcodec or OpenCV): frame extraction not exercised")
    raw = tmp_path / "raw"
    for split, cid in (("train", "c1"), ("train", "c2"), ("test", "c3"), ("test", "c4")):
        folder = raw / split / ("x" if cid in ("c1", "c3") else "y")
        folder.mkdir(parents=True, exist_ok=True)
        if not _make_video(folder / f"{cid}.avi", seconds=5):
            pytest.skip("cannot write a test video here (needs the ffmpeg binary or OpenCV)")
        if not shutil.which("ffmpeg"):
            write_wav(folder / f"{cid}.wav", 5, 300)
    report = prepare("ks", raw, tmp_path / "ks", progress=False)
    assert report.failed == [] and report.rows == 4
    n = len(list((tmp_path / "ks" / "frames" / "train" / "c1").iterdir()))
    assert 4 <= n <= 6  # 1 fps over 5 s
    ks = build_dataset("ks", cache_dir=tmp_path / "runs", data_root=str(tmp_path / "ks"), image_size=16, num_workers=0)
    assert next(ks.test.batches(2))[0]["v"].shape == (2, 3, 3, 16, 16)
    if tvl1_factory() is not None:  # TV-L1 costs ~0.2 s a frame pair even at 64×48: two 2-second clips
        ucf_raw = tmp_path / "ucf_raw"
        for split, label in (("train", "Archery"), ("test", "Biking")):
            (ucf_raw / split / label).mkdir(parents=True)
            _make_video(ucf_raw / split / label / f"v_{label}.avi", seconds=2)
        flow = prepare("ucf101", ucf_raw, tmp_path / "ucf", progress=False)
        assert flow.failed == [] and flow.rows == 2
        assert len(list((tmp_path / "ucf" / "flow_u" / "train" / "v_Archery").iterdir())) == 2 * VIDEO_FPS - 1
        ucf = build_dataset("ucf101", cache_dir=tmp_path / "runs", data_root=str(tmp_path / "ucf"), image_size=16,
                            num_workers=0)
        batch, _ = next(ucf.train.batches(2))
        assert batch["flow"].shape == (1, 2, 3, 16, 16) and batch["v"].shape == (1, 3, 3, 16, 16)
