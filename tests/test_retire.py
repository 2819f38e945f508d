"""Retiring rows of superseded configurations (``sweep --retire-stale``): found, moved whole, never lost."""

import pandas as pd
import pytest

from mmrobust_bench.bench import retire as retire_mod
from mmrobust_bench.bench.retire import entry_config_hashes, retire_table, stale_mask
from mmrobust_bench.bench.sweep import build_plan, run_sweep
from mmrobust_bench.cli import main
from mmrobust_bench.data import build_dataset

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {
    "dataset": "synthav",
    "dataset_set": {"n_train": 128, "n_test": 48},
    "seeds": [0],
    "grid": [{"attacks": ["missing"], "modalities": ["a"]}],
    "certify": {"radii": [0, 0.1], "honesty_steps": 0, "train_samples": 32},
}


def _config(epochs: int) -> dict:
    return {
        **TINY,
        "set": {"epochs": epochs},
        "defenses": ["jt", {"defense": "jt", "label": "jt_kept", "set": {"epochs": 1}}],
    }


def test_stale_mask_reads_results_and_certificate_tables_alike():
    expected = {"jt": "aaaa", "crmt_jt_step1_only": "bbbb"}
    results = pd.DataFrame(
        {
            "dataset": ["synthav", "synthav", "synthav", "other", "synthav", "synthav"],
            "defense": ["jt", "jt", "crmt_jt", "jt", "gb", "jt"],
            "label": ["jt", "", "crmt_jt_step1_only", "jt", "gb", "jt"],
            "config_hash": ["aaaa", "cccc", "cccc", "cccc", "cccc", None],
        }
    )
    # current; blank label reads as its defense (stale); a variant by its label; another dataset and a label
    # the sweep does not hold are never touched; a blank hash cannot be shown to match
    assert stale_mask(results, "synthav", expected).tolist() == [False, True, True, False, False, True]
    certified = pd.DataFrame(
        {
            "dataset": ["synthav"] * 3,
            "defense": ["jt", "crmt_jt_step1_only", "gb"],
            "defense_id": ["jt", "crmt_jt", "gb"],
            "config_hash": ["aaaa", "bbbb", "x"],
        }
    )
    assert stale_mask(certified, "synthav", expected).tolist() == [False, False, False]
    assert stale_mask(certified.assign(config_hash="zz"), "synthav", expected).tolist() == [True, True, False]
    assert not stale_mask(pd.DataFrame(), "synthav", expected).any()


def test_a_crash_between_the_two_writes_loses_no_row(tmp_path, monkeypatch):
    """The retired copy is written first: a failure before the live table is rewritten duplicates, never drops."""
    live = tmp_path / "results.csv"
    frame = pd.DataFrame(
        {
            "dataset": ["synthav"] * 2,
            "defense": ["jt", "jt"],
            "label": ["jt", "jt"],
            "config_hash": ["old", "new"],
            "accuracy": [0.5, 0.75],
        }
    )
    frame.to_csv(live, index=False)

    real_rewrite = retire_mod.rewrite_rows

    def crash(path, update, any_table):
        if path != live:  # the retired copy is written for real
            return real_rewrite(path, update, any_table=any_table)
        update(pd.read_csv(path))
        raise OSError("disk full")

    monkeypatch.setattr(retire_mod, "rewrite_rows", crash)
    with pytest.raises(OSError):
        retire_table(live, "synthav", {"jt": "new"}, tmp_path / "retired", apply=True)
    pd.testing.assert_frame_equal(pd.read_csv(live), frame)
    assert pd.read_csv(tmp_path / "retired" / "results.csv")["config_hash"].tolist() == ["old"]


