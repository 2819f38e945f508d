"""``avdigits``: real spoken + handwritten digits (FSDD audio paired with the UCI digit images).

The construction of AV-MNIST (MultiBench) on data that fits 2 CPU cores: every recording of the Free
Spoken Digit Dataset (FSDD: 8 kHz mono WAVs named ``{digit}_{speaker}_{index}.wav``, 6 speakers × 10
digits × 50) is paired with handwritten images of the same digit from the UCI digits that ship with
scikit-learn (``sklearn.datasets.load_digits``: 1,797 8×8 images, values 0..16). Nothing is
downloaded: ``data_root`` (``--data-root``, or ``$MMROBUST_FSDD_ROOT``) is the ``recordings/`` folder of
a clone of https://github.com/Jakobovski/free-spoken-digit-dataset.

Modalities, in model-input space:
- ``a``: the same pipeline as ``synthav`` — waveform (PCM scaled to [-1, 1], DC removed) →
  ``torchaudio.compliance.kaldi.fbank`` (25 ms Hann windows every 10 ms at 8 kHz, ``mel_bins`` = 40
  HTK mel bins up to the 4 kHz Nyquist, no dither) → log-mel normalised AST-style, ``(x − μ) / (2σ)``
  with one scalar μ, σ over every frame of the *training* recordings only → centre-cropped or
  zero-padded (after normalisation, so padding is "no signal" = the training mean) to
  ``audio_frames`` = 80 frames (0.8 s; 98 % of FSDD's recordings fit uncropped). Shape (1, 80, 40),
  unbounded like the paper's spectrograms.
- ``v``: the image as ``digits / 16``, shape (1, 8, 8), in its valid box [0, 1] (declared in the spec,
  so attacks clamp to it).

Splits: ``split="index"`` (default) is FSDD's official split — recording index 0–4 test, 5–49 train
(2,700 / 300 recordings); ``split="speaker"`` holds out every recording of ``test_speaker``. The
images are split once, stratified by digit, into disjoint train and test pools (``image_test_fraction``
of each digit's images, default 0.2, go to test), so no test image is ever seen in training. Pairing
is deterministic from ``seed``: within each split and digit, the recordings are shuffled and walk
through one shuffled order of that digit's image pool, ``*_images_per_clip`` consecutive images each
(distinct within a recording; every pool image used equally often ±1). Each test recording appears
with ``test_images_per_clip`` (default 3) different images, which lowers the variance of test
accuracy; training uses ``train_images_per_clip`` (default 1). Default sizes: 2,700 train and 900
test samples, 10 classes.

The built tensors are cached in ``<cache_dir>/avdigits-<key>.safetensors`` (atomic write), the key
hashing the options (``data_root`` excepted: the same files elsewhere reuse the cache and the
checkpoints), a fingerprint of the recordings (file names and sizes) and of the image set. As for
synthav, the key and a sha256 of the tensors are stored inside the file and checked on load; a cache
of another key, unreadable, truncated or bit-flipped is rebuilt (with a warning naming it).

Licences: FSDD is CC BY-SA 4.0 (Z. Jackson et al., "Free Spoken Digit Dataset", zenodo DOI
10.5281/zenodo.1342401); the UCI optical recognition of handwritten digits data (E. Alpaydin,
C. Kaynak, 1998) is CC BY 4.0 and is read from scikit-learn's copy. Neither is shipped with this
package. See ``docs/design.md`` §7 for where datasets sit in the data flow.

Over 400 lines as one module: scanning FSDD, the log-mel features, pairing with the UCI images and the cache key
are one construction whose every step enters the cache key.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
import wave
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torchaudio.compliance import kaldi

from ..checked_tensors import READ_ERRORS, read_checked_tensors, write_checked_tensors
from ..config import check_fields, check_known
from ..contracts import ModalitySpec
from ..hints import did_you_mean
from ..io import default_root, stable_hash
from ..progress import progress_bar
from . import DATASETS
from .base import InMemoryDataset, TensorSplit

log = logging.getLogger(__name__)

SAMPLE_RATE = 8_000
FRAME_LENGTH = 200  # 25 ms at 8 kHz
FRAME_SHIFT = 80  # 10 ms at 8 kHz
N_CLASSES = 10
TEST_INDICES = range(0, 5)  # FSDD's official split: recordings 0-4 of every digit and speaker are test
ENV_VAR = "MMROBUST_FSDD_ROOT"
FSDD_URL = "https://github.com/Jakobovski/free-spoken-digit-dataset"
FETCH_HINT = f"clone {FSDD_URL} and pass its recordings/ folder (--data-root DIR or ${ENV_VAR})"
CACHE_VERSION = 2  # 2: rows of each split in a seeded random order (1: sorted by recording, i.e. by digit)
FILE_NAME = re.compile(r"^([0-9])_([A-Za-z0-9-]+)_([0-9]+)\.wav$")
SPLITS = ("index", "speaker")
# The dataset's training schedule (every defense trains with it; see leaderboards/avdigits/README.md).
TRAIN_DEFAULTS = {"epochs": 10, "batch_size": 64, "lr": 0.05, "lr_step": 0, "optimizer": "sgd", "feature_dim": 64}
ENCODERS = {"v": "small_cnn2d", "a": "small_cnn2d_deep"}


@dataclass(frozen=True)
class AVDigitsConfig:
    """Dataset options (``--dataset-set key=value``); all but ``data_root`` enter the cache key."""

    data_root: str | None = None  # FSDD's recordings/ folder; default $MMROBUST_FSDD_ROOT
    seed: int = 0  # image split and pairing (not the training seed)
    split: str = "index"  # "index": FSDD's official 0-4 test / 5-49 train; "speaker": hold out test_speaker
    test_speaker: str | None = None  # with split="speaker": whose recordings are the test split
    test_images_per_clip: int = 3
    train_images_per_clip: int = 1
    image_test_fraction: float = 0.2  # of each digit's images, held out for the test pool
    audio_frames: int = 80
    mel_bins: int = 40

    def __post_init__(self) -> None:
        check_fields(self, "avdigits")  # integers integral, floats finite, strings strings
        if self.seed < 0:
            raise ValueError(f"avdigits: seed must be >= 0, got {self.seed}")
        if self.split not in SPLITS:
            raise ValueError(f"avdigits: split must be one of {', '.join(SPLITS)}, got {self.split!r}")
        if self.split == "speaker" and not self.test_speaker:
            raise ValueError("avdigits: split=speaker needs test_speaker=NAME (a speaker of the recordings, e.g. theo)")
        if self.split == "index" and self.test_speaker is not None:
            raise ValueError("avdigits: test_speaker only applies with split=speaker")
        if self.test_images_per_clip < 1 or self.train_images_per_clip < 1:
            raise ValueError("avdigits: test_images_per_clip and train_images_per_clip must be >= 1")
        if not 0.0 < self.image_test_fraction < 1.0:
            raise ValueError(
                f"avdigits: image_test_fraction must be a number in (0, 1), got {self.image_test_fraction!r}"
            )
        if self.audio_frames < 8:
            raise ValueError(f"avdigits: audio_frames must be >= 8, got {self.audio_frames}")
        if not 8 <= self.mel_bins <= 80:
            raise ValueError(f"avdigits: mel_bins must be in [8, 80] (8 kHz audio), got {self.mel_bins}")

    def key_options(self) -> dict[str, Any]:
        """The options that determine the tensors (where the files live does not)."""
        return {k: v for k, v in asdict(self).items() if k != "data_root"}


@dataclass(frozen=True)
class Recording:
    """One FSDD file: ``{digit}_{speaker}_{index}.wav``."""

    path: Path
    digit: int
    speaker: str
    index: int
    size: int


@dataclass
class AVDigitsTables:
    """What the cache holds: unique clips and images, and the (clip, image) pairs of each split."""

    audio: Tensor  # (n_clips, 1, audio_frames, mel_bins), normalised log-mel
    images: Tensor  # (1797, 1, 8, 8) in [0, 1]
    clip_digit: Tensor  # (n_clips,)
    image_digit: Tensor  # (1797,)
    image_is_test: Tensor  # (1797,) bool: the image's pool
    pairs: dict[str, Tensor]  # split -> (n, 2) int64 rows (clip index, image index)
    clip_names: list[str]  # file name of every clip
    clip_split: list[str]  # "train" / "test" per clip
    audio_norm: Tensor  # (mean, std) of the training log-mel frames
    key: dict[str, Any]

    def split(self, name: str) -> TensorSplit:
        clip, image = self.pairs[name][:, 0], self.pairs[name][:, 1]
        return TensorSplit({"v": self.images[image], "a": self.audio[clip]}, self.clip_digit[clip])


# ----------------------------------------------------------------------------- the recordings


def resolve_root(cfg: AVDigitsConfig) -> Path:
    text = cfg.data_root or os.environ.get(ENV_VAR)
    if not text:
        raise ValueError(f"avdigits: no recordings folder given; {FETCH_HINT}")
    root = Path(text).expanduser()
    if not root.is_dir():
        raise ValueError(f"avdigits: recordings folder {root} does not exist; {FETCH_HINT}")
    return root


def scan_recordings(root: Path) -> list[Recording]:
    """The FSDD-named WAVs of ``root``, sorted by (digit, speaker, index); other files are ignored."""
    found = []
    for entry in os.scandir(root):
        match = FILE_NAME.match(entry.name)
        if match and entry.is_file():
            digit, speaker, index = match.groups()
            found.append(Recording(Path(entry.path), int(digit), speaker, int(index), entry.stat().st_size))
    if not found:
        hint = ""
        if (root / "recordings").is_dir():
            hint = f" (did you mean {root / 'recordings'}?)"
        raise ValueError(
            f"avdigits: {root} holds no FSDD-named WAV files ({{digit}}_{{speaker}}_{{index}}.wav, "
            f"e.g. 7_jackson_32.wav){hint}; {FETCH_HINT}"
        )
    return sorted(found, key=lambda r: (r.digit, r.speaker, r.index))


def fingerprint(recordings: list[Recording]) -> str:
    """Names and sizes of the files: a changed, added or removed recording changes the key."""
    return stable_hash([(r.path.name, r.size) for r in recordings], 32)


def read_wav(path: Path) -> Tensor:
    """A mono 8 kHz PCM WAV as float32 samples in [-1, 1], or an error naming the file and the fix."""
    fix = f"replace it with the file from a fresh clone of {FSDD_URL} or remove it"
    try:
        with wave.open(str(path), "rb") as fh:
            rate, channels, width, n = fh.getframerate(), fh.getnchannels(), fh.getsampwidth(), fh.getnframes()
            data = fh.readframes(n)
    except (wave.Error, EOFError, OSError) as exc:
        raise ValueError(f"avdigits: cannot read {path} as a PCM WAV ({exc}); {fix}") from exc
    if rate != SAMPLE_RATE:
        raise ValueError(
            f"avdigits: {path} is sampled at {rate} Hz, FSDD recordings are {SAMPLE_RATE} Hz; pass "
            f"FSDD's own recordings/ folder, not a resampled copy ({FETCH_HINT})"
        )
    if channels != 1:
        raise ValueError(f"avdigits: {path} has {channels} channels, FSDD recordings are mono; {fix}")
    dtypes = {1: np.uint8, 2: np.dtype("<i2"), 4: np.dtype("<i4")}
    if width not in dtypes:
        raise ValueError(f"avdigits: {path} has {8 * width}-bit samples; expected 8, 16 or 32-bit PCM; {fix}")
    if len(data) != n * width:
        raise ValueError(f"avdigits: {path} is truncated ({len(data)} of {n * width} bytes); {fix}")
    if n < FRAME_LENGTH:
        raise ValueError(f"avdigits: {path} holds {n} samples, fewer than one 25 ms frame ({FRAME_LENGTH}); {fix}")
    samples = np.frombuffer(data, dtype=dtypes[width]).astype(np.float32)
    if width == 1:
        samples = samples - 128.0
    return torch.from_numpy(samples / float(2 ** (8 * width - 1)))


def log_mel(wave_: Tensor, mel_bins: int) -> Tensor:
    """Kaldi-compatible log-mel filterbanks (T, F) with synthav's settings, at 8 kHz."""
    return kaldi.fbank(
        wave_[None] - wave_.mean(),
        num_mel_bins=mel_bins,
        sample_frequency=SAMPLE_RATE,
        htk_compat=True,
        use_energy=False,
        dither=0.0,
        window_type="hanning",
        frame_length=1000 * FRAME_LENGTH / SAMPLE_RATE,
        frame_shift=1000 * FRAME_SHIFT / SAMPLE_RATE,
    )


