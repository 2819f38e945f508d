"""``prepare``: raw media -> preprocessed layout + manifest: the audio path, and the video path (frames, audio
from the container, TV-L1 flow) with the decoders of the ``video`` extra (imageio-ffmpeg, OpenCV-contrib)."""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import math
import os
import shutil
import subprocess
import tempfile
import wave
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchaudio.compliance import kaldi
from torchaudio.functional import resample

from mmrobust_bench.cli.prepare import add_parser as add_prepare_parser
from mmrobust_bench.data import build_dataset
from mmrobust_bench.data.prepare import (
    ERROR_LOG,
    MediaIndex,
    clips_from_list,
    decode_audio,
    extract_frames,
    fbank_features,
    ffmpeg_exe,
    prepare,
    quantise_flow,
    read_wav,
    tvl1_factory,
    video_backend,
)
from mmrobust_bench.data.prepare import tools as prepare_tools

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
    """docs/methods.md §2 written out independently: channel 0, 16 kHz, minus mean, fbank, pad, normalise."""
    wave_t = torch.from_numpy(pcm[:, 0].astype(np.float32) / 32768.0)[None]
    wave_t = resample(wave_t, rate, 16000)
    wave_t = wave_t - wave_t.mean()
    fb = kaldi.fbank(
        wave_t,
        htk_compat=True,
        sample_frequency=16000,
        use_energy=False,
        window_type="hanning",
        num_mel_bins=128,
        dither=0.0,
        frame_shift=10,
        frame_length=25,
    )
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
    assert [(c.id, c.label, c.split) for c in clips] == [
        ("abc_000030", "dog barking", "train"),
        ("zzz_000005", "cat", "test"),
    ]
    assert clips[0].audio == raw / "abc_000030.wav" and clips[1].audio is None
    lists = tmp_path / "ucfTrainTestlist"
    lists.mkdir()
    (lists / "trainlist01.txt").write_text("Archery/v_Archery_g01_c01.avi 3\n")
    (lists / "testlist01.txt").write_text("Biking/v_Biking_g02_c01.avi\n")
    ucf = clips_from_list(lists, index, "ucf101")
    assert [(c.id, c.label, c.split) for c in ucf] == [
        ("v_Archery_g01_c01", "Archery", "train"),
        ("v_Biking_g02_c01", "Biking", "test"),
    ]
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


def test_missing_tools_say_what_to_install(tmp_path, monkeypatch):
    """With every decoder hidden, each kind of pending work names the ``video`` extra to install."""
    monkeypatch.setattr(prepare_tools, "ffmpeg_exe", lambda: None)
    monkeypatch.setattr(prepare_tools, "has_module", lambda name: False)
    monkeypatch.setattr(prepare_tools, "tvl1_factory", lambda: None)
    assert prepare_tools.video_backend() is None
    raw = tmp_path / "raw"
    (raw / "train" / "Archery").mkdir(parents=True)
    (raw / "train" / "Archery" / "v_a.avi").write_bytes(b"not a video")
    with pytest.raises(
        ValueError, match=r"TV-L1.*pip install 'mmrobust-bench\[video\]'.*opencv-contrib-python-headless"
    ):
        prepare("ucf101", raw, tmp_path / "ucf", progress=False)
    with pytest.raises(ValueError, match=r"ffmpeg, torchcodec or OpenCV: pip install 'mmrobust-bench\[video\]'"):
        prepare("ks", raw, tmp_path / "ks", progress=False)
    song = tmp_path / "song"
    write_frames(song / "train" / "x" / "s1", n=4, level=50)
    (song / "train" / "x" / "s1.mp3").write_bytes(b"not audio")
    with pytest.raises(
        ValueError, match=r"non-WAV audio needs ffmpeg or torchcodec: pip install 'mmrobust-bench\[video\]'"
    ):
        prepare("ks", song, tmp_path / "ks_song", progress=False)


