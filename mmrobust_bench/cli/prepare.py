"""``mmrobust-bench prepare {ks,vggsound,ucf101}``: raw media → the preprocessed layout + manifest.

Per clip (docs/methods.md §2):
- **frames**: 1 fps JPEGs ``frames/<split>/<id>/frame_00001.jpg, …`` from the video, with the
  ``ffmpeg`` binary (``ffmpeg -i V -r 1``, as the reference extractor; the one on PATH, else the static
  build of imageio-ffmpeg) or, without it, torchcodec or OpenCV (frames displayed at t = 0, 1, 2 … s);
  a folder of already extracted images named like the clip is copied instead (renumbered in sorted
  order). ``pip install 'mmrobust-bench[video]'`` installs imageio-ffmpeg and OpenCV-contrib.
- **audio** (ks, vggsound): channel 0, resampled to 16 kHz, minus its mean, Kaldi fbank (128 mel
  bins, Hanning window, 25 ms / 10 ms, ``htk_compat``, no energy, no dither), zero-padded or
  truncated to 1024 frames, then (x + 4.503877) / (2 · 5.141276); saved as float32 (1024, 128)
  ``audio/<split>/<id>.npy``. A ``.wav`` next to the video (or alone) is read directly; other
  audio is decoded with ffmpeg or torchcodec.
- **flow** (ucf101): OpenCV Dual TV-L1 between consecutive grayscale frames of the video at its
  native rate, each component clipped to ±15 and stored as round((f + 15)·255/30) in
  ``flow_u/<split>/<id>/`` and ``flow_v/<split>/<id>/`` JPEGs.
Every output is written to a temporary name and renamed, so an interrupted run is resumed by
running it again (clips whose outputs exist are skipped). A clip that fails is logged (and
appended to ``prepare_errors.log``) and left out of the manifest; the others go on.

Where clips come from: ``--list`` (a CSV with header ``id,label,split``; VGGSound's own
``vggsound.csv``; UCF101's ``ucfTrainTestlist`` folder or a ``trainlist0N.txt``/``testlist0N.txt``)
with media found anywhere under ``--raw`` by file name, or else the folder layout
``<raw>/<split>/<class>/<clip>.<ext>`` (``val``/``validation`` count as ``test``).
"""

from __future__ import annotations

import argparse
import sys

from ..data import DATASETS_PREPARED


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``prepare`` on the CLI's sub-command parsers."""
    parser = sub.add_parser(
        "prepare",
        help="build a ks/vggsound/ucf101 data directory (frames, fbank, flow, manifest) from raw media",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("dataset", choices=DATASETS_PREPARED, help="which layout to build")
    parser.add_argument("--raw", required=True, help="directory holding the raw videos / audio / frame folders")
    parser.add_argument("--out", required=True, help="data directory to write (use it as --dataset-set data_root=...)")
    parser.add_argument(
        "--list", dest="list_file", help="clip list: CSV id,label,split; vggsound.csv; UCF101 trainlist/testlist"
    )
    parser.add_argument("--workers", type=int, default=0, help="parallel processes (0: in this process)")
    parser.add_argument("--fps", type=float, default=1.0, help="frames extracted per second, 1 as in the paper")
    parser.add_argument("--limit", type=int, help="only the first N clips (a trial run)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(func=cmd)
    return parser


def cmd(args: argparse.Namespace) -> int:
    """Run ``prepare`` from parsed arguments; print the summary; 1 if no clip is usable."""
    from ..data.prepare import prepare  # torch: building the parser (``--help``) must not import it

    report = prepare(
        args.dataset,
        args.raw,
        args.out,
        list_file=args.list_file,
        workers=args.workers,
        fps=args.fps,
        limit=args.limit,
        progress=not args.no_progress,
    )
    print(report.summary())
    if report.rows == 0:
        print(f"mmrobust-bench: error: no clip of {args.dataset} could be prepared", file=sys.stderr)
        return 1
    print(f"use it with: mmrobust-bench run --dataset {args.dataset} --dataset-set data_root={report.manifest.parent}")
    return 0
