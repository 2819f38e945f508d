"""The result store: concurrent writers, deduplication, unfinished rows, refusal of damaged files, file modes."""

import math
import multiprocessing as mp
import os
import stat
from pathlib import Path

import pandas as pd
import pytest

from mmrobust_bench.bench.certification import replace_model_rows
from mmrobust_bench.bench.results import (
    COLUMNS,
    ResultRow,
    ResultsFileError,
    append_rows,
    cell_key,
    done_cells,
    read_rows,
    rows_frame,
    stored_run,
)
from mmrobust_bench.io import atomic_write_json, atomic_write_text


def row(
    eps: float,
    acc: float = 0.5,
    *,
    label: str = "",
    attack: str = "pgd_l2",
    sha: str = "ab",
    seed: int = 0,
    config_hash: str = "c0ffee",
    flags: str = "",
    batch_size: int = 0,
) -> ResultRow:
    return ResultRow(
        dataset="synthav",
        defense="jt",
        seed=seed,
        checkpoint_sha256=sha,
        config_hash=config_hash,
        attack=attack,
        attack_config=attack,
        library="native",
        library_version="0",
        modality="a",
        norm="l2",
        eps=eps,
        n=100,
        accuracy=acc,
        wall_seconds=0.0,
        device="cpu",
        suite_version="0",
        flags=flags,
        label=label,
        batch_size=batch_size,
    )


def _writer(results: str, certified: str, worker: int, count: int) -> None:
    """One process: ``count`` rows of its own cells, one row at a time, plus a cell every worker writes; and
    the certificate rows of ``count // 2`` models of its own, model by model."""
    for i in range(count):
        append_rows(results, [row(eps=worker * 1000 + i, acc=i / count, label=f"w{worker}")])
        if i % 2 == 0:
            frame = pd.DataFrame(
                [
                    {
                        "dataset": "synthav",
                        "defense": f"d{worker}",
                        "seed": i,
                        "checkpoint_sha256": "ab",
                        "radius": r,
                        "value": worker + i,
                    }
                    for r in (0.0, 0.5)
                ]
            )
            replace_model_rows(Path(certified), frame)
    append_rows(results, [row(eps=0.5, acc=0.25, label="shared")])


@pytest.mark.slow  # ~10 s on an idle 2-core machine (4 interpreters start), more when it is busy
def test_concurrent_writers_lose_and_duplicate_nothing(tmp_path):
    workers, count = 4, 25
    results, certified = tmp_path / "results.csv", tmp_path / "certified.csv"
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(results), str(certified), w, count)) for w in range(workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=600)
        assert p.exitcode == 0
    frame = read_rows(results)
    assert len(frame) == workers * count + 1  # every row, and the shared cell once
    assert not frame.duplicated(["label", "eps"]).any()
    for w in range(workers):
        mine = frame[frame["label"] == f"w{w}"].sort_values("eps")
        assert list(mine["eps"]) == [w * 1000 + i for i in range(count)]
        assert list(mine["accuracy"]) == [i / count for i in range(count)]
    assert (frame["label"] == "shared").sum() == 1
    certs = pd.read_csv(certified)
    models = [(f"d{w}", i) for w in range(workers) for i in range(0, count, 2)]
    assert len(certs) == 2 * len(models) and sorted(set(zip(certs["defense"], certs["seed"]))) == sorted(models)


def test_rerunning_a_finished_cell_writes_nothing_and_replace_overwrites(tmp_path):
    path = tmp_path / "results.csv"
    first = append_rows(path, [row(0.5, 0.4), row(1.0, 0.3)])
    assert first.attrs["written"] == 2
    before = path.read_bytes()
    mtime = path.stat().st_mtime_ns
    again = append_rows(path, [row(0.5, 0.9), row(1.0, 0.9)])  # same cells: nothing written, stored values kept
    assert again.attrs["written"] == 0 and path.read_bytes() == before and path.stat().st_mtime_ns == mtime
    mixed = append_rows(path, [row(1.0, 0.9), row(2.0, 0.1)])
    assert mixed.attrs["written"] == 1 and list(read_rows(path)["accuracy"]) == [0.4, 0.3, 0.1]
    forced = append_rows(path, [row(1.0, 0.35)], replace=True)  # run --force: the cell is replaced, not duplicated
    assert forced.attrs["written"] == 1
    frame = read_rows(path)
    assert sorted(zip(frame["eps"], frame["accuracy"])) == [(0.5, 0.4), (1.0, 0.35), (2.0, 0.1)]
    # within one call, one row per cell
    assert append_rows(tmp_path / "b.csv", [row(0.5, 0.1), row(0.5, 0.2)]).attrs["written"] == 1


