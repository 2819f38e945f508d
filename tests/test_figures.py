"""Figure properties a reviewer checks: distinct styles, legends outside the data, labelled bands, integer class
ticks, a colour scale centred where it should be, zoomed ablation axes, metadata instead of a canvas stamp."""

import re
import warnings

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.text import Text
from PIL import Image

from mmrobust_bench.cli import main
from mmrobust_bench.reports.certified_curves import figure_certified_curves
from mmrobust_bench.reports.curves import plot_robust_curve, run_plot_name
from mmrobust_bench.reports.figures import (
    DEFAULT_ABLATION,
    DPI,
    FULL_WIDTH,
    MIN_FONT_PT,
    OKABE_ITO,
    SINGLE_COLUMN,
    entry_styles,
    figure1,
    figure3,
    figure4,
    figure5,
    plot_figures,
    save_figure,
)

from helpers import PGD, accuracy, fixture_certified, fixture_eta, fixture_rows

CMD = "mmrobust-bench plot --results fixture.csv --out figs"


@pytest.fixture(autouse=True)
def close_figures():
    """Every figure a test draws is closed after it (pyplot keeps them otherwise)."""
    yield
    plt.close("all")


def many_entries(n: int = 20) -> pd.DataFrame:
    """``n`` labels with PGD curves on audio, 2 seeds each."""
    rows = []
    for i in range(n):
        for seed in (0, 1):
            rows.append(
                {
                    "dataset": "synthav",
                    "defense": f"d{i:02d}",
                    "seed": seed,
                    "config_hash": "c",
                    "checkpoint_sha256": f"s{i}{seed}",
                    "attack": "clean",
                    "attack_config": "clean",
                    "modality": "none",
                    "eps": 0.0,
                    "accuracy": 0.9,
                }
            )
            for eps in (0.5, 1.0):
                rows.append(
                    {
                        "dataset": "synthav",
                        "defense": f"d{i:02d}",
                        "seed": seed,
                        "config_hash": "c",
                        "checkpoint_sha256": f"s{i}{seed}",
                        "attack": "pgd_l2",
                        "attack_config": PGD,
                        "modality": "a",
                        "eps": eps,
                        "accuracy": 0.9 - 0.02 * i * eps + 0.01 * seed,
                    }
                )
    return pd.DataFrame(rows)


def data_axes(fig) -> list:
    """The panels that hold data (a legend's own cell has no axis)."""
    return [ax for ax in fig.axes if ax.get_visible() and ax.axison and ax.get_label() != "<colorbar>"]


def all_legends(fig) -> list:
    return list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]


def legend_names(fig) -> list[str]:
    return [t.get_text() for legend in all_legends(fig) for t in legend.get_texts()]


def test_entries_are_drawn_in_family_panels_each_told_apart_by_colour():
    styles = entry_styles([f"e{i}" for i in range(20)])
    assert len({(s["color"], s["marker"]) for s in styles.values()}) == 20
    assert {s["color"] for s in styles.values()} == set(OKABE_ITO)  # colour-blind safe
    fig = figure1(many_entries(20))  # 20 entries of no known family: 7 + 7 + 6 per row of panels, no JT
    rows = [axes for axes in np.array(fig.axes).reshape(3, 2)]
    assert [ax.get_legend().get_title().get_text() for _, ax in rows] == [
        "other entries (1/3)",
        "other entries (2/3)",
        "other entries (3/3)",
    ]
    assert [len(ax.get_lines()) for ax, _ in rows] == [7, 7, 6]
    for ax, _ in rows:
        assert len({ln.get_color() for ln in ax.get_lines()}) == len(ax.get_lines())
    assert sorted(ln.get_label() for ax, _ in rows for ln in ax.get_lines()) == [f"d{i:02d}" for i in range(20)]

    fig = figure1(fixture_rows())  # the paper's families, JT drawn in every row as the reference
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    assert [lg.get_title().get_text() for lg in legends] == ["baselines", "CRMT variants", "transformers"]
    assert [[t.get_text() for t in lg.get_texts()] for lg in legends] == [
        ["JT", "GB", "MMAT"],
        ["CRMT-JT", "CRMT-AT", "CRMT-JT head only", "CRMT-JT step 1 only", "CRMT-JT step 2 only", "JT (reference)"],
        ["MMT", "CRMT-MMT", "JT (reference)"],
    ]
    for legend in legends:
        reference = legend.get_lines()[-1] if legend is not legends[0] else legend.get_lines()[0]
        assert matplotlib_rgb(reference.get_color()) == (0.0, 0.0, 0.0)  # JT is black everywhere
        colours = [ln.get_color() for ln in legend.get_lines()]
        assert len(set(colours)) == len(colours)
    reference = {ln.get_linestyle() for ax in data_axes(fig)[3:] for ln in ax.get_lines() if ln.get_label() == "jt"}
    assert reference == {"--"}  # dashed beside the other families


