"""`run --attack autoattack` and `run --modality any` from the CLI: the rows, the `any` bound, the flags' warnings."""

import json
import logging

import pandas as pd
import pytest

from mmrobust_bench.bench import api
from mmrobust_bench.bench.flags import UNBOUNDED_NOT_ZERO, Flag
from mmrobust_bench.cli import main

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

TINY = ["--defense", "jt", "--set", "epochs=3", "--set", "batch_size=32", "--eps", "0.5"]
TINY += ["--dataset-set", "n_train=256", "--dataset-set", "n_test=32", "--no-progress"]


def test_run_autoattack_on_any_writes_each_set_and_their_per_sample_worst(tmp_path, capsys):
    args = ["run", *TINY, "--attack", "autoattack", "--attack-set", "version=fast", "--modality", "any"]
    assert main([*args, "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "autoattack" in out and "results:" in out
    rows = pd.read_csv(tmp_path / "results.csv")
    attacked = rows[rows["attack"] == "autoattack"].set_index("modality")
    assert sorted(attacked.index) == ["a", "all", "any", "v"]
    assert set(attacked["attack_config"]) == {"autoattack(version='fast')"}
    # any is the per-sample worst of the sets: never above one of them, and as low as the lowest at most
    assert attacked.loc["any", "accuracy"] <= attacked.loc[["v", "a", "all"], "accuracy"].min()
    clean = float(rows.loc[rows["attack"] == "clean", "accuracy"].iloc[0])
    assert clean >= 0.5 and attacked["accuracy"].max() <= clean  # a model the attack has something to break
    for modality in ("v", "a", "all"):  # the rows record the version, every member and how many it broke
        details = json.loads(attacked.loc[modality, "details"])
        assert details["version"] == "fast" and set(details["breaks"]) == {"apgd-ce", "apgd-t", "fab-t", "square"}
        assert len(details["members"]) == 4


def test_run_logs_each_flag_with_its_remedy_per_threat_set(tmp_path, capsys, caplog, monkeypatch):
    """Every flag a set raises is logged with the remedy (the strong evaluation), prefixed with its set under
    `any`, and its name reaches the set's rows."""
    raised = Flag(UNBOUNDED_NOT_ZERO, "at eps=1000 the attack leaves accuracy 0.5")
    monkeypatch.setattr(api, "check_attack", lambda *a, **k: [raised])
    with caplog.at_level(logging.WARNING, logger="mmrobust_bench"):
        assert main(["run", *TINY, "--attack", "pgd_l2", "--modality", "any", "--root", str(tmp_path)]) == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "flag " in r.getMessage()]
    assert len(warnings) == 3, warnings  # v, a and the joint ball
    assert all(UNBOUNDED_NOT_ZERO in w and "--attack autoattack" in w for w in warnings)
    rows = pd.read_csv(tmp_path / "results.csv", keep_default_na=False)
    attacked = rows[rows["attack"] == "pgd_l2"].set_index("modality")
    assert all(UNBOUNDED_NOT_ZERO in attacked.loc[m, "flags"] for m in ("v", "a", "all", "any"))
