"""Command-line conventions (docs/cli.md): defaults in every help text, -v/-q on every subcommand, a parser
that imports nothing heavy, `list` with patterns, descriptions, norms and exclusions, progress bars that stay
out of non-terminal streams, logging levels, and messages printed once on the right stream."""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mmrobust_bench import progress
from mmrobust_bench.cli import build_parser, conventions, main

ROOT = Path(__file__).resolve().parents[1]
HEAVY = (
    "torch",
    "torchvision",
    "torchaudio",
    "pandas",
    "matplotlib",
    "scipy",
    "yaml",
    "torchattacks",
    "art",
    "mmrobust_bench.defenses",
    "mmrobust_bench.attacks",
    "mmrobust_bench.models",
    "mmrobust_bench.bench",
)


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def required_args(sub: argparse.ArgumentParser) -> list[str]:
    """Placeholder values for a subcommand's required arguments (parsing only, nothing runs)."""
    out: list[str] = []
    for a in sub._actions:
        if not a.option_strings and a.nargs not in ("?", "*"):
            out.append(str(next(iter(a.choices))) if a.choices else "1")
        elif a.option_strings and a.required:
            out += [a.option_strings[0], "1"]
    return out


def test_every_option_of_every_subcommand_has_help_that_shows_its_default():
    parser = build_parser()
    subs = subcommands(parser)
    assert {"run", "certify", "sweep", "report", "plot", "prepare", "list"} <= set(subs)
    for name, sub in subs.items():
        formatter = sub._get_formatter()
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            label = f"{name} {'/'.join(action.option_strings) or action.dest}"
            assert action.help, f"{label} has no help text"
            if action.option_strings and action.default not in (None, False, argparse.SUPPRESS):
                text = formatter._expand_help(action)
                assert "default" in text.lower(), f"{label}: help does not show its default: {text!r}"