def matplotlib_rgb(colour):
    from matplotlib.colors import to_rgb

    return to_rgb(colour)


def _overlaps(a, b) -> bool:
    return not (a.x1 <= b.x0 or b.x1 <= a.x0 or a.y1 <= b.y0 or b.y1 <= a.y0)


@pytest.mark.parametrize(
    "make",
    [
        lambda: figure1(fixture_rows()),
        lambda: figure4(fixture_rows()),
        lambda: figure5(fixture_rows()),
        lambda: figure_certified_curves(fixture_certified()),
    ],
)
def test_legends_sit_outside_every_axes(make):
    fig = make()
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    legends = all_legends(fig)
    assert legends
    for legend in legends:
        box = legend.get_window_extent(renderer)
        for ax in data_axes(fig):
            assert not _overlaps(box, ax.get_window_extent(renderer))
            assert ax.get_legend() is None  # a panel with data holds no legend


def test_bands_are_mean_plus_minus_std_and_say_so():
    rows = fixture_rows()
    fig = figure1(rows, band="std")
    assert "band: mean ± 1 sample std over 3 seeds" in fig._supxlabel.get_text()
    # the JT band on audio at ε = 2 spans mean ± std of the three seeds exactly
    accs = [accuracy("jt", "pgd_l2", "a", 2.0, s) for s in (0, 1, 2)]
    audio = next(ax for ax in fig.axes if "audio" in ax.get_title())
    assert audio.get_lines()[0].get_label() == "jt"
    verts = np.concatenate([p.vertices for c in audio.collections[:1] for p in c.get_paths()])
    at2 = verts[np.isclose(verts[:, 0], 2.0)][:, 1]
    assert at2.max() == pytest.approx(np.mean(accs) + np.std(accs, ddof=1))
    assert at2.min() == pytest.approx(np.mean(accs) - np.std(accs, ddof=1))
    ci = figure1(rows, band="ci95")
    assert "band: 95% t-interval of the mean over 3 seeds" in ci._supxlabel.get_text()
    titles = [ax.get_title() for ax in fig.axes]
    assert "ℓ2-PGD on audio" in titles and "ℓ2-PGD on visual" in titles and not any("#" in t for t in titles)


def test_figure4_draws_seed_bands_per_modality():
    fig = figure4(fixture_rows())
    ax = fig.axes[0]
    # two seed bands (audio, visual) and the hatched gap
    assert len(ax.collections) == 3
    assert any("sample std over 3 seeds" in t.get_text() for t in fig.legends[0].get_texts())


def uni_rows(a_eps: dict, v_eps: dict, clean: float | None = None) -> pd.DataFrame:
    """JT, one seed: PGD accuracy per ε on audio (``a_eps``) and visual (``v_eps``), and a clean row if given."""
    base = {"dataset": "synthav", "defense": "jt", "seed": 0, "config_hash": "c", "checkpoint_sha256": "s"}
    rows = [{**base, "attack": "clean", "attack_config": "clean", "modality": "none", "eps": 0.0, "accuracy": clean}]
    rows = rows if clean is not None else []
    for mod, accs in (("a", a_eps), ("v", v_eps)):
        rows += [
            {**base, "attack": "pgd_l2", "attack_config": PGD, "modality": mod, "eps": e, "accuracy": acc}
            for e, acc in accs.items()
        ]
    return pd.DataFrame(rows)


