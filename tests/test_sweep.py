"""Sweeps: plan parsing, cell identity, and resumability for real (SIGKILL mid-sweep, rerun, compare)."""

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from mmrobust_bench.bench.results import CELL_COLUMNS, cell_key, done_cells, eps_key
from mmrobust_bench.bench.sweep import build_plan, load_sweep_config, run_sweep
from mmrobust_bench.bench.sweep_config import parse_block
from mmrobust_bench.cli import main

REPO = Path(__file__).resolve().parents[1]


def test_plan_from_yaml_with_labels_and_blocks():
    config = {
        "dataset": "synthav",
        "dataset_set": {"n_train": 256},
        "seeds": [0, 1, 2],
        "set": {"epochs": 1},
        "defenses": ["jt", {"defense": "crmt_jt", "label": "crmt_jt_step1_only", "set": {"step2": False}}],
        "grid": [
            {"attacks": ["fgm", "pgd_l2"], "modalities": ["v", "a"], "eps": [1.0]},
            {"attacks": "missing", "modalities": "v,a"},
        ],
        "certify": {"radii": [0, 0.5], "honesty_steps": 5},
    }
    plan = build_plan(config)
    assert [(e.defense, e.label, dict(e.overrides)) for e in plan.defenses] == [
        ("jt", "jt", {}),
        ("crmt_jt", "crmt_jt_step1_only", {"step2": False}),
    ]
    assert plan.seeds == [0, 1, 2] and plan.common_overrides == {"epochs": 1}
    assert plan.grid[1].attacks == ("missing",) and plan.grid[1].modalities == ("v", "a") and plan.grid[1].eps == ()
    assert len(plan.units()) == 2 * 2 + 2
    assert plan.certify.radii == (0.0, 0.5) and plan.certify.honesty_steps == 5
    # the command line wins: flags replace the grid, the defenses and the seeds, and add overrides
    cli = build_plan(config, defenses=["gb"], seeds=[4], attacks=["pgd_l2"], eps=[0.25], overrides={"lr": 0.1})
    assert [e.label for e in cli.defenses] == ["gb"] and cli.seeds == [4]
    assert cli.grid[0].attacks == ("pgd_l2",) and cli.grid[0].modalities == ("v", "a", "all")
    assert cli.grid[0].eps == (0.25,) and cli.common_overrides == {"epochs": 1, "lr": 0.1}


def test_only_and_skip_select_yaml_entries_with_their_own_settings():
    config = {
        "defenses": ["jt", "msefm", {"defense": "crmt_jt", "label": "crmt_jt_step1_only", "set": {"step2": False}}]
    }
    full = build_plan(config)
    plan = build_plan(config, skip=["msefm"])
    assert [e.label for e in plan.defenses] == ["jt", "crmt_jt_step1_only"]
    assert plan.defenses[1] == full.defenses[2]  # same entry, same settings: same config hash, same rows
    assert [e.label for e in build_plan(config, only=["crmt_jt_step1_only"]).defenses] == ["crmt_jt_step1_only"]
    with pytest.raises(
        ValueError,
        match=r"--skip: no defense entry is labelled 'msfem' \(did you mean 'msefm'\?\); "
        r"labels: jt, msefm, crmt_jt_step1_only",
    ):
        build_plan(config, skip=["msfem"])
    with pytest.raises(ValueError, match="leave no defense entry"):
        build_plan(config, only=["jt"], skip=["jt"])


def test_certify_method_replaces_the_yaml_methods_and_keeps_the_rest_of_the_block():
    config = {"defenses": ["jt"], "certify": {"method": ["empirical", "smoothing"], "sigma": 0.5, "radii": [0, 0.5]}}
    assert build_plan(config).certify.methods == ("empirical", "smoothing")
    plan = build_plan(config, certify_methods=["empirical"])
    assert plan.certify.methods == ("empirical",) and plan.certify.smoothing.sigma == 0.5
    assert plan.certify.radii == (0.0, 0.5)
    assert build_plan({"defenses": ["jt"]}, certify_methods=["smoothing"]).certify.methods == ("smoothing",)
    with pytest.raises(ValueError, match="certify method emprical unknown; valid: empirical, smoothing"):
        build_plan(config, certify_methods=["emprical"])


