"""`mmrobust-bench verify` on a scratch leaderboard: the zoo re-evaluated within a tolerance (untouched rows pass,
an edited row fails and is named, a row within the tolerance passes with its difference printed, the recorded
provenance beside a difference), `--retrain` against the committed seed spread, and certificates and η rows."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from mmrobust_bench.bench.environment import row_provenance
from mmrobust_bench.bench.zoo import read_zoo
from mmrobust_bench.cli import main

from scratch_leaderboard import Leaderboard, build

# every test here uses the scratch leaderboard's trained models; the CLI's --threads changes the thread count,
# which conftest's one_thread restores after each test
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


@pytest.fixture(scope="module")
def board(tmp_path_factory) -> Leaderboard:
    return build(tmp_path_factory.mktemp("verify") / "leaderboards")


def verify(board: Leaderboard, *extra: str, results=None) -> list[str]:
    return [
        "verify",
        "--config",
        str(board.config),
        "--root",
        str(board.runs),
        "--n",
        "0",
        "--cells",
        "0",
        "--no-progress",
        "-q",
        *(["--results", str(results)] if results else []),
        *extra,
    ]


def rows_text(board: Leaderboard) -> pd.DataFrame:
    """The stored rows as the CSV holds them (text), for editing a copy."""
    return pd.read_csv(board.runs / "results.csv", keep_default_na=False, dtype=str)


def edited(board: Leaderboard, path, seed: int, attack: str, delta: float, **columns: str) -> float:
    """Write a copy of the results with one row of jt ``seed``'s ``attack`` cell moved by ``delta``; its old value."""
    frame = rows_text(board)
    (i,) = frame.index[
        (frame["seed"] == str(seed)) & (frame["attack"] == attack) & (frame["eps"].isin(["0.0", "0.5"]))
    ].tolist()
    old = float(frame.loc[i, "accuracy"])
    frame.loc[i, "accuracy"] = repr(old + delta)
    for name, value in columns.items():
        frame.loc[i, name] = value
    frame.to_csv(path, index=False)
    return old


def table_line(out: str, start: str) -> str:
    (line,) = [line for line in out.splitlines() if line.startswith(start)]
    return line


def test_untouched_rows_reproduce_exactly_and_nothing_is_written(board, capsys):
    def snapshot():
        return {p: p.stat().st_mtime_ns for p in board.base.rglob("*") if p.is_file()}

    before = snapshot()
    torch.set_num_threads(2)  # verify evaluates at the rows' recorded thread count, not at this process's
    assert main(verify(board)) == 0
    assert snapshot() == before
    out = capsys.readouterr().out
    assert (
        "tolerance: 0 for the 8 value(s) recorded with this machine's CPU capability, torch version and build "
        "and device; 0.01 for the 0 others"
    ) in out
    assert "largest difference: 0 (every value reproduced exactly)" in out
    assert "verify: 8 values of 2 model(s) re-evaluated from the zoo: all pass (8 exactly equal)" in out
    lines = [line for line in out.splitlines() if line.startswith("| result | jt |")]
    assert len(lines) == 8 and all(line.endswith("| exact |") for line in lines)


def test_cells_of_a_newer_grid_without_stored_rows_are_named_not_silently_dropped(board, tmp_path, capsys):
    """A YAML whose grid gained a cell since the rows were made (a leaderboard being re-measured): the new cell is
    re-measured but has nothing to compare with, so verify says which values it did not check, and judges the rest."""
    config = yaml.safe_load(board.config.read_text())
    config["grid"].append({"attacks": ["fgm"], "modalities": ["v"], "eps": [0.5]})
    newer = tmp_path / "sweep.yaml"
    newer.write_text(yaml.safe_dump(config))
    assert main(verify(board, "--config", str(newer), "--zoo", str(board.zoo))) == 0
    out = capsys.readouterr().out
    assert "verify: 8 values of 2 model(s) re-evaluated from the zoo: all pass (8 exactly equal)" in out
    assert (
        "2 re-measured value(s) have no stored row and are not checked: jt seed 0 fgm on v at ε 0.5; jt seed 1 fgm "
        "on v at ε 0.5 (the YAML's grid holds cells the rows lack: give the sweep YAML that made the rows, or run "
        "the sweep)"
    ) in out.splitlines()