def test_run_help_names_the_defaults_the_issue_asked_for(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")  # no wrapping inside "(default: …)"
    with pytest.raises(SystemExit) as exit_:
        main(["run", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for option, default in (
        ("--defense", "crmt_at"),
        ("--dataset", "synthav"),
        ("--seed", "0"),
        ("--attack", "pgd_l2"),
        ("--batch-size", "500"),
    ):
        block = out.split(f"  {option} ", 1)[1].split("\n  -", 1)[0]  # the option's entry, however it wraps
        assert f"(default: {default})" in " ".join(block.split()), block
    assert "-q, --quiet" in out and "-v, --verbose" in out


def test_sweep_help_shows_the_defaults_of_the_grid_and_seed_options(capsys, monkeypatch):
    # these have no argparse default (the YAML's value comes first), so the help says the default in words
    monkeypatch.setenv("COLUMNS", "400")
    with pytest.raises(SystemExit):
        main(["sweep", "--help"])
    out = capsys.readouterr().out
    for option, default in (
        ("--seeds", "else 0)"),
        ("--attacks", "fgm,pgd_l2)"),
        ("--modalities", "v,a,all)"),
        ("--eps", "0.5,1 for l2"),
    ):
        block = " ".join(out.split(f"  {option} ", 1)[1].split("\n  -", 1)[0].split())
        assert "(default: " in block and default in block, block


@pytest.mark.parametrize("name", sorted(subcommands(build_parser())))
def test_verbosity_flags_before_or_after_every_subcommand(name):
    parser = build_parser()
    req = required_args(subcommands(parser)[name])
    args = parser.parse_args([name, *req, "-q"])
    assert args.quiet is True and args.verbose == 0 and conventions.log_level(args) == logging.WARNING
    args = parser.parse_args(["-q", name, *req])
    assert args.quiet is True
    args = parser.parse_args(["-v", name, *req])
    assert args.verbose == 1 and not args.quiet and conventions.log_level(args) == logging.DEBUG
    args = parser.parse_args([name, "-vv", *req])
    assert args.verbose == 2
    args = parser.parse_args([name, *req])
    assert args.verbose == 0 and args.quiet is False and conventions.log_level(args) == logging.INFO
    with pytest.raises(SystemExit):
        parser.parse_args([name, *req, "-q", "-v"])  # contradictory on one parser: an error, not a guess


@pytest.mark.parametrize("name", ["list", "run", "zoo"])
def test_verbosity_flag_after_the_subcommand_wins(name):
    parser = build_parser()
    req = required_args(subcommands(parser)[name])
    args = parser.parse_args(["-q", name, *req, "-v"])
    assert args.quiet is False and args.verbose == 1 and conventions.log_level(args) == logging.DEBUG
    args = parser.parse_args(["-vv", name, *req, "-q"])
    assert args.quiet is True and args.verbose == 0 and conventions.log_level(args) == logging.WARNING
    args = parser.parse_args(["-q", name, *req])  # nothing after the subcommand: the earlier flag stays
    assert args.quiet is True and conventions.log_level(args) == logging.WARNING


def test_version_and_help_import_nothing_heavy():
    code = (
        "import sys, json\n"
        "from mmrobust_bench.cli import main\n"
        "for argv in (['--version'], ['--help'], ['run', '--help'], ['list', '--help'], ['prepare', '--help']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit as exc:\n"
        "        assert exc.code == 0, argv\n"
        "print('MODULES=' + json.dumps(sorted(sys.modules)))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "mmrobust-bench 0.1.0" in done.stdout
    modules = json.loads(done.stdout.rsplit("MODULES=", 1)[1])
    heavy = sorted(m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY))
    assert heavy == [], f"building the parser imported {heavy[:10]}"


def test_list_pattern_json_has_descriptions_norms_and_exclusions(capsys):
    assert main(["list", "*pgd*", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data) == {"defenses", "attacks", "datasets", "encoders", "excluded_attacks", "unavailable_libraries"}
    assert data["defenses"] == [] and data["datasets"] == [] and data["encoders"] == []
    attacks = {row["name"]: row for row in data["attacks"]}
    assert all("pgd" in name.lower() for name in attacks)
    assert attacks["pgd_l2"]["norms"] == ["l2"] and "ℓ2-PGD" in attacks["pgd_l2"]["description"]
    assert "l2" in attacks["torchattacks:PGDL2"]["norms"] and "linf" not in attacks["torchattacks:PGDL2"]["norms"]
    assert "linf" in attacks["torchattacks:PGD"]["norms"] and "l2" not in attacks["torchattacks:PGD"]["norms"]
    assert "Towards Deep Learning Models" in attacks["torchattacks:PGD"]["description"]
    assert all(row["description"] for row in attacks.values())
    assert all("pgd" in row["name"].lower() for row in data["excluded_attacks"])
    from mmrobust_bench.attacks.art_adapter import ART_EXCLUDED

    assert main(["list", "ART:projectedgradient*", "--json"]) == 0  # case-insensitive
    data = json.loads(capsys.readouterr().out)
    assert [row["name"] for row in data["attacks"]] == ["art:ProjectedGradientDescent"]
    assert {"l2", "linf"} <= set(data["attacks"][0]["norms"])
    excluded = {row["name"]: row["reason"] for row in data["excluded_attacks"]}
    assert excluded["art:ProjectedGradientDescentNumpy"] == ART_EXCLUDED["ProjectedGradientDescentNumpy"]
    assert set(excluded) == {f"art:{n}" for n in ART_EXCLUDED if n.startswith("ProjectedGradient")}


def test_list_shows_every_builtin_with_a_description_and_every_exclusion(capsys):
    from mmrobust_bench.attacks.torchattacks_adapter import EXCLUDED

    assert main(["list", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    for kind in ("defenses", "attacks", "datasets", "encoders"):
        builtins = [row for row in data[kind] if row["provider"] == "builtin"]
        assert builtins and all(row["description"] for row in builtins), kind
    by_name = {row["name"]: row for row in data["attacks"]}
    missing = by_name["missing"]["norms"]
    assert missing == [] or {"l2", "linf"} <= set(missing)  # no budget: applies under any threat
    assert by_name["fgm"]["norms"] == ["l2"]
    assert {"l2", "linf"} <= set(by_name["art:ProjectedGradientDescent"]["norms"])
    assert "linf" not in by_name["art:DeepFool"]["norms"] and "minimal-norm" in by_name["art:DeepFool"]["description"]
    excluded = {row["name"]: row["reason"] for row in data["excluded_attacks"]}
    assert {f"torchattacks:{n}": r for n, r in EXCLUDED.items()}.items() <= excluded.items()
    assert main(["list", "crmt"]) == 0  # no wildcard: names containing it
    names = [line.split()[0] for line in capsys.readouterr().out.splitlines() if line.startswith("  ")]
    assert names and all("crmt" in n for n in names) and "crmt_at" in names


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bars_only_on_a_terminal_and_only_when_enabled():
    assert progress.progress_bar(range(3), file=io.StringIO()).disable  # a log file: no bar
    tty = _Terminal()
    bar = progress.progress_bar(range(3), file=tty, desc="x")
    assert not bar.disable
    list(bar)
    assert "3/3" in tty.getvalue()
    assert progress.progress_bar(range(3), file=_Terminal(), enabled=False).disable
    try:
        progress.set_enabled(False)  # what -q and --no-progress do for bars without an argument of their own
        assert progress.progress_bar(range(3), file=_Terminal()).disable
    finally:
        progress.set_enabled(True)


def test_configure_sets_levels_bars_and_quiets_other_ranks(monkeypatch):
    logger = logging.getLogger(conventions.PACKAGE_LOGGER)
    old = logger.level
    try:
        parser = build_parser()
        args = parser.parse_args(["run", "-q"])
        conventions.configure(args)
        assert logger.level == logging.WARNING and args.no_progress and not progress.bars_enabled()
        conventions.configure(parser.parse_args(["run"]))
        assert logger.level == logging.INFO and progress.bars_enabled()
        conventions.configure(parser.parse_args(["-v", "list"]))
        assert logger.level == logging.DEBUG
        monkeypatch.setenv("RANK", "1")  # a torchrun rank other than 0 logs warnings only
        conventions.configure(parser.parse_args(["run"]))
        assert logger.level == logging.WARNING
    finally:
        logger.setLevel(old)
        progress.set_enabled(True)


TINY = [
    "--defense",
    "jt",
    "--set",
    "epochs=1",
    "--set",
    "batch_size=32",
    "--eps",
    "0.5",
    "--dataset-set",
    "n_train=96",
    "--dataset-set",
    "n_test=32",
]


@pytest.mark.slow
def test_run_logs_steps_on_stderr_without_bar_redraws_and_quiet_keeps_only_warnings(tmp_path):
    """A real process: stdout holds the results, stderr the INFO steps; not a terminal, so no \\r; -q after the
    subcommand leaves no INFO line."""
    cmd = [sys.executable, "-m", "mmrobust_bench.cli", "run", *TINY, "--root", str(tmp_path)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    env.pop("RANK", None)
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "\r" not in done.stderr and "\r" not in done.stdout
    assert "INFO mmrobust_bench.data.synthav: generated synthav" in done.stderr
    assert "INFO mmrobust_bench.bench.train: trained jt (seed 0)" in done.stderr and str(tmp_path) in done.stderr
    assert "INFO mmrobust_bench.bench.evaluate: clean accuracy" in done.stderr
    assert "INFO" not in done.stdout and "trained in" in done.stdout
    quiet = subprocess.run(cmd + ["-q"], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    assert quiet.returncode == 0, quiet.stderr
    assert "INFO" not in quiet.stderr and "reused cached checkpoint" in quiet.stdout


@pytest.mark.slow
def test_validity_flag_is_reported_once_as_a_warning(tmp_path, capsys, caplog, monkeypatch):
    """The run logs each raised flag once (stderr, WARNING) and marks it in the table; stdout does not repeat it."""
    from mmrobust_bench.bench import api
    from mmrobust_bench.bench.flags import NON_MONOTONE, Flag

    raised = Flag(NON_MONOTONE, "accuracy rises from 0.10 to 0.90 between eps 0.25 and 0.5", 0.5)
    monkeypatch.setattr(api, "check_attack", lambda *a, **k: [raised])
    with caplog.at_level(logging.INFO, logger="mmrobust_bench"):
        assert main(["run", *TINY, "--root", str(tmp_path), "--no-progress"]) == 0
    out, err = capsys.readouterr()
    records = [r for r in caplog.records if raised.note() in r.getMessage()]
    assert len(records) == 1 and records[0].levelno == logging.WARNING
    assert raised.note() not in out and raised.note() not in err and "note:" not in out
    assert NON_MONOTONE in out  # the table's flags column


@pytest.mark.slow
def test_training_and_evaluation_bars_tick_per_batch(tmp_path, monkeypatch):
    """On a terminal, training advances once per batch (3 batches of 32 in one epoch), not once per epoch."""
    from mmrobust_bench.bench.api import run

    tty = _Terminal()
    monkeypatch.setattr(sys, "stderr", tty)
    progress.set_enabled(True)  # a CLI call earlier in this process (--no-progress) may have turned bars off
    run(
        defense="jt",
        attack="pgd_l2",
        modality="a",
        eps=[0.5],
        overrides={"epochs": 1, "batch_size": 32},
        dataset_options={"n_train": 96, "n_test": 32},
        root=tmp_path,
        progress=True,
        check_flags=False,
    )
    text = tty.getvalue()
    assert "train jt" in text and "3/3" in text and "batch" in text
    assert "attack pgd_l2" in text