def test_an_entry_certify_block_adjusts_the_sweep_block_for_that_entry_only():
    config = {
        "defenses": ["jt", {"defense": "msefm", "certify": {"test_samples": 300, "n": 500}}],
        "certify": {"method": ["empirical", "smoothing"], "radii": [0, 0.5], "n": 1000, "sigma": 0.5},
    }
    plan = build_plan(config)
    jt, msefm = plan.defenses
    assert plan.certify_for(jt) is plan.certify and plan.certify.test_samples == -1
    own = plan.certify_for(msefm)
    assert own.test_samples == 300 and own.smoothing.n == 500
    assert own.smoothing.sigma == 0.5 and own.radii == (0.0, 0.5) and own.methods == ("empirical", "smoothing")
    assert msefm.overrides == {}  # certification settings are not training settings: same config hash
    # the command line's radii and methods replace the entries' too
    cli = build_plan(config, certify_methods=["empirical"], certify_radii=[0.25])
    assert cli.certify_for(cli.defenses[1]).methods == ("empirical",)
    assert cli.certify_for(cli.defenses[1]).radii == (0.25,) and cli.certify_for(cli.defenses[1]).test_samples == 300
    with pytest.raises(
        ValueError,
        match=r"unknown key test_sample \(did you mean 'test_samples'\?\) in certify of defense entry 'msefm'; "
        r"valid: radii",
    ):
        build_plan({"defenses": [{"defense": "msefm", "certify": {"test_sample": 3}}], "certify": {}})
    with pytest.raises(ValueError, match="defense entry msefm adjust the sweep's certify: block, which is missing"):
        build_plan({"defenses": [{"defense": "msefm", "certify": {"test_samples": 3}}]})
    with pytest.raises(ValueError, match="certify of defense entry 'msefm': certify method smooth unknown"):
        build_plan({"defenses": [{"defense": "msefm", "certify": {"method": "smooth"}}], "certify": {"radii": [0]}})


def test_no_certify_leaves_certification_out_but_still_checks_the_block(tmp_path, capsys):
    config = {
        "defenses": ["jt", {"defense": "msefm", "certify": {"test_samples": 300}}],
        "certify": {"method": ["empirical", "smoothing"], "radii": [0, 0.5]},
    }
    plan = build_plan(config, certify=False)
    assert plan.certify is None and plan.entry_certify == {} and all(plan.certify_for(e) is None for e in plan.defenses)
    with pytest.raises(ValueError, match="certify method smooth unknown"):
        build_plan({"defenses": ["jt"], "certify": {"method": "smooth"}}, certify=False)
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(config))
    assert (
        main(["sweep", "--config", str(path), "--no-certify", "--certify-method", "empirical", "--root", str(tmp_path)])
        != 0
    )
    assert "--no-certify leaves certification out" in capsys.readouterr().err


def two_labels_of_jt() -> dict:
    """A tiny sweep of two labels of JT, one certified on its first 16 test samples."""
    return {
        "dataset": "synthav",
        "dataset_set": {"n_train": 256, "n_test": 48},
        "seeds": [0],
        "set": {"epochs": 1},
        "defenses": ["jt", {"defense": "jt", "label": "jt_small", "certify": {"test_samples": 16}}],
        "grid": [{"attacks": ["missing"], "modalities": ["a"]}],
        "certify": {"radii": [0, 0.1], "honesty_steps": 0, "train_samples": 64},
    }


@pytest.mark.slow
def test_an_entry_certify_block_reaches_its_certificate(tmp_path):
    """Two labels of one defense, one certified on 16 test samples: certified.csv says so per entry."""
    config = two_labels_of_jt()
    first = run_sweep(build_plan(config, certify=False), root=tmp_path, progress=False)  # cells only
    assert first.certified == 0 and first.evaluated_rows == 4 and not (tmp_path / "certified.csv").exists()
    outcome = run_sweep(build_plan(config), root=tmp_path, progress=False)
    assert outcome.certified == 2 and outcome.evaluated_rows == 0 and outcome.skipped_rows == 4
    certified = pd.read_csv(tmp_path / "certified.csv")
    assert dict(certified.groupby("defense")["n"].unique().apply(list)) == {"jt": [48], "jt_small": [16]}
    # one checkpoint (same configuration), two certificates
    assert certified["checkpoint_sha256"].nunique() == 1