@pytest.mark.slow
def test_a_changed_setting_is_reported_then_retired_whole(tmp_path, capsys):
    """A YAML that changes one entry's schedule: the old rows are reported, then moved with every column."""
    first = run_sweep(build_plan(_config(1)), root=tmp_path, progress=False)
    assert first.evaluated_rows == 4 and first.certified == 2 and first.retired.total == 0
    old = {name: pd.read_csv(tmp_path / name) for name in ("results.csv", "certified.csv", "eta_pairs.csv")}
    ds = build_dataset("synthav", cache_dir=tmp_path / "datasets", n_train=128, n_test=48)
    # the hash each entry resolves to without training is the one its rows carry
    assert entry_config_hashes(build_plan(_config(1)), ds) == dict(
        old["results.csv"].groupby("label")["config_hash"].first()
    )

    changed = build_plan(_config(2))  # jt now trains 2 epochs; jt_kept pins 1 epoch and keeps its rows
    reported = run_sweep(changed, root=tmp_path, progress=False)
    stale = {path.name: n for path, n in reported.retired.stale.items()}
    assert not reported.retired.applied
    assert stale == {
        name: int((frame["defense"] == "jt").sum() if name != "results.csv" else (frame["label"] == "jt").sum())
        for name, frame in old.items()
    }
    kept = pd.read_csv(tmp_path / "results.csv")  # without the flag nothing moves: both configurations stored
    assert kept[kept["label"] == "jt"]["config_hash"].nunique() == 2 and not (tmp_path / "retired").exists()

    path = tmp_path / "sweep.yaml"
    import yaml

    path.write_text(yaml.safe_dump(_config(2)))
    assert main(["sweep", "--config", str(path), "--root", str(tmp_path), "--no-progress", "--retire-stale"]) == 0
    out = capsys.readouterr().out
    assert "rows of other configurations (retired):" in out and "0 rows evaluated" in out
    new_hash = entry_config_hashes(changed, ds)["jt"]
    for name, before in old.items():
        retired = pd.read_csv(tmp_path / "retired" / name)
        live = pd.read_csv(tmp_path / name)
        labels = live["label"] if name == "results.csv" else live["defense"]
        gone = before[(before["label"] if name == "results.csv" else before["defense"]) == "jt"]
        # moved whole: the retired copy is exactly the old configuration's rows, every column kept
        pd.testing.assert_frame_equal(retired.reset_index(drop=True), gone.reset_index(drop=True), check_dtype=False)
        assert set(live[labels == "jt"]["config_hash"]) == {new_hash}
        kept_rows = live[labels == "jt_kept"].reset_index(drop=True)
        pd.testing.assert_frame_equal(
            kept_rows,
            before[(before["label"] if name == "results.csv" else before["defense"]) == "jt_kept"].reset_index(
                drop=True
            ),
            check_dtype=False,
        )
    again = run_sweep(changed, root=tmp_path, progress=False, retire=True)
    assert again.retired.total == 0 and again.evaluated_rows == 0


def _grid_config(grid: list, defenses: list) -> dict:
    return {**TINY, "set": {"epochs": 1}, "certify": None, "grid": grid, "defenses": defenses}


def test_rows_of_cells_the_grid_no_longer_holds_are_reported_then_retired(tmp_path, capsys):
    """A YAML that drops a radius and changes an attack's setting: the rows of the old cells are off the grid."""
    import yaml

    before_grid = [
        {"attacks": ["fgm"], "modalities": ["a"], "eps": [0.5, 1.0]},
        {"attacks": ["pgd_l2"], "attack_set": {"steps": 2}, "modalities": ["a"], "eps": [0.5]},
    ]
    after_grid = [
        {"attacks": ["fgm"], "modalities": ["a"], "eps": [0.5]},
        {"attacks": ["pgd_l2"], "attack_set": {"steps": 3}, "modalities": ["a"], "eps": [0.5]},
    ]
    kept_entry = {"defense": "jt", "label": "jt_kept", "set": {"epochs": 1}}
    first = run_sweep(build_plan(_grid_config(before_grid, ["jt", kept_entry])), root=tmp_path, progress=False)
    assert first.evaluated_rows == 8 and first.off_grid.total == 0  # clean, fgm × 2, pgd, for each model
    old = pd.read_csv(tmp_path / "results.csv")
    off = old[(old["label"] == "jt") & ((old["eps"] == 1.0) | (old["attack"] == "pgd_l2"))]
    assert len(off) == 2

    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(_grid_config(after_grid, ["jt"])))  # jt_kept is not this sweep's any more
    # a grid given on the command line narrows one run: nothing is called off the grid, nothing moves
    argv = ["sweep", "--config", str(path), "--root", str(tmp_path), "--no-progress"]
    assert main([*argv, "--attacks", "fgm", "--modalities", "a", "--eps", "0.5", "--retire-stale"]) == 0
    assert "grid no longer holds" not in capsys.readouterr().out
    assert len(pd.read_csv(tmp_path / "results.csv")) == len(old)

    reported = run_sweep(build_plan(_grid_config(after_grid, ["jt"])), root=tmp_path, progress=False)
    assert reported.evaluated_rows == 1 and not reported.off_grid.applied  # pgd at 3 steps is a new cell
    assert {p.name: n for p, n in reported.off_grid.stale.items()} == {"results.csv": 2}
    assert not (tmp_path / "retired").exists()

    assert main([*argv, "--retire-stale"]) == 0
    out = capsys.readouterr().out
    assert (
        "rows of cells the grid no longer holds or of another batch size (retired): 2 in" in out
        and "0 rows evaluated" in out
    )
    retired = pd.read_csv(tmp_path / "retired" / "results.csv")
    pd.testing.assert_frame_equal(retired.reset_index(drop=True), off.reset_index(drop=True), check_dtype=False)
    live = pd.read_csv(tmp_path / "results.csv")
    assert len(live) == len(old) + 1 - 2
    assert len(live[live["label"] == "jt_kept"]) == 4  # another entry's rows are never touched
    mine = live[live["label"] == "jt"]
    assert sorted(mine["attack_config"].astype(str)) == sorted(["clean", "fgm", "pgd_l2(steps=3, step_ratio=0.3333)"])
    again = run_sweep(build_plan(_grid_config(after_grid, ["jt"])), root=tmp_path, progress=False, retire=True)
    assert again.off_grid.total == 0 and again.evaluated_rows == 0