def test_a_row_edited_by_005_fails_and_is_named(board, tmp_path, capsys):
    sha = read_zoo(board.zoo).find("jt", 0).sha256
    old = edited(board, tmp_path / "results.csv", 0, "clean", 0.05)
    assert main(verify(board, results=tmp_path / "results.csv")) == 1
    out = capsys.readouterr().out
    line = table_line(out, "| result | jt | 0 | clean |")
    assert line == (
        f"| result | jt | 0 | clean | none | 0 | {old + 0.05:.6g} | {old:.6g} | -0.05 | 0 | {sha[:12]} = | FAILS |"
    )
    assert "largest difference: 0.05, reached by jt seed 0 clean on none" in out
    assert "verify: 8 values of 2 model(s) re-evaluated from the zoo: 1 fail" in out
    here = row_provenance()
    assert (
        f"1 value(s) that moved were recorded on: {here['cpu_capability']}, torch {torch.__version__} build "
        f"{here['torch_build']}, 1 thread(s), cpu ({here['device_name']}), batch size 32; re-measured here on: "
        f"{here['cpu_capability']}, torch {torch.__version__} build {here['torch_build']}, 1 thread(s), cpu"
    ) in out
    assert main(verify(board, "--tolerance", "0.04", results=tmp_path / "results.csv")) == 1  # 0.05 > 0.04


def test_a_row_within_the_tolerance_passes_with_its_difference_printed(board, tmp_path, capsys):
    old = edited(board, tmp_path / "results.csv", 0, "clean", 1 / 32)  # one test sample more "correct"
    assert main(verify(board, "--tolerance", "0.04", results=tmp_path / "results.csv")) == 0
    out = capsys.readouterr().out
    line = table_line(out, "| result | jt | 0 | clean |")
    assert f"| {old + 1 / 32:.6g} | {old:.6g} | -0.03125 | 0.04 |" in line and line.endswith("| within |")
    assert "tolerance: 0.04 (--tolerance)" in out
    assert "largest difference: 0.03125, reached by jt seed 0 clean on none" in out
    assert "verify: 8 values of 2 model(s) re-evaluated from the zoo: all pass (7 exactly equal)" in out
    assert main(verify(board, results=tmp_path / "results.csv")) == 1  # the default tolerance here is 0


def test_a_row_of_another_batch_size_is_not_expected_exact_and_says_so(board, tmp_path, capsys):
    """verify re-measures at the YAML's batch size: a row recorded at another one is another measurement, so it gets
    the cross-machine tolerance, not 0, and the provenance lines name both sizes."""
    edited(board, tmp_path / "results.csv", 1, "fgm", 1 / 32, batch_size="16")
    assert main(verify(board, results=tmp_path / "results.csv")) == 1  # 0.03125 > 0.01
    out = capsys.readouterr().out
    assert "0.01 for the 1 others" in out
    assert table_line(out, "| result | jt | 1 | fgm | a | 0.5 |").endswith("| FAILS |")
    assert "1 thread(s), cpu" in out and ", batch size 16; re-measured here on: " in out
    assert out.rstrip().count(", batch size 32") >= 1


def test_rows_from_another_machine_get_the_stated_tolerance_and_their_provenance(board, tmp_path, capsys):
    edited(
        board,
        tmp_path / "results.csv",
        1,
        "fgm",
        1 / 32,
        cpu_capability="AVX2",
        torch_build="0123456789ab",
        device_name="Another CPU",
    )
    assert main(verify(board, results=tmp_path / "results.csv")) == 1  # 0.03125 > 0.01
    out = capsys.readouterr().out
    assert "tolerance: 0 for the 7 value(s) recorded with this machine's" in out and "0.01 for the 1 others" in out
    assert table_line(out, "| result | jt | 1 | fgm | a | 0.5 |").endswith(
        f"| 0.01 | {read_zoo(board.zoo).find('jt', 1).sha256[:12]} = | FAILS |"
    )
    here = row_provenance()
    assert (
        f"1 value(s) that moved were recorded on: AVX2, torch {torch.__version__} build 0123456789ab, 1 thread(s), "
        f"cpu (Another CPU), batch size 32; re-measured here on: {here['cpu_capability']}, torch "
        f"{torch.__version__} build {here['torch_build']}"
    ) in out

    # rows written before the provenance columns existed still load; nothing says they came from this machine
    frame = rows_text(board).drop(columns=["cpu_capability", "torch_build", "device_name"])
    frame.to_csv(tmp_path / "old.csv", index=False)
    assert main(verify(board, results=tmp_path / "old.csv")) == 0
    out = capsys.readouterr().out
    assert "tolerance: 0 for the 0 value(s)" in out and "0.01 for the 8 others" in out
    assert "all pass (8 exactly equal)" in out


