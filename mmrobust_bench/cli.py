"""``mmrobust-bench``: a thin command line over the Python API (``mmrobust_bench.bench.api``)."""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from pathlib import Path
from typing import Any, Iterator, Sequence

import yaml

from . import __version__

log = logging.getLogger("mmrobust_bench")


def _key_values(items: Sequence[str] | None, flag: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"{flag} expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
    return out


def _eps_list(text: str, flag: str = "--eps") -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise ValueError(f"{flag} expects comma-separated numbers such as 0.25,0.5,1, got {text!r}") from exc


def _int_list(text: str, flag: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise ValueError(f"{flag} expects comma-separated integers such as 0,1,2, got {text!r}") from exc


def _name_list(text: str | None) -> list[str] | None:
    return [v.strip() for v in text.split(",") if v.strip()] if text else None


def _command_line(argv: Sequence[str] | None) -> str:
    import shlex

    return "mmrobust-bench " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    if args.config:
        path = Path(args.config)
        if not path.exists():
            raise ValueError(f"--config file {path} does not exist")
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"--config file {path} must hold a mapping of setting: value")
        merged.update(loaded)
    merged.update(_key_values(args.set, "--set"))
    return merged


def _cmd_run(args: argparse.Namespace) -> int:
    from .bench.api import DEFAULT_EPS, run

    result = run(
        defense=args.defense, attack=args.attack, modality=args.modality, dataset=args.dataset,
        eps=_eps_list(args.eps) if args.eps else DEFAULT_EPS, seed=args.seed, overrides=_overrides(args),
        attack_options=_key_values(args.attack_set, "--attack-set"),
        dataset_options=_dataset_options(args),
        root=Path(args.root) if args.root else None, results=Path(args.results) if args.results else None,
        device=args.device, batch_size=args.batch_size, progress=not args.no_progress, curve=args.curve,
        sync_batchnorm=args.sync_bn,
    )
    trained = result.trained
    status = "reused cached checkpoint" if trained.cached else f"trained in {trained.seconds:.1f} s"
    print(f"{args.dataset} · defense {args.defense} (seed {args.seed}) · {status}")
    print(result.table)
    print(f"checkpoint: {trained.directory} (sha256 {trained.sha256[:12]}…)")
    print(f"results:    {result.results_path} (+{len(result.rows)} rows)")
    if result.plot_path is not None:
        print(f"plot:       {result.plot_path}")
    for note in result.notes:
        print(f"note: {note}")
    return 0


def _dataset_options(args: argparse.Namespace) -> dict[str, Any]:
    options = _key_values(args.dataset_set, "--dataset-set")
    if args.data_root:
        options["data_root"] = args.data_root
    return options


def _cmd_certify(args: argparse.Namespace) -> int:
    from .bench import distributed
    from .bench.api import train_defense
    from .bench.certification import certify_defense
    from .certify import DEFAULT_RADII

    world = distributed.current()
    if not world.main:  # under torchrun: take part in training, then let rank 0 certify
        train_defense(args.defense, dataset=args.dataset, seed=args.seed, overrides=_overrides(args),
                      dataset_options=_key_values(args.dataset_set, "--dataset-set"),
                      root=Path(args.root) if args.root else None, device=args.device, progress=False)
        distributed.barrier()
        return 0
    outcome = certify_defense(
        args.defense, dataset=args.dataset, seed=args.seed, label=args.label, overrides=_overrides(args),
        dataset_options=_key_values(args.dataset_set, "--dataset-set"),
        root=Path(args.root) if args.root else None, device=args.device,
        radii=_eps_list(args.radius, "--radius") if args.radius else DEFAULT_RADII,
        honesty_steps=args.honesty_steps, train_samples=args.train_samples, batch_size=args.batch_size,
        progress=not args.no_progress, command=args.command_line,
    )
    distributed.barrier()
    trained = outcome.trained
    status = "reused cached checkpoint" if trained.cached else f"trained in {trained.seconds:.1f} s"
    print(f"{status}")
    print(outcome.text)
    print(f"files:     {outcome.directory}")
    print(f"certified: {outcome.certified_path}")
    print(f"η pairs:   {outcome.eta_path}")
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    from .bench.sweep import build_plan, load_sweep_config, run_sweep

    plan = build_plan(
        load_sweep_config(args.config) if args.config else {},
        defenses=_name_list(args.defenses), seeds=_int_list(args.seeds, "--seeds") if args.seeds else None,
        attacks=_name_list(args.attacks), modalities=_name_list(args.modalities),
        eps=_eps_list(args.eps) if args.eps else None, dataset=args.dataset,
        dataset_options=_key_values(args.dataset_set, "--dataset-set"), overrides=_key_values(args.set, "--set"),
        batch_size=args.batch_size, certify_radii=_eps_list(args.certify, "--certify") if args.certify else None,
    )
    outcome = run_sweep(plan, root=Path(args.root) if args.root else None,
                        results=Path(args.results) if args.results else None, device=args.device,
                        progress=not args.no_progress, command=args.command_line, sync_batchnorm=args.sync_bn)
    print(f"sweep: {outcome.models} models, {outcome.evaluated_rows} rows evaluated, "
          f"{outcome.skipped_rows} already present, {outcome.certified} certified")
    print(f"results: {outcome.results_path}")
    return 0


def _read_results(path: str) -> "Any":
    import pandas as pd

    file = Path(path)
    if not file.exists():
        raise ValueError(f"results file {file} does not exist")
    return pd.read_csv(file)


def _cmd_report(args: argparse.Namespace) -> int:
    from .reports.tables import build_tables, write_tables

    rows = _read_results(args.results)
    numbers = _int_list(args.tables, "--tables")
    tables = build_tables(rows, numbers=numbers, datasets=_name_list(args.dataset))
    for path in write_tables(tables, Path(args.out), command=args.command_line):
        print(path)
    if args.findings:
        for path in _write_findings(rows, Path(args.results), Path(args.out), args.command_line,
                                    _name_list(args.dataset)):
            print(path)
    return 0


def _write_findings(rows: "Any", results: Path, out: Path, command: str, datasets: list[str] | None) -> list[Path]:
    """``findings-<dataset>.md``: the numbers behind the findings, with certify's CSVs beside the results."""
    import pandas as pd

    from .io import atomic_write_text
    from .reports.findings import findings_markdown

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


def _cmd_plot(args: argparse.Namespace) -> int:
    import pandas as pd

    from .reports.figures import DEFAULT_ABLATION, parse_ablation, plot_figures

    rows = _read_results(args.results)
    eta_path = Path(args.eta) if args.eta else Path(args.results).with_name("eta_pairs.csv")
    if args.eta and not eta_path.exists():
        raise ValueError(f"--eta file {eta_path} does not exist")
    eta = pd.read_csv(eta_path) if eta_path.exists() else None
    saved, notes = plot_figures(
        rows, Path(args.out), command=args.command_line, eta_pairs=eta, figures=_int_list(args.figures, "--figures"),
        attack=args.attack, ablation=parse_ablation(args.ablation) if args.ablation else DEFAULT_ABLATION,
        fmt=args.format, datasets=_name_list(args.dataset),
    )
    for item in saved:
        print(item.path)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    from .attacks import ATTACKS, FAMILY_LISTERS
    from .data import DATASETS
    from .defenses import DEFENSES
    from .models import ENCODERS

    for registry in (DEFENSES, ATTACKS, DATASETS, ENCODERS):
        print(f"{registry.kind}s:")
        for row in registry.describe():
            status = "" if row["status"] == "ok" else f"  [{row['status']}]"
            print(f"  {row['name']:<24} {row['provider']}{status}")
    for prefix, lister in sorted(FAMILY_LISTERS.items()):
        try:
            names = lister()
        except ImportError as exc:  # a missing optional library must not break the listing (a bug still does)
            print(f"attack library {prefix}: unavailable ({exc})")
            continue
        print(f"attacks from {prefix} (use as {prefix}:NAME): {', '.join(names)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mmrobust-bench", description=__doc__)
    parser.add_argument("--version", action="version", version=f"mmrobust-bench {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="train (or reuse) a defense and attack it over an ε grid")
    run.add_argument("--defense", default="crmt_at", help="defense id (see `mmrobust-bench list`)")
    run.add_argument("--attack", default="pgd_l2", help="attack id: fgm, pgd_l2, missing, torchattacks:NAME, ...")
    run.add_argument("--modality", default="a", help="attacked modality: a name, a comma list, or 'all' (joint)")
    run.add_argument("--dataset", default="synthav")
    run.add_argument("--eps", help="comma-separated ε grid in model-input space (default 0.25,0.5,1,1.5,2)")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a defense or training setting")
    run.add_argument("--config", help="YAML file of defense/training settings (--set wins)")
    run.add_argument("--attack-set", action="append", metavar="KEY=VALUE", help="attack option, e.g. steps=10")
    run.add_argument("--dataset-set", action="append", metavar="KEY=VALUE", help="dataset option, e.g. prefer=visual")
    run.add_argument("--root", help="where datasets, checkpoints, results and plots go (default $MMROBUST_HOME or ./runs)")
    run.add_argument("--results", help="results CSV (default <root>/results.csv)")
    run.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    run.add_argument("--sync-bn", action="store_true",
                     help="under torchrun: SyncBatchNorm across GPUs (default: per-GPU statistics, as the reference)")
    run.add_argument("--batch-size", type=int, default=500, help="evaluation batch size")
    run.add_argument("--no-progress", action="store_true", help="hide progress bars")
    run.add_argument("--curve", choices=("sweep", "minimal"), default="sweep",
                     help="sweep: attack at every ε; minimal: one minimal-norm run gives the whole curve")
    run.add_argument("--data-root", help="directory of a prepared real dataset (ks, vggsound, ucf101)")
    run.set_defaults(func=_cmd_run)

    cert = sub.add_parser("certify", help="certified radii (Eq. 5/7/10), η and an honesty check for a trained defense")
    cert.add_argument("--defense", default="crmt_at", help="defense id (see `mmrobust-bench list`)")
    cert.add_argument("--label", help="name of this model in the output rows (default: the defense id)")
    cert.add_argument("--dataset", default="synthav")
    cert.add_argument("--seed", type=int, default=0)
    cert.add_argument("--radius", help="comma-separated radii for certified accuracy (default 0,0.25,0.5,1)")
    cert.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a defense or training setting")
    cert.add_argument("--config", help="YAML file of defense/training settings (--set wins)")
    cert.add_argument("--dataset-set", action="append", metavar="KEY=VALUE", help="dataset option, e.g. n_test=200")
    cert.add_argument("--root", help="where datasets, checkpoints and certificates go (default $MMROBUST_HOME or ./runs)")
    cert.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    cert.add_argument("--batch-size", type=int, default=64, help="samples per batched Jacobian (memory: K×B×|x|)")
    cert.add_argument("--train-samples", type=int, default=-1,
                      help="training samples for the global constants (-1: all; fewer is faster and less safe)")
    cert.add_argument("--honesty-steps", type=int, default=20, help="ℓ2-PGD steps of the honesty check (0: skip)")
    cert.add_argument("--no-progress", action="store_true", help="hide progress bars")
    cert.set_defaults(func=_cmd_certify)

    sw = sub.add_parser("sweep", help="defenses × seeds × attacks × modalities × ε, resumable, rows appended per cell")
    sw.add_argument("--config", help="sweep YAML (dataset, seeds, set, defenses with labels, grid, certify)")
    sw.add_argument("--defenses", help="comma-separated defense ids (replaces the YAML's entries)")
    sw.add_argument("--seeds", help="comma-separated seeds, e.g. 0,1,2")
    sw.add_argument("--attacks", help="comma-separated attack ids (with --modalities/--eps: replaces the YAML grid)")
    sw.add_argument("--modalities", help="comma-separated attacked modalities: v, a, all (joint)")
    sw.add_argument("--eps", help="comma-separated ε grid")
    sw.add_argument("--dataset", help="dataset id (default synthav or the YAML's)")
    sw.add_argument("--dataset-set", action="append", metavar="KEY=VALUE", help="dataset option, e.g. n_train=256")
    sw.add_argument("--set", action="append", metavar="KEY=VALUE", help="override for every defense, e.g. epochs=1")
    sw.add_argument("--certify", metavar="RADII", help="also certify every model, certified accuracy at these radii")
    sw.add_argument("--root", help="where datasets, checkpoints, results go (default $MMROBUST_HOME or ./runs)")
    sw.add_argument("--results", help="results CSV (default <root>/results.csv)")
    sw.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    sw.add_argument("--sync-bn", action="store_true",
                     help="under torchrun: SyncBatchNorm across GPUs (default: per-GPU statistics, as the reference)")
    sw.add_argument("--batch-size", type=int, help="evaluation batch size (default 500 or the YAML's)")
    sw.add_argument("--no-progress", action="store_true", help="hide progress bars")
    sw.set_defaults(func=_cmd_sweep)

    rep = sub.add_parser("report", help="Tables 1–3 (markdown + CSV) from result rows, beside the paper's numbers")
    rep.add_argument("--results", required=True, help="results CSV")
    rep.add_argument("--out", required=True, help="output directory")
    rep.add_argument("--tables", default="1,2,3", help="which tables (default 1,2,3; 3 needs MMT rows)")
    rep.add_argument("--findings", action="store_true",
                     help="also write findings-<dataset>.md: preference, fragility, robustness, η imbalance, ablation, "
                          "honesty (reads eta_pairs.csv and certified.csv beside --results)")
    rep.add_argument("--dataset", help="comma-separated datasets (default: every dataset in the rows)")
    rep.set_defaults(func=_cmd_report)

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
    plot.set_defaults(func=_cmd_plot)

    from .data.prepare import add_prepare_parser

    add_prepare_parser(sub)
    lst = sub.add_parser("list", help="list defenses, attacks, datasets and encoders with their providers")
    lst.set_defaults(func=_cmd_list)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.command_line = _command_line(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    from .registry import RegistryError

    try:
        with _distributed(args):
            return args.func(args)
    except (ValueError, RegistryError) as exc:
        print(f"mmrobust-bench: error: {exc}", file=sys.stderr)
        return 2


@contextlib.contextmanager
def _distributed(args: argparse.Namespace) -> Iterator[None]:
    """Under ``torchrun`` (WORLD_SIZE > 1) join the process group for the commands that train or evaluate;
    only rank 0 prints. A no-op for one process."""
    from .bench import distributed

    if args.func not in (_cmd_run, _cmd_certify, _cmd_sweep) or not distributed.launched_by_torchrun():
        yield
        return
    world = distributed.init_from_env(args.device)
    quiet = open(os.devnull, "w") if not world.main else None
    try:
        with contextlib.redirect_stdout(quiet) if quiet else contextlib.nullcontext():
            yield
    finally:
        if quiet:
            quiet.close()
        distributed.shutdown()


if __name__ == "__main__":
    sys.exit(main())
