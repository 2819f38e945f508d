"""Hostile input, round two: a full disk, crafted checkpoints, a symlinked results file and careless API calls.

A full disk is simulated without privileges by making the low-level write (``os.replace``, safetensors'
``save_file``) fail with ENOSPC; what must hold: the message names the file, the rows measured are in a
fallback file (or printed), and the command line says it in one line without a traceback.
"""

from __future__ import annotations

import errno
import logging
import os
import re
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors import SafetensorError
from torch import nn

import mmrobust_bench as mmr
from mmrobust_bench.bench import checkpoints
from mmrobust_bench.bench.checkpoints import CheckpointKey, load_stage, save_stage
from mmrobust_bench.bench.results import (
    ResultRow,
    ResultsWriteError,
    append_rows,
    read_rows,
    replace_keyed_rows,
    rewrite_rows,
)
from mmrobust_bench.cli import main
from mmrobust_bench.cli.common import expected_error_message
from mmrobust_bench.io import atomic_write_text

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

ENOSPC = os.strerror(errno.ENOSPC)  # "No space left on device"
TINY = ["--threads", "1", "--set", "epochs=1", "--dataset-set", "n_train=300", "--dataset-set", "n_test=60"]


def one_error_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.startswith("mmrobust-bench: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def fail_replace(monkeypatch, target: Path) -> None:
    """``os.replace`` onto ``target`` fails as on a full disk (no file named, as write() reports it)."""
    real = os.replace

    def replace(src, dst, *args, **kwargs):
        if Path(dst) == Path(target):
            raise OSError(errno.ENOSPC, ENOSPC)
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)


def row(attack: str = "pgd_l2", eps: float = 0.5, accuracy: float = 0.25) -> ResultRow:
    return ResultRow(
        dataset="synthav",
        defense="jt",
        seed=0,
        checkpoint_sha256="abc",
        config_hash="h",
        attack=attack,
        attack_config="steps=4",
        library="native",
        library_version="1",
        modality="a",
        norm="l2",
        eps=eps,
        n=8,
        accuracy=accuracy,
        wall_seconds=0.1,
        device="cpu",
        suite_version="1",
    )


# ----------------------------------------------------------------------------------------- 7. a full disk


@pytest.mark.parametrize("failure", ["write names no file", "rename names the temporary", "safetensors"])
def test_a_failed_atomic_write_names_the_file_asked_for(tmp_path, monkeypatch, failure):
    target = tmp_path / "out" / "file.txt"
    if failure == "write names no file":
        fail_replace(monkeypatch, target)

        def write():
            return atomic_write_text(target, "x")
    elif failure == "rename names the temporary":
        real = os.replace

        def replace(src, dst):
            if Path(dst) == target:
                raise OSError(errno.ENOSPC, ENOSPC, src)
            return real(src, dst)

        monkeypatch.setattr(os, "replace", replace)

        def write():
            return atomic_write_text(target, "x")
    else:

        def save_file(*args, **kwargs):
            raise SafetensorError(f"Error while serializing: I/O error: {ENOSPC} (os error 28)")

        monkeypatch.setattr(checkpoints, "save_file", save_file)
        target = tmp_path / "ck" / "final.safetensors"
        key = CheckpointKey("d", {}, "jt", {}, {}, 0)

        def write():
            return save_stage(tmp_path / "ck", "final", nn.Linear(2, 2), {}, key)

    with pytest.raises(OSError) as caught:
        write()
    assert (caught.value.errno, caught.value.filename) == (errno.ENOSPC, str(target))
    assert expected_error_message(caught.value) == f"{ENOSPC}: {target} (check the path and free space)"
    assert sorted(p.name for p in target.parent.iterdir()) == []  # no temporary left behind


def test_a_full_disk_keeps_the_new_rows_in_a_named_fallback_file(tmp_path, monkeypatch):
    store = tmp_path / "runs" / "results.csv"
    append_rows(store, [row(eps=0.25)])
    before = store.read_bytes()
    monkeypatch.chdir(tmp_path)
    fail_replace(monkeypatch, store)
    with pytest.raises(ResultsWriteError) as caught:
        append_rows(store, [row(eps=0.25), row(eps=0.5, accuracy=0.125), row(eps=1.0, accuracy=0.0)])
    fallback = caught.value.fallback
    assert fallback.parent == tmp_path and re.fullmatch(
        r"mmrobust-unsaved-rows-results-\d{8}T\d{6}-\d+\.csv", fallback.name
    )
    assert str(caught.value) == (
        f"cannot write {store}: {ENOSPC}; the 2 row(s) measured now were saved to {fallback}. Free space or fix the "
        f"permissions, then append that file's rows to {store} (or rerun to measure them again)"
    )
    saved = read_rows(fallback)
    assert saved["eps"].tolist() == [0.5, 1.0] and saved["accuracy"].tolist() == [0.125, 0.0]
    assert store.read_bytes() == before  # the store is as it was
    monkeypatch.undo()
    assert len(append_rows(store, saved)) == 3  # the fallback file appends as it is