@pytest.mark.slow
def test_a_certificate_of_other_settings_is_made_again_and_replaced(tmp_path, caplog):
    """A stored certificate counts as done only with the sweep's settings: changing an entry's test_samples (or
    the radius grid) certifies it again and replaces its rows, never leaving two settings side by side."""
    config = two_labels_of_jt()
    assert run_sweep(build_plan(config), root=tmp_path, progress=False).certified == 2
    config["defenses"][1]["certify"] = {"test_samples": 24}
    caplog.clear()
    outcome = run_sweep(build_plan(config), root=tmp_path, progress=False)
    assert outcome.certified == 1  # jt_small only: jt's certificate has the sweep's settings
    assert "jt_small seed 0: the stored empirical certificate was made with other settings (n: [16.0] → 24)" in (
        caplog.text
    )
    certified = pd.read_csv(tmp_path / "certified.csv")
    assert dict(certified.groupby("defense")["n"].unique().apply(list)) == {"jt": [48], "jt_small": [24]}
    config["certify"]["radii"] = [0, 0.1, 0.2]
    assert run_sweep(build_plan(config), root=tmp_path, progress=False).certified == 2
    certified = pd.read_csv(tmp_path / "certified.csv")
    assert set(certified.groupby("defense")["radius"].unique().apply(lambda r: tuple(sorted(r)))) == {(0.0, 0.1, 0.2)}


@pytest.mark.parametrize(
    "config,message",
    [
        ({"defenses": ["jt"], "gird": []}, "unknown key gird"),
        ({"defenses": []}, "no defenses given"),
        ({"defenses": [{"defense": "jt", "label": "x"}, {"defense": "gb", "label": "x"}]}, "label 'x' is used by two"),
        ({"defenses": [{"label": "x"}]}, "needs 'defense'|mapping with 'defense'"),
        ({"defenses": ["jt"], "seeds": "a,b"}, "seeds must be integers"),
        ({"defenses": ["jt"], "grid": [{"attacks": ["fgm"], "modalities": ["v"], "eps": [-1]}]}, "eps must be finite"),
        ({"defenses": ["jt"], "grid": [{"attacks": ["fgm"], "modality": ["v"]}]}, "unknown key modality"),
    ],
)
def test_bad_plans_are_clear_errors(config, message):
    with pytest.raises(ValueError, match=message):
        build_plan(config)


def test_cell_identity_treats_missing_eps_and_types_consistently():
    assert eps_key(float("nan")) == "-" and eps_key(0.5) == eps_key("0.5") == "0.5"
    frame = pd.DataFrame(
        [
            {
                "dataset": "synthav",
                "defense": "jt",
                "seed": 0,
                "checkpoint_sha256": "ab",
                "attack": "missing",
                "attack_config": "missing(fill=zero)",
                "modality": "v",
                "eps": math.nan,
            },
            {
                "dataset": "synthav",
                "defense": "jt",
                "seed": 0,
                "checkpoint_sha256": "ab",
                "attack": "fgm",
                "attack_config": "fgm",
                "modality": "all",
                "eps": 1.0,
            },
        ]
    )
    done = done_cells(frame)
    assert cell_key("synthav", "jt", "0", "ab", "missing", "missing(fill=zero)", "v", math.nan) in done
    assert cell_key("synthav", "jt", 0, "ab", "fgm", "fgm", "all", 1) in done
    assert cell_key("synthav", "jt", 1, "ab", "fgm", "fgm", "all", 1.0) not in done
    assert parse_block({"attacks": ["fgm"], "modalities": ["v"], "eps": [1, 0.5, 1]}).eps == (0.5, 1.0)


