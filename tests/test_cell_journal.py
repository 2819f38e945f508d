"""Cell journals: a sweep cell stopped part-way resumes at its first unfinished batch and stores exactly the rows of an
uninterrupted run; a journal of another measurement, or of other samples, is never read."""

import pandas as pd
import pytest
import torch

import mmrobust_bench.bench.evaluate as evaluate_module
import mmrobust_bench.bench.sweep_units as sweep_module
from mmrobust_bench.bench.cell_journal import JOURNAL_DIR, CellJournal
from mmrobust_bench.bench.evaluate import BatchOutcome
from mmrobust_bench.bench.sweep import build_plan, run_sweep

SAMPLES, BATCH = 48, 16  # three batches a cell

CONFIG = {
    "dataset": "synthav",
    "dataset_set": {"n_train": 128, "n_test": SAMPLES},
    "seeds": [0],
    "set": {"epochs": 1},
    "defenses": ["jt"],
    "batch_size": BATCH,
    "threads": 1,
    # random starts and a per-sample ε grid: a resumed batch must draw what it drew the first time
    "grid": [
        {
            "attacks": ["torchattacks:PGDL2"],
            "attack_set": {"steps": 3, "random_start": True},
            "modalities": ["a"],
            "eps": [0.5],
        },
        {
            "attacks": ["autoattack"],
            "attack_set": {"version": "fast", "members": "apgd-ce"},
            "modalities": ["all"],
            "eps": [0.5],
        },
    ],
}

MEASURED = ["attack", "attack_config", "modality", "eps", "n", "accuracy", "flags", "outcomes", "details"]


def _rows(root):
    rows = pd.read_csv(root / "results.csv", keep_default_na=False)
    return rows[[c for c in MEASURED if c in rows]].reset_index(drop=True)


class Stop(Exception):
    """Stands for a job's time limit arriving mid-cell."""


def counting(monkeypatch, stop_at=None):
    """Count attacked batches; raise :class:`Stop` when the ``stop_at``-th batch is about to be attacked."""
    calls = []
    real = evaluate_module.attack_batch

    def attack_batch(*args, **kwargs):
        calls.append(1)
        if stop_at is not None and len(calls) == stop_at:
            raise Stop
        return real(*args, **kwargs)

    monkeypatch.setattr(evaluate_module, "attack_batch", attack_batch)
    return calls


def test_a_cell_stopped_mid_way_resumes_at_its_next_batch_and_matches_an_uninterrupted_run(tmp_path, monkeypatch):
    plan = build_plan(CONFIG, certify=False)
    whole = tmp_path / "whole"
    calls = counting(monkeypatch)
    run_sweep(plan, root=whole, progress=False)
    assert len(calls) == 6  # two cells of three batches
    assert not (whole / JOURNAL_DIR).exists()  # journals go once their rows are stored

    stopped = tmp_path / "stopped"
    counting(monkeypatch, stop_at=5)  # the second cell's second batch
    with pytest.raises(Stop):
        run_sweep(plan, root=stopped, progress=False)
    assert list(_rows(stopped)["attack"]) == ["clean", "torchattacks:PGDL2"]  # the first cell is stored
    assert len(list((stopped / JOURNAL_DIR).glob("*/batch-*.safetensors"))) == 1  # the second's first batch

    calls = counting(monkeypatch)
    run_sweep(plan, root=stopped, progress=False)
    assert len(calls) == 2  # only the two batches not finished
    pd.testing.assert_frame_equal(_rows(stopped), _rows(whole))
    assert "apgd-ce" in _rows(stopped)["details"].iloc[-1]  # the ensemble's report, summed over restored batches
    assert not (stopped / JOURNAL_DIR).exists()


def test_the_validity_checks_of_a_stopped_cell_are_not_run_again(tmp_path, monkeypatch):
    plan = build_plan({**CONFIG, "grid": CONFIG["grid"][:1]}, certify=False)
    checked = []
    real_check = sweep_module.check_attack

    def check_attack(*args, **kwargs):
        checked.append(1)
        return real_check(*args, **kwargs)

    def stop(*args, **kwargs):
        raise Stop

    monkeypatch.setattr(sweep_module, "check_attack", check_attack)
    real_append = sweep_module._append_on_main
    monkeypatch.setattr(
        sweep_module,
        "_append_on_main",
        lambda path, rows, **kw: stop() if rows[0].attack != "clean" else real_append(path, rows, **kw),
    )
    with pytest.raises(Stop):  # measured and checked, stopped before its rows were written
        run_sweep(plan, root=tmp_path, progress=False)
    assert len(checked) == 1
    monkeypatch.setattr(sweep_module, "_append_on_main", real_append)
    calls = counting(monkeypatch)
    run_sweep(plan, root=tmp_path, progress=False)
    assert calls == [] and len(checked) == 1
    assert list(_rows(tmp_path)["attack"]) == ["clean", "torchattacks:PGDL2"]


