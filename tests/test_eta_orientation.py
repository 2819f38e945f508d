"""One orientation of the η ratio on every dataset (certify.eta): η^(a)/η^(v) as the paper's Figure 3, in the
figure's colour bar and title, the findings' section 3b and a model's certificate text, whichever modality is
the more fragile; one aggregation (mean over class pairs per modality, then the ratio, then mean over seeds)."""

import matplotlib.pyplot as plt
import pandas as pd
import pytest
import torch

from mmrobust_bench.certify.eta import (
    ETA_RATIO_AGGREGATION,
    eta_ratio_modalities,
    eta_ratio_per_defense,
    eta_ratio_text,
)
from mmrobust_bench.certify.radii import Certificate
from mmrobust_bench.data.avdigits import build_avdigits
from mmrobust_bench.data.synthav import build_synthav
from mmrobust_bench.reports.figures import figure3
from mmrobust_bench.reports.findings import findings_markdown

from helpers import fixture_eta, fixture_rows

SYMBOL = r"$\eta^{(\mathrm{a})} / \eta^{(\mathrm{v})}$"
HEADING = (
    "### 3b. Imbalance: empirical η^(a) / η^(v) (the paper's Figure 3 orientation; mean over class pairs of η "
    "per modality, then the ratio, then mean over seeds; 1 = balanced)"
)


def swapped(frame: pd.DataFrame, dataset: str) -> pd.DataFrame:
    """The same rows with audio and visual exchanged: now the visual modality is the fragile, high-η one."""
    return frame.assign(dataset=dataset, modality=frame["modality"].replace({"a": "v", "v": "a"}))


def test_the_rule_picks_audio_over_visual_on_both_datasets_in_any_order():
    assert build_synthav.modality_names == ("v", "a") and build_avdigits.modality_names == ("v", "a")
    for names in (build_synthav.modality_names, build_avdigits.modality_names, ("a", "v"), ["v", "a", "v"]):
        assert eta_ratio_modalities(names) == ("a", "v")
        assert eta_ratio_text(names) == "η^(a) / η^(v)"
    assert eta_ratio_modalities(("rgb", "flow")) == ("flow", "rgb")  # any other pair: the same alphabetical rule
    with pytest.raises(ValueError, match=r"^an η ratio compares exactly two modalities, got 3 \(a, flow, v\); "):
        eta_ratio_modalities(("v", "a", "flow"))
    assert ETA_RATIO_AGGREGATION == "mean over class pairs of η per modality, then the ratio, then mean over seeds"


def test_aggregation_is_the_mean_over_seeds_of_the_ratio_of_pair_means():
    eta = fixture_eta(k=3)
    # seed 1 of jt: audio η doubled on one pair only -> its pair mean of audio rises by that pair's share
    bump = (
        (eta["defense"] == "jt")
        & (eta["seed"] == 1)
        & (eta["modality"] == "a")
        & (eta["class_y"] == 0)
        & (eta["class_j"] == 1)
    )
    eta.loc[bump, "eta_pair"] *= 2
    jt = eta[eta["defense"] == "jt"]
    per_seed = []
    for seed in (0, 1):
        part = jt[jt["seed"] == seed].groupby("modality")["eta_pair"].mean()
        per_seed.append(part["a"] / part["v"])
    row = eta_ratio_per_defense(eta, "a", "v").set_index("defense").loc["jt"]
    assert row["ratio_mean"] == pytest.approx(sum(per_seed) / 2, rel=1e-12)
    assert row["ratio_std"] == pytest.approx(pd.Series(per_seed).std(ddof=1), rel=1e-12)
    assert row["seeds"] == 2 and per_seed[0] == pytest.approx(3.0)


@pytest.mark.parametrize("dataset,expected", [("synthav", 3.0), ("avdigits", 1 / 3)])
def test_figure3_colour_bar_and_title_use_the_rule_on_both_datasets(dataset, expected):
    eta = fixture_eta(k=4) if dataset == "synthav" else swapped(fixture_eta(k=4), dataset)
    fig = figure3(eta, dataset=dataset)
    bar = next(ax for ax in fig.axes if ax.get_label() == "<colorbar>")
    label = bar.get_ylabel()
    assert label.startswith(f"{SYMBOL}  (audio / visual)") and "the paper's Figure 3 orientation" in label
    title = fig.get_suptitle()
    assert title.startswith(f"{dataset}: vulnerability ratio {SYMBOL} (the paper's Figure 3 orientation)")
    assert f"panel titles: {ETA_RATIO_AGGREGATION} (± std)" in title
    panels = {ax.get_title().split("\n")[0]: ax for ax in fig.axes if ax.images}
    jt = panels["JT"]
    cells = jt.images[0].get_array()
    assert float(cells[0, 1]) == pytest.approx(expected) and float(cells[3, 2]) == pytest.approx(expected)
    # the panel title is the findings' number: 3.00 (audio 3× visual) or 0.333 (visual 3× audio), 2 seeds
    assert jt.get_title() == f"JT\nratio {expected:#.3g} ± 0.0, 2 seeds"
    plt.close(fig)


def test_findings_heading_is_the_same_on_both_datasets_whichever_modality_is_fragile():
    synthav = findings_markdown(fixture_rows(), pairs=fixture_eta())
    # avdigits-like: the visual modality is the fragile one under PGD and has the larger η
    avdigits = findings_markdown(
        swapped(fixture_rows("avdigits"), "avdigits"), pairs=swapped(fixture_eta(), "avdigits")
    )
    for text in (synthav, avdigits):
        assert HEADING in text.splitlines()
        assert "η^(v) / η^(a)" not in text and "orders the modalities" not in text
    assert "| `jt` | 3.000 ± 0.000 | 2 |" in synthav and "| `crmt_jt` | 1.200 ± 0.000 | 2 |" in synthav
    assert "| `jt` | 0.333 ± 0.000 | 2 |" in avdigits and "| `crmt_jt` | 0.833 ± 0.000 | 2 |" in avdigits


def test_a_models_certificate_text_uses_the_rule():
    k, n = 3, 4
    local = {"v": torch.full((n,), 6.0), "a": torch.full((n,), 2.0)}
    glob = {"v": torch.full((k, k), 9.0), "a": torch.full((k, k), 3.0)}
    cert = Certificate(
        modalities=("v", "a"),
        head="concat",
        labels=torch.zeros(n, dtype=torch.long),
        predictions=torch.zeros(n, dtype=torch.long),
        runner_up=torch.ones(n, dtype=torch.long),
        tau={},
        tau_estimated={},
        tau_source="test",
        pair_eta=glob,
        eq10_eta={},
        local_eta=local,
        local_pair_mean={},
        radii=[],
        n_train=8,
    )
    lines = cert.format([]).splitlines()
    assert "  ratio η^(a)/η^(v): local 0.3333, global 0.3333" in lines
    assert not any("η^(v)/η^(a)" in line for line in lines)