def test_sweep_cli_errors_before_training(tmp_path, capsys):
    assert main(["sweep", "--defenses", "jtx", "--root", str(tmp_path), "--no-progress"]) == 2
    assert "unknown defense 'jtx'" in capsys.readouterr().err
    assert main(["sweep", "--config", str(tmp_path / "none.yaml"), "--root", str(tmp_path)]) == 2
    assert "does not exist" in capsys.readouterr().err
    config = tmp_path / "sweep.yaml"
    config.write_text(yaml.safe_dump({"defenses": ["jt", "msefm"]}))
    assert main(["sweep", "--config", str(config), "--root", str(tmp_path), "--skip", "msfem"]) == 2
    assert "--skip: no defense entry is labelled 'msfem' (did you mean 'msefm'?)" in capsys.readouterr().err


SWEEP = {
    "dataset": "synthav",
    "dataset_set": {"n_train": 256, "n_test": 64},
    "seeds": [0, 1],
    "set": {"epochs": 1},
    "defenses": [{"defense": "jt", "label": "jt_tiny", "set": {"batch_size": 32}}],
    "grid": [
        {"attacks": ["fgm", "pgd_l2"], "modalities": ["v", "a", "all"], "eps": [0.5, 1.0]},
        {"attacks": ["pgd_l2"], "modalities": ["a"], "eps": [1.0, 2.0]},  # overlaps the block above at 1.0
        {"attacks": ["missing"], "modalities": ["v", "a"]},
    ],
    "batch_size": 64,
}
EXPECTED_ROWS_PER_MODEL = 1 + 2 * 3 * 2 + 1 + 2  # clean + fgm/pgd × v,a,all × 2 ε + pgd a ε=2 + missing v, a


def _sweep_cmd(config: Path, root: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "mmrobust_bench.cli",
        "sweep",
        "--config",
        str(config),
        "--root",
        str(root),
        "--no-progress",
    ]


def _env() -> dict:
    # identical thread settings in every run, so that the checkpoints (and their sha256) are identical
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def _rows(path: Path) -> pd.DataFrame:
    return pd.read_csv(path).drop(columns=["wall_seconds", "timestamp"])