def test_figure4_gap_is_over_radii_both_modalities_were_attacked_at():
    def gap_line(rows):
        (ax,) = [ax for ax in figure4(rows).axes if ax.get_visible()]
        return ax.get_title().split("\n")[1]

    # no ε in common: no number (it was "mean gap nan")
    assert gap_line(uni_rows({0.5: 0.6, 1.0: 0.4}, {0.25: 0.7, 0.75: 0.5})) == "no common ε"
    # the only shared point is ε = 0 filled in from the clean row, the same on both curves: still no gap to report
    assert gap_line(uni_rows({0.5: 0.6, 1.0: 0.4}, {0.25: 0.7, 0.75: 0.5}, clean=0.9)) == "no common ε"
    # the clean point does not dilute a real gap: 0.2 at both radii, not (0 + 0.2 + 0.2) / 3
    assert gap_line(uni_rows({0.5: 0.6, 1.0: 0.4}, {0.5: 0.4, 1.0: 0.2}, clean=0.9)) == "mean gap 0.20"


def test_figure3_integer_ticks_log_colour_scale_and_mathtext_label():
    eta = fixture_eta(k=4)
    fig = figure3(eta)
    panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>" and ax.images]
    for ax in panels:
        assert list(ax.get_xticks()) == [0, 1, 2, 3] and list(ax.get_yticks()) == [0, 1, 2, 3]
    image = panels[0].images[0]
    # every ratio > 1 here (audio scale 1.2 … 3): a sequential map, log scale over the range
    assert image.get_cmap().name == "viridis" and type(image.norm).__name__ == "LogNorm"
    assert image.norm.vmin == pytest.approx(1.2) and image.norm.vmax == pytest.approx(3.0)
    bar = next(ax for ax in fig.axes if ax.get_label() == "<colorbar>")
    assert r"$\eta^{(\mathrm{a})} / \eta^{(\mathrm{v})}$" in bar.get_ylabel() and "audio / visual" in bar.get_ylabel()
    # ratios on both sides of 1: a diverging map with 1 exactly in the middle
    flipped = eta.copy()
    flipped.loc[(flipped["defense"] == "crmt_jt") & (flipped["modality"] == "a"), "eta_pair"] *= 0.25
    img = next(ax for ax in figure3(flipped).axes if ax.images).images[0]
    assert img.get_cmap().name == "RdBu_r" and img.norm(1.0) == pytest.approx(0.5)


def test_figure5_zooms_the_axis_and_is_skipped_without_ablation_rows(tmp_path):
    rows = fixture_rows()
    fig = figure5(rows)
    for ax in fig.axes:
        low, high = ax.get_ylim()
        assert low > 0.5 and high - low < 0.4  # values 0.63 … 0.89: not flattened on 0–1
    perfect = rows.copy()
    perfect.loc[perfect["attack"] == "clean", "accuracy"] = 1.0
    clean_panel = figure5(perfect).axes[0]
    assert clean_panel.get_ylim()[1] > 1.0  # a marker at accuracy 1 is drawn whole, not cut by the frame
    no_ablation = rows[~rows["defense"].isin([label for _, label in DEFAULT_ABLATION])]
    with pytest.raises(ValueError, match="no ablation rows"):
        figure5(no_ablation)
    only_jt = rows[~rows["defense"].isin([label for _, label in DEFAULT_ABLATION[1:]])]
    saved, notes = plot_figures(only_jt, tmp_path, command=CMD, figures=(5,))
    assert not saved and notes and "figure 5 (synthav) skipped: no ablation rows" in notes[0]
    assert not list(tmp_path.glob("figure5*"))


def test_command_in_png_metadata_and_sidecar_not_on_canvas(tmp_path):
    fig = figure1(fixture_rows(), command=CMD)
    assert not any(CMD in t.get_text() for t in fig.texts)
    item = save_figure(fig, tmp_path / "f.png", command=CMD, description="Figure 1")
    info = Image.open(item.path).info
    assert info["Source"] == CMD and info["Comment"] == f"made by: {CMD}" and info["Title"] == "Figure 1"
    assert f"made by: {CMD}" in item.sidecar.read_text()
    stamped = figure1(fixture_rows(), command=CMD, stamp=True)
    assert any(t.get_text() == f"made by: {CMD}" for t in stamped.texts)
    saved, _ = plot_figures(fixture_rows(), tmp_path / "svg", command=CMD, figures=(1,), fmt="svg")
    assert f"made by: {CMD}" in saved[0].path.read_text()