def test_without_a_writable_place_the_rows_are_printed(tmp_path, monkeypatch, capsys):
    store = tmp_path / "results.csv"
    gone = tmp_path / "gone"
    gone.mkdir()
    monkeypatch.chdir(gone)
    gone.rmdir()  # no current directory
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "missing"))
    fail_replace(monkeypatch, store)
    with pytest.raises(ResultsWriteError) as caught:
        append_rows(store, [row(accuracy=0.375)])
    assert caught.value.fallback is None
    assert "the 1 row(s) measured now are printed above (no writable place for a file)" in str(caught.value)
    printed = capsys.readouterr().err.splitlines()
    assert printed[0].startswith("dataset,defense,seed,") and ",0.375," in printed[1] and len(printed) == 2


def test_certificate_rows_are_kept_too(tmp_path, monkeypatch):
    table = tmp_path / "certified.csv"
    monkeypatch.chdir(tmp_path)
    fail_replace(monkeypatch, table)
    new = pd.DataFrame({"defense": ["jt"], "radius": [0.5], "certified_accuracy": [0.75]})
    with pytest.raises(ResultsWriteError, match=f"cannot write {re.escape(str(table))}: {ENOSPC}"):
        replace_keyed_rows(table, new, ["defense"])
    assert pd.read_csv(next(tmp_path.glob("mmrobust-unsaved-rows-certified-*.csv"))).equals(new)


@pytest.mark.slow
@pytest.mark.parametrize("full", ["results", "root"])
def test_a_full_disk_is_one_line_through_the_cli(tmp_path, monkeypatch, capsys, full):
    root, results = tmp_path / "runs", tmp_path / "rows.csv"
    monkeypatch.chdir(tmp_path)
    if full == "results":
        fail_replace(monkeypatch, results)
    else:

        def save_file(*args, **kwargs):
            raise SafetensorError(f"Error while serializing: I/O error: {ENOSPC} (os error 28)")

        monkeypatch.setattr(checkpoints, "save_file", save_file)
    rc = main(
        [
            "run",
            "--defense",
            "jt",
            "--eps",
            "0.5,1",
            "--no-progress",
            "--root",
            str(root),
            "--results",
            str(results),
            *TINY,
        ]
    )
    line = one_error_line(capsys.readouterr().err)
    assert rc == 2
    if full == "results":
        fallback = next(tmp_path.glob("mmrobust-unsaved-rows-rows-*.csv"))
        assert line == (
            f"mmrobust-bench: error: cannot write {results}: {ENOSPC}; the 3 row(s) measured now were "
            f"saved to {fallback}. Free space or fix the permissions, then append that file's rows to "
            f"{results} (or rerun to measure them again)"
        )
        saved = read_rows(fallback)
        assert saved["attack"].tolist() == ["clean", "pgd_l2", "pgd_l2"] and saved["eps"].tolist()[1:] == [0.5, 1.0]
        assert not results.exists()
    else:
        resume = next(root.glob("checkpoints/synthav/jt/*/")) / "resume.safetensors"  # the first checkpoint write
        assert line == f"mmrobust-bench: error: {ENOSPC}: {resume} (check the path and free space)"


# ----------------------------------------------------------------------------------------- 8. crafted checkpoints


class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.enc = nn.Linear(4, 3)
        self.head = nn.Linear(3, 2)


