"""``mmrobust-bench report`` and ``plot``: tables, findings, pivots, HTML leaderboard, model cards and figures
from result rows.

Rows are grouped by (dataset, defense label, configuration): two configurations under one label are
reported as separate entries (``jt [cfg b30dba09]``) with a note naming the settings that differ
(from the checkpoints' ``config.json``), or refused with ``--refuse-mixed`` (``reports/entries.py``).

Every CSV is read strictly (``bench.result_readers.read_checked_*``): a torn line, an accuracy outside [0, 1], a
non-finite number, a fractional seed or a missing column is one error line naming the file and the line, and
text is read as written (a label ``NA`` stays ``NA``). Output files are named by slugs inside ``--out``.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..io import atomic_write_text
from ..reports.paths import output_path, slug
from .common import int_list, name_list

if TYPE_CHECKING:  # pandas loads with the command, not with `mmrobust-bench --help`
    import pandas as pd


def add_parsers(sub: argparse._SubParsersAction) -> None:
    rep = sub.add_parser(
        "report",
        help="Tables 1–3 (markdown, tidy CSV, LaTeX) from result rows, beside the paper's "
        "numbers; optionally a pivot of any grid, findings, an HTML leaderboard and "
        "model cards",
    )
    rep.add_argument("--results", required=True, help="results CSV")
    rep.add_argument("--out", required=True, help="output directory")
    rep.add_argument("--tables", default="1,2,3", help="which of the paper's tables (3 needs MMT rows; 0 for none)")
    rep.add_argument(
        "--findings",
        action="store_true",
        help="also write findings-<dataset>.md: preference, fragility, robustness, η imbalance, ablation, "
        "honesty (reads eta_pairs.csv and certified.csv beside --results)",
    )
    rep.add_argument(
        "--pivot",
        action="store_true",
        help="also write pivot-<dataset>.{md,csv,tex}: one column per attack × modality × ε in the rows "
        "(filter with --attack/--modality/--eps)",
    )
    rep.add_argument("--attack", help="pivot: comma-separated attack ids to keep (default: every attack)")
    rep.add_argument(
        "--modality", help="pivot: comma-separated modality labels to keep, e.g. a or a,all (default: every modality)"
    )
    rep.add_argument("--eps", help="pivot: comma-separated ε values to keep (default: every ε)")
    rep.add_argument(
        "--html",
        action="store_true",
        help="also write leaderboard-<dataset>.html (sortable, self-contained) and a JSON card per "
        "model under cards/ (reads certified.csv beside --results)",
    )
    rep.add_argument(
        "--checkpoints",
        help="checkpoint directory whose config.json files name the settings of "
        "each configuration (default: checkpoints/ beside --results)",
    )
    rep.add_argument(
        "--refuse-mixed",
        action="store_true",
        help="refuse rows where one label has several configurations, instead of reporting each "
        "configuration as its own entry",
    )
    rep.add_argument("--dataset", help="comma-separated datasets (default: every dataset in the rows)")
    rep.set_defaults(func=cmd_report)

    plot = sub.add_parser("plot", help="Figures 1, 3, 4, 5 from result rows (and certify's eta_pairs.csv)")
    plot.add_argument("--results", required=True, help="results CSV")
    plot.add_argument("--out", required=True, help="output directory")
    plot.add_argument("--eta", help="per-pair η CSV from certify (default: eta_pairs.csv beside --results)")
    plot.add_argument(
        "--certified",
        help="certified.csv from certify, for the certified-accuracy curves, "
        "smoothing vs empirical (default: certified.csv beside --results)",
    )
    plot.add_argument("--figures", default="1,3,4,5", help="which figures")
    plot.add_argument("--attack", default="pgd_l2", help="attack of the radius curves (Figures 1 and 4)")
    plot.add_argument(
        "--ablation",
        metavar="STAGE=LABEL,...",
        help="Figure 5 stages and their defense labels (default: JT=jt, ..., CRMT-JT (full)=crmt_jt)",
    )
    plot.add_argument(
        "--checkpoints",
        help="checkpoint directory whose config.json files say which CRMT head "
        "(own_groups) Figure 5's stages have (default: checkpoints/ beside "
        "--results)",
    )
    plot.add_argument(
        "--config",
        help="the sweep YAML that made the rows: an own_groups pinned there names "
        "Figure 5's head-only stage when no checkpoint says it",
    )
    plot.add_argument(
        "--band",
        default="std",
        choices=("std", "ci95"),
        help="what the seed bands show: ± 1 sample std, or the 95%% t-interval of the mean",
    )
    plot.add_argument(
        "--stamp",
        action="store_true",
        help="also draw the 'made by' command on the canvas (it is always in the file's metadata and the .txt sidecar)",
    )
    plot.add_argument("--dataset", help="comma-separated datasets (default: every dataset in the rows)")
    plot.add_argument(
        "--format",
        default="pdf,png",
        help="comma-separated image formats of the figures: pdf, png, svg (default: pdf,png; 300 dpi, "
        "sized for a paper)",
    )
    plot.set_defaults(func=cmd_plot)


def read_results(path: str) -> Any:
    """The rows of a results CSV, read strictly (``bench.result_readers.read_checked_rows``); columns added after a
    CSV was written read with their defaults."""
    # here, not at the top: building the parser (--help) imports no torch, pandas or yaml
    from ..bench.result_readers import read_checked_rows

    file = Path(path)
    if not file.is_file():
        raise ValueError(
            f"results file {file} does not exist" if not file.exists() else f"results file {file} is not a file"
        )
    return read_checked_rows(file)


def read_eta_pairs(path: Path) -> Any:
    """certify's eta_pairs.csv read strictly, or None when there is none."""
    # here, not at the top: building the parser (--help) imports no torch, pandas or yaml
    from ..bench.result_readers import read_checked_eta_pairs

    return read_checked_eta_pairs(path) if Path(path).exists() else None