# ----------------------------------------------------------------------------- the video path, for real

VIDEO_FPS = 4
VIDEO_RATE = 16_000  # the container's audio is already at 16 kHz: decoding it is exact, so fbanks compare exactly
VIDEO_W, VIDEO_H, BAND = 64, 48, 40  # rows >= BAND are flat grey 16 + 8·k: every image says which source frame k it is


def _video_frames(seconds: int, motion: tuple[int, int]) -> np.ndarray:
    """(N, H, W, 3) uint8 RGB: a smooth random texture moving by ``motion`` = (dy, dx) pixels a frame above the band."""
    n = seconds * VIDEO_FPS
    pad = n * max(abs(motion[0]), abs(motion[1]))
    noise = np.random.default_rng(0).integers(0, 256, (BAND + 2 * pad + 2, VIDEO_W + 2 * pad + 2)).astype(np.float32)
    texture = sum(noise[i : i + BAND + 2 * pad, j : j + VIDEO_W + 2 * pad] for i in range(3) for j in range(3)) / 9
    frames = np.empty((n, VIDEO_H, VIDEO_W, 3), np.uint8)
    for k in range(n):
        y0, x0 = pad - motion[0] * k, pad - motion[1] * k  # a window sliding against the motion: no wrap-around seam
        frames[k, :BAND] = np.round(texture[y0 : y0 + BAND, x0 : x0 + VIDEO_W, None])
        frames[k, BAND:] = 16 + 8 * k
    return frames


def _write_pcm(path: Path, pcm: np.ndarray, rate: int) -> None:
    with wave.open(str(path), "wb") as fh:
        fh.setnchannels(pcm.shape[1])
        fh.setsampwidth(2)
        fh.setframerate(rate)
        fh.writeframes(np.ascontiguousarray(pcm).tobytes())


def _make_video(path: Path, seconds: int, motion: tuple[int, int] = (0, 1)) -> np.ndarray | None:
    """A lossless (FFV1) 4 fps test video. With ffmpeg it also carries a stereo 16 kHz PCM track, returned as
    (samples, 2) int16 (channel 1 differs, so using it instead of channel 0 shows); with OpenCV only, no audio
    (None)."""
    frames = _video_frames(seconds, motion)
    path.parent.mkdir(parents=True, exist_ok=True)
    ffmpeg = ffmpeg_exe()
    if ffmpeg:
        t = np.arange(seconds * VIDEO_RATE) / VIDEO_RATE
        signal = np.stack([0.3 * np.sin(2 * math.pi * 440 * t) + 0.05, 0.2 * np.sin(2 * math.pi * 1250 * t)], 1)
        pcm = np.round(signal * 32767).astype("<i2")
        with tempfile.TemporaryDirectory() as scratch:  # not under --raw: it would be a clip of its own
            wav = Path(scratch) / "track.wav"
            _write_pcm(wav, pcm, VIDEO_RATE)
            subprocess.run(
                [
                    ffmpeg,
                    "-nostdin",
                    "-loglevel",
                    "error",
                    "-y",
                    "-f",
                    "rawvideo",
                    "-pix_fmt",
                    "rgb24",
                    "-s",
                    f"{VIDEO_W}x{VIDEO_H}",
                    "-r",
                    str(VIDEO_FPS),
                    "-i",
                    "-",
                    "-i",
                    str(wav),
                    "-map",
                    "0:v",
                    "-map",
                    "1:a",
                    "-c:v",
                    "ffv1",
                    "-c:a",
                    "pcm_s16le",
                    str(path),
                ],
                input=frames.tobytes(),
                check=True,
            )
        return pcm
    if importlib.util.find_spec("cv2") is None:
        pytest.skip("cannot write a test video here: needs ffmpeg or OpenCV (pip install 'mmrobust-bench[video]')")
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), VIDEO_FPS, (VIDEO_W, VIDEO_H))
    for frame in frames:
        writer.write(np.ascontiguousarray(frame[..., ::-1]))
    writer.release()
    return None