def fit_frames(feats: Tensor, frames: int) -> Tensor:
    """Centre-crop or zero-pad (T, F) to (frames, F); padding is split evenly, the extra frame at the end."""
    t = feats.shape[0]
    if t >= frames:
        start = (t - frames) // 2
        return feats[start : start + frames]
    before = (frames - t) // 2
    return torch.nn.functional.pad(feats, (0, 0, before, frames - t - before))


# ----------------------------------------------------------------------------- the images


def load_images() -> tuple[Tensor, Tensor]:
    """scikit-learn's copy of the UCI digits: (1797, 1, 8, 8) images in [0, 1] and their digits."""
    from sklearn.datasets import load_digits  # sklearn: seconds to import, needed only to build the images

    digits = load_digits()
    images = torch.from_numpy(np.asarray(digits.images, dtype=np.float32) / 16.0)[:, None]
    return images.contiguous(), torch.from_numpy(np.asarray(digits.target, dtype=np.int64))


def images_fingerprint(images: Tensor, targets: Tensor) -> str:
    digest = hashlib.sha256(images.numpy().tobytes())
    digest.update(targets.numpy().tobytes())
    return digest.hexdigest()[:32]


def split_images(targets: Tensor, fraction: float, gen: torch.Generator) -> Tensor:
    """Bool mask of the test pool: ``round(fraction · n_d)`` random images of each digit d (≥ 1 per pool)."""
    is_test = torch.zeros(targets.shape[0], dtype=torch.bool)
    for digit in range(N_CLASSES):
        members = torch.nonzero(targets == digit).flatten()
        order = members[torch.randperm(members.numel(), generator=gen)]
        n_test = min(max(1, round(fraction * members.numel())), members.numel() - 1)
        is_test[order[:n_test]] = True
    return is_test