IDENTITY = {"rows": [["synthav", "jt", "0", "pgd_l2", "0.5"]], "batch_size": 16, "samples": 48, "threads": 1}


def test_a_journal_is_read_only_for_its_own_cell_and_samples(tmp_path, caplog):
    labels = torch.tensor([3, 1, 4, 1])
    hits = torch.tensor([[True, False, True, True]])
    journal = CellJournal.open(tmp_path, IDENTITY)
    journal.store_batch(2, labels, BatchOutcome(hits, [1.5], [{"breaks": {"apgd-ce": 1}}], [1]))
    stored = CellJournal.open(tmp_path, IDENTITY).batch(2, labels)
    assert stored is not None and torch.equal(stored.hits, hits)
    assert stored.seconds == [1.5] and stored.details == [{"breaks": {"apgd-ce": 1}}] and stored.non_finite == [1]
    assert CellJournal.open(tmp_path, IDENTITY).batch(1, labels) is None  # not stored
    assert CellJournal.open(tmp_path, {**IDENTITY, "batch_size": 8}).batch(2, labels) is None  # another measurement
    assert CellJournal.open(tmp_path, IDENTITY).batch(2, torch.tensor([3, 1, 4, 2])) is None  # other samples
    assert "stored for other samples" in caplog.text
    # a damaged file is measured again, never trusted
    path = next(journal.folder.glob("batch-*.safetensors"))
    path.write_bytes(b"not safetensors")
    assert CellJournal.open(tmp_path, IDENTITY).batch(2, labels) is None
    assert "unreadable" in caplog.text
    journal.discard()
    assert not (tmp_path / JOURNAL_DIR).exists()


def test_a_journal_that_cannot_be_written_costs_the_resume_not_the_measurement(tmp_path, caplog):
    """A worker that finished the same cell removed the folder, or the disk is full: the batch is measured all the
    same, with a warning."""
    journal = CellJournal.open(tmp_path, IDENTITY)
    journal.folder.parent.mkdir(parents=True)
    journal.folder.write_text("a file where the folder goes")  # every write under it fails
    labels = torch.tensor([0, 1])
    journal.store_batch(0, labels, BatchOutcome(torch.tensor([[True, False]]), [0.1], [None], [0]))
    journal.store_checks([])
    assert "could not keep batch 0" in caplog.text and "could not keep the validity checks" in caplog.text
    assert journal.batch(0, labels) is None


def test_a_cell_resumed_on_another_machine_is_measured_again(tmp_path, monkeypatch):
    """The journal's identity holds the machine's provenance (CPU capability, torch build, device name): batches
    kept on one node are not mixed into a row finished on another."""
    plan = build_plan({**CONFIG, "grid": CONFIG["grid"][:1]}, certify=False)
    counting(monkeypatch, stop_at=2)
    with pytest.raises(Stop):
        run_sweep(plan, root=tmp_path, progress=False)
    real = sweep_module.row_provenance
    monkeypatch.setattr(sweep_module, "row_provenance", lambda device: {**real(device), "cpu_capability": "other"})
    calls = counting(monkeypatch)
    run_sweep(plan, root=tmp_path, progress=False)
    assert len(calls) == 3
    assert not (tmp_path / JOURNAL_DIR).exists()  # the first machine's journal went with the stored rows


def test_the_batch_size_in_the_rows_columns_leaves_a_journals_identity_as_it_was(tmp_path):
    """Rows record their batch size through the unit's shared columns; a journal names it once, as a number, so
    the journals of cells under way when the column came keep resuming."""
    from mmrobust_bench.bench.sweep_units import cell_journal

    common = {
        "dataset": "synthav",
        "label": "jt",
        "seed": 0,
        "checkpoint_sha256": "ab" * 32,
        "device": "cpu",
        "suite_version": "0",
    }
    keys = [("synthav", "jt", 0, "ab" * 32, "fgm", "fgm()", "a", "0.5", "l2")]
    before = cell_journal(tmp_path / "results.csv", common, keys, 100, 500)
    after = cell_journal(tmp_path / "results.csv", {**common, "batch_size": 100}, keys, 100, 500)
    assert before is not None and after is not None
    assert after.identity == before.identity and after.folder == before.folder
    assert before.identity["batch_size"] == 100
