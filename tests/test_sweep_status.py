"""`sweep --status`: how far a sweep has got, counted as the sweep decides what is done, without training."""

import json
import shutil

import pytest
import yaml

from mmrobust_bench.bench.environment import row_provenance
from mmrobust_bench.bench.result_rows import frame_keys
from mmrobust_bench.bench.results import read_rows
from mmrobust_bench.bench.sweep import build_plan, run_sweep
from mmrobust_bench.bench.sweep_plan import validate_plan
from mmrobust_bench.bench.sweep_status import SweepStatus, UnitStatus, status_table, stored_model, sweep_status
from mmrobust_bench.cli import main

CONFIG = {
    "dataset": "synthav",
    "dataset_set": {"n_train": 256, "n_test": 48},
    "seeds": [0, 1],
    "set": {"epochs": 1},
    "defenses": ["jt", {"defense": "jt", "label": "jt_small", "certify": {"test_samples": 16}}],
    # the second block repeats fgm on a at 0.5: that row belongs to the first block and is counted once
    "grid": [
        {"attacks": ["fgm"], "modalities": ["v", "a", "all", "any"], "eps": [0.5]},
        {"attacks": ["fgm"], "modalities": ["a"], "eps": [0.5, 1.0]},
        {"attacks": ["missing"], "modalities": ["a"]},
    ],
    "certify": {"radii": [0, 0.1], "honesty_steps": 0, "train_samples": 64},
}
ROWS = 1 + 4 + 1 + 1  # clean, fgm on v, a, all and any at 0.5, fgm on a at 1, missing on a


def by_unit(units: list[UnitStatus]) -> dict:
    return {(u.label, u.seed): (u.state, u.rows, u.expected_rows, u.certificates, u.journals) for u in units}


def fake_journal(folder, label: str, seed: int, sha: str, **provenance) -> None:
    """A cell under way with one finished batch, as ``bench.cell_journal`` writes it (identity + batch file)."""
    folder.mkdir(parents=True)
    identity = {**row_provenance(), **provenance, "label": label, "seed": str(seed), "checkpoint_sha256": sha}
    (folder / "identity.json").write_text(json.dumps(identity))
    (folder / "batch-000000.safetensors").write_bytes(b"")