def test_journals_no_run_of_the_sweep_resumes_are_reported_then_retired(tmp_path, capsys):
    """Journals of cells off the grid, of stored cells, of another batch size or configuration are orphans; a
    journal of a planned cell under way, and another entry's, stay."""
    import yaml

    from mmrobust_bench.bench.cell_journal import IDENTITY_FILE, JOURNAL_DIR
    from mmrobust_bench.bench.result_rows import cell_key
    from mmrobust_bench.bench.retire_journals import retire_journals
    from mmrobust_bench.bench.sweep_units import cell_journal

    grid = [{"attacks": ["fgm"], "modalities": ["a"], "eps": [0.5]}]
    config = _grid_config(grid, ["jt"])
    run_sweep(build_plan(config), root=tmp_path, progress=False)
    results = tmp_path / "results.csv"
    clean = pd.read_csv(results).iloc[0]
    columns = ("dataset", "defense", "label", "seed", "checkpoint_sha256", "config_hash", "device", "suite_version")
    common = {**{c: clean[c] for c in columns}, "dtype": "float32"}

    def journal(eps: float, *, batch_size: int = 500, **change: str) -> str:
        mine = {**common, **change}
        key = cell_key(mine["dataset"], mine["label"], mine["seed"], mine["checkpoint_sha256"], "fgm", "fgm", "a", eps)
        made = cell_journal(results, mine, [key], batch_size, 48)
        made.store_checks([])  # writes the identity, as a cell's first batch does
        return made.folder.name

    planned = _grid_config([{"attacks": ["fgm"], "modalities": ["a"], "eps": [0.25, 0.5]}], ["jt"])
    names = {
        "under way": journal(0.25),
        "other entry": journal(1.0, label="gb"),
        "off grid": journal(1.0),
        "stored": journal(0.5),
        "batch size": journal(0.25, batch_size=100),
        "configuration": journal(0.25, config_hash="0123456789ab"),
    }
    orphans = {"off grid", "stored", "batch size", "configuration"}
    plan = build_plan(planned)
    ds = build_dataset("synthav", cache_dir=tmp_path / "datasets", n_train=128, n_test=48)
    expected = entry_config_hashes(plan, ds)
    partial = tmp_path / JOURNAL_DIR

    def retire(*, apply: bool, grid: bool = True):
        kw = {"root": tmp_path, "results_path": results}
        return retire_journals(plan, ds, expected, apply=apply, grid=grid, **kw)

    # a grid from the command line: only the configuration and the stored rows can call a journal an orphan
    assert retire(apply=False, grid=False).total == 2
    found = retire(apply=False)
    assert found.total == len(orphans) and not (tmp_path / "retired").exists()
    assert len(list(partial.glob(f"*/{IDENTITY_FILE}"))) == len(names)
    moved = retire(apply=True)
    assert moved.applied and moved.total == len(orphans)
    assert {p.name for p in partial.iterdir()} == {names[k] for k in names if k not in orphans}
    assert {p.name for p in (tmp_path / "retired" / JOURNAL_DIR).iterdir()} == {names[k] for k in orphans}
    assert retire(apply=True).total == 0

    # the CLI reports them once found and says where they went
    journal(1.0)
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(config))
    argv = ["sweep", "--config", str(path), "--root", str(tmp_path), "--no-progress"]
    assert main(argv) == 0
    assert "journals of cells no run of this sweep resumes (kept; --retire-stale moves them): 2 in" in (
        capsys.readouterr().out
    )  # the one off the grid and the one under way at eps 0.25, which this YAML's grid does not hold
    assert main([*argv, "--retire-stale"]) == 0
    assert "journals of cells no run of this sweep resumes (retired): 2 in" in capsys.readouterr().out
    assert {p.name for p in partial.iterdir()} == {names["other entry"]}


