"""The committed leaderboard zoos: every checkpoint loads with the sha256 of its index, of its model card and of the
rows it made; every seed-0 model reproduces its stored clean row (and its audio-missing outcomes) on the whole test
split, and the seed-0 JT of each leaderboard its stored per-sample FGM outcomes on a slice of it (the whole
re-evaluation is ``mmrobust-bench verify``'s). avdigits needs FSDD's recordings (``$MMROBUST_FSDD_ROOT``).
``$MMROBUST_LEADERBOARDS`` points these tests at another leaderboards folder."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

import mmrobust_bench as mmr
from mmrobust_bench.bench.result_readers import read_rows
from mmrobust_bench.bench.result_rows import decode_outcomes
from mmrobust_bench.bench.zoo_index import leaderboards_dir, read_zoo

ZOOS = sorted(path.parent for path in leaderboards_dir().glob("*/zoo/zoo.json"))
SLICE = 64  # test samples re-evaluated per leaderboard
FSDD = "MMROBUST_FSDD_ROOT"

pytestmark = pytest.mark.skipif(not ZOOS, reason="no leaderboard zoo is committed yet")


def board_rows(zoo_dir: Path):
    return read_rows(zoo_dir.parent / "runs" / "results.csv")


@pytest.mark.parametrize("zoo_dir", ZOOS, ids=lambda p: p.parent.name)
def test_every_committed_checkpoint_loads_with_the_sha256_of_its_card_and_rows(zoo_dir):
    zoo = read_zoo(zoo_dir)
    rows = board_rows(zoo_dir)
    listed = {(item.entry, item.seed) for item in zoo.entries}
    assert listed == set(zip(rows["label"].astype(str), rows["seed"].astype(int)))  # every model with rows, no other
    for item in zoo.entries:
        model = mmr.load_model(zoo.dataset, item.entry, item.seed, zoo=zoo_dir)  # refuses a sha256 not the index's
        assert model.zoo_entry["sha256"] == item.sha256
        card = json.loads((zoo_dir.parent / "cards" / zoo.dataset / f"{item.entry}-seed{item.seed}.json").read_text())
        assert card["checkpoint_sha256"] == card["zoo"]["sha256"] == item.sha256
        mine = rows[(rows["label"].astype(str) == item.entry) & (rows["seed"].astype(int) == item.seed)]
        assert set(mine["checkpoint_sha256"].astype(str)) == {item.sha256}
    size = sum((zoo_dir / item.file).stat().st_size for item in zoo.entries)
    assert size < 50 * 2**20  # the README's promise: every zoo under 50 MB


@pytest.mark.parametrize("zoo_dir", ZOOS, ids=lambda p: p.parent.name)
def test_seed0_jt_reproduces_its_stored_outcomes_on_a_slice(zoo_dir, monkeypatch, tmp_path):
    zoo = read_zoo(zoo_dir)
    if zoo.dataset == "avdigits" and not os.environ.get(FSDD):
        pytest.skip(f"avdigits is built from FSDD's recordings (${FSDD}); its checkpoints are checked above")
    monkeypatch.setenv("MMROBUST_HOME", str(tmp_path))  # the test split is built here
    torch.set_num_threads(1)
    rows = board_rows(zoo_dir)
    stored = rows[
        (rows["label"] == "jt")
        & (rows["seed"] == 0)
        & (rows["attack"] == "fgm")
        & (rows["modality"] == "a")
        & (rows["eps"] == 1.0)
    ]
    assert len(stored) == 1, "the leaderboard's Table 2 cell (FGM on a at eps 1) of JT seed 0"
    row = stored.iloc[0]
    model = mmr.load_model(zoo.dataset, "jt", 0, zoo=zoo_dir)
    test = mmr.load_dataset(zoo.dataset, split="test", n=SLICE, zoo=zoo_dir, data_root=os.environ.get(FSDD))
    got = mmr.evaluate(
        model, test, attack="fgm", modality="a", eps=1.0, label="jt", dataset=zoo.dataset, check_flags=False
    )
    got = got[got["attack"] == "fgm"].iloc[0]
    assert torch.equal(decode_outcomes(got["outcomes"], SLICE), decode_outcomes(row["outcomes"], int(row["n"]))[:SLICE])


@pytest.mark.parametrize("zoo_dir", ZOOS, ids=lambda p: p.parent.name)
def test_seed0_models_reproduce_their_stored_clean_row_exactly(zoo_dir, monkeypatch, tmp_path):
    """The clean row of every seed-0 entry, re-measured on the whole test split from the committed checkpoint, equals
    the stored one (a forward pass per sample: cheap); so does the row with the audio missing, sample for sample."""
    zoo = read_zoo(zoo_dir)
    if zoo.dataset == "avdigits" and not os.environ.get(FSDD):
        pytest.skip(f"avdigits is built from FSDD's recordings (${FSDD}); its checkpoints are checked above")
    monkeypatch.setenv("MMROBUST_HOME", str(tmp_path))
    torch.set_num_threads(1)
    rows = board_rows(zoo_dir)
    test = mmr.load_dataset(zoo.dataset, split="test", zoo=zoo_dir, data_root=os.environ.get(FSDD))
    for item in (item for item in zoo.entries if item.seed == 0):
        mine = rows[(rows["label"] == item.entry) & (rows["seed"] == 0)]
        clean = mine[mine["attack"] == "clean"].iloc[0]
        missing = mine[(mine["attack"] == "missing") & (mine["modality"] == "a")].iloc[0]
        model = mmr.load_model(zoo.dataset, item.entry, 0, zoo=zoo_dir)
        got = mmr.evaluate(
            model, test, attack="missing", modality="a", label=item.entry, dataset=zoo.dataset, check_flags=False
        ).set_index("attack")
        assert int(got.loc["clean", "n"]) == int(clean["n"]), item.entry
        assert float(got.loc["clean", "accuracy"]) == float(clean["accuracy"]), item.entry
        n = int(missing["n"])
        assert torch.equal(decode_outcomes(got.loc["missing", "outcomes"], n), decode_outcomes(missing["outcomes"], n))