def read_certificates(path: Path) -> Any:
    """certify's certified.csv read strictly, ``method``/``kind`` filled for rows that predate them; None when
    there is none."""
    # here, not at the top: building the parser (--help) imports no torch, pandas or yaml
    import pandas as pd

    # here, not at the top: building the parser (--help) imports no torch, pandas or yaml
    from ..bench.certified_rows import with_certificate_kinds
    from ..bench.result_readers import ResultsFileError, read_checked_certificates
    from ..certify.smoothing import METHOD as SMOOTHING

    if not Path(path).exists():
        return None
    frame = read_checked_certificates(path)
    for column in ("method", "kind"):  # an empty cell: a row written before the column, as a missing one
        if column in frame:
            frame[column] = frame[column].replace("", pd.NA)
    frame = with_certificate_kinds(frame)
    if not frame.empty and "sigma" not in frame and (frame["method"].astype(str) == SMOOTHING).any():
        raise ResultsFileError(
            f"{path} line 1: smoothing certificates without a sigma column; not a certificates "
            "file written by `mmrobust-bench certify`"
        )
    return frame


def _checkpoints(args: argparse.Namespace) -> Path:
    # here, not at the top: building the parser (--help) imports no torch, pandas or yaml
    from ..reports.entries import default_checkpoints

    if args.checkpoints:
        path = Path(args.checkpoints)
        if not path.is_dir():
            raise ValueError(f"--checkpoints {path} is not a directory")
        return path
    return default_checkpoints(Path(args.results))


def cmd_report(args: argparse.Namespace) -> int:
    # here, not at the top: building the parser (--help) imports no torch, pandas or yaml
    from ..reports.entries import mixed_labels, resolve_entries
    from ..reports.tables import build_tables, pivot_table, write_tables

    rows = read_results(args.results)
    results = Path(args.results)
    checkpoints = _checkpoints(args)
    pairs, certified = (
        read_eta_pairs(results.with_name("eta_pairs.csv")),
        read_certificates(results.with_name("certified.csv")),
    )
    split = mixed_labels(rows, pairs, certified)
    rows, notes = resolve_entries(rows, checkpoints=checkpoints, strict=args.refuse_mixed, split=split)
    pairs = None if pairs is None else resolve_entries(pairs, split=split)[0]
    certified = None if certified is None else resolve_entries(certified, split=split)[0]
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    datasets = name_list(args.dataset)
    numbers = [n for n in int_list(args.tables, "--tables") if n] if args.tables.strip() not in ("", "0") else []
    out = Path(args.out)
    if not args.pivot and (args.attack or args.modality or args.eps):
        raise ValueError("--attack/--modality/--eps filter the pivot; add --pivot")
    tables = build_tables(rows, numbers=numbers, datasets=datasets, checkpoints=checkpoints) if numbers else []
    if args.pivot:
        try:
            eps = [float(x) for x in args.eps.split(",") if x.strip()] if args.eps else None
        except ValueError as exc:
            raise ValueError(f"--eps expects comma-separated numbers such as 0.5,1,2, got {args.eps!r}") from exc
        tables += [
            pivot_table(
                rows,
                d,
                attacks=name_list(args.attack),
                modalities=name_list(args.modality),
                eps=eps,
                checkpoints=checkpoints,
            )
            for d in datasets or sorted(rows["dataset"].astype(str).unique())
        ]
    written: dict[str, list[Path]] = {"tables": write_tables(tables, out, command=args.command_line) if tables else []}
    if args.findings:
        written["findings"] = _write_findings(rows, pairs, certified, out, args.command_line, datasets)
    if args.html:
        # here, not at the top: building the parser (--help) imports no torch, pandas or yaml
        from ..reports.leaderboard import write_leaderboard

        written["leaderboard"] = write_leaderboard(
            rows,
            out,
            command=args.command_line,
            certified=certified,
            checkpoints=checkpoints,
            datasets=datasets,
            notes=notes,
        )
    listed = bool(getattr(args, "verbose", 0))
    if listed:
        for path in (path for paths in written.values() for path in paths):
            print(path)
    print(written_summary(written, out, listed=listed))
    return 0


