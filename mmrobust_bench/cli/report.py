"""``mmrobust-bench report`` and ``plot``: tables, findings and figures from result rows."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .common import int_list, name_list


def add_parsers(sub: argparse._SubParsersAction) -> None:
    rep = sub.add_parser("report", help="Tables 1–3 (markdown + CSV) from result rows, beside the paper's numbers")
    rep.add_argument("--results", required=True, help="results CSV")
    rep.add_argument("--out", required=True, help="output directory")
    rep.add_argument("--tables", default="1,2,3", help="which tables (default 1,2,3; 3 needs MMT rows)")
    rep.add_argument("--findings", action="store_true",
                     help="also write findings-<dataset>.md: preference, fragility, robustness, η imbalance, ablation, "
                          "honesty (reads eta_pairs.csv and certified.csv beside --results)")
    rep.add_argument("--dataset", help="comma-separated datasets (default: every dataset in the rows)")
    rep.set_defaults(func=cmd_report)

    plot = sub.add_parser("plot", help="Figures 1, 3, 4, 5 from result rows (and certify's eta_pairs.csv)")
    plot.add_argument("--results", required=True, help="results CSV")
    plot.add_argument("--out", required=True, help="output directory")
    plot.add_argument("--eta", help="per-pair η CSV from certify (default: eta_pairs.csv beside --results)")
    plot.add_argument("--figures", default="1,3,4,5", help="which figures (default 1,3,4,5)")
    plot.add_argument("--attack", default="pgd_l2", help="attack of the radius curves (Figures 1 and 4)")
    plot.add_argument("--ablation", metavar="STAGE=LABEL,...",
                      help="Figure 5 stages and their defense labels (default JT=jt, ..., CRMT-JT (full)=crmt_jt)")
    plot.add_argument("--dataset", help="comma-separated datasets (default: every dataset in the rows)")
    plot.add_argument("--format", default="png", choices=("png", "pdf", "svg"))
    plot.set_defaults(func=cmd_plot)


def read_results(path: str) -> Any:
    import pandas as pd

    file = Path(path)
    if not file.exists():
        raise ValueError(f"results file {file} does not exist")
    return pd.read_csv(file)


def cmd_report(args: argparse.Namespace) -> int:
    from ..reports.tables import build_tables, write_tables

    rows = read_results(args.results)
    numbers = int_list(args.tables, "--tables")
    tables = build_tables(rows, numbers=numbers, datasets=name_list(args.dataset))
    for path in write_tables(tables, Path(args.out), command=args.command_line):
        print(path)
    if args.findings:
        for path in _write_findings(rows, Path(args.results), Path(args.out), args.command_line,
                                    name_list(args.dataset)):
            print(path)
    return 0


def _write_findings(rows: Any, results: Path, out: Path, command: str, datasets: list[str] | None) -> list[Path]:
    """``findings-<dataset>.md``: the numbers behind the findings, with certify's CSVs beside the results."""
    import pandas as pd

    from ..io import atomic_write_text
    from ..reports.findings import findings_markdown

    def beside(name: str) -> "pd.DataFrame | None":
        path = results.with_name(name)
        return pd.read_csv(path) if path.exists() else None

    pairs, certified = beside("eta_pairs.csv"), beside("certified.csv")
    paths = []
    for dataset in datasets or sorted(rows["dataset"].unique()):
        pick = lambda f: None if f is None else f[f["dataset"] == dataset]  # noqa: E731
        text = findings_markdown(rows[rows["dataset"] == dataset], pairs=pick(pairs), certified=pick(certified),
                                 command=command)
        path = out / f"findings-{dataset}.md"
        atomic_write_text(path, f"# Findings data — {dataset}\n\n{text}")
        paths.append(path)
    return paths


def cmd_plot(args: argparse.Namespace) -> int:
    import pandas as pd

    from ..reports.figures import DEFAULT_ABLATION, parse_ablation, plot_figures

    rows = read_results(args.results)
    eta_path = Path(args.eta) if args.eta else Path(args.results).with_name("eta_pairs.csv")
    if args.eta and not eta_path.exists():
        raise ValueError(f"--eta file {eta_path} does not exist")
    eta = pd.read_csv(eta_path) if eta_path.exists() else None
    saved, notes = plot_figures(
        rows, Path(args.out), command=args.command_line, eta_pairs=eta, figures=int_list(args.figures, "--figures"),
        attack=args.attack, ablation=parse_ablation(args.ablation) if args.ablation else DEFAULT_ABLATION,
        fmt=args.format, datasets=name_list(args.dataset),
    )
    for item in saved:
        print(item.path)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    return 0
