"""Provenance (torch version, device, dtype, threads) in rows and checkpoints; --label/--force; verify."""

import json
from typing import ClassVar

import pandas as pd
import pytest
import torch
import yaml

from mmrobust_bench.bench.environment import row_provenance, torch_build
from mmrobust_bench.bench.results import read_rows
from mmrobust_bench.bench.sweep import build_plan, load_sweep_config, run_sweep
from mmrobust_bench.cli import main

SMALL = [
    "--dataset-set",
    "n_train=128",
    "--dataset-set",
    "n_test=32",
    "--set",
    "epochs=1",
    "--set",
    "batch_size=32",
    "--batch-size",
    "32",
    "--no-progress",
    "-q",
]


@pytest.fixture(autouse=True)
def _threads_back():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_rows_and_checkpoints_record_provenance_labels_coexist_and_force_reevaluates(tmp_path, capsys):
    args = [
        "run",
        "--defense",
        "jt",
        "--attack",
        "fgm",
        "--modality",
        "a",
        "--eps",
        "0.5,1",
        "--root",
        str(tmp_path),
        "--threads",
        "1",
    ] + SMALL
    assert main(args) == 0
    rows = read_rows(tmp_path / "results.csv")
    assert len(rows) == 3 and set(rows["label"]) == set(rows["defense"]) == {"jt"}  # label defaults to the id
    assert set(rows["threads"]) == {1} and set(rows["torch_version"]) == {torch.__version__}
    assert set(rows["dtype"]) == {"float32"} and set(rows["device"]) == {"cpu"}
    here = row_provenance("cpu")  # what explains a difference: CPU kernels, torch's build, the CPU model
    assert set(rows["cpu_capability"]) == {torch.backends.cpu.get_cpu_capability()} == {here["cpu_capability"]}
    assert set(rows["torch_build"]) == {here["torch_build"]} and len(here["torch_build"]) == 12
    assert set(rows["device_name"]) == {here["device_name"]} and here["device_name"]
    (config_path,) = (tmp_path / "checkpoints").rglob("config.json")
    config = json.loads(config_path.read_text())
    for stage in ("stage1", "final"):
        recorded = config["provenance"][stage]
        assert (recorded["threads"], recorded["torch_version"], recorded["device"], recorded["dtype"]) == (
            1,
            torch.__version__,
            "cpu",
            "float32",
        )
        assert (recorded["cpu_capability"], recorded["torch_build"], recorded["device_name"]) == (
            here["cpu_capability"],
            here["torch_build"],
            here["device_name"],
        )
        assert recorded["torch_build_fields"] == {k: v for k, v in torch_build().items() if k != "sha256"}
    sha = rows["checkpoint_sha256"].iloc[0]

    # the same run again: nothing evaluated, the stored rows are shown and said to be reused; the thread
    # count is not part of the checkpoint key (it is recorded, and a sweep pins it), so the model is reused
    capsys.readouterr()
    again = args[: -len(SMALL) - 2] + ["--threads", "2"] + SMALL
    assert main(again) == 0
    out, err = capsys.readouterr()
    assert "reused cached checkpoint" in out and "reused 3 stored rows" in out and "--force re-evaluates" in out
    assert "reused" not in err  # said once, on the results line
    assert len(read_rows(tmp_path / "results.csv")) == 3

    # --force re-evaluates (now at 2 threads) and replaces the cells' rows instead of duplicating them
    assert main(again + ["--force"]) == 0
    forced = read_rows(tmp_path / "results.csv")
    assert len(forced) == 3 and set(forced["threads"]) == {2}
    assert list(forced["accuracy"]) == list(rows["accuracy"])  # same checkpoint, seeded attack

    # a second configuration of the same defense under its own label coexists with the first
    assert main(args + ["--label", "jt_lr002", "--set", "lr=0.02"]) == 0
    both = read_rows(tmp_path / "results.csv")
    assert len(both) == 6 and set(both["defense"]) == {"jt"}
    by_label = both.groupby("label")
    assert by_label.size().to_dict() == {"jt": 3, "jt_lr002": 3}
    assert by_label["checkpoint_sha256"].nunique().to_dict() == {"jt": 1, "jt_lr002": 1}
    assert both.loc[both["label"] == "jt_lr002", "checkpoint_sha256"].iloc[0] != sha
    assert both.loc[both["label"] == "jt_lr002", "config_hash"].iloc[0] != rows["config_hash"].iloc[0]


def test_sweep_yaml_pins_threads():
    assert build_plan({"defenses": ["jt"], "threads": 2}).threads == 2
    assert build_plan({"defenses": ["jt"], "threads": 2}, threads=1).threads == 1  # the command line wins
    assert build_plan({"defenses": ["jt"]}).threads is None
    for bad in (0, -1, "two", 1.5):
        with pytest.raises(ValueError, match="threads must be a positive integer"):
            build_plan({"defenses": ["jt"], "threads": bad})
    assert load_sweep_config("leaderboards/synthav/sweep.yaml")["threads"] == 1


TINY = {
    "dataset": "synthav",
    "dataset_set": {"n_train": 128, "n_test": 32},
    "seeds": [0],
    "threads": 1,
    "set": {"epochs": 1, "batch_size": 32},
    "batch_size": 32,
    "defenses": ["jt"],
    "grid": [
        {"attacks": ["fgm"], "modalities": ["a"], "eps": [0.5, 1.0]},
        {"attacks": ["missing"], "modalities": ["v"]},
    ],
}