def test_retrain_accepts_a_value_inside_the_seed_spread_and_rejects_one_outside(board, tmp_path, capsys):
    config = yaml.safe_load(board.config.read_text())
    config["seeds"] = [0]  # re-train seed 0 only; the spread comes from every stored seed
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(config))
    frame = rows_text(board)
    third = frame[frame["seed"] == "1"].assign(seed="2", checkpoint_sha256="f" * 64)
    frame = pd.concat([frame, third], ignore_index=True)
    clean = {seed: frame.index[(frame["seed"] == seed) & (frame["attack"] == "clean")][0] for seed in ("0", "1", "2")}
    r0 = float(frame.loc[clean["0"], "accuracy"])

    def run(values: dict[str, float]) -> tuple[int, str]:
        for seed, value in values.items():
            frame.loc[clean[seed], "accuracy"] = repr(value)
        frame.to_csv(tmp_path / "results.csv", index=False)
        code = main(
            [
                "verify",
                "--retrain",
                "--config",
                str(tmp_path / "sweep.yaml"),
                "--root",
                str(board.runs),
                "--results",
                str(tmp_path / "results.csv"),
                "--n",
                "1",
                "--cells",
                "0",
                "--no-progress",
                "-q",
            ]
        )
        return code, capsys.readouterr().out

    # stored clean accuracies r0 + 0.05, r0 + 0.15, r0 - 0.05: mean r0 + 0.05, std 0.1, so r0 lies inside ± 0.3
    code, out = run({"0": r0 + 0.05, "1": r0 + 0.15, "2": r0 - 0.05})
    assert code == 0
    line = table_line(out, "| result | jt | 0 | clean |")
    assert f"| {r0 + 0.05:.6g} | {r0:.6g} | -0.05 | 0.3 |" in line and line.endswith("| within spread |")
    assert "seed spread: stored mean over seeds ± max(3 × sample std, 0.01)" in out
    assert "bit-identical: 3 of 4 value(s)" in out  # the cells not edited came back with the same checkpoint
    assert "verify: 4 values of 1 model(s) re-trained: all pass (3 exactly equal)" in out

    # every seed stored r0 + 0.3: no spread, so only the floor 0.01 is allowed and r0 lies outside
    code, out = run({"0": r0 + 0.3, "1": r0 + 0.3, "2": r0 + 0.3})
    assert code == 1
    line = table_line(out, "| result | jt | 0 | clean |")
    assert f"| {r0 + 0.3:.6g} | {r0:.6g} | -0.3 | 0.01 |" in line and line.endswith("| OUTSIDE |")
    assert "verify: 4 values of 1 model(s) re-trained: 1 fail" in out
    assert main(["verify", "--retrain", "--tolerance", "0.1", "--config", str(tmp_path / "sweep.yaml")]) == 2


