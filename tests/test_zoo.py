"""The model zoo: export a sweep's checkpoints, load them through the public API, reproduce stored rows exactly,
refuse damaged, swapped or missing files with one clear line; `zoo list/show`; cards link their zoo file."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

import mmrobust_bench as mmr
from mmrobust_bench.bench.results import read_rows
from mmrobust_bench.bench.zoo import ZooError, read_zoo
from mmrobust_bench.cli import main
from mmrobust_bench.io import sha256_file

from scratch_leaderboard import Leaderboard, build

REPO = Path(__file__).resolve().parents[1]
# every test here uses the scratch leaderboard's trained models; the CLI's --threads changes the thread count,
# which conftest's one_thread restores after each test
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


@pytest.fixture(scope="module")
def board(tmp_path_factory) -> Leaderboard:
    return build(tmp_path_factory.mktemp("zoo") / "leaderboards")


def stored(board: Leaderboard) -> pd.DataFrame:
    return read_rows(board.runs / "results.csv")


def test_export_copies_each_final_checkpoint_byte_for_byte_with_its_index(board):
    zoo = read_zoo(board.zoo)
    rows = stored(board)
    assert zoo.dataset == "synthav" and zoo.dataset_options == {"n_train": 128, "n_test": 32}
    assert zoo.batch_size == 32 and zoo.results_path == (board.runs / "results.csv").resolve()
    assert [(e.entry, e.defense, e.seed, e.file, e.config) for e in zoo.entries] == [
        ("jt", "jt", 0, "jt-seed0.safetensors", "jt-seed0.json"),
        ("jt", "jt", 1, "jt-seed1.safetensors", "jt-seed1.json"),
    ]
    for e in zoo.entries:
        mine = rows[rows["seed"] == e.seed]
        assert set(mine["checkpoint_sha256"]) == {e.sha256} and set(mine["config_hash"]) == {e.config_hash}
        path = board.zoo / e.file
        assert sha256_file(path) == e.sha256 and path.stat().st_size == e.size
        (source,) = [
            p
            for p in (board.runs / "checkpoints").rglob("final.safetensors")
            if json.loads((p.parent / "config.json").read_text())["seed"] == e.seed
        ]
        assert path.read_bytes() == source.read_bytes()
        record = json.loads((board.zoo / e.config).read_text())
        assert record["key"]["seed"] == e.seed and record["key"]["defense"] == "jt"
        assert record["provenance"]["final"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
        assert record["provenance"]["final"]["threads"] == 1
    assert sorted(p.name for p in board.zoo.iterdir()) == [
        "jt-seed0.json",
        "jt-seed0.safetensors",
        "jt-seed1.json",
        "jt-seed1.safetensors",
        "zoo.json",
    ]
    before = {p.name: p.stat().st_mtime_ns for p in board.zoo.iterdir()}
    assert main(["zoo", "export", "--root", str(board.runs), "--out", str(board.zoo), "-q"]) == 0  # idempotent
    assert {p.name: p.stat().st_mtime_ns for p in board.zoo.iterdir() if p.suffix == ".safetensors"} == {
        k: v for k, v in before.items() if k.endswith(".safetensors")
    }


def test_loaded_model_reproduces_its_stored_rows_exactly_through_the_public_api(board, monkeypatch, tmp_path):
    monkeypatch.setenv("MMROBUST_LEADERBOARDS", str(board.base))  # the default place, as a checkout has it
    monkeypatch.setenv("MMROBUST_HOME", str(tmp_path))  # the test split is generated here, not read from the runs
    torch.set_num_threads(1)
    model = mmr.load_model("synthav", "jt", seed=1)
    assert isinstance(model, mmr.WrappedModel) and not model.training
    assert model.zoo_entry["sha256"] == read_zoo(board.zoo).find("jt", 1).sha256
    test = mmr.load_dataset("synthav", split="test")
    assert (test.n, test.batch_size, len(test)) == (32, 32, 1)
    rows = mmr.evaluate(
        model,
        test,
        attack="fgm",
        modality="a",
        eps=[0.5, 1.0],
        label="jt",
        dataset="synthav",
        seed=1,
        check_flags=False,
    )
    mine = stored(board)
    mine = mine[(mine["seed"] == 1) & mine["attack"].isin(["clean", "fgm"])].sort_values(["attack", "eps"])
    assert list(rows.sort_values(["attack", "eps"])["accuracy"]) == list(mine["accuracy"])  # exactly
    assert list(rows.sort_values(["attack", "eps"])["eps"]) == [0.0, 0.5, 1.0]
    adv = mmr.attack(model, next(iter(test)), attack="pgd_l2", modality="a", eps=0.5)  # the other public calls
    assert torch.equal(adv["v"], next(iter(test))["v"])
    first = mmr.load_dataset("synthav", split="test", n=8, batch_size=4)
    assert (first.n, len(first), [b["label"].shape[0] for b in first]) == (8, 2, [4, 4])


def test_dataset_configs_compare_as_json_reads_them_back():
    from mmrobust_bench.bench.zoo import config_difference

    recorded = {"encoders": {"a": "deep", "v": "cnn"}, "size": [8, 8], "root": "x", "n": 900}
    built = {"encoders": {"v": "cnn", "a": "deep"}, "size": (8, 8), "root": Path("x"), "n": 900}
    assert config_difference(recorded, built) == []  # key order, tuple vs list, a path vs its text: the same data
    assert config_difference(recorded, {**built, "n": 300, "extra": 1}) == ["extra", "n"]


def test_a_bit_flipped_file_is_refused_with_one_line(board, tmp_path):
    copy = board.copy(tmp_path / "lb")
    path = copy.zoo / "jt-seed0.safetensors"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ZooError) as err:
        mmr.load_model("synthav", "jt", seed=0, zoo=copy.zoo)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"refusing {path}: its sha256 ") and "is not the" in message
    assert "the zoo index lists for jt seed 0" in message and "restore it (git checkout) or re-export" in message
    mmr.load_model("synthav", "jt", seed=1, zoo=copy.zoo)  # the other file is untouched and loads


def test_swapped_weights_or_configs_are_refused(board, tmp_path):
    copy = board.copy(tmp_path / "lb")
    a, b = copy.zoo / "jt-seed0.safetensors", copy.zoo / "jt-seed1.safetensors"
    a_bytes, b_bytes = a.read_bytes(), b.read_bytes()
    a.write_bytes(b_bytes)
    b.write_bytes(a_bytes)
    for seed in (0, 1):
        with pytest.raises(ZooError, match=rf"refusing .*jt-seed{seed}\.safetensors: its sha256 .* for jt seed {seed}"):
            mmr.load_model("synthav", "jt", seed=seed, zoo=copy.zoo)
    a.write_bytes(a_bytes)
    b.write_bytes(b_bytes)
    c, d = copy.zoo / "jt-seed0.json", copy.zoo / "jt-seed1.json"
    c_text, d_text = c.read_text(), d.read_text()
    c.write_text(d_text)
    d.write_text(c_text)
    with pytest.raises(
        ZooError,
        match=r"refusing .*jt-seed0\.json: it records seed '1', the zoo index '0' for this "
        r"entry \(files swapped or edited\)",
    ):
        mmr.load_model("synthav", "jt", seed=0, zoo=copy.zoo)


def test_an_index_pointing_at_a_missing_file_or_no_index_is_a_clear_error(board, tmp_path, capsys):
    copy = board.copy(tmp_path / "lb")
    (copy.zoo / "jt-seed1.safetensors").unlink()
    with pytest.raises(ZooError) as err:
        mmr.load_model("synthav", "jt", seed=1, zoo=copy.zoo)
    assert str(err.value) == (
        f"zoo index {copy.zoo / 'zoo.json'} lists jt-seed1.safetensors for jt seed 1, but "
        f"{copy.zoo / 'jt-seed1.safetensors'} does not exist; restore it (git checkout) or "
        f"re-export the zoo"
    )
    (copy.zoo / "jt-seed0.json").unlink()
    with pytest.raises(ZooError, match=r"lists jt-seed0\.json for jt seed 0, but .* does not exist"):
        mmr.load_model("synthav", "jt", seed=0, zoo=copy.zoo)
    with pytest.raises(
        ZooError,
        match=r"no model zoo at .*nowhere \(zoo\.json missing\): export one with "
        r"`mmrobust-bench zoo export",
    ):
        mmr.load_model("synthav", "jt", zoo=tmp_path / "nowhere")
    with pytest.raises(ZooError, match=r"has no entry 'jt_' \(did you mean 'jt'\?\); entries: jt"):
        mmr.load_model("synthav", "jt_", zoo=board.zoo)
    with pytest.raises(ZooError, match=r"has 'jt' for seed 0, 1, not seed 7"):
        mmr.load_model("synthav", "jt", seed=7, zoo=board.zoo)
    assert main(["zoo", "list", "--leaderboards", str(tmp_path / "nowhere")]) == 2
    assert "no model zoo under" in capsys.readouterr().err


def test_export_refuses_a_missing_checkpoint_and_writes_nothing(board, tmp_path, capsys):
    copy = board.copy(tmp_path / "lb")
    (checkpoint,) = [
        p
        for p in (copy.runs / "checkpoints").rglob("final.safetensors")
        if json.loads((p.parent / "config.json").read_text())["seed"] == 1
    ]
    checkpoint.unlink()
    out = tmp_path / "zoo"
    assert main(["zoo", "export", "--root", str(copy.runs), "--out", str(out), "-q"]) == 2
    err = capsys.readouterr().err
    assert "zoo export: 1 model(s) cannot be exported (jt seed 1: no intact final checkpoint in " in err
    assert "rerun the sweep for them" in err and not out.exists()
    assert (
        main(
            [
                "zoo",
                "export",
                "--root",
                str(copy.runs),
                "--out",
                str(out),
                "--only",
                "jt",
                "-q",
                "--config",
                str(tmp_path / "missing.yaml"),
            ]
        )
        == 2
    )
    assert capsys.readouterr().err == (
        f"mmrobust-bench: error: zoo export: no sweep YAML at {tmp_path / 'missing.yaml'} "
        f"(the settings that rebuild each model); give --config\n"
    )


def test_zoo_list_and_show(board, capsys):
    assert main(["zoo", "list", "--leaderboards", str(board.base)]) == 0
    lines = capsys.readouterr().out.splitlines()
    zoo = read_zoo(board.zoo)
    assert lines[2:] == [
        f"| synthav | jt | jt | {e.seed} | {e.config_hash} | {e.sha256[:12]}… | {e.size / 1024:.0f} KiB |"
        for e in zoo.entries
    ]
    # as `list`: a pattern that finds nothing exits non-zero naming the nearest entries; without a wildcard, a
    # pattern finds the names containing it (a dataset's name lists its zoo), whatever the case
    assert main(["zoo", "list", "nothing*", "--zoo", str(board.zoo), "--json"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "mmrobust-bench: error: zoo list: nothing matches 'nothing*'; nearest entries: synthav/jt "
        "(`mmrobust-bench zoo list` shows every entry)"
    ]
    for pattern in ("synthav", "SYNTHAV/J", "jt"):
        assert main(["zoo", "list", pattern, "--zoo", str(board.zoo), "--json"]) == 0
        assert len(json.loads(capsys.readouterr().out)) == len(read_zoo(board.zoo).entries), pattern
    assert main(["zoo", "list", "synthav/j*", "--zoo", str(board.zoo), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(r["entry"], r["seed"], r["sha256"]) for r in listed] == [(e.entry, e.seed, e.sha256) for e in zoo.entries]
    assert main(["zoo", "show", "synthav/jt", "--seed", "0", "--leaderboards", str(board.base), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    rows = stored(board)
    assert shown["sha256"] == zoo.find("jt", 0).sha256 and shown["card"] is None
    assert sorted(r["accuracy"] for r in shown["rows"]) == sorted(rows[rows["seed"] == 0]["accuracy"])
    assert len(shown["rows"]) == 4  # clean, fgm at 0.5 and 1, missing v
    assert main(["zoo", "show", "jt", "--seed", "1", "--zoo", str(board.zoo)]) == 0
    text = capsys.readouterr().out
    assert f"sha256:  {zoo.find('jt', 1).sha256}" in text and "rows:    4 in " in text
    assert main(["zoo", "show", "gb", "--seed", "0", "--zoo", str(board.zoo)]) == 2
    assert "no zoo holds entry 'gb'" in capsys.readouterr().err


def test_model_cards_link_their_zoo_file_and_sha256(board, tmp_path):
    from mmrobust_bench.reports.leaderboard import write_leaderboard

    copy = board.copy(tmp_path / "lb")
    out = copy.base / "synthav"
    write_leaderboard(stored(copy), out, command="test")
    card = json.loads((out / "cards" / "synthav" / "jt-seed0.json").read_text())
    entry = read_zoo(copy.zoo).find("jt", 0)
    # paths relative to the card's folder: a committed card names no machine's folders, and its links resolve
    assert card["zoo"] == {
        "file": f"../../zoo/{entry.file}",
        "sha256": entry.sha256,
        "size": entry.size,
        "config": f"../../zoo/{entry.config}",
    }
    assert card["checkpoint_sha256"] == entry.sha256 and card["config_source"] == f"../../zoo/{entry.config}"
    card_dir = out / "cards" / "synthav"
    assert (card_dir / card["zoo"]["file"]).resolve() == (copy.zoo / entry.file).resolve()
    assert card["config"]["seed"] == 0 and card["config"]["stages"]["final"]["sha256"] == entry.sha256
    assert card["environment"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()


def test_example_attacks_a_leaderboard_model_with_its_own_attack(board, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", MMROBUST_HOME=str(tmp_path), MMROBUST_LEADERBOARDS=str(board.base))
    done = subprocess.run(
        [sys.executable, str(REPO / "examples" / "zoo.py"), "--eps", "0.5"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = stored(board)
    row = rows[(rows["seed"] == 0) & (rows["attack"] == "fgm") & (rows["eps"] == 0.5)].iloc[0]
    assert f"leaderboard row: fgm on a at eps 0.5: accuracy {row.accuracy:.4f} (n 32)" in done.stdout
    assert f"| jt | fgm | a | 0.5 | {row.accuracy:.3f} | 32 |" in done.stdout  # mmr.evaluate gives the stored row
    assert "my attack: accuracy " in done.stdout and "on 32 test samples at eps 0.5 (audio)" in done.stdout


def test_example_without_a_zoo_says_so_in_one_line(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", MMROBUST_HOME=str(tmp_path), MMROBUST_LEADERBOARDS=str(tmp_path))
    done = subprocess.run(
        [sys.executable, str(REPO / "examples" / "zoo.py")], capture_output=True, text=True, timeout=300, env=env
    )
    assert done.returncode != 0 and "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("examples/zoo.py: no model zoo at ") and "zoo export" in lines[0]


# ---------------------------------------------------------------------- export and cards, with stubbed models


def stubbed_export(monkeypatch, root: Path, labels: list[str]):
    """``export_zoo`` over one checkpoint per label (seed 0, distinct bytes) and its row, with the dataset,
    defenses and load check stubbed out (no data, no training); returns a plan factory for a list of labels."""
    import dataclasses
    from types import SimpleNamespace

    import mmrobust_bench.bench.sweep_plan as sweep_plan_module
    import mmrobust_bench.bench.zoo as zoo_module
    from mmrobust_bench.bench.checkpoints import CheckpointKey
    from mmrobust_bench.defenses import TrainConfig
    from mmrobust_bench.defenses.base import key_dict

    @dataclasses.dataclass
    class Cfg:
        x: str = ""

    class Defense:
        name = "jt"

        def __init__(self, overrides):
            self.config = Cfg(str(overrides.get("x", "")))

        def config_dict(self):
            return dataclasses.asdict(self.config)

    ds = SimpleNamespace(name="synthav", config={}, specs=[], num_classes=2, encoders={}, train=[0] * 4)
    monkeypatch.setattr(zoo_module, "build_dataset", lambda *a, **k: ds)
    # the unit's checkpoint key is built where the sweep builds it (bench.sweep_plan.unit_checkpoint)
    monkeypatch.setattr(sweep_plan_module, "dataset_schedule", lambda d: None)
    monkeypatch.setattr(sweep_plan_module, "build_defense", lambda d, o, s=None: (Defense(o), TrainConfig()))
    monkeypatch.setattr(zoo_module, "_check_loads", lambda record, path: None)
    monkeypatch.setattr(
        zoo_module,
        "load_stage",
        lambda directory, stage, key: (None, None, sha256_file(directory / "final.safetensors")),
    )
    template = pd.read_csv(REPO / "leaderboards" / "synthav" / "runs" / "results.csv").iloc[[0]]
    rows = []
    for label in labels:
        key = CheckpointKey("synthav", {}, "jt", Defense({"x": label}).config_dict(), key_dict(TrainConfig()), 0)
        folder = key.directory(root)
        folder.mkdir(parents=True)
        (folder / "final.safetensors").write_bytes(label.encode() * 10)
        (folder / "config.json").write_text("{}")
        row = template.copy()
        row["label"], row["seed"], row["config_hash"] = label, 0, key.config_hash
        row["checkpoint_sha256"] = sha256_file(folder / "final.safetensors")
        rows.append(row)
    pd.concat(rows).to_csv(root / "results.csv", index=False)

    def plan(only: list[str]):
        units = [(SimpleNamespace(label=label, defense="jt", overrides={"x": label}), 0) for label in only]
        return SimpleNamespace(
            dataset="synthav", dataset_options={}, common_overrides={}, batch_size=500, work_units=lambda: units
        )

    return plan


def test_export_with_only_keeps_the_other_models_and_never_deletes_outside_the_zoo(monkeypatch, tmp_path):
    from mmrobust_bench.bench.zoo import export_zoo

    root, out = tmp_path / "runs", tmp_path / "runs" / "zoo"
    root.mkdir()
    plan = stubbed_export(monkeypatch, root, ["jt_a", "jt_b"])
    export_zoo(plan(["jt_a", "jt_b"]), root=root, out=out)
    files = sorted(p.name for p in out.iterdir())
    b_bytes = (out / "jt_b-seed0.safetensors").read_bytes()
    outcome = export_zoo(plan(["jt_a"]), root=root, out=out)  # `zoo export --only jt_a`
    assert [e.entry for e in read_zoo(out).entries] == ["jt_a", "jt_b"]
    assert outcome.removed == [] and outcome.kept == 1 and outcome.unchanged == 1
    assert sorted(p.name for p in out.iterdir()) == files
    assert (out / "jt_b-seed0.safetensors").read_bytes() == b_bytes

    # an edited index that names files outside the zoo folder: refused before anything is deleted or written
    index = json.loads((out / "zoo.json").read_text())
    index["entries"][1]["file"] = "../results.csv"
    (out / "zoo.json").write_text(json.dumps(index))
    with pytest.raises(ZooError) as err:
        export_zoo(plan(["jt_a"]), root=root, out=out)
    assert str(err.value) == (
        f"{out / 'zoo.json'}: entry 1 lists '../results.csv', which is not a file of the zoo folder; "
        f"restore the index or remove it and re-export the zoo"
    )
    assert (root / "results.csv").exists() and sorted(p.name for p in out.iterdir()) == files


def test_export_removes_only_files_its_old_index_listed_inside_the_zoo(monkeypatch, tmp_path):
    from mmrobust_bench.bench.zoo import export_zoo

    root, out = tmp_path / "runs", tmp_path / "runs" / "zoo"
    root.mkdir()
    plan = stubbed_export(monkeypatch, root, ["jt_a", "jt_b"])
    export_zoo(plan(["jt_a", "jt_b"]), root=root, out=out)
    (out / "notes.txt").write_text("mine")  # not the index's: never touched
    rows = pd.read_csv(root / "results.csv")
    rows[rows["label"] == "jt_a"].to_csv(root / "results.csv", index=False)  # jt_b's rows are gone
    outcome = export_zoo(plan(["jt_a"]), root=root, out=out)
    assert [e.entry for e in read_zoo(out).entries] == ["jt_a"]
    assert sorted(p.name for p in outcome.removed) == ["jt_b-seed0.json", "jt_b-seed0.safetensors"]
    assert sorted(p.name for p in out.iterdir()) == [
        "jt_a-seed0.json",
        "jt_a-seed0.safetensors",
        "notes.txt",
        "zoo.json",
    ]


def test_export_refuses_two_labels_that_share_a_file_name(monkeypatch, tmp_path):
    from mmrobust_bench.bench.zoo import export_zoo

    root, out = tmp_path / "runs", tmp_path / "zoo"
    root.mkdir()
    plan = stubbed_export(monkeypatch, root, ["jt/v2", "jt_v2"])
    with pytest.raises(ZooError) as err:
        export_zoo(plan(["jt/v2", "jt_v2"]), root=root, out=out)
    assert str(err.value) == (
        "zoo export: 'jt/v2' seed 0 and 'jt_v2' seed 0 would both be written to jt_v2-seed0.safetensors; "
        "rename one of the labels in the sweep YAML"
    )
    assert not out.exists()


def test_cards_refuse_a_missing_or_changed_weights_file(monkeypatch, tmp_path):
    from mmrobust_bench.bench.zoo import export_zoo, link_cards

    root, out = tmp_path / "runs", tmp_path / "zoo"
    root.mkdir()
    plan = stubbed_export(monkeypatch, root, ["jt"])
    export_zoo(plan(["jt"]), root=root, out=out)
    sha = read_zoo(out).find("jt", 0).sha256
    cards = [{"dataset": "synthav", "checkpoint_sha256": sha}]
    assert link_cards(cards, out) == 1 and cards[0]["zoo"]["sha256"] == sha
    weights = out / "jt-seed0.safetensors"
    weights.write_bytes(b"another model")
    with pytest.raises(ZooError, match=r"^refusing .*jt-seed0\.safetensors: its sha256 .* lists for jt seed 0"):
        link_cards([{"dataset": "synthav", "checkpoint_sha256": sha}], out)
    weights.unlink()
    with pytest.raises(ZooError, match=r"lists jt-seed0\.safetensors for jt seed 0, but .* does not exist"):
        link_cards([{"dataset": "synthav", "checkpoint_sha256": sha}], out)


def test_restore_puts_the_zoo_models_where_the_sweep_loads_them(board, tmp_path, capsys):
    """A fresh clone has rows and a zoo but no runs/checkpoints: restored, the sweep measures the zoo's models
    (nothing trained, nothing evaluated again) and `sweep --status` counts every unit done."""
    from mmrobust_bench.bench.sweep import build_plan, load_sweep_config, run_sweep
    from mmrobust_bench.bench.sweep_status import sweep_status

    clone = board.copy(tmp_path / "clone")
    shutil.rmtree(clone.runs / "checkpoints")
    plan = build_plan(load_sweep_config(clone.config))
    assert {u.state for u in sweep_status(plan, clone.runs).units} == {"model not stored"}
    assert main(["zoo", "restore", "--zoo", str(clone.zoo), "--root", str(clone.runs)]) == 0
    assert "zoo restore: 2 checkpoints restored" in capsys.readouterr().out
    finals = sorted((clone.runs / "checkpoints").rglob("final.safetensors"))
    assert sorted(sha256_file(p) for p in finals) == sorted(e.sha256 for e in read_zoo(clone.zoo).entries)
    assert {u.state for u in sweep_status(plan, clone.runs).units} == {"done"}
    outcome = run_sweep(plan, root=clone.runs, progress=False)
    assert outcome.evaluated_rows == 0 and outcome.skipped_rows == len(stored(board))
    assert not list((clone.runs / "checkpoints").rglob("stage1.safetensors"))  # nothing was trained
    # again: nothing to do
    assert main(["zoo", "restore", "--zoo", str(clone.zoo), "--root", str(clone.runs)]) == 0
    out = capsys.readouterr().out
    assert "0 checkpoints restored into" in out and "2 already there" in out
    # a damaged zoo file is refused before anything of it is copied
    shutil.rmtree(clone.runs / "checkpoints")
    damaged = clone.zoo / read_zoo(clone.zoo).entries[1].file
    damaged.write_bytes(damaged.read_bytes()[:-1] + b"\0")
    assert main(["zoo", "restore", "--zoo", str(clone.zoo), "--root", str(clone.runs)]) != 0
    assert "sha256" in capsys.readouterr().err