class _Crafted(nn.Module):
    """Stands for any module: its state dict is the one given (what a crafted checkpoint holds)."""

    def __init__(self, state: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.state = state

    def state_dict(self, *args, **kwargs):
        return dict(self.state)


def _crafted(model: nn.Module, damage: str) -> dict[str, torch.Tensor]:
    state = {k: v.clone() for k, v in model.state_dict().items()}
    if damage == "reshaped":
        state["head.weight"] = state["head.weight"].reshape(3, 2)
    elif damage == "removed":
        del state["enc.bias"]
    else:
        state["head.scale"] = torch.ones(2)
    return state


MISFIT = {
    "reshaped": "shape of head.weight (3, 2) where the model has (2, 3)",
    "removed": "missing enc.bias",
    "added": "unexpected head.scale",
}


@pytest.mark.parametrize("damage", list(MISFIT))
def test_a_crafted_checkpoint_with_a_consistent_sha_is_not_loaded(tmp_path, caplog, damage):
    model, key = _Tiny(), CheckpointKey("d", {}, "jt", {}, {}, 0)
    directory = tmp_path / key.digest
    save_stage(directory, "final", model, {}, key)
    assert load_stage(directory, "final", key, model) is not None
    save_stage(directory, "final", _Crafted(_crafted(model, damage)), {}, key)  # the suite's own writer: sha recorded
    assert load_stage(directory, "final", key) is not None  # checksum and key are consistent
    caplog.set_level(logging.WARNING)
    assert load_stage(directory, "final", key, model) is None
    assert caplog.messages == [
        f"not reusing {directory / 'final.safetensors'}: its tensors do not fit the model this "
        f"configuration builds ({MISFIT[damage]}); retraining"
    ]


@pytest.mark.slow
def test_training_rebuilds_a_crafted_checkpoint_with_a_warning(tmp_path, caplog):
    from mmrobust_bench.bench.api import train_defense

    options = {"n_train": 300, "n_test": 60}
    done = train_defense("jt", dataset_options=options, overrides={"epochs": 1}, root=tmp_path, progress=False)
    state = {k: v.clone() for k, v in done.model.state_dict().items()}
    name = next(k for k, v in state.items() if v.dim() == 2)
    state[name] = state[name].t().contiguous()
    for stage in ("stage1", "final"):
        save_stage(done.directory, stage, _Crafted(state), {}, done.key)
    caplog.set_level(logging.WARNING)
    again = train_defense("jt", dataset_options=options, overrides={"epochs": 1}, root=tmp_path, progress=False)
    assert not again.cached and not again.stage1_cached and again.sha256 == done.sha256
    assert sum("its tensors do not fit the model" in m for m in caplog.messages) == 2


# ----------------------------------------------------------------------------------------- 10. a symlinked store


@pytest.mark.parametrize("write", ["append_rows", "rewrite_rows", "replace_keyed_rows", "dangling link"])
def test_a_symlinked_results_file_is_written_through(tmp_path, write):
    shared = tmp_path / "shared" / "all-results.csv"
    shared.parent.mkdir()
    link = tmp_path / "run" / "results.csv"
    link.parent.mkdir()
    if write != "dangling link":
        append_rows(shared, [row(eps=0.25)])
    link.symlink_to(shared)
    if write in ("append_rows", "dangling link"):
        append_rows(link, [row(eps=0.5)])
    elif write == "rewrite_rows":
        rewrite_rows(link, lambda frame: pd.concat([frame, read_rows(shared).assign(eps=0.5)], ignore_index=True))
    else:
        replace_keyed_rows(link, read_rows(shared).assign(eps=0.5), ["eps"])
    assert link.is_symlink() and link.resolve() == shared
    expected = [0.5] if write == "dangling link" else [0.25, 0.5]
    assert read_rows(shared)["eps"].tolist() == expected
    assert (shared.parent / ".all-results.csv.lock").exists() and not (link.parent / ".results.csv.lock").exists()


# ----------------------------------------------------------------------------------------- 15. the public API

K = 3
N = 8


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.fa, self.fv = nn.Linear(4, K), nn.Linear(6, K)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=gen))

    def forward(self, a, v):
        return self.fa(a) + self.fv(v)


def _wrapped() -> mmr.WrappedModel:
    return mmr.wrap(_Net(), {"a": mmr.Modality((4,)), "v": mmr.Modality((6,), box=(0, 1))})


def _data(n: int = N) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return torch.randn(n, 4, generator=gen), torch.rand(n, 6, generator=gen), torch.randint(0, K, (n,), generator=gen)


def _loader(a, v, y, size: int = 4) -> list[tuple]:
    return [(a[i : i + size], v[i : i + size], y[i : i + size]) for i in range(0, len(y), size)]


