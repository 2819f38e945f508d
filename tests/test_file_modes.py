"""Files and folders the suite writes get the modes the umask allows (0644 and 0755 under 022), like any file
`open` or `mkdir` creates: checkpoints and dataset caches too, which safetensors writes through a 0600 file of
its own."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from mmrobust_bench.io import atomic_path


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("umask,expected", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_a_writer_that_replaces_the_temporary_file_still_gets_the_umask_mode(tmp_path, umask, expected):
    old = os.umask(umask)
    try:
        with atomic_path(tmp_path / "own.bin") as tmp:  # what safetensors does: its own 0600 file, renamed onto tmp
            fd, other = tempfile.mkstemp(dir=tmp_path)
            os.write(fd, b"x")
            os.close(fd)
            os.replace(other, tmp)
        with atomic_path(tmp_path / "tensors.safetensors") as tmp:
            save_file({"x": torch.zeros(2)}, str(tmp))
    finally:
        os.umask(old)
    assert mode(tmp_path / "own.bin") == expected
    assert mode(tmp_path / "tensors.safetensors") == expected
    assert sorted(p.name for p in tmp_path.iterdir()) == ["own.bin", "tensors.safetensors"]  # no temporary left


@pytest.mark.usefixtures("umask_022")
def test_prepared_folders_get_the_umask_mode(tmp_path):
    """`prepare` writes each clip's frames into a temporary folder renamed into place (mkdtemp makes 0700)."""
    from mmrobust_bench.data.prepare import atomic_dirs

    target = tmp_path / "frames" / "train" / "clip1"
    with atomic_dirs(target) as (tmp,):
        (tmp / "frame_00001.jpg").write_bytes(b"jpeg")
    assert mode(target) == 0o755 and mode(tmp_path / "frames") == 0o755
    assert [p.name for p in target.parent.iterdir()] == ["clip1"]


@pytest.mark.slow
@pytest.mark.usefixtures("umask_022", "one_thread")
def test_a_run_writes_checkpoints_caches_results_and_plots_0644(tmp_path):
    from mmrobust_bench.bench.api import run
    from mmrobust_bench.reports.curves import plot_robust_curve

    result = run(
        defense="jt",
        attack="pgd_l2",
        modality="a",
        eps=[0.5],
        overrides={"epochs": 1, "batch_size": 32},
        dataset_options={"n_train": 96, "n_test": 32},
        root=tmp_path,
        progress=False,
        check_flags=False,
    )
    plot_robust_curve(
        result.rows, result.plot_path, title=result.plot_title, command="mmrobust-bench run"
    )  # as the CLI
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    parts = {p: p.relative_to(tmp_path).parts for p in files}
    assert sorted(p.name for p in files if parts[p][0] == "checkpoints" and p.suffix == ".safetensors") == [
        "final.safetensors",
        "stage1.safetensors",
    ]
    assert [parts[p][0] for p in files if p.name.startswith("synthav-") and p.suffix == ".safetensors"] == ["datasets"]
    assert (tmp_path / "results.csv").is_file() and [p.suffix for p in files if parts[p][0] == "plots"].count(
        ".png"
    ) == 1
    wrong = {str(p.relative_to(tmp_path)): oct(mode(p)) for p in files if mode(p) != 0o644}
    assert wrong == {}
    folders = {
        str(p.relative_to(tmp_path)): oct(mode(p)) for p in tmp_path.rglob("*") if p.is_dir() and mode(p) != 0o755
    }
    assert folders == {}
