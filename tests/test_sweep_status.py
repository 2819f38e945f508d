"""`sweep --status`: how far a sweep has got, counted as the sweep decides what is done, without training."""

import json

import pandas as pd
import pytest
import yaml

from mmrobust_bench.bench.results import read_rows
from mmrobust_bench.bench.sweep import build_plan, run_sweep
from mmrobust_bench.bench.sweep_status import UnitStatus, status_table, sweep_status
from mmrobust_bench.cli import main

CONFIG = {
    "dataset": "synthav",
    "dataset_set": {"n_train": 256, "n_test": 48},
    "seeds": [0, 1],
    "set": {"epochs": 1},
    "defenses": ["jt", {"defense": "jt", "label": "jt_small", "certify": {"test_samples": 16}}],
    # the second block repeats fgm on a at 0.5: that row belongs to the first block and is counted once
    "grid": [
        {"attacks": ["fgm"], "modalities": ["a"], "eps": [0.5]},
        {"attacks": ["fgm"], "modalities": ["a"], "eps": [0.5, 1.0]},
        {"attacks": ["missing"], "modalities": ["a"]},
    ],
    "certify": {"radii": [0, 0.1], "honesty_steps": 0, "train_samples": 64},
}
ROWS = 1 + 2 + 1  # clean, fgm at 0.5 and 1, missing


def by_unit(units: list[UnitStatus]) -> dict:
    return {(u.label, u.seed): (u.state, u.rows, u.expected_rows, u.certificates, u.journals) for u in units}


@pytest.mark.slow
def test_status_follows_a_sweep_from_nothing_to_done(tmp_path, capsys):
    config = tmp_path / "sweep.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    root = tmp_path / "root"
    assert main(["sweep", "--config", str(config), "--root", str(root), "--status"]) == 0
    out = capsys.readouterr().out
    assert "| jt_small | 1 | not started | 0/4 | empirical | 0 |" in out
    assert out.strip().endswith("4 models: 0 done, 0 under way, 4 not started; rows 0/16")
    assert not (root / "results.csv").exists() and not (root / "checkpoints").exists()  # nothing trained or measured

    plan = build_plan(CONFIG)
    run_sweep(build_plan(CONFIG, seeds=[0], certify=False), root=root, progress=False)  # seed 0's cells only
    journal = root / "partial" / "0123abcd"  # a cell of jt seed 1 under way, one batch finished
    journal.mkdir(parents=True)
    (journal / "identity.json").write_text(json.dumps({"label": "jt", "seed": "1", "dataset": "synthav"}))
    (journal / "batch-000000.safetensors").write_bytes(b"")
    units = sweep_status(plan, root)
    assert by_unit(units) == {
        ("jt", 0): ("under way", ROWS, ROWS, ("empirical",), 0),
        ("jt", 1): ("under way", 0, ROWS, ("empirical",), 1),
        ("jt_small", 0): ("under way", ROWS, ROWS, ("empirical",), 0),
        ("jt_small", 1): ("not started", 0, ROWS, ("empirical",), 0),
    }
    assert sum(u.rows for u in units) == len(read_rows(root / "results.csv"))
    assert "| jt | 1 | under way | 0/4 | empirical | 1 (1 batches) |" in status_table(units)
    # a shard's units only, as `sweep --shard I/N` runs them
    assert [(u.label, u.seed) for u in sweep_status(plan, root, shard=(1, 2))] == [
        (e.label, s) for e, s in plan.work_units((1, 2))
    ]

    journal.joinpath("batch-000000.safetensors").unlink()
    journal.joinpath("identity.json").unlink()
    journal.rmdir()
    run_sweep(plan, root=root, progress=False)
    units = sweep_status(plan, root)
    assert {u.state for u in units} == {"done"} and all(u.certificates == () for u in units)
    assert sum(u.rows for u in units) == len(read_rows(root / "results.csv")) == 4 * ROWS
    assert status_table(units).endswith("4 models: 4 done, 0 under way, 0 not started; rows 16/16")

    # a changed setting is another configuration: its rows and certificates are not this plan's
    changed = build_plan({**CONFIG, "set": {"epochs": 2}})
    assert {(u.state, u.rows, u.certificates) for u in sweep_status(changed, root)} == {
        ("not started", 0, ("empirical",))
    }
    # a certificate of other settings is to be made again (the sweep would replace it), with the sweep's warning
    other = build_plan({**CONFIG, "certify": {**CONFIG["certify"], "radii": [0, 0.2]}})
    assert {u.certificates for u in sweep_status(other, root)} == {("empirical",)}


def test_status_table_says_what_is_left():
    units = [
        UnitStatus("msefm", 0, 2, 28, ("empirical", "smoothing[v,a+v]"), journals=1, batches=3),
        UnitStatus("jt", 0, 28, 28, ()),
        UnitStatus("jt", 1, 0, 28, ("empirical",)),
    ]
    table = status_table(units)
    assert "| msefm | 0 | under way | 2/28 | empirical, smoothing[v,a+v] | 1 (3 batches) |" in table
    assert "| jt | 0 | done | 28/28 | — | 0 |" in table
    assert table.endswith("3 models: 1 done, 1 under way, 1 not started; rows 30/84")
    assert UnitStatus("jt", 0, 28, 28, ("empirical",)).state == "under way"  # rows done, certificate not
    assert pd.Series([u.state for u in units]).tolist() == ["under way", "done", "not started"]