@pytest.mark.slow
def test_status_follows_a_sweep_from_nothing_to_done(tmp_path, capsys):
    config = tmp_path / "sweep.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    root = tmp_path / "root"
    assert main(["sweep", "--config", str(config), "--root", str(root), "--status"]) == 0
    out = capsys.readouterr().out
    assert "| jt_small | 1 | not started | to train | 0/7 | empirical | 0 |" in out
    assert out.strip().endswith("4 models: 0 done, 0 under way, 4 not started; rows 0/28")
    assert not (root / "results.csv").exists() and not (root / "checkpoints").exists()  # nothing trained or measured

    plan = build_plan(CONFIG)
    run_sweep(build_plan(CONFIG, seeds=[0], certify=False), root=root, progress=False)  # seed 0's cells only
    sha, _ = stored_model(plan, validate_plan(plan, root), plan.defenses[0], 0, root)
    assert sha == read_rows(root / "results.csv")["checkpoint_sha256"].iloc[0]
    fake_journal(root / "partial" / "a", "jt", 0, sha)  # a cell under way here
    fake_journal(root / "partial" / "b", "jt", 0, sha, device_name="Another CPU")  # made elsewhere: starts again
    stored = read_rows(root / "results.csv")
    clean = stored[(stored["label"] == "jt") & (stored["seed"] == 0)].iloc[:1]
    rows = [[str(v) for v in key] for key in frame_keys(clean)]
    config_hash = str(clean["config_hash"].iloc[0])
    # its rows are stored: no run resumes it (a run stopped between storing the rows and removing the journal)
    fake_journal(root / "partial" / "c", "jt", 0, sha, dataset="synthav", config_hash=config_hash, rows=rows)
    status = sweep_status(plan, root)
    units = status.units
    assert by_unit(units) == {
        ("jt", 0): ("under way", ROWS, ROWS, ("empirical",), 1),
        ("jt", 1): ("not started", 0, ROWS, ("empirical",), 0),
        ("jt_small", 0): ("under way", ROWS, ROWS, ("empirical",), 0),
        ("jt_small", 1): ("not started", 0, ROWS, ("empirical",), 0),
    }
    assert sum(u.rows for u in units) == len(read_rows(root / "results.csv"))
    assert "| jt | 0 | under way | stored | 7/7 | empirical | 1 (1 batches) |" in status_table(status)
    assert status.orphan_journals == 1 and "1 journals of cells no run of this sweep resumes" in status_table(status)
    # a shard's units only, as `sweep --shard I/N` runs them
    assert [(u.label, u.seed) for u in sweep_status(plan, root, shard=(1, 2)).units] == [
        (e.label, s) for e, s in plan.work_units((1, 2))
    ]

    shutil.rmtree(root / "partial")
    run_sweep(plan, root=root, progress=False)
    status = sweep_status(plan, root)
    units = status.units
    assert {u.state for u in units} == {"done"} and all(u.certificates == () for u in units)
    assert sum(u.rows for u in units) == len(read_rows(root / "results.csv")) == 4 * ROWS
    assert status_table(status).endswith("4 models: 4 done, 0 under way, 0 not started; rows 28/28")

    # a changed setting is another configuration: its rows and certificates are not this plan's
    changed = build_plan({**CONFIG, "set": {"epochs": 2}})
    assert {(u.state, u.rows, u.certificates) for u in sweep_status(changed, root).units} == {
        ("not started", 0, ("empirical",))
    }
    # a certificate of other settings is to be made again (the sweep would replace it)
    other = build_plan({**CONFIG, "certify": {**CONFIG["certify"], "radii": [0, 0.2]}})
    assert {u.certificates for u in sweep_status(other, root).units} == {("empirical",)}
    # rows without their checkpoint (a fresh clone: checkpoints are not committed) are not done: the sweep would
    # train the model again
    for folder in (root / "checkpoints").glob("*/*/*"):
        if json.loads((folder / "config.json").read_text())["seed"] == 1:
            shutil.rmtree(folder)
    status = sweep_status(plan, root)
    units = status.units
    assert {(u.seed, u.state, u.rows) for u in units} == {(0, "done", ROWS), (1, "model not stored", ROWS)}
    table = status_table(status)
    assert "| jt | 1 | model not stored | to train | 7/7 | — | 0 |" in table
    assert "4 models: 2 done, 0 under way, 0 not started, 2 model not stored; rows 28/28" in table
    assert "model not stored: the sweep would train it again" in table


def test_status_table_says_what_is_left():
    units = [
        UnitStatus("msefm", 0, 2, 28, ("empirical", "smoothing[v,a+v]"), journals=1, batches=3),
        UnitStatus("jt", 0, 28, 28, ()),
        UnitStatus("jt", 1, 0, 28, ("empirical",)),
    ]
    table = status_table(SweepStatus(units))
    assert "| msefm | 0 | under way | stored | 2/28 | empirical, smoothing[v,a+v] | 1 (3 batches) |" in table
    assert "| jt | 0 | done | stored | 28/28 | — | 0 |" in table
    assert table.endswith("3 models: 1 done, 1 under way, 1 not started; rows 30/84")
    assert UnitStatus("jt", 0, 28, 28, ("empirical",)).state == "under way"  # rows done, certificate not
    assert UnitStatus("jt", 0, 0, 28, ("empirical",), model_stored=False).state == "not started"
    assert "journals" not in table
    assert status_table(SweepStatus(units, orphan_journals=2)).endswith(
        "2 journals of cells no run of this sweep resumes (other settings, or their rows are stored): "
        "sweep --retire-stale moves them to retired/"
    )