def pair(
    clips: Tensor,
    clip_digit: Tensor,
    pool: Tensor,
    image_digit: Tensor,
    per_clip: int,
    gen: torch.Generator,
    split: str,
) -> Tensor:
    """(n, 2) rows (clip, image): each clip with ``per_clip`` distinct pool images of its digit.

    Per digit, the clips are shuffled and walk through one shuffled order of the digit's pool images,
    ``per_clip`` consecutive (cyclically) each, so the images of a clip differ and every image is used
    equally often ±1. Rows come in one seeded random order: recordings are listed by digit, and a split in
    digit order would make every prefix (``certify --test-samples N``, ``--eval-samples``) one or two
    digits only.
    """
    rows = []
    for digit in range(N_CLASSES):
        mine = clips[clip_digit[clips] == digit]
        images = pool[image_digit[pool] == digit]
        if per_clip > images.numel():
            raise ValueError(
                f"avdigits: {split}_images_per_clip={per_clip} exceeds the {images.numel()} {split} "
                f"images of digit {digit}; lower it or change image_test_fraction"
            )
        mine = mine[torch.randperm(mine.numel(), generator=gen)]
        images = images[torch.randperm(images.numel(), generator=gen)]
        slots = torch.arange(mine.numel() * per_clip) % images.numel()
        rows.append(torch.stack([mine.repeat_interleave(per_clip), images[slots]], dim=1))
    out = torch.cat(rows)
    return out[torch.randperm(out.shape[0], generator=gen)]