def test_verify_errors_name_the_fix(board, tmp_path, capsys):
    assert main(verify(board, "--zoo", str(tmp_path / "nowhere"))) == 2
    assert "no model zoo at" in capsys.readouterr().err
    frame = rows_text(board)
    frame.loc[frame["seed"] == "0", "checkpoint_sha256"] = "e" * 64  # rows of another model than the zoo's
    frame.to_csv(tmp_path / "results.csv", index=False)
    assert main(verify(board, results=tmp_path / "results.csv")) == 2
    err = capsys.readouterr().err
    assert "the zoo's jt seed 0" in err and "is not the model the rows were measured with (eeeeeeeeeeee…)" in err
    assert main(verify(board, "--tolerance", "-1")) == 2
    assert "--tolerance must be a number >= 0" in capsys.readouterr().err
    # --dataset-set reaches the data (as the sweep's does): a value that changes them is refused by name
    assert main(verify(board, "--dataset-set", "n_test=16")) == 2
    err = capsys.readouterr().err
    assert "is not the data the zoo's models were measured on (n_test differ); check dataset_set" in err
    assert main(verify(board, "--dataset-set", "bogus=1")) == 2
    assert "bogus" in capsys.readouterr().err


@pytest.fixture(scope="module")
def certified_board(tmp_path_factory) -> Leaderboard:
    return build(tmp_path_factory.mktemp("verify-cert") / "leaderboards", certify=True)


def test_certificates_and_eta_rows_carry_provenance_and_are_verified(certified_board, tmp_path, capsys):
    board = certified_board
    certified = pd.read_csv(board.runs / "certified.csv")
    eta = pd.read_csv(board.runs / "eta_pairs.csv")
    here = row_provenance()
    for frame in (certified, eta):
        assert set(frame["threads"]) == {1} and set(frame["cpu_capability"]) == {here["cpu_capability"]}
        assert set(frame["torch_build"]) == {here["torch_build"]} and set(frame["device"]) == {"cpu"}
        assert set(frame["checkpoint_sha256"]) == {e.sha256 for e in read_zoo(board.zoo).entries}
    args = verify(board, "--certificates")
    args[args.index("--cells") + 1] = "1"  # every model, one cell each, and all of its certificates
    assert main(args) == 0
    out = capsys.readouterr().out
    assert f"({len(certified) + len(eta)} certificate and η values reproduced exactly are not listed)" in out
    results = sum(line.startswith("| result | jt |") for line in out.splitlines())  # one cell each: 1 or 2 values
    assert 2 <= results <= 4
    total = results + len(certified) + len(eta)
    assert f"verify: {total} values of 2 model(s) re-evaluated from the zoo: all pass ({total} exactly equal)" in out

    i = certified.index[(certified["seed"] == 0) & (certified["radius"] == 0.0)][0]
    certified.loc[i, "certified_accuracy"] += 0.05
    copy = board.copy(tmp_path / "lb")
    certified.to_csv(copy.runs / "certified.csv", index=False)
    args = verify(copy, "--certificates")
    args[args.index("--cells") + 1] = "1"
    assert main(args) == 1
    out = capsys.readouterr().out
    row = certified.loc[i]
    line = table_line(
        out, f"| certificate | jt | 0 | empirical {row.certificate} {row.variant} | {row.modality} | 0.0 |"
    )
    assert "| -0.05 | 0 |" in line and line.endswith("| FAILS |")


def test_smoothing_certificates_are_verified_too(tmp_path_factory, tmp_path, capsys):
    """Randomized-smoothing rows (their Monte Carlo noise seeded per model) re-measure exactly from the zoo, and one
    edited value fails, named with its noise setting."""
    smoothing = {
        "method": ["smoothing"],
        "radii": [0.0, 0.25],
        "sigma": 0.25,
        "n0": 10,
        "n": 50,
        "alpha": 0.01,
        "modalities": ["a"],
        "test_samples": 8,
        "attack_samples": 0,
    }
    board = build(tmp_path_factory.mktemp("verify-smoothing") / "leaderboards", certify=smoothing)
    certified = pd.read_csv(board.runs / "certified.csv")
    assert set(certified["method"]) == {"smoothing"} and len(certified) >= 4
    args = verify(board, "--certificates")
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "all pass" in out and f"({len(certified)} certificate and η values reproduced exactly" in out

    i = certified.index[(certified["seed"] == 1) & (certified["radius"] == 0.25)][0]
    certified.loc[i, "certified_accuracy"] += 0.125
    copy = board.copy(tmp_path / "lb")
    certified.to_csv(copy.runs / "certified.csv", index=False)
    assert main(verify(copy, "--certificates")) == 1
    out = capsys.readouterr().out
    (line,) = [line for line in out.splitlines() if line.endswith("| FAILS |")]
    assert line.startswith("| certificate | jt | 1 | smoothing") and "| -0.125 |" in line