def test_rows_with_missing_values_are_not_done_and_a_measurement_replaces_them(tmp_path):
    path = tmp_path / "results.csv"
    append_rows(path, [row(0.5, math.nan), row(1.0, 0.3), row(math.nan, 0.2, attack="missing")])
    frame = read_rows(path)
    done = done_cells(frame)
    assert cell_key("synthav", "jt", 0, "ab", "pgd_l2", "pgd_l2", "a", 0.5) not in done  # NaN accuracy
    assert cell_key("synthav", "jt", 0, "ab", "pgd_l2", "pgd_l2", "a", 1.0) in done
    assert cell_key("synthav", "jt", 0, "ab", "missing", "missing", "a", math.nan) in done  # NaN ε is by design
    # an empty checkpoint hash is not a measurement either
    assert not done_cells(rows_frame([row(0.5, 0.4, sha="")]))
    append_rows(path, [row(0.5, 0.45)])
    frame = read_rows(path)
    assert len(frame) == 3 and frame["accuracy"].notna().all()
    assert frame.loc[frame["eps"] == 0.5, "accuracy"].tolist() == [0.45]


def test_damaged_results_are_refused_with_file_and_line_and_left_alone(tmp_path):
    path = tmp_path / "results.csv"
    append_rows(path, [row(0.5), row(1.0), row(2.0)])
    lines = path.read_text().splitlines()
    torn = "\n".join(lines[:3] + [lines[3] + ",extra,fields"]) + "\n"
    path.write_text(torn)
    with pytest.raises(ResultsFileError, match=r"results\.csv line 4: \d+ fields where the header has \d+"):
        read_rows(path)
    with pytest.raises(ResultsFileError, match=r"results\.csv line 4"):
        append_rows(path, [row(3.0)])
    assert path.read_text() == torn  # never rewritten from a file that was not read in full
    short = "\n".join(lines[:2] + [lines[2].rsplit(",", 5)[0]] + lines[3:]) + "\n"  # a truncated record
    path.write_text(short)
    with pytest.raises(ResultsFileError, match=r"results\.csv line 3"):
        read_rows(path)
    acc = COLUMNS.index("accuracy")
    fields = lines[2].split(",")
    fields[acc] = "abc"
    path.write_text("\n".join(lines[:2] + [",".join(fields)] + lines[3:]) + "\n")
    with pytest.raises(ResultsFileError, match=r"results\.csv line 3: accuracy is 'abc', not a number"):
        read_rows(path)
    path.write_text("a,b\n1,2\n")
    with pytest.raises(ResultsFileError, match="line 1: not a results file"):
        read_rows(path)


def test_text_columns_round_trip_exactly_and_old_csvs_get_defaults(tmp_path):
    path = tmp_path / "results.csv"
    # a hex hash that pandas would read as a float, and labels pandas would read as missing
    append_rows(path, [row(0.5, config_hash="1234e5678901", label="NA"), row(1.0, config_hash="000123", label="None")])
    append_rows(path, [row(2.0)])
    frame = read_rows(path)
    assert list(frame["config_hash"]) == ["1234e5678901", "000123", "c0ffee"]
    assert list(frame["label"]) == ["NA", "None", "jt"]
    legacy = tmp_path / "legacy.csv"
    rows_frame([row(0.5), row(1.0)]).drop(columns=["label", "torch_version", "dtype", "threads", "flags"]).assign(
        defense=["crmt_jt_step1_only", "jt"]
    ).to_csv(legacy, index=False)
    old = read_rows(legacy)
    assert list(old.columns) == COLUMNS
    assert list(old["label"]) == ["crmt_jt_step1_only", "jt"]  # old sweeps wrote the label into `defense`
    assert list(old["threads"]) == [0, 0] and list(old["torch_version"]) == ["", ""]  # not recorded
    assert list(old["batch_size"]) == [0, 0]