def test_verify_retrain_reproduces_a_sweep_and_detects_a_tampered_row(tmp_path, capsys):
    config = tmp_path / "sweep.yaml"
    config.write_text(yaml.safe_dump(TINY))
    root = tmp_path / "runs"
    run_sweep(build_plan(TINY), root=root, progress=False)
    torch.set_num_threads(2)  # verify re-trains at the recorded thread count, not at this process's
    verify = [
        "verify",
        "--retrain",
        "--config",
        str(config),
        "--root",
        str(root),
        "--n",
        "2",
        "--cells",
        "3",
        "--seed",
        "0",
        "--no-progress",
        "-q",
    ]

    def snapshot():
        return {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}

    before = snapshot()
    assert main(verify) == 0
    assert snapshot() == before  # nothing in the sweep's root is written (the dataset cache is only read)
    out = capsys.readouterr().out
    assert "verify: 4 values of 1 model(s) re-trained: all pass (4 exactly equal)" in out
    assert "bit-identical: 4 of 4 value(s)" in out  # re-trained at the recorded 1 thread: the same checkpoint
    table = [line for line in out.splitlines() if line.startswith("| result | jt |")]
    assert len(table) == 4 and all(line.endswith("= | bit-identical |") for line in table)

    results = root / "results.csv"
    frame = pd.read_csv(results, keep_default_na=False, dtype=str)
    clean = frame.index[frame["attack"] == "clean"][0]
    frame.loc[clean, "accuracy"] = str(float(frame.loc[clean, "accuracy"]) + 1 / 32)  # one more clip "correct"
    frame.to_csv(results, index=False)
    assert main(verify) == 1  # one seed: no spread, only the floor (0.01) is accepted
    out = capsys.readouterr().out
    assert "verify: 4 values of 1 model(s) re-trained: 1 fail" in out
    (bad,) = [line for line in out.splitlines() if line.endswith("| OUTSIDE |")]
    assert "| clean |" in bad and "| -0.03125 | 0.01 |" in bad and "=" in bad  # the checkpoint reproduced


def test_verify_errors_clearly_without_rows(tmp_path, capsys):
    config = tmp_path / "sweep.yaml"
    config.write_text(yaml.safe_dump(TINY))
    assert main(["verify", "--retrain", "--config", str(config), "--root", str(tmp_path / "empty"), "-q"]) == 2
    assert "holds no rows of this sweep's entries" in capsys.readouterr().err


def test_keyed_settings_extend_and_rename_without_moving_hashes():
    """A field added after checkpoints existed is left out at its old value; a renamed value keeps its old
    spelling; any other value enters the key as it is (the MSEFM and CRMT cases, and a subclass's own)."""
    from dataclasses import dataclass

    from mmrobust_bench.defenses import build_defense
    from mmrobust_bench.defenses.base import Defense, keyed_settings

    assert keyed_settings({"a": 1, "new": "old"}, {"new": "old"}) == {"a": 1}
    assert keyed_settings({"a": 1, "new": "fast"}, {"new": "old"}) == {"a": 1, "new": "fast"}
    assert keyed_settings({"mode": "b2", "x": 0}, spellings={"mode": {"b2": "b"}}) == {"mode": "b", "x": 0}
    assert keyed_settings({"mode": "c"}, spellings={"mode": {"b2": "b"}}) == {"mode": "c"}

    gram, _ = build_defense("msefm", {"gradient_form": "gram"})
    residual, _ = build_defense("msefm", {})
    assert "gradient_form" not in gram.config_dict() and residual.config_dict()["gradient_form"] == "residual"
    unit_rows, _ = build_defense("crmt_jt", {"own_groups": "per_class_unit_rows"})
    assert unit_rows.config.own_groups == "per_class_unit_rows" and unit_rows.config_dict()["own_groups"] == "per_class"

    class Extended(Defense):
        KEY_OMITTED: ClassVar[dict[str, float]] = {"weight": 1.0}

        @dataclass
        class Config:
            depth: int = 2
            weight: float = 1.0

    assert Extended().config_dict() == {"depth": 2}
    assert Extended(Extended.Config(weight=2.0)).config_dict() == {"depth": 2, "weight": 2.0}


def test_tables_written_before_the_provenance_columns_still_load(tmp_path):
    """A leaderboard's CSVs as written before cpu_capability/torch_build/device_name (and certificates' threads):
    the committed ones with those columns dropped read with them at "" / 0, "not recorded", and nothing claims
    they came from this machine."""
    from mmrobust_bench.bench.certification import PROVENANCE_DEFAULTS, read_certified

    new_columns = ["cpu_capability", "torch_build", "device_name"]
    old_results, old_certified = tmp_path / "results.csv", tmp_path / "certified.csv"
    results = pd.read_csv("leaderboards/synthav/runs/results.csv", dtype=str, keep_default_na=False)
    results.drop(columns=[c for c in new_columns if c in results]).to_csv(old_results, index=False)
    certified = pd.read_csv("leaderboards/synthav/runs/certified.csv", dtype=str, keep_default_na=False)
    certified.drop(columns=[c for c in PROVENANCE_DEFAULTS if c in certified]).to_csv(old_certified, index=False)
    rows = read_rows(old_results)
    assert len(rows) > 100 and set(rows["cpu_capability"]) == set(rows["torch_build"]) == {""}
    assert set(rows["device_name"]) == {""}
    certified = read_certified(old_certified)
    assert len(certified) > 100 and set(certified["threads"]) == {0}
    assert all(set(certified[name]) == {""} for name in PROVENANCE_DEFAULTS if name != "threads")