# ----------------------------------------------------------------------------- building and caching


def split_recordings(recordings: list[Recording], cfg: AVDigitsConfig) -> list[str]:
    """ "train"/"test" per recording, by index (official) or by held-out speaker."""
    if cfg.split == "index":
        return ["test" if r.index in TEST_INDICES else "train" for r in recordings]
    speakers = sorted({r.speaker for r in recordings})
    if cfg.test_speaker not in speakers:
        raise ValueError(
            f"avdigits: test_speaker {cfg.test_speaker!r} has no recordings"
            f"{did_you_mean(cfg.test_speaker, speakers)}; speakers: {', '.join(speakers)}"
        )
    return ["test" if r.speaker == cfg.test_speaker else "train" for r in recordings]


def check_spread(recordings: list[Recording], splits: list[str], feats: list[Tensor], std: Tensor) -> None:
    """The normalisation divides by the training frames' σ: refuse σ = 0 (every training recording silent, or
    all alike), which would make every feature NaN, naming the files; warn about single silent recordings
    (their log-mels are the constant floor)."""
    silent = [r.path.name for r, f in zip(recordings, feats) if bool(f.amax() == f.amin())]
    train = [r.path.name for r, s in zip(recordings, splits) if s == "train"]
    if not (bool(torch.isfinite(std)) and float(std) > 0):
        quiet = [name for name in train if name in set(silent)]
        what = (
            f"{len(quiet)} of them are silent (e.g. {', '.join(quiet[:3])})" if quiet else "their frames are all alike"
        )
        raise ValueError(
            f"avdigits: the log-mel frames of the {len(train)} training recordings have no spread "
            f"(σ = {float(std):g}), so they cannot be normalised: {what}; pass FSDD's own recordings "
            f"({FETCH_HINT})"
        )
    if silent:
        log.warning(
            "avdigits: %d recordings are silent (every sample equal), their features a constant: %s%s",
            len(silent),
            ", ".join(silent[:5]),
            ", ..." if len(silent) > 5 else "",
        )


