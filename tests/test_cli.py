"""The CLI end to end on a small synthav, and bad input giving clear errors with non-zero exit."""

import pandas as pd
import pytest

from mmrobust_bench.cli import main

SMALL = ["--dataset-set", "n_train=256", "--dataset-set", "n_test=64", "--no-progress"]


@pytest.mark.slow
def test_main_job_end_to_end_then_cached(tmp_path, capsys):
    args = [
        "run",
        "--defense",
        "crmt_at",
        "--attack",
        "pgd_l2",
        "--modality",
        "a",
        "--root",
        str(tmp_path),
        "--set",
        "epochs=1",
        "--eps",
        "0.5,1",
    ] + SMALL
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "trained in" in out and "pgd_l2" in out and "results:" in out
    rows = pd.read_csv(tmp_path / "results.csv")
    assert list(rows["attack"]) == ["clean", "pgd_l2", "pgd_l2"]
    assert list(rows["eps"]) == [0.0, 0.5, 1.0] and set(rows["modality"]) == {"none", "a"}
    assert rows["checkpoint_sha256"].nunique() == 1 and (rows["n"] == 64).all()
    assert len(list((tmp_path / "plots").glob("*.png"))) == 1
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "reused cached checkpoint" in captured.out and "(reused 3 stored rows: nothing evaluated" in captured.out
    assert "reused 3 stored rows" not in captured.err  # said once, on stdout's results line
    again = pd.read_csv(tmp_path / "results.csv")  # the cells are stored: the rerun measures and writes nothing
    assert len(again) == 3 and again["timestamp"].tolist() == rows["timestamp"].tolist()


@pytest.mark.slow
@pytest.mark.parametrize("modality,attack", [("all", "fgm"), ("v", "missing"), ("a,v", "torchattacks:PGDL2")])
def test_run_modalities_and_attacks(tmp_path, capsys, modality, attack):
    args = [
        "run",
        "--defense",
        "jt",
        "--attack",
        attack,
        "--modality",
        modality,
        "--root",
        str(tmp_path),
        "--set",
        "epochs=1",
        "--eps",
        "0.5",
    ] + SMALL
    assert main(args) == 0
    rows = pd.read_csv(tmp_path / "results.csv")
    assert len(rows) == 2 and rows["accuracy"].between(0, 1).all()


def test_list_shows_entries_and_providers(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("crmt_at", "crmt_jt", "jt", "pgd_l2", "fgm", "missing", "synthav"):  # providers: see --json
        assert name in out
    listed = {line.split()[0] for line in out.splitlines() if line.startswith("  ")}
    assert {"torchattacks:PGDL2", "torchattacks:DeepFool", "art:ProjectedGradientDescent", "art:HopSkipJump"} <= listed


def test_list_reports_a_missing_attack_library_and_lets_other_errors_through(capsys, monkeypatch):
    from mmrobust_bench import attacks

    def missing() -> list[str]:
        raise ImportError("No module named 'torchattacks'")

    def broken() -> list[str]:
        raise RuntimeError("a bug in the lister")

    monkeypatch.setattr(attacks, "FAMILY_LISTERS", {"torchattacks": missing})
    assert main(["list"]) == 0
    assert "attack library torchattacks: unavailable (No module named 'torchattacks')" in capsys.readouterr().out
    monkeypatch.setattr(attacks, "FAMILY_LISTERS", {"torchattacks": broken})
    with pytest.raises(RuntimeError, match="a bug in the lister"):
        main(["list"])


@pytest.mark.parametrize(
    "args,message",
    [
        (["--defense", "crmt_atx"], "unknown defense 'crmt_atx'.*valid:.*crmt_at"),
        (["--modality", "x"], "unknown modality x; valid: v, a or 'all', or 'any'"),
        (["--eps", "-1"], "eps must be finite numbers >= 0"),
        (["--eps", "abc"], "--eps expects comma-separated numbers"),
        (["--attack", "nope"], "unknown attack 'nope'.*valid:.*pgd_l2"),
        (["--set", "rhoo=1"], "unknown setting rhoo"),
        (["--attack", "torchattacks:NoSuchAttack"], "NoSuchAttack"),
    ],
)
def test_bad_input_is_a_clear_error(tmp_path, capsys, args, message):
    code = main(["run", "--root", str(tmp_path), "--set", "epochs=1"] + SMALL + args)
    err = capsys.readouterr().err
    assert code == 2
    import re

    assert re.search(message, err), err