# ---------------------------------------------------------------------- the scratch root, without a sweep


def stores(folder) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("results.csv", "certified.csv", "eta_pairs.csv"):
        (folder / name).write_text("dataset,label\nsynthav,jt\n")


def test_a_scratch_that_is_holds_or_lies_inside_the_root_is_refused_and_nothing_is_deleted(tmp_path):
    from mmrobust_bench.bench.verify_measure import scratch_root

    root = tmp_path / "runs"
    stores(root)
    for scratch in (root, root / "sub", tmp_path):
        with pytest.raises(ValueError) as err, scratch_root(None, root, scratch):
            pass
        assert str(err.value) == (
            f"verify: --scratch {scratch} is, holds or lies inside the sweep root {root}, which verify only "
            f"reads; give a folder outside it"
        )
    assert sorted(p.name for p in root.iterdir()) == ["certified.csv", "eta_pairs.csv", "results.csv"]
    other = tmp_path / "other"
    stores(other)  # another sweep's stores: never cleared
    with pytest.raises(ValueError) as err, scratch_root(None, root, other):
        pass
    assert str(err.value) == (
        f"verify: --scratch {other} already holds results.csv, certified.csv, eta_pairs.csv that verify did not "
        f"write; give an empty or new folder"
    )
    refused = pytest.raises(ValueError, match=r"holds the results CSV .*results\.csv; give a folder outside it")
    with refused, scratch_root(None, root, other, other / "results.csv"):
        pass
    assert sorted(p.name for p in other.iterdir()) == ["certified.csv", "eta_pairs.csv", "results.csv"]


def test_the_scratch_shares_the_dataset_cache_without_writing_through(tmp_path):
    from mmrobust_bench.bench.verify_measure import share_datasets
    from mmrobust_bench.io import atomic_path

    root, scratch = tmp_path / "runs", tmp_path / "scratch"
    (root / "datasets" / "clip-cache").mkdir(parents=True)
    (root / "datasets" / "synthav-1.safetensors").write_bytes(b"cached")
    (root / "datasets" / "clip-cache" / "frames.bin").write_bytes(b"frames")
    scratch.mkdir()
    (scratch / "datasets").symlink_to(root / "datasets", target_is_directory=True)  # an older verify's link
    share_datasets(root, scratch)
    shared = scratch / "datasets"
    assert not shared.is_symlink() and shared.is_dir()
    assert (shared / "synthav-1.safetensors").read_bytes() == b"cached"
    assert (shared / "clip-cache" / "frames.bin").read_bytes() == b"frames"
    (shared / "synthav-2.safetensors").write_bytes(b"new")  # a cache entry built by verify
    with atomic_path(shared / "synthav-1.safetensors") as tmp:  # a damaged entry rebuilt, as the caches write
        tmp.write_bytes(b"rebuilt")
    (shared / "clip-cache" / "frames.bin").unlink()
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*")) == [
        "datasets",
        "datasets/clip-cache",
        "datasets/clip-cache/frames.bin",
        "datasets/synthav-1.safetensors",
    ]
    assert (root / "datasets" / "synthav-1.safetensors").read_bytes() == b"cached"


