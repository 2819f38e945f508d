"""The audio of a clip exactly per docs/methods.md §2: channel 0 at 16 kHz, minus its mean, Kaldi fbank (128 mel
bins, Hanning window, 25 ms / 10 ms, ``htk_compat``), padded or cut to 1024 frames, AST-normalised.

A ``.wav`` is read directly (scipy); other audio, or the audio track of a video, is decoded with ffmpeg or
torchcodec (``tools``). Implausible sample rates and durations (damaged headers) are refused.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import torch
from scipy.io import wavfile
from torchaudio.compliance import kaldi
from torchaudio.functional import resample

from . import tools

SAMPLE_RATE = 16_000
TARGET_FRAMES = 1024
MEL_BINS = 128
AST_MEAN, AST_STD = -4.503877, 5.141276


def fbank_features(waveform: torch.Tensor, sample_rate: int) -> np.ndarray:
    """(channels, samples) float waveform → normalised float32 (1024, 128) fbank (docs/methods.md §2)."""
    wave = waveform[:1].to(torch.float32)  # channel 0 only, as the reference's fbank call
    if sample_rate != SAMPLE_RATE:
        wave = resample(wave, int(sample_rate), SAMPLE_RATE)
    wave = wave - wave.mean()
    fbank = kaldi.fbank(
        wave,
        htk_compat=True,
        sample_frequency=SAMPLE_RATE,
        use_energy=False,
        window_type="hanning",
        num_mel_bins=MEL_BINS,
        dither=0.0,
        frame_shift=10,
    )
    pad = TARGET_FRAMES - fbank.shape[0]
    fbank = torch.nn.functional.pad(fbank, (0, 0, 0, pad)) if pad > 0 else fbank[:TARGET_FRAMES]
    return ((fbank - AST_MEAN) / (AST_STD * 2)).numpy().astype(np.float32)


# Plausible audio: real recordings are sampled at 8–192 kHz (384 kHz at most); a header claiming 1 Hz is damaged
# and would turn 10 s of sound into garbage fbank. Durations outside these bounds are not dataset clips.
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 1_000, 384_000
MIN_DURATION_S, MAX_DURATION_S = 0.1, 3 * 3600.0


def check_audio(waveform: torch.Tensor, sample_rate: int) -> tuple[torch.Tensor, int]:
    """Refuse (ValueError, so the clip is logged as failed) an implausible sample rate or duration."""
    if not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE:
        raise ValueError(
            f"implausible sample rate {sample_rate} Hz (expected {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz; "
            f"a damaged header?)"
        )
    seconds = waveform.shape[-1] / sample_rate
    if not MIN_DURATION_S <= seconds <= MAX_DURATION_S:
        raise ValueError(
            f"implausible duration {seconds:.3g} s (expected {MIN_DURATION_S:g} s to {MAX_DURATION_S / 3600:g} h)"
        )
    return waveform, sample_rate


def read_wav(path: Path) -> tuple[torch.Tensor, int]:
    """(channels, samples) float32 in [-1, 1] (torchaudio's normalisation) and the sample rate."""
    rate, data = wavfile.read(path)
    data = np.asarray(data)
    if data.dtype == np.uint8:
        scaled = (data.astype(np.float32) - 128.0) / 128.0
    elif np.issubdtype(data.dtype, np.integer):
        scaled = data.astype(np.float32) / float(-np.iinfo(data.dtype).min)
    else:
        scaled = data.astype(np.float32)
    scaled = scaled[:, None] if scaled.ndim == 1 else scaled
    if scaled.shape[0] == 0:
        raise ValueError("empty audio")
    return torch.from_numpy(np.ascontiguousarray(scaled.T)), int(rate)


def decode_audio(path: Path) -> tuple[torch.Tensor, int]:
    """Channel 0 of any audio/video file at 16 kHz, via ffmpeg or torchcodec."""
    ffmpeg = tools.ffmpeg_exe()
    if ffmpeg:
        out = subprocess.run(
            [
                ffmpeg,
                "-nostdin",
                "-loglevel",
                "error",
                "-i",
                str(path),
                "-vn",
                "-map",
                "0:a:0",
                "-af",
                "pan=mono|c0=c0",
                "-ar",
                str(SAMPLE_RATE),
                "-f",
                "f32le",
                "-",
            ],
            capture_output=True,
            check=False,
        )
        if out.returncode != 0:
            raise RuntimeError(f"ffmpeg could not decode audio: {out.stderr.decode(errors='replace').strip()[-300:]}")
        samples = np.frombuffer(out.stdout, dtype=np.float32)
        if samples.size == 0:
            raise ValueError("no audio samples")
        return torch.from_numpy(samples.copy())[None], SAMPLE_RATE
    if tools.has_module("torchcodec"):
        from torchcodec.decoders import AudioDecoder  # optional decoder

        samples = AudioDecoder(str(path), sample_rate=SAMPLE_RATE).get_all_samples()
        return samples.data[:1].float(), int(samples.sample_rate)
    raise RuntimeError(tools.AUDIO_HINT)


def load_audio(path: Path) -> tuple[torch.Tensor, int]:
    return read_wav(path) if path.suffix.lower() == ".wav" else decode_audio(path)


__all__ = [
    "SAMPLE_RATE",
    "TARGET_FRAMES",
    "MEL_BINS",
    "AST_MEAN",
    "AST_STD",
    "fbank_features",
    "check_audio",
    "read_wav",
    "decode_audio",
    "load_audio",
]