A, V, Y = _data()
EVAL = {"attack": "pgd_l2", "modality": "a", "eps": [0.5], "check_flags": False}


def _read_only(tmp_path: Path) -> Path:
    path = tmp_path / "rows.csv"
    path.write_text("")
    path.chmod(0o444)
    return path


CASES = {
    "attack: empty batch": (
        lambda w, t: mmr.attack(w, (A[:0], V[:0]), Y[:0], modality="a", eps=0.5),
        ValueError,
        "the batch holds no samples (its first dimension is 0); leave empty batches out of the "
        "loader or pass at least one sample",
    ),
    "evaluate: empty batch": (
        lambda w, t: mmr.evaluate(w, [(A[:0], V[:0], Y[:0])], **EVAL),
        ValueError,
        "the batch holds no samples",
    ),
    "attack: numpy batch": (
        lambda w, t: mmr.attack(w, {"a": A.numpy(), "v": V.numpy()}, Y, modality="a", eps=0.5),
        TypeError,
        "modality 'a' is a ndarray, not a torch tensor; pass torch.from_numpy(x), or a "
        "DataLoader, which converts arrays",
    ),
    "evaluate: str batch": (
        lambda w, t: mmr.evaluate(w, [("audio", "video", Y)], **EVAL),
        TypeError,
        "modality 'a' is a str, not a torch tensor; pass a (batch, *shape) tensor of numbers",
    ),
    "attack: label beyond the logits": (
        lambda w, t: mmr.attack(w, (A, V), torch.full((N,), K), modality="a", eps=0.5),
        ValueError,
        "labels hold class 3 but the model gives 3 logits per sample (classes 0 to 2); fix the labels or the model's "
        "number of outputs",
    ),
    "evaluate: label beyond the logits": (
        lambda w, t: mmr.evaluate(w, _loader(A, V, Y + K), **EVAL),
        ValueError,
        "labels hold class",
    ),
    "smooth_certify: label beyond the logits": (
        lambda w, t: mmr.smooth_certify(w, _loader(A, V, Y + 5), n0=2, n=4),
        ValueError,
        "labels hold class",
    ),
    "attack: negative label": (
        lambda w, t: mmr.attack(w, (A, V), Y - 5, modality="a", eps=0.5),
        ValueError,
        "labels must be class indices >= 0, got -5",
    ),
    "attack: one label too few": (
        lambda w, t: mmr.attack(w, (A, V), Y[:-1], modality="a", eps=0.5),
        ValueError,
        "7 labels for a batch of 8 samples; give one per sample",
    ),
    "attack: text labels": (
        lambda w, t: mmr.attack(w, (A, V), "cat", modality="a", eps=0.5),
        TypeError,
        "labels must be class indices (a 1-D integer tensor, array or list), got str",
    ),
    "attack: target beyond the logits": (
        lambda w, t: mmr.attack(w, (A, V), Y, modality="a", eps=0.5, targets=torch.full((N,), 7)),
        ValueError,
        "targets hold class 7 but the model gives 3 logits",
    ),
    "attack: batch sizes differ": (
        lambda w, t: mmr.attack(w, (A, V[:5]), Y, modality="a", eps=0.5),
        ValueError,
        "the modalities have different batch sizes (a: 8, v: 5); give every modality one "
        "entry per sample (the same first dimension)",
    ),
    "smooth_certify: max_samples=0": (
        lambda w, t: mmr.smooth_certify(w, _loader(A, V, Y), max_samples=0),
        ValueError,
        "max_samples (None: every sample) must be >= 1, got 0",
    ),
    "smooth_certify: n=20.7": (
        lambda w, t: mmr.smooth_certify(w, _loader(A, V, Y), n=20.7),
        ValueError,
        "n must be an integer, got 20.7",
    ),
    "smooth_certify: seed=-5": (
        lambda w, t: mmr.smooth_certify(w, _loader(A, V, Y), seed=-5),
        ValueError,
        "seed must be >= 0, got -5",
    ),
    "evaluate: seed=-5": (
        lambda w, t: mmr.evaluate(w, _loader(A, V, Y), seed=-5, **EVAL),
        ValueError,
        "seed must be >= 0, got -5",
    ),
    "attack: seed=-5": (
        lambda w, t: mmr.attack(w, (A, V), Y, modality="a", eps=0.5, seed=-5),
        ValueError,
        "seed must be >= 0, got -5",
    ),
    "evaluate: results is a directory": (
        lambda w, t: mmr.evaluate(w, _loader(A, V, Y), results=str(t), **EVAL),
        ValueError,
        "is a directory; give a file path such as",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_careless_api_calls_get_one_line_naming_the_fix(tmp_path, case):
    call, kind, message = CASES[case]
    wrapped = _wrapped()
    before = {k: v.clone() for k, v in wrapped.state_dict().items()}
    with pytest.raises(kind) as caught:
        call(wrapped, tmp_path)
    assert type(caught.value) is kind and message in str(caught.value) and "\n" not in str(caught.value)
    assert all(torch.equal(before[k], v) for k, v in wrapped.state_dict().items())


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root ignores file permissions")
def test_evaluate_refuses_a_read_only_results_file_before_reading_the_loader(tmp_path):
    path = _read_only(tmp_path)
    read = []

    def loader():
        read.append(1)
        yield from _loader(A, V, Y)

    with pytest.raises(ValueError) as caught:
        mmr.evaluate(_wrapped(), loader(), results=str(path), **EVAL)
    assert str(caught.value) == f"results {path} is not writable; fix its permissions or give another file"
    assert read == []


def test_evaluate_takes_eps_as_text_as_attack_does():
    wrapped = _wrapped()
    as_number = mmr.evaluate(wrapped, _loader(A, V, Y), **{**EVAL, "eps": [0.5, 1.0]})
    as_text = mmr.evaluate(wrapped, _loader(A, V, Y), **{**EVAL, "eps": "0.5,1"})
    one = mmr.evaluate(wrapped, _loader(A, V, Y), **{**EVAL, "eps": "0.5"})
    assert as_text["eps"].tolist() == [0.0, 0.5, 1.0] and one["eps"].tolist() == [0.0, 0.5]
    assert as_text["accuracy"].tolist() == as_number["accuracy"].tolist()
    assert one["accuracy"].tolist() == as_number["accuracy"].tolist()[:2]


def test_float64_inputs_are_cast_to_the_model_dtype():
    wrapped = _wrapped()
    a64, v64 = A.double(), V.double()
    adv32 = mmr.attack(wrapped, (A, V), Y, modality="a", eps=0.5)
    adv64 = mmr.attack(wrapped, (a64, v64), Y, modality="a", eps=0.5)
    assert adv64[0].dtype == torch.float32 and torch.equal(adv64[0], adv32[0])  # attacked in the model's dtype
    assert adv64[1] is v64  # the unattacked modality is the caller's own tensor
    rows32 = mmr.evaluate(wrapped, _loader(A, V, Y), **EVAL)
    rows64 = mmr.evaluate(wrapped, _loader(a64, v64, Y), **EVAL)
    assert rows64["accuracy"].tolist() == rows32["accuracy"].tolist()
    smooth32 = mmr.smooth_certify(wrapped, _loader(A, V, Y), n0=4, n=16, batch=16)
    smooth64 = mmr.smooth_certify(wrapped, _loader(a64, v64, Y), n0=4, n=16, batch=16)
    assert smooth64.samples["radius"].equals(smooth32.samples["radius"])


def test_evaluate_keeps_the_rows_when_the_results_write_fails(tmp_path, monkeypatch):
    wrapped = _wrapped()
    expected = mmr.evaluate(wrapped, _loader(A, V, Y), **EVAL)
    results = tmp_path / "rows.csv"
    monkeypatch.chdir(tmp_path)
    fail_replace(monkeypatch, results)
    with pytest.raises(ResultsWriteError, match=f"^cannot write {re.escape(str(results))}: {ENOSPC}; the 2 row"):
        mmr.evaluate(wrapped, _loader(A, V, Y), results=str(results), **EVAL)
    saved = read_rows(next(tmp_path.glob("mmrobust-unsaved-rows-rows-*.csv")))
    assert saved["accuracy"].tolist() == expected["accuracy"].tolist() and not results.exists()


def test_certify_refuses_zero_test_samples_before_any_work(tmp_path, capsys):
    rc = main(["certify", "--test-samples", "0", "--root", str(tmp_path / "runs"), *TINY[2:]])  # no --threads
    assert rc == 2 and one_error_line(capsys.readouterr().err) == (
        "mmrobust-bench: error: --test-samples (test samples to certify; -1 = all) must be >= 1 (or -1), got 0"
    )
    assert not (tmp_path / "runs").exists()