def test_blank_batch_sizes_of_an_older_writer_read_as_not_recorded_and_stay_whole_numbers(tmp_path):
    """A store written by a version that recorded batch sizes, then rewritten by an older one (which keeps the
    column as text and leaves its own rows blank): the sizes stay whole numbers, the blanks read as 0."""
    path = tmp_path / "results.csv"
    append_rows(path, [row(0.5, batch_size=100)])
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    older = frame.assign(eps="1.0", batch_size="")  # an older writer's row: no batch size
    pd.concat([frame, older], ignore_index=True).to_csv(path, index=False)
    assert list(read_rows(path)["batch_size"]) == [100, 0]
    append_rows(path, [row(2.0, batch_size=50)])
    text = pd.read_csv(path, dtype=str, keep_default_na=False)
    assert list(text["batch_size"]) == ["100", "0", "50"]  # never "100.0"


def test_stored_run_needs_every_cell(tmp_path):
    frame = rows_frame([row(0.0, 0.9, attack="clean"), row(0.5, 0.4), row(1.0, 0.3)])
    frame.loc[0, ["attack_config", "modality"]] = ["clean", "none"]
    args = dict(dataset="synthav", label="jt", seed=0, sha="ab", attack="pgd_l2", attack_config="pgd_l2", modality="a")
    assert list(stored_run(frame, eps=[0.5, 1.0], **args)["accuracy"]) == [0.9, 0.4, 0.3]
    assert stored_run(frame, eps=[0.5, 2.0], **args) is None
    assert stored_run(frame, eps=[0.5], **{**args, "label": "other"}) is None
    assert stored_run(frame.iloc[1:], eps=[0.5], **args) is None  # no clean row


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_files_respect_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        atomic_write_json(tmp_path / "b.json", {"a": 1})
        append_rows(tmp_path / "results.csv", [row(0.5)])
        replace_model_rows(
            tmp_path / "certified.csv",
            pd.DataFrame([{"dataset": "s", "defense": "d", "seed": 0, "checkpoint_sha256": "x"}]),
        )
    finally:
        os.umask(old)
    for name in ("a.txt", "b.json", "results.csv", "certified.csv"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode, name
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary file left behind


def test_the_norm_is_part_of_a_cells_identity(tmp_path: Path) -> None:
    """An attack that describes itself the same way under two norms (APGD, ART PGD) measures two cells:
    an ℓ∞ run after an ℓ2 run must neither be skipped as done nor reuse the ℓ2 rows; the clean row is shared."""
    import dataclasses

    from mmrobust_bench.bench.results import CLEAN, stored_run

    path = tmp_path / "results.csv"
    l2 = row(0.5, acc=0.25, attack="torchattacks:APGD")
    linf = dataclasses.replace(l2, norm="linf", accuracy=0.75)
    clean = dataclasses.replace(l2, attack=CLEAN, attack_config=CLEAN, modality="none", eps=0.0, accuracy=0.9)
    append_rows(path, [clean, l2])
    frame = read_rows(path)
    assert cell_key(
        "synthav", "jt", 0, "ab", "torchattacks:APGD", "torchattacks:APGD", "a", 0.5, "linf"
    ) not in done_cells(frame)
    query = dict(
        dataset="synthav",
        label="jt",
        seed=0,
        sha="ab",
        attack="torchattacks:APGD",
        attack_config="torchattacks:APGD",
        modality="a",
        eps=[0.5],
    )
    assert stored_run(frame, norm="linf", **query) is None
    assert stored_run(frame, norm="l2", **query)["accuracy"].tolist() == [0.9, 0.25]
    append_rows(path, [dataclasses.replace(clean, norm="linf"), linf])
    frame = read_rows(path)
    assert len(frame) == 3  # the ℓ∞ run's clean row is the same cell as the ℓ2 run's
    assert stored_run(frame, norm="linf", **query)["accuracy"].tolist() == [0.9, 0.75]