@pytest.mark.slow
def test_sweep_survives_sigkill_and_matches_an_uninterrupted_run(tmp_path):
    config = tmp_path / "sweep.yaml"
    config.write_text(yaml.safe_dump(SWEEP))
    assert load_sweep_config(config)["seeds"] == [0, 1]
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    results = killed / "results.csv"

    proc = subprocess.Popen(_sweep_cmd(config, killed), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline and proc.poll() is None:
        if results.exists() and len(pd.read_csv(results)) >= 1:
            break
        time.sleep(0.05)
    assert proc.poll() is None, f"sweep ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    partial = pd.read_csv(results)  # never torn: appends are atomic
    assert 1 <= len(partial) < 2 * EXPECTED_ROWS_PER_MODEL

    subprocess.run(_sweep_cmd(config, killed), env=_env(), check=True, capture_output=True)
    subprocess.run(_sweep_cmd(config, clean), env=_env(), check=True, capture_output=True)

    resumed, reference = _rows(results), _rows(clean / "results.csv")
    assert len(resumed) == len(reference) == 2 * EXPECTED_ROWS_PER_MODEL
    assert not resumed.duplicated(list(CELL_COLUMNS)).any()
    key = sorted(resumed.columns)
    as_set = lambda f: set(f[key].astype(str).itertuples(index=False, name=None))  # noqa: E731
    assert as_set(resumed) == as_set(reference)
    # the rows that were there before the kill were kept as they were
    assert as_set(partial.drop(columns=["wall_seconds", "timestamp"])) <= as_set(resumed)
    assert set(resumed["label"]) == {"jt_tiny"} and set(resumed["defense"]) == {"jt"} and set(resumed["seed"]) == {0, 1}
    missing = resumed[resumed["attack"] == "missing"]
    assert sorted(missing["modality"]) == ["a", "a", "v", "v"] and missing["eps"].isna().all()
    # a third run finds nothing to do
    out = subprocess.run(_sweep_cmd(config, killed), env=_env(), check=True, capture_output=True, text=True).stdout
    assert "0 rows evaluated" in out and len(pd.read_csv(results)) == len(resumed)


@pytest.mark.slow
def test_sweep_cli_flags_with_certification_then_nothing_left(tmp_path, capsys):
    args = [
        "sweep",
        "--defenses",
        "jt",
        "--seeds",
        "0",
        "--attacks",
        "fgm,missing",
        "--modalities",
        "a,all",
        "--eps",
        "0.5",
        "--certify",
        "0,0.1",
        "--set",
        "epochs=1",
        "--root",
        str(tmp_path),
        "--no-progress",
        "--dataset-set",
        "n_train=256",
        "--dataset-set",
        "n_test=64",
    ]
    assert main(args) == 0
    assert "1 models, 5 rows evaluated, 0 already present, 1 certified" in capsys.readouterr().out
    rows = pd.read_csv(tmp_path / "results.csv")
    assert sorted(zip(rows["attack"], rows["modality"])) == [
        ("clean", "none"),
        ("fgm", "a"),
        ("fgm", "all"),
        ("missing", "a"),
        ("missing", "all"),
    ]
    certified = pd.read_csv(tmp_path / "certified.csv")
    assert set(certified["checkpoint_sha256"]) == set(rows["checkpoint_sha256"])
    assert {"eq5", "eq7[v]", "eq7[a]"} == set(certified["certificate"])  # concat head: no Eq. 10
    assert (tmp_path / "eta_pairs.csv").exists()
    assert main(args) == 0
    assert "0 rows evaluated, 5 already present, 0 certified" in capsys.readouterr().out


def test_mark_row_flags_sees_curves_assembled_from_several_cells(tmp_path):
    """non_monotone needs rows of two grid blocks; fgm_beats_pgd needs the fgm and the pgd_l2 cells."""
    from mmrobust_bench.bench.results import ResultRow, append_rows, read_rows
    from mmrobust_bench.bench.sweep_units import mark_row_flags

    def row(attack, eps, acc, flags=""):
        return ResultRow(
            dataset="synthav",
            defense="jt",
            seed=0,
            checkpoint_sha256="ab",
            config_hash="c",
            attack=attack,
            attack_config=attack,
            library="native",
            library_version="0",
            modality="a",
            norm="l2",
            eps=eps,
            n=1000,
            accuracy=acc,
            wall_seconds=0.0,
            device="cpu",
            suite_version="0",
            flags=flags,
        )

    path = tmp_path / "results.csv"
    append_rows(path, [row("pgd_l2", 0.5, 0.60), row("pgd_l2", 1.0, 0.40, "zero_gradients")])  # block 1
    append_rows(path, [row("pgd_l2", 2.0, 0.55)])  # block 2: a rise of 0.15 over 1000 samples
    append_rows(path, [row("fgm", 0.5, 0.45), row("fgm", 1.0, 0.39)])  # FGM 0.15 below PGD at 0.5: flagged
    mark_row_flags(path)
    flags = dict(zip(zip(*[read_rows(path)[c] for c in ("attack", "eps")]), read_rows(path)["flags"]))
    assert flags == {
        ("pgd_l2", 0.5): "fgm_beats_pgd",
        ("pgd_l2", 1.0): "zero_gradients",
        ("pgd_l2", 2.0): "non_monotone",
        ("fgm", 0.5): "",
        ("fgm", 1.0): "",
    }
    before = path.read_text()
    mark_row_flags(path)  # idempotent
    assert path.read_text() == before


def test_sweep_evaluates_missing_with_mean_fill_and_records_flags(tmp_path):
    from mmrobust_bench.bench.sweep import run_sweep

    plan = build_plan(
        {
            "dataset": "synthav",
            "dataset_set": {"n_train": 128, "n_test": 48},
            "set": {"epochs": 1},
            "defenses": ["jt"],
            "batch_size": 48,
            "grid": [
                {"attacks": ["missing"], "modalities": ["a"], "attack_set": {"fill": "mean"}},
                {"attacks": ["fgm"], "modalities": ["a"], "eps": [0.5]},
            ],
        }
    )
    outcome = run_sweep(plan, root=tmp_path, progress=False)
    rows = pd.read_csv(tmp_path / "results.csv", keep_default_na=False)
    assert outcome.evaluated_rows == 3 and list(rows["attack"]) == ["clean", "missing", "fgm"]
    assert rows.loc[1, "attack_config"] == "missing(fill=mean)"
    assert "flags" in rows and set(rows["flags"]) == {""}  # a healthy CNN raises none


@pytest.mark.slow
def test_overlapping_grid_blocks_evaluate_and_count_each_row_once(tmp_path, monkeypatch):
    """A row planned by two blocks (ε = 1 in a uni-modal block and in a radius grid; ``missing`` twice) is one row:
    evaluated once and counted once, so 'already present' equals the stored rows, in the sequential sweep and
    cell by cell as Ray tasks run (``unit_task`` called directly, no Ray needed)."""
    from mmrobust_bench.bench.executors import unit_task
    from mmrobust_bench.bench.sweep_plan import unit_cells

    config = {
        "dataset": "synthav",
        "dataset_set": {"n_train": 256, "n_test": 48},
        "seeds": [0],
        "set": {"epochs": 1},
        "defenses": ["jt"],
        "grid": [
            {"attacks": ["fgm"], "modalities": ["a"], "eps": [1.0]},
            {"attacks": ["fgm"], "modalities": ["a"], "eps": [0.5, 1.0]},
            {"attacks": ["missing"], "modalities": ["a"]},
            {"attacks": ["missing"], "modalities": ["a"]},
            # look alike but are other rows: another attack, another attack setting
            {"attacks": ["pgd_l2"], "modalities": ["a"], "eps": [1.0], "attack_set": {"steps": 2}},
            {"attacks": ["missing"], "modalities": ["a"], "attack_set": {"fill": "mean"}},
        ],
    }
    import mmrobust_bench.bench.sweep_units as sweep_module

    measured: list[tuple] = []  # (attack, ε grid) of every attack computation
    real = sweep_module.robust_accuracy

    def recording(model, split, atk, threat, eps_grid, *args, **kwargs):
        measured.append((atk.describe(), tuple(eps_grid)))
        return real(model, split, atk, threat, eps_grid, *args, **kwargs)

    monkeypatch.setattr(sweep_module, "robust_accuracy", recording)
    plan = build_plan(config, certify=False)
    first = run_sweep(plan, root=tmp_path / "seq", progress=False)
    swept, measured[:] = list(measured), []
    rows = pd.read_csv(tmp_path / "seq" / "results.csv")
    # clean, fgm 1.0 and 0.5, missing (zero), pgd_l2 1.0, missing (mean)
    assert len(rows) == 6 and not rows.duplicated(list(CELL_COLUMNS)).any()
    assert (first.evaluated_rows, first.skipped_rows) == (6, 0)  # was (6, 2): the second block's ε = 1, missing again
    again = run_sweep(plan, root=tmp_path / "seq", progress=False)
    assert (again.evaluated_rows, again.skipped_rows) == (0, 6)  # was (0, 8)
    # verify re-runs every cell on the ε grid the sweep ran it on (without claimed: fgm on (0.5, 1.0))
    from mmrobust_bench.bench.verify import verify_sweep

    checked = verify_sweep(plan, root=tmp_path / "seq", n=1, cells=len(unit_cells(plan)), scratch=tmp_path / "scratch")
    assert checked.ok and len(checked.rows) == 6 and sorted(measured) == sorted(swept)  # same computations
    assert ("fgm", (0.5,)) in swept  # the second block measured only its own ε

    key = [c for c in CELL_COLUMNS if c != "checkpoint_sha256"] + ["accuracy"]
    entry, cells = plan.defenses[0], range(len(unit_cells(plan)))

    def per_cell(order: list[int], root: Path) -> tuple[int, int]:
        counts = [
            unit_task("cell", plan, entry, 0, index, str(root), str(root / "results.csv"), "cpu", 1, "test")
            for index in order
        ]
        return sum(c["evaluated_rows"] for c in counts), sum(c["skipped_rows"] for c in counts)

    for name, order in (("in order", list(cells)), ("reversed", list(cells)[::-1])):
        root = tmp_path / name  # Ray runs cells in any order: the owner of a shared row may run last
        results = root / "results.csv"
        assert per_cell(order, root) == (6, 0), name
        assert per_cell(order, root) == (0, 6), name
        as_cells = pd.read_csv(results)
        assert sorted(map(str, as_cells[key].itertuples(index=False))) == sorted(
            map(str, rows[key].itertuples(index=False))
        ), name