def build_tables(
    cfg: AVDigitsConfig, recordings: list[Recording], key: dict[str, Any], images: Tensor, targets: Tensor
) -> AVDigitsTables:
    """Read every recording, compute the normalised log-mels, split the images and pair them."""
    splits = split_recordings(recordings, cfg)
    digits = torch.tensor([r.digit for r in recordings])
    for name in ("train", "test"):
        present = {r.digit for r, s in zip(recordings, splits) if s == name}
        missing = sorted(set(range(N_CLASSES)) - present)
        if missing:
            raise ValueError(
                f"avdigits: the {name} split ({cfg.split} split) has no recordings of digit(s) "
                f"{', '.join(map(str, missing))}; pass a complete FSDD recordings/ folder ({FETCH_HINT})"
            )
    feats = [
        log_mel(read_wav(r.path), cfg.mel_bins)
        for r in progress_bar(recordings, desc="avdigits: audio filterbanks", unit="clip", leave=False)
    ]
    train_frames = torch.cat([f for f, s in zip(feats, splits) if s == "train"])
    mean, std = train_frames.mean(), train_frames.std()
    check_spread(recordings, splits, feats, std)
    audio = torch.stack([fit_frames((f - mean) / (2 * std), cfg.audio_frames) for f in feats])[:, None]
    gen = torch.Generator().manual_seed(cfg.seed)
    image_is_test = split_images(targets, float(cfg.image_test_fraction), gen)
    is_test_clip = torch.tensor([s == "test" for s in splits])
    pairs = {
        "train": pair(
            torch.nonzero(~is_test_clip).flatten(),
            digits,
            torch.nonzero(~image_is_test).flatten(),
            targets,
            cfg.train_images_per_clip,
            gen,
            "train",
        ),
        "test": pair(
            torch.nonzero(is_test_clip).flatten(),
            digits,
            torch.nonzero(image_is_test).flatten(),
            targets,
            cfg.test_images_per_clip,
            gen,
            "test",
        ),
    }
    return AVDigitsTables(
        audio.contiguous(),
        images,
        digits,
        targets,
        image_is_test,
        pairs,
        [r.path.name for r in recordings],
        splits,
        torch.stack([mean, std]),
        key,
    )


def _tensors(tables: AVDigitsTables) -> dict[str, Tensor]:
    return {
        "audio": tables.audio,
        "images": tables.images,
        "clip_digit": tables.clip_digit,
        "image_digit": tables.image_digit,
        "image_is_test": tables.image_is_test.to(torch.uint8),
        "train_pairs": tables.pairs["train"],
        "test_pairs": tables.pairs["test"],
        "audio_norm": tables.audio_norm,
    }


def write_cache(path: Path, tables: AVDigitsTables) -> None:
    """The tensors, with the key, the clip names and a sha256 of the tensors in one metadata entry (as the
    synthav cache: one entry keeps the file reproducible)."""
    tensors = {k: v.contiguous() for k, v in _tensors(tables).items()}
    write_checked_tensors(
        path, tensors, {"key": tables.key, "clip_names": tables.clip_names, "clip_split": tables.clip_split}
    )


def read_cache(path: Path, key: dict[str, Any]) -> AVDigitsTables | None:
    """The cached tables when the file is this key's and intact; None (with a warning naming the file)
    when it holds another key, lacks a checksum, is truncated or bit-flipped, or is inconsistent."""
    t, meta, problem = read_checked_tensors(path, json.loads(json.dumps(key)))
    try:
        if t is not None:
            tables = AVDigitsTables(
                t["audio"],
                t["images"],
                t["clip_digit"],
                t["image_digit"],
                t["image_is_test"].bool(),
                {"train": t["train_pairs"], "test": t["test_pairs"]},
                list(meta["clip_names"]),
                list(meta["clip_split"]),
                t["audio_norm"],
                key,
            )
            n_clips, n_images = tables.audio.shape[0], tables.images.shape[0]
            if (
                len(tables.clip_names) != n_clips
                or len(tables.clip_split) != n_clips
                or not all(
                    p.dim() == 2
                    and p.shape[1] == 2
                    and bool((p >= 0).all())
                    and bool((p[:, 0] < n_clips).all())
                    and bool((p[:, 1] < n_images).all())
                    for p in tables.pairs.values()
                )
            ):
                problem = "its clip list or pairs do not match its tensors"
            elif not all(bool(torch.isfinite(x).all()) for x in (tables.audio, tables.images, tables.audio_norm)):
                problem = "it holds NaN or inf features"
    except READ_ERRORS as exc:
        problem = f"it cannot be read ({type(exc).__name__}: {exc})"
    if problem is None:
        return tables
    log.warning("avdigits cache %s is not used: %s; rebuilding it", path, problem)
    return None