def test_figures_regenerate_to_the_same_bytes(tmp_path):
    """No creation date or other clock in a figure file: the same rows and command give the same PDF and PNG, so a
    regenerated leaderboard shows a figure as changed only when it is (the certified curves included)."""
    from mmrobust_bench.reports.certified_curves import plot_certified_curves

    for fmt in ("pdf", "png"):
        made = []
        for run in ("one", "two"):
            saved, _ = plot_figures(fixture_rows(), tmp_path / run, command=CMD, figures=(1,), fmt=fmt)
            curves = plot_certified_curves(fixture_certified(), tmp_path / run, command=CMD, fmt=fmt)
            assert saved and curves
            made.append([p.read_bytes() for p in [saved[0].path, *curves]])
        assert made[0] == made[1], fmt
        if fmt == "pdf":
            assert b"CreationDate" not in made[0][0] and b"CreationDate" not in made[0][1]
            assert f"made by: {CMD}".encode() in made[0][1]  # the certified curves' PDF names its command too


def test_per_run_plot_names_carry_the_configuration(tmp_path):
    a = run_plot_name("synthav", "jt", "torchattacks:PGDL2", "a", 0, "b30dba0941e7")
    b = run_plot_name("synthav", "jt", "torchattacks:PGDL2", "a", 0, "f00dba0941e7")
    assert a == "synthav-jt-cfgb30dba09-torchattacks_pgdl2-a-seed0.png" and a != b
    rows = fixture_rows()
    rows = rows[
        (rows["defense"] == "jt")
        & (rows["seed"] == 0)
        & rows["modality"].isin(["none", "a"])
        & rows["attack"].isin(["clean", "pgd_l2"])
    ]
    path = plot_robust_curve(rows, tmp_path / a, title="synthav: jt", command=CMD)
    assert path.name == a and Image.open(path).info["Source"] == CMD
    assert (tmp_path / (a + ".txt")).read_text().endswith(f"made by: {CMD}\n")


def test_mixed_configurations_are_separate_curves():
    rows = fixture_rows()
    other = rows[rows["defense"] == "jt"].assign(config_hash="other", accuracy=0.1)
    fig = figure1(pd.concat([rows, other], ignore_index=True))
    names = legend_names(fig)
    assert "JT [cfg c]" in names and "JT [cfg other]" in names and "JT" not in names


def test_certified_curves_name_entries_like_every_other_report():
    """A label with two configurations in one dataset is split with the reports' own entry names
    (``jt [cfg <8 hex>]``); the same label with one configuration per dataset is not split."""
    from mmrobust_bench.reports.certified_curves import certified_curve_data
    from mmrobust_bench.reports.entries import entry_name

    def rows(dataset: str, cfg: str) -> list[dict]:
        return [
            dict(
                dataset=dataset,
                defense="jt",
                defense_id="jt",
                seed=0,
                config_hash=cfg,
                method="empirical",
                kind="empirical",
                certificate="eq7[a]",
                equation="Eq. 7",
                variant="min_j",
                modality="a",
                radius=r,
                certified_accuracy=0.9 - r,
            )
            for r in (0.0, 0.5)
        ]

    frame = pd.DataFrame(rows("synthav", "aaaaaaaa11") + rows("synthav", "bbbbbbbb22") + rows("avdigits", "cccccccc33"))
    assert set(certified_curve_data(frame, dataset="synthav")["entry"]) == {
        entry_name("jt", "aaaaaaaa11"),
        entry_name("jt", "bbbbbbbb22"),
    }
    assert set(certified_curve_data(frame, dataset="avdigits")["entry"]) == {"jt"}


def test_certified_curves_key_names_only_the_certificate_kinds_drawn():
    import matplotlib.pyplot as plt

    from mmrobust_bench.reports.certified_curves import figure_certified_curves

    rows = [
        dict(
            dataset="avdigits",
            defense="jt",
            defense_id="jt",
            seed=0,
            config_hash="c",
            method="empirical",
            kind="empirical",
            certificate="eq7[a]",
            equation="Eq. 7",
            variant="min_j",
            modality="a",
            radius=r,
            certified_accuracy=0.9 - r,
        )
        for r in (0.0, 0.5)
    ]
    fig = figure_certified_curves(pd.DataFrame(rows), dataset="avdigits")
    names = [t.get_text() for t in fig.legends[0].get_texts()]
    assert any("empirical" in n for n in names)
    assert not any("smoothing" in n or "heuristic" in n for n in names)  # nothing of those kinds was drawn
    plt.close(fig)