def written_summary(written: dict[str, list[Path]], out: Path, *, listed: bool = False) -> str:
    """One line for what ``report`` wrote: ``report: 39 files in out: tables 12 csv, 13 md, 12 tex; leaderboard
    1 html, cards/ 1 json (-v lists them)``, counted per kind of output, folder below ``out`` and extension
    (``listed``: the paths were printed above it, so no hint)."""
    parts = []
    for kind, paths in written.items():
        counts = Counter()  # type: Counter[tuple[str, str]]
        for path in map(Path, paths):
            try:
                folder = path.parent.relative_to(out).as_posix()
            except ValueError:  # outside --out (not written by report today): name its folder in full
                folder = str(path.parent)
            counts[("" if folder == "." else f"{folder}/ ", path.suffix.lstrip(".") or "no extension")] += 1
        if counts:
            parts.append(f"{kind} " + ", ".join(f"{folder}{n} {ext}" for (folder, ext), n in sorted(counts.items())))
    total = sum(len(paths) for paths in written.values())
    if not total:
        return f"report: nothing written to {out} (no table, findings or leaderboard asked for)"
    hint = "" if listed else " (-v lists them)"
    return f"report: {total} file{'s' if total != 1 else ''} in {out}: {'; '.join(parts)}{hint}"


def _write_findings(
    rows: Any, pairs: Any, certified: Any, out: Path, command: str, datasets: list[str] | None
) -> list[Path]:
    """``findings-<dataset>.md``: the numbers behind the findings, with certify's CSVs beside the results."""
    # here, not at the top: building the parser (--help) imports no torch, pandas or yaml
    from ..reports.findings import findings_markdown
    from ..reports.tables import markdown_cell

    paths = []
    for dataset in datasets or sorted(rows["dataset"].unique()):

        def pick(f: pd.DataFrame | None, dataset: str = dataset) -> pd.DataFrame | None:
            return None if f is None else f[f["dataset"] == dataset]

        text = findings_markdown(
            rows[rows["dataset"] == dataset], pairs=pick(pairs), certified=pick(certified), command=command
        )
        path = output_path(out, f"findings-{slug(dataset)}.md")
        atomic_write_text(path, f"# Findings data — {markdown_cell(dataset)}\n\n{text}")
        paths.append(path)
    return paths


def cmd_plot(args: argparse.Namespace) -> int:
    # here, not at the top: building the parser (--help) imports no torch, pandas or yaml
    from ..reports.figures import DEFAULT_ABLATION, figure_formats, parse_ablation, plot_figures

    formats = figure_formats(args.format)  # refused before anything is read or drawn
    rows = read_results(args.results)
    eta_path = Path(args.eta) if args.eta else Path(args.results).with_name("eta_pairs.csv")
    if args.eta and not eta_path.exists():
        raise ValueError(f"--eta file {eta_path} does not exist")
    eta = read_eta_pairs(eta_path)
    certified_path = Path(args.certified) if args.certified else Path(args.results).with_name("certified.csv")
    if args.certified and not certified_path.exists():
        raise ValueError(f"--certified file {certified_path} does not exist")
    certified = read_certificates(certified_path)  # every input read (and refused) before any figure is drawn
    sweep = None
    if args.config:
        # here, not at the top: building the parser (--help) imports no torch, pandas or yaml
        from ..bench.validate import read_yaml_mapping

        sweep = read_yaml_mapping(args.config, "--config sweep file")
    saved, notes = plot_figures(
        rows,
        Path(args.out),
        command=args.command_line,
        eta_pairs=eta,
        figures=int_list(args.figures, "--figures"),
        attack=args.attack,
        ablation=parse_ablation(args.ablation) if args.ablation else DEFAULT_ABLATION,
        fmt=formats,
        datasets=name_list(args.dataset),
        band=args.band,
        stamp=args.stamp,
        checkpoints=_checkpoints(args),
        sweep=sweep,
    )
    for item in saved:
        for path in item.paths:
            print(path)
    if certified is not None:
        # here, not at the top: building the parser (--help) imports no torch, pandas or yaml
        from ..reports.certified_curves import plot_certified_curves

        curves = [
            path
            for fmt in formats
            for path in plot_certified_curves(
                certified, Path(args.out), command=args.command_line, datasets=name_list(args.dataset), fmt=fmt
            )
        ]
        for path in curves:
            print(path)
        if not curves:
            notes = [*notes, f"no certified-accuracy curves: {certified_path} has no drawable rows"]
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    return 0