def _source_frame(jpg: Path) -> int:
    """Which source frame k an extracted JPEG shows (its flat band is 16 + 8·k)."""
    band = np.asarray(Image.open(jpg).convert("L"))[BAND + 2 : VIDEO_H - 1]
    return int(round((float(np.median(band)) - 16) / 8))


# Source frames (4 fps, 5 s) kept at 1 fps. ffmpeg's output option `-r 1` (the reference extractor's command) keeps
# frame 0 and the next one, then one a second, 0.25 s early: N seconds give N + 2 images (so in ffmpeg 4.2 and 9.0).
# torchcodec and OpenCV take the frame displayed at t = 0, 1, 2 … s: exactly duration × fps images.
EXPECTED_SOURCE_FRAMES = {"ffmpeg": [0, 1, 3, 7, 11, 15, 19], "torchcodec": [0, 4, 8, 12, 16], "cv2": [0, 4, 8, 12, 16]}


def test_video_extra_finds_its_decoders(monkeypatch):
    """CI installs '.[test]', which pulls the video extra: then no video test may skip for want of a decoder."""
    has_ffmpeg_pkg = importlib.util.find_spec("imageio_ffmpeg") is not None
    has_cv2 = importlib.util.find_spec("cv2") is not None
    if not (has_ffmpeg_pkg or has_cv2):
        if os.environ.get("CI"):
            pytest.fail("CI must install the video extra (pip install -e '.[test]' pulls mmrobust-bench[video])")
        pytest.skip("the video extra is not installed: pip install 'mmrobust-bench[video]'")
    assert video_backend() is not None
    if has_ffmpeg_pkg:
        import imageio_ffmpeg

        assert video_backend() == "ffmpeg"
        monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None)  # no system ffmpeg: the static one is used
        assert ffmpeg_exe() == imageio_ffmpeg.get_ffmpeg_exe()
        assert subprocess.run([ffmpeg_exe(), "-version"], capture_output=True, check=True).stdout.startswith(b"ffmpeg")
    if has_cv2:
        from importlib.metadata import PackageNotFoundError, version

        contrib = []
        for dist in ("opencv-contrib-python-headless", "opencv-contrib-python"):
            with contextlib.suppress(PackageNotFoundError):
                contrib.append(version(dist))
        if contrib:  # the extra's OpenCV: contrib's Dual TV-L1 must be there
            assert tvl1_factory() is not None


@pytest.mark.parametrize("backend", ["ffmpeg", "cv2"])
def test_extract_frames_keeps_the_expected_source_frames(tmp_path, backend):
    if backend == "ffmpeg" and ffmpeg_exe() is None:
        pytest.skip("no ffmpeg here (pip install 'mmrobust-bench[video]')")
    if backend == "cv2" and importlib.util.find_spec("cv2") is None:
        pytest.skip("no OpenCV here (pip install 'mmrobust-bench[video]')")
    _make_video(tmp_path / "clip.avi", seconds=5)
    dest = tmp_path / "frames"
    dest.mkdir()
    count = extract_frames(tmp_path / "clip.avi", dest, 1.0, backend)
    names = sorted(p.name for p in dest.iterdir())
    assert names == [f"frame_{t:05d}.jpg" for t in range(1, count + 1)]
    assert [_source_frame(dest / name) for name in names] == EXPECTED_SOURCE_FRAMES[backend]
    with Image.open(dest / names[0]) as img:
        assert img.size == (VIDEO_W, VIDEO_H) and img.format == "JPEG"