def test_rows_of_another_batch_size_are_reported_then_retired_and_measured_again(tmp_path):
    """A randomized attack reseeds per batch, so a row made at another batch size than the YAML's is another
    measurement: reported, moved by --retire-stale and measured again; a row that recorded none is kept."""
    grid = [{"attacks": ["pgd_l2"], "attack_set": {"steps": 2}, "modalities": ["a"], "eps": [0.5]}]
    config = {**_grid_config(grid, ["jt"]), "batch_size": 16}
    first = run_sweep(build_plan(config), root=tmp_path, progress=False)
    assert first.evaluated_rows == 2 and first.off_grid.total == 0
    stored = pd.read_csv(tmp_path / "results.csv")
    assert list(stored["batch_size"]) == [16, 16]
    # the clean row as a row written before the column existed: it says nothing about its batch size
    stored.loc[stored["attack"] == "clean", "batch_size"] = None
    stored.to_csv(tmp_path / "results.csv", index=False)

    resized = {**config, "batch_size": 24}
    from mmrobust_bench.bench.sweep_status import status_table, sweep_status

    status = sweep_status(build_plan(resized), tmp_path)
    assert status.other_batch_size_rows == 1
    assert "1 stored rows were measured at another batch size than the YAML's batch_size" in status_table(status)
    reported = run_sweep(build_plan(resized), root=tmp_path, progress=False)
    assert reported.evaluated_rows == 0 and not reported.off_grid.applied  # stored cells stay done until retired
    assert {p.name: n for p, n in reported.off_grid.stale.items()} == {"results.csv": 1}

    moved = run_sweep(build_plan(resized), root=tmp_path, progress=False, retire=True)
    assert moved.off_grid.applied and moved.off_grid.total == 1 and moved.evaluated_rows == 1
    retired = pd.read_csv(tmp_path / "retired" / "results.csv")
    assert list(retired["attack"]) == ["pgd_l2"] and list(retired["batch_size"]) == [16]
    live = pd.read_csv(tmp_path / "results.csv")
    assert sorted(zip(live["attack"], live["batch_size"].fillna(0).astype(int))) == [("clean", 0), ("pgd_l2", 24)]
    again = run_sweep(build_plan(resized), root=tmp_path, progress=False, retire=True)
    assert again.off_grid.total == 0 and again.evaluated_rows == 0
    assert sweep_status(build_plan(resized), tmp_path).other_batch_size_rows == 0


def test_retire_stale_with_status_moves_the_stale_rows_then_reports_and_measures_nothing(tmp_path, capsys):
    """``--retire-stale --status`` runs once before the processes of a parallel regeneration: it retires, prints
    where the sweep stands and trains or measures nothing; the sweep afterwards measures what was retired."""
    import yaml

    before_grid = [{"attacks": ["pgd_l2"], "attack_set": {"steps": 2}, "modalities": ["a"], "eps": [0.5]}]
    after_grid = [{"attacks": ["pgd_l2"], "attack_set": {"steps": 3}, "modalities": ["a"], "eps": [0.5]}]
    first = run_sweep(build_plan(_grid_config(before_grid, ["jt"])), root=tmp_path, progress=False)
    assert first.evaluated_rows == 2  # clean and the 2-step PGD
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(_grid_config(after_grid, ["jt"])))
    argv = ["sweep", "--config", str(path), "--root", str(tmp_path), "--no-progress"]

    assert main([*argv, "--retire-stale", "--status"]) == 0
    out = capsys.readouterr().out
    assert "rows of cells the grid no longer holds or of another batch size (retired): 1 in" in out
    assert "| jt | 0 | under way | stored | 1/2 |" in out and "rows evaluated" not in out
    live = pd.read_csv(tmp_path / "results.csv")
    assert list(live["attack"]) == ["clean"]  # the stale row moved and nothing new was measured
    assert list(pd.read_csv(tmp_path / "retired" / "results.csv")["attack"]) == ["pgd_l2"]

    assert main(argv) == 0
    assert "1 rows evaluated, 1 already present" in capsys.readouterr().out