def test_fresh_and_stored_rows_are_paired_by_their_norm(monkeypatch, tmp_path):
    import random
    from pathlib import Path
    from types import SimpleNamespace

    import mmrobust_bench.bench.verify_measure as vm
    from mmrobust_bench.bench.verify import _judge_tolerance

    template = pd.read_csv(Path(__file__).resolve().parents[1] / "leaderboards/synthav/runs/results.csv").iloc[[0]]

    def row(norm: str, accuracy: float) -> pd.DataFrame:
        r = template.copy()
        r["attack"], r["attack_config"], r["modality"], r["eps"], r["norm"] = "apgd_ce", "apgd_ce", "a", 0.5, norm
        r["accuracy"], r["checkpoint_sha256"], r["label"], r["seed"], r["n"] = accuracy, "S" * 64, "jt", 0, 1000
        return r

    stored = pd.concat([row("l2", 0.50), row("linf", 0.20)], ignore_index=True)
    fresh = pd.concat([row("l2", 0.20), row("linf", 0.20)], ignore_index=True)  # l2 moved by 0.30
    monkeypatch.setattr(vm, "unit_cells", lambda plan: [None])
    monkeypatch.setattr(vm, "earlier_cell_keys", lambda *a, **k: set())
    monkeypatch.setattr(vm, "run_cell", lambda *a, results_path, **k: fresh.to_csv(results_path, index=False))

    def measure(stored_rows: pd.DataFrame) -> list:
        return vm.measure_cells(
            None,
            SimpleNamespace(sha256="S" * 64),
            SimpleNamespace(label="jt"),
            0,
            stored_rows,
            scratch=tmp_path,
            cells=0,
            rng=random.Random(0),
            dev="cpu",
        )

    frame = _judge_tolerance(measure(stored), 0.0)
    assert [(k[-1], r, p, s) for k, r, p, s in frame[["spread_key", "recorded", "reproduced", "status"]].values] == [
        ("l2", 0.5, 0.2, "FAILS"),
        ("linf", 0.2, 0.2, "exact"),
    ]
    with pytest.raises(ValueError) as err:
        measure(pd.concat([stored, row("l2", 0.4)], ignore_index=True))
    assert str(err.value) == (
        "verify: the stored rows of jt seed 0 hold apgd_ce on a at ε 0.5 (l2) twice (a damaged results CSV); restore it"
    )


def test_certificates_of_another_dataset_in_a_shared_root_are_not_picked_and_nothing_compared_fails(
    monkeypatch, tmp_path
):
    from pathlib import Path
    from types import SimpleNamespace

    import mmrobust_bench.bench.verify_measure as vm
    from mmrobust_bench.bench.verify_output import certificate_problems

    runs = Path(__file__).resolve().parents[1] / "leaderboards" / "synthav" / "runs"
    cert, eta = pd.read_csv(runs / "certified.csv"), pd.read_csv(runs / "eta_pairs.csv")

    def one(frame: pd.DataFrame, dataset: str, sha: str) -> pd.DataFrame:
        f = frame[(frame["defense"] == "jt") & (frame["seed"] == 0)].copy()
        f["dataset"], f["checkpoint_sha256"] = dataset, sha
        return f

    root, scratch = tmp_path / "root", tmp_path / "scratch"
    root.mkdir(), scratch.mkdir()
    # one shared root: synthav jt seed 0 certified, then an avdigits jt seed 0 certified later
    pd.concat([one(cert, "synthav", "S" * 64), one(cert, "avdigits", "T" * 64)]).to_csv(root / "certified.csv")
    pd.concat([one(eta, "synthav", "S" * 64), one(eta, "avdigits", "T" * 64)]).to_csv(root / "eta_pairs.csv")

    def certify(plan, trained, entry, seed, *, root, dev, command):
        one(cert, "synthav", "S" * 64).to_csv(root / "certified.csv", index=False)
        one(eta, "synthav", "S" * 64).to_csv(root / "eta_pairs.csv", index=False)

    monkeypatch.setattr(vm, "certify_unit", certify)
    plan = SimpleNamespace(certify_for=lambda e: object())
    config = str(one(cert, "synthav", "S").iloc[0]["config_hash"])
    trained = SimpleNamespace(
        sha256="S" * 64, dataset=SimpleNamespace(name="synthav"), key=SimpleNamespace(config_hash=config)
    )
    items, stored = vm.certificate_values(
        plan, trained, SimpleNamespace(label="jt"), 0, root=root, scratch=scratch, dev="cpu"
    )
    n = len(one(cert, "synthav", "S")) + len(one(eta, "synthav", "S"))
    assert n > 0 and (len(items), stored) == (n, n)
    assert {i["status"] for i in vm_judged(items)} == {"exact"}
    assert certificate_problems({("jt", 0): (n, n)}) == []
    assert certificate_problems({("jt", 0): (0, n)}) == [
        f"0 of {n} certificate values compared (--certificates found nothing to check)"
    ]
    assert certificate_problems({("jt", 0): (n, n), ("jt", 1): (0, 5)}) == [
        "0 of 5 certificate values of jt seed 1 compared"
    ]