@pytest.fixture(scope="module")
def prepared_ks(tmp_path_factory):
    """Four 5-second videos with audio, prepared by the CLI's ``prepare ks``: (out, {id: pcm or None}, backend)."""
    backend = video_backend()
    if backend is None:
        pytest.skip("no video decoder here (ffmpeg, torchcodec or OpenCV): pip install 'mmrobust-bench[video]'")
    from mmrobust_bench.cli import main

    base = tmp_path_factory.mktemp("prepared_ks")
    raw, out = base / "raw", base / "ks"
    pcms = {}
    for split, label, cid in (("train", "x", "c1"), ("train", "y", "c2"), ("test", "x", "c3"), ("test", "y", "c4")):
        pcms[cid] = _make_video(raw / split / label / f"{cid}.avi", seconds=5)
        if pcms[cid] is None:  # OpenCV wrote the video without sound: the audio comes from a WAV beside it
            write_wav(raw / split / label / f"{cid}.wav", 5, 300)
    assert main(["prepare", "ks", "--raw", str(raw), "--out", str(out), "--no-progress"]) == 0
    return out, pcms, backend


def test_prepare_ks_from_videos(prepared_ks, tmp_path):
    out, pcms, backend = prepared_ks
    expected = EXPECTED_SOURCE_FRAMES[backend]
    n = len(expected)
    assert (out / "manifest.csv").read_text().splitlines() == [
        "id,label,split,frames,audio,n_frames",
        f"c3,x,test,frames/test/c3,audio/test/c3.npy,{n}",
        f"c4,y,test,frames/test/c4,audio/test/c4.npy,{n}",
        f"c1,x,train,frames/train/c1,audio/train/c1.npy,{n}",
        f"c2,y,train,frames/train/c2,audio/train/c2.npy,{n}",
    ]
    assert not (out / ERROR_LOG).exists()
    frames = sorted((out / "frames" / "train" / "c1").iterdir())
    assert [f.name for f in frames] == [f"frame_{t:05d}.jpg" for t in range(1, n + 1)]
    assert [_source_frame(f) for f in frames] == expected
    for cid, pcm in pcms.items():
        split = "train" if cid in ("c1", "c2") else "test"
        feats = np.load(out / "audio" / split / f"{cid}.npy")
        assert feats.shape == (1024, 128) and feats.dtype == np.float32
        if pcm is not None:  # decoded from the video container: channel 0 of the stereo track, bit-exact PCM
            assert feats[500:].max() == feats[500:].min()  # 5 s = 498 frames of 25 ms / 10 ms, then padding
            np.testing.assert_allclose(feats, reference_fbank(pcm, VIDEO_RATE), rtol=0, atol=1e-5)
    if pcms["c1"] is not None:
        waveform, rate = decode_audio(out.parent / "raw" / "train" / "x" / "c1.avi")
        assert rate == VIDEO_RATE and waveform.shape == (1, 5 * VIDEO_RATE)
        np.testing.assert_array_equal(waveform[0].numpy(), pcms["c1"][:, 0] / np.float32(32768))

    ks = build_dataset("ks", cache_dir=tmp_path / "runs", data_root=str(out), image_size=16, num_workers=0)
    assert ks.class_names == ("x", "y") and len(ks.train) == 2 and len(ks.test) == 2
    batch, labels = next(ks.test.batches(2))
    assert batch["v"].shape == (2, 3, 3, 16, 16) and batch["a"].shape == (2, 1, 1024, 128)
    assert labels.tolist() == [0, 1]
    assert torch.equal(batch["a"][0, 0], torch.from_numpy(np.load(out / "audio" / "test" / "c3.npy")))


