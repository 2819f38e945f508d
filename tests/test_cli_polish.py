"""Command-line polish: `list` with no match, plain `prepare --help`, one way to state a default, a subcommand's
misuse shown with its own usage, messages once, `report`'s one-line summary, shell completion, Ctrl-C."""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from mmrobust_bench.bench.results import ResultRow, append_rows
from mmrobust_bench.cli import build_parser, main
from mmrobust_bench.hints import name_matcher

ROOT = Path(__file__).resolve().parents[1]


def every_parser(
    parser: argparse.ArgumentParser, name: str = "mmrobust-bench"
) -> list[tuple[str, argparse.ArgumentParser]]:
    found = [(name, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                found += every_parser(sub, f"{name} {sub_name}")
    return found


def test_list_without_a_match_is_an_error_naming_the_nearest_names(capsys):
    assert main(["list", "crmt_jtt*"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    line = err.strip()
    assert line.startswith("mmrobust-bench: error: list: nothing matches 'crmt_jtt*'; nearest names: crmt_jt, "), line
    assert line.endswith(" (`mmrobust-bench list` shows everything)") and len(line.splitlines()) == 1
    assert main(["list", "NoSuchThing", "--json"]) == 2
    err = capsys.readouterr().err
    near = err.split("nearest names: ", 1)[1].split(" (", 1)[0].split(", ")
    assert len(near) == 3 and all(near)
    assert main(["list", "crmt_jt"]) == 0  # a match is still a listing
    assert "crmt_jt" in capsys.readouterr().out


def test_list_builds_only_the_library_rows_it_prints(monkeypatch):
    """A pattern filters the library attacks' names before their rows are built (a torchattacks row inspects its
    class), and the rows are those of the whole listing that match."""
    from mmrobust_bench.cli import listing

    everything = listing.collect()
    built = []
    real = listing._torchattacks_rows
    monkeypatch.setattr(listing, "_torchattacks_rows", lambda names: built.extend(names) or real(names))
    found = listing.collect("pgdl2")
    assert built and all("pgdl2" in n.lower() for n in built)
    keep = name_matcher("pgdl2")
    assert found["attacks"] == [r for r in everything["attacks"] if keep(r["name"])]
    assert {"torchattacks:PGDL2", "art:ProjectedGradientDescent"} & {r["name"] for r in found["attacks"]}


def test_prepare_help_is_plain_text_like_every_other_help(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "120")
    for name, parser in every_parser(build_parser()):
        text = parser.format_help()
        assert "``" not in text and "**" not in text, name
    with pytest.raises(SystemExit) as exit_:
        main(["prepare", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "- frames: 1 fps JPEGs frames/<split>/<id>/frame_00001.jpg" in out  # was **frames** … ``frames/…``
    assert "--fps FPS" in out and "(default: 1.0)" in " ".join(out.split())


def test_every_help_states_its_default_one_way():
    """ "(default: X)" wherever a help text names a default, never "(default X)" or "; default: X"."""
    for name, parser in every_parser(build_parser()):
        formatter = parser._get_formatter()
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)) or not action.help:
                continue
            text = " ".join(formatter._expand_help(action).split())
            for found in re.finditer(r"default\b", text):
                assert text[found.start() - 1 : found.end() + 2] == "(default: ", f"{name} {action.dest}: {text}"


@pytest.mark.parametrize(
    "argv,usage",
    [
        (["certify", "--seeds", "1"], "usage: mmrobust-bench certify "),
        (["list", "pgd", "--bogus"], "usage: mmrobust-bench list "),
        (["report", "--results", "r.csv", "--out", "o", "--nope"], "usage: mmrobust-bench report "),
    ],
)
def test_a_subcommands_misuse_prints_that_subcommands_usage(capsys, argv, usage):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(usage), err
    assert err.rstrip().splitlines()[-1] == (
        f"mmrobust-bench {argv[0]}: error: unrecognized arguments: "
        f"{' '.join(a for a in argv if a.startswith('--') and a not in ('--results', '--out'))}"
        + (" 1" if "--seeds" in argv else "")
    )


def test_a_missing_subcommand_keeps_the_top_level_usage(capsys):
    with pytest.raises(SystemExit):
        main([])
    assert capsys.readouterr().err.startswith("usage: mmrobust-bench [-h]")


@pytest.mark.parametrize("shell", ["bash", "zsh", "tcsh"])
def test_completion_scripts_name_every_subcommand_and_option(capsys, shell):
    assert main(["completion", shell]) == 0
    script = capsys.readouterr().out
    assert "mmrobust-bench" in script
    for word in ("run", "certify", "sweep", "verify", "report", "plot", "prepare", "list", "completion"):
        assert word in script, word
    if shell != "tcsh":  # shtab's tcsh script completes subcommands and choices only
        for option in ("--defense", "--threads", "--dataset-set", "--results"):
            assert option in script, option


def test_the_bash_completion_script_is_valid_bash_and_completes_paths(tmp_path, capsys):
    assert main(["completion", "bash"]) == 0
    script = tmp_path / "mmrobust-bench.bash"
    script.write_text(capsys.readouterr().out)
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    text = script.read_text()
    assert "_shtab_mmrobust_bench_run___root_COMPGEN=_shtab_compgen_dirs" in text
    assert "_shtab_mmrobust_bench_run___results_COMPGEN=_shtab_compgen_files" in text


def model_rows(label: str, seed: int) -> list[ResultRow]:
    common = dict(
        dataset="synthav",
        defense="jt",
        label=label,
        seed=seed,
        checkpoint_sha256=f"sha-{label}-{seed}",
        config_hash="c0ffee",
        library="native",
        library_version="0",
        norm="l2",
        n=100,
        wall_seconds=0.1,
        device="cpu",
        suite_version="0",
    )
    plan = [
        ("clean", "none", 0.0, 0.9),
        ("fgm", "all", 0.5, 0.6),
        ("pgd_l2", "all", 0.5, 0.5),
        ("pgd_l2", "a", 0.5, 0.5),
        ("pgd_l2", "v", 0.5, 0.7),
    ]
    return [ResultRow(attack=a, attack_config=a, modality=m, eps=e, accuracy=acc, **common) for a, m, e, acc in plan]


@pytest.mark.usefixtures("one_thread")
def test_report_ends_with_a_summary_and_lists_paths_only_with_verbose(tmp_path, capsys):
    results = tmp_path / "results.csv"
    append_rows(results, [row for label in ("jt", "crmt_jt") for seed in (0, 1) for row in model_rows(label, seed)])
    out = tmp_path / "out"
    assert main(["report", "--results", str(results), "--out", str(out), "--html", "--findings"]) == 0
    stdout = capsys.readouterr().out.strip().splitlines()
    # every file but the CSVs' "made by" sidecars (.csv.txt), which report never listed
    written = sorted(p for p in out.rglob("*") if p.is_file() and not p.name.endswith(".csv.txt"))
    assert len(stdout) == 1 and str(written[0]) not in stdout[0]
    summary = stdout[0]
    assert summary == (
        f"report: {len(written)} files in {out}: tables 2 csv, 3 md, 2 tex; findings 1 md; "
        f"leaderboard 1 html, cards/synthav/ 4 json (-v lists them)"
    )  # 2 models x 2 seeds: 4 cards
    assert main(["report", "--results", str(results), "--out", str(out), "--html", "--findings", "-v"]) == 0
    listed = capsys.readouterr().out.strip().splitlines()
    assert sorted(Path(line) for line in listed[:-1]) == written
    assert listed[-1] == summary.removesuffix(" (-v lists them)")


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
@pytest.mark.usefixtures("one_thread")
def test_a_reused_run_says_reused_once(tmp_path, capsys):
    args = ["run", *TINY, "--root", str(tmp_path), "--no-progress"]
    assert main(args) == 0
    capsys.readouterr()
    assert main(args) == 0
    out, err = capsys.readouterr()
    assert (out + err).count("reused 2 stored rows") == 1
    assert "results:    " in out and "(reused 2 stored rows: nothing evaluated; --force re-evaluates)" in out


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_rows_of_another_batch_size_are_measured_again_and_replaced_not_reused(tmp_path, capsys, caplog):
    """A randomized attack reseeds per batch: the stored rows at batch size 32 are not this run's at 16."""
    args = ["run", *TINY, "--root", str(tmp_path), "--no-progress", "--attack", "autoattack"]
    args += ["--attack-set", "version=fast", "--attack-set", "members=square"]
    assert main([*args, "--batch-size", "32"]) == 0
    first = pd.read_csv(tmp_path / "results.csv")
    assert list(first["batch_size"]) == [32, 32]
    capsys.readouterr()
    caplog.clear()
    assert main([*args, "--batch-size", "16"]) == 0
    out, err = capsys.readouterr()
    assert "stored rows" not in out + err and "(+2 rows)" in out  # measured, not reused
    said = "stored rows of these cells were measured at batch size 32; they are replaced by this run's, at 16"
    assert [r.getMessage() for r in caplog.records].count(said) == 1
    again = pd.read_csv(tmp_path / "results.csv")
    assert list(again["batch_size"]) == [16, 16] and list(again["attack"]) == list(first["attack"])
    assert main([*args, "--batch-size", "16"]) == 0  # now stored at this size: reused
    assert "(reused 2 stored rows" in capsys.readouterr().out


@pytest.mark.slow
def test_ctrl_c_is_one_line_and_exit_130(tmp_path):
    """SIGINT in the middle of a training: no traceback, one line saying how to resume, the shell's 130."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    env.pop("RANK", None)
    cmd = [
        sys.executable,
        "-m",
        "mmrobust_bench.cli",
        "run",
        "--defense",
        "jt",
        "--set",
        "epochs=200",
        "--eps",
        "0.5",
        "--dataset-set",
        "n_train=300",
        "--dataset-set",
        "n_test=60",
        "--root",
        str(tmp_path),
    ]
    # a child of a background job inherits an ignored SIGINT (and then rightly ignores Ctrl-C): give it the
    # default disposition a terminal's foreground process has
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env=env,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    lines = []
    deadline = time.monotonic() + 300
    try:
        for line in proc.stderr:  # the per-epoch log lines say the training is under way
            lines.append(line)
            if "train jt: epoch 1/200" in line or time.monotonic() > deadline:
                break
        assert any("train jt: epoch 1/200" in line for line in lines), "".join(lines)
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=120)[1], None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, rest
    assert "Traceback" not in rest and "KeyboardInterrupt" not in rest
    assert rest.strip().splitlines()[-1] == "mmrobust-bench: interrupted; rerun the same command to resume"