def vm_judged(items: list) -> list:
    from mmrobust_bench.bench.verify import _judge_tolerance

    return _judge_tolerance(items, 0.0).to_dict("records")


def test_retrain_refuses_a_changed_config_and_spreads_only_over_one_config(monkeypatch):
    from types import SimpleNamespace

    import mmrobust_bench.bench.verify_retrain as vr

    template = rows_template()
    stored = pd.concat(
        [
            template.assign(seed=s, accuracy=a, config_hash=c)
            for s, a, c in ((0, 0.5, "A"), (1, 0.5, "A"), (2, 0.9, "B"))
        ],
        ignore_index=True,
    )
    key = ("result", *vr.result_key(next(stored.itertuples(index=False))))
    spread = vr._seed_spread(stored, Path("/nonexistent"), "synthav", [])
    assert spread[(str(template["label"].iloc[0]), "A", key)] == [0.5, 0.5]
    assert spread[(str(template["label"].iloc[0]), "B", key)] == [0.9]

    monkeypatch.setattr(vr, "build_defense", lambda d, o, s=None: (SimpleNamespace(name="jt", config_dict=dict), {}))
    monkeypatch.setattr(vr, "dataset_schedule", lambda ds: None)
    monkeypatch.setattr(vr, "key_dict", lambda cfg: {})
    now = vr.CheckpointKey("synthav", {}, "jt", {}, {}, 0).config_hash
    plan = SimpleNamespace(common_overrides={}, dataset="synthav")
    ds = SimpleNamespace(name="synthav", config={})
    label = str(template["label"].iloc[0])
    entries = {label: SimpleNamespace(defense="jt", overrides={})}
    assert vr._check_configs(plan, ds, stored.assign(config_hash=now), [(label, 0)], entries) == {(label, 0): now}
    with pytest.raises(ValueError) as err:
        vr._check_configs(plan, ds, stored, [(label, 0)], entries)
    assert str(err.value) == (
        f"verify --retrain: the rows of {label} seed 0 were made with config A, the sweep YAML now trains config "
        f"{now} (a setting changed since); give the YAML that made the rows, or rerun the sweep"
    )


def rows_template() -> pd.DataFrame:
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "leaderboards" / "synthav" / "runs" / "results.csv"
    return pd.read_csv(path).iloc[[0]]


def test_no_compared_value_names_the_models_re_measured_and_certificate_problems_fail(monkeypatch, tmp_path, capsys):
    import mmrobust_bench.bench.sweep as sweep_module
    import mmrobust_bench.bench.verify as verify_module
    from mmrobust_bench.bench.verify_output import make_outcome

    monkeypatch.setattr(sweep_module, "load_sweep_config", lambda path: {})
    monkeypatch.setattr(sweep_module, "build_plan", lambda config, **options: None)
    outcome = make_outcome(pd.DataFrame(), "zoo", [], None, models=2)
    monkeypatch.setattr(verify_module, "verify_zoo", lambda plan, **k: outcome)
    args = ["verify", "--config", str(tmp_path / "sweep.yaml"), "--root", str(tmp_path), "-q"]
    assert main(args) == 1
    assert "verify: none of the re-measured values of 2 model(s) is in the stored rows" in capsys.readouterr().out
    value = dict(kind="result", label="jt", seed=0, what="clean", modality="none", at="—", passes=True)
    value.update(recorded=0.5, reproduced=0.5, reference=0.5, difference=0.0, allowed=0.0, status="exact")
    frame = pd.DataFrame([dict(value, recorded_sha256="S" * 64, reproduced_sha256="S" * 64)])
    problems = ["0 of 210 certificate values compared (--certificates found nothing to check)"]
    outcome = make_outcome(frame, "zoo", [], None, problems=problems, models=1)
    monkeypatch.setattr(verify_module, "verify_zoo", lambda plan, **k: outcome)
    assert main(args) == 1
    out = capsys.readouterr().out
    assert "verify: 1 values of 1 model(s) re-evaluated from the zoo: 0 fail" in out
    assert "verify: FAILS: 0 of 210 certificate values compared (--certificates found nothing to check)" in out