PAPER_FIGURES = {
    "figure1": lambda: figure1(fixture_rows()),
    "figure3": lambda: figure3(fixture_eta()),
    "figure4": lambda: figure4(fixture_rows()),
    "figure5": lambda: figure5(fixture_rows()),
    "certified curves": lambda: figure_certified_curves(fixture_certified()),
}


@pytest.mark.parametrize("name", sorted(PAPER_FIGURES))
def test_figures_are_full_width_with_text_of_at_least_7pt_and_nothing_cut(name):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # constrained layout that cannot fit the figure warns
        fig = PAPER_FIGURES[name]()
        fig.canvas.draw()
    assert fig.get_size_inches()[0] == FULL_WIDTH == 7.0
    texts = [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]
    assert len(texts) > 20
    assert [(t.get_text(), t.get_fontsize()) for t in texts if t.get_fontsize() < MIN_FONT_PT] == []
    assert MIN_FONT_PT == 7.0
    drawn = fig.get_tightbbox(fig.canvas.get_renderer())  # inches; saving never crops, so nothing may lie outside
    width, height = fig.get_size_inches()
    assert drawn.x0 >= -0.01 and drawn.y0 >= -0.01 and drawn.x1 <= width + 0.01 and drawn.y1 <= height + 0.01
    plt.close(fig)