def load_tables(cfg: AVDigitsConfig, cache_dir: Path | None = None) -> AVDigitsTables:
    """The dataset's tables from the cache, or built from the recordings (then cached)."""
    recordings = scan_recordings(resolve_root(cfg))
    images, targets = load_images()
    key = {
        "version": CACHE_VERSION,
        **cfg.key_options(),
        "recordings": fingerprint(recordings),
        "n_recordings": len(recordings),
        "images": images_fingerprint(images, targets),
    }
    cache_dir = Path(cache_dir) if cache_dir is not None else default_root() / "datasets"
    path = cache_dir / f"avdigits-{stable_hash(key)}.safetensors"
    start = time.perf_counter()
    tables = read_cache(path, key) if path.exists() else None
    if tables is not None:
        log.info("loaded avdigits from %s in %.2f s", path, time.perf_counter() - start)
        return tables
    tables = build_tables(cfg, recordings, key, images, targets)
    write_cache(path, tables)
    log.info("built avdigits from %d recordings in %.1f s -> %s", len(recordings), time.perf_counter() - start, path)
    return tables


def visual_spec() -> ModalitySpec:
    return ModalitySpec("v", (1, 8, 8), (0.0,), (1.0,), "UCI handwritten digit (1, 8, 8), digits/16 in [0, 1]")


def audio_spec(cfg: AVDigitsConfig) -> ModalitySpec:
    return ModalitySpec(
        "a",
        (1, cfg.audio_frames, cfg.mel_bins),
        None,
        None,
        "FSDD Kaldi log-mel fbank (1, T, F) at 8 kHz, normalised, unbounded",
    )


def check_avdigits_options(**options: Any) -> AVDigitsConfig:
    """Validate avdigits options (names, types, ranges, the folder's existence) without reading any file."""
    check_known("avdigits", options, [f.name for f in fields(AVDigitsConfig)])
    cfg = AVDigitsConfig(**options)
    resolve_root(cfg)
    return cfg


@DATASETS.register("avdigits")
def build_avdigits(*, cache_dir: Path | None = None, **options: Any) -> InMemoryDataset:
    """Real spoken + handwritten digits: FSDD in data_root (or $MMROBUST_FSDD_ROOT) + UCI digits.

    Options: :class:`AVDigitsConfig`; the construction is in the module docstring."""
    cfg = check_avdigits_options(**options)
    tables = load_tables(cfg, cache_dir)
    train, test = tables.split("train"), tables.split("test")
    config = {**tables.key, "encoders": dict(ENCODERS), "n_train": len(train), "n_test": len(test)}
    return InMemoryDataset(
        name="avdigits",
        specs=(visual_spec(), audio_spec(cfg)),
        num_classes=N_CLASSES,
        train=train,
        test=test,
        class_names=tuple(str(d) for d in range(N_CLASSES)),
        config=config,
        train_defaults=dict(TRAIN_DEFAULTS),
        encoders=dict(ENCODERS),
    )


build_avdigits.check_options = check_avdigits_options  # type: ignore[attr-defined]  # bench.validate calls it
build_avdigits.modality_names = ("v", "a")  # type: ignore[attr-defined]  # --modality is checked before building


__all__ = [
    "AVDigitsConfig",
    "check_avdigits_options",
    "read_cache",
    "write_cache",
    "AVDigitsTables",
    "Recording",
    "build_avdigits",
    "load_tables",
    "scan_recordings",
    "read_wav",
    "log_mel",
    "fit_frames",
    "load_images",
    "split_images",
    "pair",
    "SAMPLE_RATE",
    "ENV_VAR",
    "TRAIN_DEFAULTS",
]