def test_each_value_is_judged_against_the_device_its_own_model_ran_on():
    from mmrobust_bench.bench.certification import certificate_provenance
    from mmrobust_bench.bench.verify import CROSS_MACHINE_TOLERANCE, _judge_tolerance
    from mmrobust_bench.bench.verify_output import make_outcome

    here = certificate_provenance("cpu")
    value = dict(kind="result", label="jt", what="clean", modality="none", at="—", n=100, recorded_n=100)
    value.update(recorded_sha256="S" * 64, reproduced_sha256="S" * 64, relative=False, recorded=0.5, reproduced=0.51)
    value.update({f"recorded_{k}": v for k, v in here.items()})
    on_cpu = dict(value, seed=0, here=here)
    on_gpu = dict(value, seed=1, here=dict(here, device="cuda:0", device_name="A GPU"))  # a model re-run elsewhere
    frame = _judge_tolerance([on_cpu, on_gpu], None)
    assert list(frame["allowed"]) == [0.0, CROSS_MACHINE_TOLERANCE]
    assert list(frame["status"]) == ["FAILS", "within"]
    report = make_outcome(frame, "zoo", [], None, models=2).report
    assert sum("re-measured here on:" in line for line in report) == 2
    assert any(line.endswith("cuda:0 (A GPU)") for line in report)


def test_a_zero_largest_difference_does_not_claim_exactness_when_the_sample_count_moved():
    from mmrobust_bench.bench.verify_output import largest_difference

    same = pd.DataFrame({"difference": [0.0, 0.0], "n": [100, 100], "recorded_n": [100, 100]})
    assert largest_difference(same) == ["largest difference: 0 (every value reproduced exactly)"]
    fewer = same.assign(n=[100, 90])
    assert largest_difference(fewer) == [
        "largest difference: 0, but 1 value(s) were measured on another number of samples"
    ]


def test_retrain_states_an_eta_allowance_in_the_relative_units_of_its_difference():
    import mmrobust_bench.bench.verify_retrain as vr

    key = ("eta", "jt", "a/v")
    item = dict(label="jt", config_hash="A", spread_key=key, relative=True, recorded=2.0, reproduced=2.5, n=1)
    item.update(recorded_n=1, recorded_sha256="S" * 64, reproduced_sha256="T" * 64)
    spread = {("jt", "A", key): [2.0, 2.2, 2.4]}  # mean 2.2, sample std 0.2
    (judged,) = vr._judge_spread([dict(item)], spread, 2.0, 0.01).to_dict("records")
    assert judged["allowed"] == pytest.approx(0.4 / 2.2) and judged["difference"] == pytest.approx(0.3 / 2.2)
    assert judged["status"] == "within spread"
    (outside,) = vr._judge_spread([dict(item, reproduced=2.7)], spread, 2.0, 0.01).to_dict("records")
    assert outside["difference"] == pytest.approx(0.5 / 2.2) and outside["status"] == "OUTSIDE"


def test_the_scratch_drops_the_cell_journals_of_an_interrupted_verify(tmp_path):
    """verify re-measures: batches an interrupted verify kept in its scratch are not read back as measurements."""
    from mmrobust_bench.bench.cell_journal import JOURNAL_DIR
    from mmrobust_bench.bench.sweep import build_plan
    from mmrobust_bench.bench.verify_measure import SCRATCH_MARK, scratch_root

    plan = build_plan({"dataset": "synthav", "dataset_set": {"n_train": 64, "n_test": 16}, "defenses": ["jt"]})
    root, scratch = tmp_path / "runs", tmp_path / "scratch"
    root.mkdir()
    (scratch / JOURNAL_DIR / "abc").mkdir(parents=True)
    (scratch / JOURNAL_DIR / "abc" / "batch-000000.json").write_text("{}")
    (scratch / SCRATCH_MARK).touch()
    with scratch_root(plan, root, scratch):
        assert not (scratch / JOURNAL_DIR).exists()
