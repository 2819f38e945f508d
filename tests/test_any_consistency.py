"""``any`` is combined from per-set measurements; a stored set row must be the one it was combined from, so the
stored ``any`` is never above a stored single set (a set row measured another time, at another batch size or on
another machine, can differ where an attack depends on its batch)."""

from __future__ import annotations

import types

import pandas as pd
import torch
from torch import nn

import mmrobust_bench as mmr
from mmrobust_bench.bench import sweep_units
from mmrobust_bench.bench.result_rows import done_cells
from mmrobust_bench.bench.results import read_rows, rewrite_rows
from mmrobust_bench.bench.sweep_config import GridBlock
from mmrobust_bench.contracts import ModalitySpec, ModelOutput
from mmrobust_bench.data.base import TensorSplit

SPECS = [ModalitySpec("a", (1, 4, 4), (0.0,), (1.0,)), ModalitySpec("b", (8,))]


class Linear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(3)
        self.wa = nn.Parameter(torch.randn(16, 10, generator=g))
        self.wb = nn.Parameter(torch.randn(8, 10, generator=g))

    def forward(self, batch):
        return ModelOutput(logits=batch["a"].flatten(1) @ self.wa + batch["b"].flatten(1) @ self.wb)


def toy():
    g = torch.Generator().manual_seed(5)
    x = {"a": torch.rand(40, 1, 4, 4, generator=g), "b": torch.randn(40, 8, generator=g)}
    model = Linear().eval()
    with torch.no_grad():
        y = model(x).logits.argmax(1)
    return model, x, y


def sweep_unit(tmp_path):
    """The toy model as a sweep unit: (trained model with its dataset, the rows' common fields, results path)."""
    model, x, y = toy()
    ds = types.SimpleNamespace(name="toy", specs=SPECS, test=TensorSplit(x, y))
    common = dict(dataset="toy", defense="lin", label="lin", seed=0, checkpoint_sha256="abc", config_hash="h")
    common.update(device="cpu", suite_version="x")
    return types.SimpleNamespace(dataset=ds, model=model), common, tmp_path / "results.csv"


def falsify(modality: str, accuracy: float, *, drop_any: bool = False, blank_outcomes: bool = False):
    """An edit of the stored rows that stands for a set row measured another time."""

    def edit(frame: pd.DataFrame) -> pd.DataFrame:
        frame = frame.copy()
        hit = frame["modality"].astype(str) == modality
        frame.loc[hit, "accuracy"] = accuracy
        if blank_outcomes:
            frame.loc[hit, "outcomes"] = ""
        return frame[frame["modality"].astype(str) != "any"] if drop_any else frame

    return edit


def stored(path) -> dict[str, float]:
    rows = read_rows(path)
    rows = rows[rows["attack"].astype(str) != "clean"]
    return dict(zip(rows["modality"].astype(str), rows["accuracy"].astype(float)))


def test_the_sweeps_any_cell_replaces_a_stored_set_row_it_had_to_measure_again(tmp_path):
    trained, common, path = sweep_unit(tmp_path)
    block = GridBlock(attacks=("pgd_l2",), modalities=("all", "any"), eps=(0.5,))
    cpu = torch.device("cpu")
    sweep_units._attack_cell(trained, common, block, "pgd_l2", "all", 8, cpu, set(), path)
    measured = stored(path)["all"]
    # stored earlier without per-sample outcomes, and (standing for another batch size) with another accuracy
    rewrite_rows(path, falsify("all", 1.0, blank_outcomes=True))
    sweep_units._attack_cell(trained, common, block, "pgd_l2", "any", 8, cpu, done_cells(read_rows(path)), path)
    after = stored(path)
    assert after["all"] == measured and after["any"] <= min(after["a"], after["b"], after["all"])


def test_evaluate_any_writes_the_set_rows_it_combined(tmp_path):
    model, x, y = toy()
    modalities = {"a": mmr.Modality((1, 4, 4), box=(0, 1)), "b": mmr.Modality((8,))}
    wrapped = mmr.wrap(model, modalities=modalities, call="dict")
    loader = [(x["a"][i : i + 10], x["b"][i : i + 10], y[i : i + 10]) for i in range(0, 40, 10)]
    path = tmp_path / "results.csv"
    options = dict(attack="pgd_l2", modality="any", eps=[0.5], label="lin", results=str(path))
    mmr.evaluate(wrapped, loader, **options)
    first = stored(path)
    rewrite_rows(path, falsify("all", 0.0, drop_any=True))  # an 'all' row from another time, no any yet
    mmr.evaluate(wrapped, loader, **options)
    assert stored(path) == first


def test_the_sweeps_any_cell_of_an_attack_without_a_budget_combines_stored_and_new_sets(tmp_path):
    """``missing`` measures at ε 0 and stores NaN: a stored set and fresh ones are one grid."""
    trained, common, path = sweep_unit(tmp_path)
    block = GridBlock(attacks=("missing",), modalities=("a", "any"), eps=(1.0,))
    cpu = torch.device("cpu")
    sweep_units._attack_cell(trained, common, block, "missing", "a", 8, cpu, set(), path)
    sweep_units._attack_cell(trained, common, block, "missing", "any", 8, cpu, done_cells(read_rows(path)), path)
    after = stored(path)
    assert set(after) == {"a", "b", "all", "any"} and after["any"] <= min(after["a"], after["b"], after["all"])