@pytest.mark.slow
def test_cli_run_on_prepared_ks(prepared_ks, tmp_path, capsys):
    """``mmrobust-bench run --dataset ks --data-root <prepared>``: train one epoch, attack, write results."""
    import pandas as pd

    from mmrobust_bench.cli import main

    out, _, _ = prepared_ks
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convolutions on shared cores: one thread is faster
    try:
        code = main(
            [
                "run",
                "--dataset",
                "ks",
                "--data-root",
                str(out),
                "--defense",
                "jt",
                "--attack",
                "fgm",
                "--modality",
                "a",
                "--eps",
                "0.5",
                "--set",
                "epochs=1",
                "--set",
                "feature_dim=64",
                "--set",
                "batch_size=2",
                "--dataset-set",
                "image_size=32",
                "--dataset-set",
                "num_workers=0",
                "--root",
                str(tmp_path / "runs"),
                "--device",
                "cpu",
                "--no-progress",
            ]
        )
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    assert "trained in" in capsys.readouterr().out
    rows = pd.read_csv(tmp_path / "runs" / "results.csv")
    assert list(rows["attack"]) == ["clean", "fgm"] and (rows["dataset"] == "ks").all() and (rows["n"] == 2).all()
    assert rows["accuracy"].between(0, 1).all()


def test_prepare_ucf101_tvl1_flow_direction(tmp_path):
    """TV-L1 flow of a texture moving 1 px a frame: right gives u = +1, down gives v = +1 (quantised: 136;
    still: 128)."""
    if tvl1_factory() is None:
        pytest.skip("no OpenCV TV-L1 here: pip install 'mmrobust-bench[video]'")
    if video_backend() is None:
        pytest.skip("no video decoder here: pip install 'mmrobust-bench[video]'")
    raw, out = tmp_path / "ucf_raw", tmp_path / "ucf"
    # TV-L1 costs ~0.1-0.2 s a frame pair even at 64×48: two 2-second clips, 7 pairs each
    _make_video(raw / "train" / "Archery" / "v_Archery_g01_c01.avi", seconds=2, motion=(0, 1))  # moves right
    _make_video(raw / "test" / "Biking" / "v_Biking_g01_c01.avi", seconds=2, motion=(1, 0))  # moves down
    report = prepare("ucf101", raw, out, progress=False)
    assert report.failed == [] and report.rows == 2
    n = 2 + 2 if video_backend() == "ffmpeg" else 2  # images at 1 fps from 2 s (see EXPECTED_SOURCE_FRAMES)
    assert (out / "manifest.csv").read_text().splitlines() == [
        "id,label,split,frames,flow_u,flow_v,n_frames,n_flow",
        f"v_Biking_g01_c01,Biking,test,frames/test/v_Biking_g01_c01,flow_u/test/v_Biking_g01_c01,"
        f"flow_v/test/v_Biking_g01_c01,{n},7",
        f"v_Archery_g01_c01,Archery,train,frames/train/v_Archery_g01_c01,flow_u/train/v_Archery_g01_c01,"
        f"flow_v/train/v_Archery_g01_c01,{n},7",
    ]
    still, one_px = int(quantise_flow(np.zeros((1, 1, 2)))[0, 0, 0]), int(quantise_flow(np.ones((1, 1, 2)))[0, 0, 0])
    assert (still, one_px) == (128, 136)
    for split, cid, (u_want, v_want) in (
        ("train", "v_Archery_g01_c01", (one_px, still)),
        ("test", "v_Biking_g01_c01", (still, one_px)),
    ):
        for component, want in (("flow_u", u_want), ("flow_v", v_want)):
            files = sorted((out / component / split / cid).iterdir())
            assert [f.name for f in files] == [f"frame_{t:05d}.jpg" for t in range(1, 2 * VIDEO_FPS)]
            for f in files:
                image = np.asarray(Image.open(f))
                assert image.dtype == np.uint8 and image.shape == (VIDEO_H, VIDEO_W)
                inner = image[8 : BAND - 8, 8:-8].astype(int)  # the textured part, away from borders and the band
                assert np.mean(np.abs(inner - want) <= 1) > 0.95, (component, f.name, np.median(inner))
    ucf = build_dataset("ucf101", cache_dir=tmp_path / "runs", data_root=str(out), image_size=16, num_workers=0)
    batch, _ = next(ucf.train.batches(2))
    assert batch["flow"].shape == (1, 2, 3, 16, 16) and batch["v"].shape == (1, 3, 3, 16, 16)