def test_figures_are_written_as_pdf_and_png_at_300_dpi_and_their_size(tmp_path, capsys):
    saved, notes = plot_figures(fixture_rows(), tmp_path, command=CMD, eta_pairs=fixture_eta())
    assert not notes and sorted(s.number for s in saved) == [1, 3, 4, 5]
    for item in saved:
        pdf, png = item.paths
        assert (pdf.name, png.name) == (f"figure{item.number}-synthav.pdf", f"figure{item.number}-synthav.png")
        image = Image.open(png)
        assert DPI == 300 and image.info["dpi"] == pytest.approx((300, 300), abs=0.01)
        assert image.size[0] == 2100  # 7 in at 300 dpi: never cropped
        data = pdf.read_bytes()
        assert data.startswith(b"%PDF")
        box = re.search(rb"/MediaBox \[ 0 0 ([\d.]+) ([\d.]+) \]", data)
        assert float(box.group(1)) == 504.0  # 7 in of 72 pt
        assert float(box.group(2)) / 72 * 300 == pytest.approx(image.size[1], abs=1)
        assert pdf.with_name(pdf.name + ".txt").read_text().endswith(f"made by: {CMD}\n")
    # the command line writes both by default, the certified curves included
    root = tmp_path / "runs"
    root.mkdir()
    fixture_rows().to_csv(root / "results.csv", index=False)
    fixture_certified().to_csv(root / "certified.csv", index=False)
    out = tmp_path / "cli"
    assert main(["plot", "--results", str(root / "results.csv"), "--out", str(out), "--figures", "1"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        f"{stem}-synthav.{fmt}{txt}"
        for stem in ("certified-curves", "figure1")
        for fmt in ("pdf", "png")
        for txt in ("", ".txt")
    ]
    assert Image.open(out / "certified-curves-synthav.png").size[0] == 2100
    capsys.readouterr()
    assert (
        main(["plot", "--results", str(root / "results.csv"), "--out", str(tmp_path / "no"), "--format", "png,jpg"])
        == 2
    )
    assert "unknown figure format jpg; valid: pdf, png, svg" in capsys.readouterr().err
    assert not (tmp_path / "no").exists()


def test_a_run_curve_is_one_column_wide_at_300_dpi(tmp_path):
    rows = fixture_rows()
    rows = rows[
        (rows["defense"] == "crmt_at")
        & (rows["seed"] == 0)
        & rows["attack"].isin(["clean", "pgd_l2"])
        & rows["modality"].isin(["none", "a"])
    ]
    path = plot_robust_curve(rows, tmp_path / "run.png", title="synthav: crmt_at", command=CMD)
    image = Image.open(path)
    assert SINGLE_COLUMN == 3.3 and image.size[0] == 990 and image.info["dpi"] == pytest.approx((300, 300), abs=0.01)


def test_one_name_per_entry_in_every_figure():
    names = legend_names(figure1(fixture_rows())) + [ax.get_title() for ax in figure4(fixture_rows()).axes]
    names += legend_names(figure_certified_curves(fixture_certified()))
    assert "CRMT-AT" in names and "CRMT-JT step 1 only" in names
    assert any(n.startswith("CRMT-AT (2 seeds)") for n in names)
    assert any(t.startswith("CRMT-JT step 2 only\nmean gap") for t in names)
    assert not [n for n in names if "crmt_" in n or n.startswith("jt")]
    plt.close("all")


def ring_points(ax) -> list[tuple[float, float]]:
    """The (x, y) of every flag ring drawn on ``ax`` (hollow, in the ring's colour)."""
    from matplotlib.colors import to_rgba

    from mmrobust_bench.reports.figure_style import FLAG_RING

    out = []
    for c in ax.collections:
        edges, faces = c.get_edgecolor(), c.get_facecolor()
        if len(edges) and len(faces) == 0 and np.allclose(edges[0], to_rgba(FLAG_RING["edgecolors"])):
            out += [tuple(map(float, p)) for p in c.get_offsets()]
    return out


def with_flag(rows: pd.DataFrame, label: str, attack: str, modality: str, eps: float, seed: int) -> pd.DataFrame:
    rows = rows.copy()
    at = (
        (rows["defense"] == label)
        & (rows["attack"] == attack)
        & (rows["modality"] == modality)
        & np.isclose(rows["eps"].astype(float), eps)
        & (rows["seed"] == seed)
    )
    assert at.sum() == 1
    rows["flags"] = rows["flags"].astype(object) if "flags" in rows else ""
    rows.loc[at, "flags"] = "zero_gradients"
    return rows


def test_a_point_resting_on_a_flagged_row_is_ringed_in_every_curve_figure(tmp_path, monkeypatch):
    from mmrobust_bench.reports.figure_style import FLAG_NOTE

    clean_rows = fixture_rows()
    for fig in (figure1(clean_rows), figure4(clean_rows), figure5(clean_rows)):
        assert not any(ring_points(ax) for ax in fig.axes) and FLAG_NOTE not in " ".join(legend_names(fig))
    rows = with_flag(clean_rows, "crmt_jt", "pgd_l2", "v", 0.5, seed=1)
    mean = rows[(rows["defense"] == "crmt_jt") & (rows["attack"] == "pgd_l2") & (rows["modality"] == "v")]
    mean = float(mean[np.isclose(mean["eps"], 0.5)]["accuracy"].mean())

    fig = figure1(rows)  # one ring, on CRMT-JT's visual curve at ε = 0.5 (the mean over seeds)
    rings = [(ax.get_title(), p) for ax in fig.axes for p in ring_points(ax)]
    assert [p for _, p in rings] == [pytest.approx((0.5, mean))]
    assert FLAG_NOTE in fig._supxlabel.get_text()

    fig = figure4(rows)
    assert [p for ax in fig.axes for p in ring_points(ax)] == [pytest.approx((0.5, mean))]
    assert FLAG_NOTE in legend_names(fig)

    rows = with_flag(clean_rows, "crmt_jt", "pgd_l2", "all", 0.5, seed=2)
    fig = figure5(rows)  # the flagged seed's dot, in the ℓ2-PGD panel only
    seed_two = float(
        rows[
            (rows["defense"] == "crmt_jt")
            & (rows["attack"] == "pgd_l2")
            & (rows["modality"] == "all")
            & (rows["seed"] == 2)
        ]["accuracy"].iloc[0]
    )
    rings = [(ax.get_title(), p) for ax in fig.axes for p in ring_points(ax)]
    assert len(rings) == 1 and rings[0][0].startswith("ℓ2-PGD") and rings[0][1][1] == pytest.approx(seed_two)
    assert FLAG_NOTE in legend_names(fig)

    run = rows[(rows["defense"] == "crmt_jt") & (rows["seed"] == 2) & rows["modality"].isin(["none", "all"])]
    run = run[run["attack"].isin(["clean", "pgd_l2"])]
    import mmrobust_bench.reports.curves as curves

    kept = []
    monkeypatch.setattr(curves.plt, "close", kept.append)  # keep the run curve's figure to look at it
    plot_robust_curve(run, tmp_path / "run.png", title="synthav: crmt_jt", command=CMD)
    (ax,) = kept[0].axes
    assert ring_points(ax) == [pytest.approx((0.5, seed_two))]
    assert FLAG_NOTE in " ".join(legend_names(kept[0])).replace("\n", " ")
