"""Tables 1–3 and Figures 1, 3, 4, 5 from a small fixture of result rows (tests/helpers.py), via Python and the CLI."""

import math

import numpy as np
import pandas as pd
import pytest

from mmrobust_bench.cli import main
from mmrobust_bench.reports.figures import (
    DEFAULT_ABLATION,
    eta_ratio_matrix,
    figure1,
    figure3,
    figure4,
    figure5,
    plot_figures,
)
from mmrobust_bench.reports.latex import latex_table
from mmrobust_bench.reports.paper import METHOD_NAMES, display_name, load_paper_tables, method_name
from mmrobust_bench.reports.tables import build_table, build_tables, write_tables

from helpers import accuracy, fixture_eta, fixture_rows, mixed_jt_rows


@pytest.fixture
def results_csv(tmp_path):
    path = tmp_path / "runs" / "results.csv"
    path.parent.mkdir()
    fixture_rows().to_csv(path, index=False)
    fixture_eta().to_csv(path.with_name("eta_pairs.csv"), index=False)
    return path


def test_paper_names_match_paper_tables():
    paper = load_paper_tables()
    assert set(METHOD_NAMES.values()) == set(paper["method"])
    assert method_name("ogm_ge") == "OGM" and method_name("crmt_jt_step1_only") == "crmt_jt_step1_only"
    # the paper's "OGM" is OGM-GE; our reports name it so, since plain OGM (``ogm``) is a defense of its own
    assert display_name("ogm_ge") == "OGM-GE" and display_name("ogm") == "ogm"
    assert len(paper) == 174


def test_table1_layout_mean_std_and_reported_block():
    rows = fixture_rows()
    table = build_table(rows, 1, "synthav")
    measured = table.frame[table.frame["source"] == "measured"].set_index("label")
    assert list(measured["method"])[:5] == ["JT", "GB", "MMAT", "CRMT-JT", "CRMT-AT"]  # the paper's order
    assert "mmt" not in measured.index  # transformers belong to Table 3
    accs = [accuracy("jt", "pgd_l2", "all", 0.5, s) for s in (0, 1, 2)]
    assert measured.loc["jt", "pgd_l2_all_eps0.5_mean"] == pytest.approx(np.mean(accs))
    assert measured.loc["jt", "pgd_l2_all_eps0.5_std"] == pytest.approx(np.std(accs, ddof=1))
    # 95% t-interval of the mean: t_{0.975, 2} = 4.302652729749464 (tables), times std / sqrt(3)
    half = 4.302652729749464 * np.std(accs, ddof=1) / np.sqrt(3)
    assert measured.loc["jt", "pgd_l2_all_eps0.5_ci95_low"] == pytest.approx(np.mean(accs) - half)
    assert measured.loc["jt", "pgd_l2_all_eps0.5_ci95_high"] == pytest.approx(np.mean(accs) + half)
    assert measured.loc["jt", "n_seeds"] == 3 and measured.loc["jt", "pgd_l2_all_eps0.5_n"] == 3
    md = table.markdown
    assert f"| JT (`jt`) | {np.mean([accuracy('jt', 'clean', 'none', 0, s) for s in (0, 1, 2)]):.3f} ± " in md
    assert "Reported in the paper (datasets KS, UCF101, VGGS — not synthav" in md and "JT (reported)" in md
    # the paper's cells are labelled as its protocol, which the strong evaluation outranks
    assert md.splitlines()[0].endswith("the paper's protocol (FGM, ℓ2-PGD), not the strong evaluation — synthav")
    assert "the paper's protocol (FGM, $\\ell_2$-PGD), not the strong evaluation" in latex_table(table)
    reported = table.frame[table.frame["source"] == "reported"]
    ks_jt = reported[(reported["dataset"] == "KS") & (reported["method"] == "JT")]
    assert ks_jt["clean_mean"].iloc[0] == pytest.approx(0.643)
    assert ks_jt["fgm_all_eps0.5_mean"].iloc[0] == pytest.approx(0.288)


def test_reported_numbers_beside_ours_when_the_dataset_matches():
    table = build_table(fixture_rows("kinetics_sounds"), 2, "kinetics_sounds")
    frame = table.frame
    rep = frame[(frame["source"] == "reported") & (frame["method"] == "JT")]
    assert rep["dataset"].iloc[0] == "KS"
    assert rep["pgd_l2_a_eps1_mean"].iloc[0] == pytest.approx(0.110)
    assert rep["missing_v_mean"].iloc[0] == pytest.approx(0.480)
    assert "↳ JT (reported, KS)" in table.markdown and "not comparable" not in table.markdown


def test_table2_and_table3_columns_and_rows():
    rows = fixture_rows()
    t2 = build_table(rows, 2, "synthav")
    assert [c.title for c in t2.columns] == [
        "Clean",
        "FGM visual ε=1",
        "FGM audio ε=1",
        "PGD-ℓ2 visual ε=1",
        "PGD-ℓ2 audio ε=1",
        "Missing visual",
        "Missing audio",
    ]
    assert [c.key for c in t2.columns] == [
        "clean",
        "fgm_v_eps1",
        "fgm_a_eps1",
        "pgd_l2_v_eps1",
        "pgd_l2_a_eps1",
        "missing_v",
        "missing_a",
    ]
    jt = t2.frame[(t2.frame["label"] == "jt") & (t2.frame["source"] == "measured")].iloc[0]
    assert jt["missing_a_mean"] == pytest.approx(
        np.mean([accuracy("jt", "missing", "a", math.nan, s) for s in (0, 1, 2)])
    )
    t3 = build_table(rows, 3, "synthav")
    assert set(t3.frame[t3.frame["source"] == "measured"]["method"]) == {"MMT", "CRMT-MMT"}
    assert "VGGS" in t3.markdown
    assert [t.number for t in build_tables(rows[~rows["defense"].isin(["mmt", "crmt_mmt"])])] == [1, 2]


def test_the_any_threat_is_a_table_column_only_where_a_table_attack_ran_with_it():
    """Leaderboards measure ``any`` with the strong evaluation only: the paper's tables then have no empty ``any``
    columns, and a sweep that ran PGD with ``any`` gets its column."""
    rows = fixture_rows()
    strong = rows[(rows["attack"] == "pgd_l2") & (rows["modality"] == "a") & (rows["eps"] == 1.0)].assign(
        attack="autoattack", attack_config="autoattack(version='fast')", modality="any", eps=0.5
    )
    titles = [c.title for c in build_table(pd.concat([rows, strong], ignore_index=True), 2, "synthav").columns]
    assert not any("any" in t for t in titles) and len(titles) == 7
    pgd_any = rows[(rows["attack"] == "pgd_l2") & (rows["modality"] == "a") & (rows["eps"] == 1.0)].assign(
        modality="any"
    )
    t2 = build_table(pd.concat([rows, pgd_any], ignore_index=True), 2, "synthav")
    assert [c.key for c in t2.columns if c.modality == "any"] == ["pgd_l2_any_eps1"]
    # run for the transformers only: Table 3's column, not Table 2's
    mmt_any = pgd_any[pgd_any["defense"].isin(["mmt", "crmt_mmt"])]
    both = pd.concat([rows, mmt_any], ignore_index=True)
    assert not [c for c in build_table(both, 2, "synthav").columns if c.modality == "any"]
    assert [c.key for c in build_table(both, 3, "synthav").columns if c.modality == "any"] == ["pgd_l2_any_eps1"]


def test_attack_configuration_choice_is_noted():
    rows = fixture_rows()
    extra = (
        rows[(rows["attack"] == "pgd_l2") & (rows["defense"] == "jt")].head(2).assign(attack_config="pgd_l2(steps=10)")
    )
    table = build_table(pd.concat([rows, extra]), 1, "synthav")
    assert any("left out 'pgd_l2(steps=10)'" in n for n in table.notes)


def test_every_figure_from_the_fixture(tmp_path):
    rows, eta = fixture_rows(), fixture_eta()
    cmd = "mmrobust-bench plot --results fixture.csv"
    for fig in (
        figure1(rows, command=cmd),
        figure3(eta, command=cmd),
        figure4(rows, command=cmd),
        figure5(rows, command=cmd),
    ):
        assert not any(cmd in t.get_text() for t in fig.texts)  # on the canvas only on request
    assert any(cmd in t.get_text() for t in figure1(rows, command=cmd, stamp=True).texts)
    mat = eta_ratio_matrix(eta[eta["defense"] == "jt"], "a", "v")
    assert np.isnan(np.diag(mat)).all() and np.nanmax(np.abs(mat - 3.0)) < 1e-9
    saved, notes = plot_figures(rows, tmp_path, command=cmd, eta_pairs=eta)
    assert sorted(s.number for s in saved) == [1, 3, 4, 5] and not notes
    for item in saved:
        assert item.path.stat().st_size > 5000
        assert cmd in item.sidecar.read_text()
    # without ablation rows or η rows the figure is skipped with a reason, the others still come
    saved, notes = plot_figures(
        rows[
            ~rows["defense"].isin([lab for _, lab in DEFAULT_ABLATION[1:4]])
            & (rows["defense"] != "jt")
            & (rows["defense"] != "crmt_jt")
        ],
        tmp_path / "b",
        command=cmd,
        eta_pairs=None,
    )
    assert sorted(s.number for s in saved) == [1, 4]
    assert any("figure 3" in n for n in notes) and any("figure 5" in n for n in notes)


def test_write_tables_names_the_command(tmp_path):
    paths = write_tables(build_tables(fixture_rows()), tmp_path, command="mmrobust-bench report X")
    assert {p.name for p in paths} >= {"table1-synthav.md", "table2-synthav.csv", "table3-synthav.md", "report.md"}
    table1 = pd.read_csv(tmp_path / "table1-synthav.csv")
    assert "made_by" not in table1  # the command lives in the sidecar, not on every row
    assert "mmrobust-bench report X" in (tmp_path / "table1-synthav.csv.txt").read_text()
    assert "pgd_l2_a_eps0.5" in (tmp_path / "table1-synthav.csv.txt").read_text()  # the naming is documented
    raw = pd.read_csv(tmp_path / "table1-synthav.csv", dtype=str, keep_default_na=False)
    assert set(raw.loc[raw["source"] == "measured", "n_seeds"]) == {"3"}  # an integer, never "3.0"
    assert set(raw.loc[raw["source"] == "reported", "n_seeds"]) == {""}  # the paper's rows have no seed count
    assert "mmrobust-bench report X" in (tmp_path / "table2-synthav.md").read_text()
    tex = (tmp_path / "table1-synthav.tex").read_text()
    assert r"\toprule" in tex and r"\midrule" in tex and r"\bottomrule" in tex and r"\label{tab:table1-synthav}" in tex
    assert "\nCRMT-JT head only & " in tex and "crmt" not in tex  # display names, as on the page and in the figures


def flag_rows(rows: pd.DataFrame, label: str, attack: str, modality: str, seed: int, flags: str) -> pd.DataFrame:
    """``rows`` with the flags of one label's (attack, modality) rows of one seed set to ``flags``."""
    rows = rows.copy()
    rows["flags"] = rows["flags"].astype(object)
    hit = (rows["defense"] == label) & (rows["attack"] == attack) & (rows["modality"] == modality)
    rows.loc[hit & (rows["seed"] == seed), "flags"] = flags
    return rows


def test_flagged_cells_are_marked_in_the_markdown_and_kept_in_the_csv(tmp_path):
    from mmrobust_bench.reports.stats import COLUMN_DOC
    from mmrobust_bench.reports.tables import pivot_table

    rows = flag_rows(fixture_rows(), "jt", "pgd_l2", "all", 1, "zero_gradients;non_finite")
    table = build_table(rows, 1, "synthav")
    mean = lambda attack, modality, eps: [accuracy("jt", attack, modality, eps, s) for s in range(3)]  # noqa: E731
    cells = [
        f"{np.mean(v):.3f} ± {np.std(v, ddof=1):.3f}"
        for v in (mean("clean", "none", 0), mean("fgm", "all", 0.5), mean("pgd_l2", "all", 0.5))
    ]
    line = f"| JT (`jt`) | {cells[0]} | {cells[1]} | {cells[2]} ⚑ non_finite;zero_gradients | 3 |"
    assert line in table.markdown.splitlines()
    assert sum("⚑" in row for row in table.markdown.splitlines() if row.startswith("| ")) == 1
    assert any(n.startswith("⚑ and the flag names:") for n in table.notes)
    measured = table.frame[table.frame["source"] == "measured"].set_index("label")
    assert measured.loc["jt", "pgd_l2_all_eps0.5_flags"] == "non_finite;zero_gradients"
    assert measured.loc["jt", "clean_flags"] == "" and measured.loc["gb", "pgd_l2_all_eps0.5_flags"] == ""
    flag_columns = [c for c in table.frame.columns if c.endswith("_flags")]
    assert flag_columns == ["clean_flags", "fgm_all_eps0.5_flags", "pgd_l2_all_eps0.5_flags"]
    assert set(table.frame.loc[table.frame["source"] == "reported", flag_columns].stack()) == {""}

    pivot = pivot_table(rows, "synthav", attacks=["pgd_l2"], modalities=["all"])
    assert f"| JT (`jt`) | {cells[0]} | {cells[2]} ⚑ non_finite;zero_gradients | 3 |" in pivot.markdown.splitlines()
    assert pivot.frame.set_index("label").loc["jt", "pgd_l2_all_eps0.5_flags"] == "non_finite;zero_gradients"

    write_tables([table, pivot], tmp_path, command="mmrobust-bench report")
    for name in ("table1-synthav.csv", "pivot-synthav.csv"):
        raw = pd.read_csv(tmp_path / name, dtype=str, keep_default_na=False)
        head = list(raw.columns)
        assert head[head.index("pgd_l2_all_eps0.5_n") + 1] == "pgd_l2_all_eps0.5_flags"
        flags = raw.set_index(["source", "label"])["pgd_l2_all_eps0.5_flags"]
        assert flags[("measured", "jt")] == "non_finite;zero_gradients", name
        assert flags[("measured", "gb")] == "" and set(raw["clean_flags"]) == {""}, name
    assert line in (tmp_path / "report.md").read_text().splitlines()
    assert "<cell>_flags" in COLUMN_DOC and "<cell>_flags" in (tmp_path / "table1-synthav.csv.txt").read_text()


def test_report_and_plot_cli(results_csv, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["report", "--results", str(results_csv), "--out", str(out)]) == 0
    report = (out / "report.md").read_text()
    assert "made by: `mmrobust-bench report --results" in report and "Table 3" in report
    assert (
        main(
            [
                "plot",
                "--results",
                str(results_csv),
                "--out",
                str(out),
                "--figures",
                "1,3,5",
                "--ablation",
                "JT=jt,Full=crmt_jt",
            ]
        )
        == 0
    )
    assert {p.name for p in out.glob("figure*")} == {
        f"figure{n}-synthav.{fmt}{s}" for n in (1, 3, 5) for fmt in ("pdf", "png") for s in ("", ".txt")
    }
    assert "mmrobust-bench plot" in (out / "figure5-synthav.png.txt").read_text()
    capsys.readouterr()
    assert main(["report", "--results", str(tmp_path / "nope.csv"), "--out", str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["plot", "--results", str(results_csv), "--out", str(out), "--figures", "2"]) == 2
    assert "unknown figure 2" in capsys.readouterr().err
    assert main(["plot", "--results", str(results_csv), "--out", str(out), "--ablation", "JT"]) == 2
    assert "STAGE=LABEL" in capsys.readouterr().err


def test_findings_numbers_follow_from_the_rows(results_csv, tmp_path):
    from mmrobust_bench.reports.findings import Cell, eta_ratio, findings_markdown, seed_stats

    rows, eta = fixture_rows(), fixture_eta()
    # jt missing audio: base 0.8 − 0.5/2 + 0.01·seed over seeds 0, 1, 2 → 0.56 ± 0.01
    mean, std, seeds = seed_stats(rows, "jt", Cell("a missing", "missing", "a"))
    assert (round(mean, 6), round(std, 6), seeds) == (0.56, 0.01, 3)
    ratios = eta_ratio(eta, "a", "v").set_index("defense")["ratio_mean"]
    assert ratios.to_dict() == pytest.approx({"jt": 3.0, "mmat": 2.5, "crmt_jt": 1.2})
    text = findings_markdown(rows, pairs=eta, command="mmrobust-bench report --findings")
    assert "| `jt` | 0.810 ± 0.010 | 0.560 ± 0.010 | 0.710 ± 0.010 | 3 |" in text  # clean, a missing, v missing
    assert "| a | 0.735 ± 0.010 | 0.660 ± 0.010 | 0.510 ± 0.010 | 0.210 ± 0.010 |" in text  # 0.81 − 0.6·0.5·ε
    assert "η^(a) / η^(v)" in text and "| `crmt_jt` | 1.200 ± 0.000 | 2 |" in text
    assert "### 4. CRMT ablation" in text and "`crmt_jt_step2_only`" in text
    out = tmp_path / "out"
    assert main(["report", "--results", str(results_csv), "--out", str(out), "--findings"]) == 0
    assert "### 2. Fragility" in (out / "findings-synthav.md").read_text()


def write_checkpoint_config(root, dataset: str, defense: str, digest: str, sha: str, epochs: int) -> None:
    """A checkpoint directory as bench.checkpoints writes it: config.json naming the stage's sha256."""
    import json

    directory = root / "checkpoints" / dataset / defense / digest
    directory.mkdir(parents=True)
    config = {
        "dataset": dataset,
        "dataset_config": {"n_train": 64},
        "defense": defense,
        "defense_config": {},
        "train_config": {"epochs": epochs, "lr": 0.01},
        "seed": 0,
        "training_code_version": 1,
        "stages": {"final": {"file": "final.safetensors", "sha256": sha}},
    }
    (directory / "config.json").write_text(json.dumps(config))


def test_mixed_configurations_are_separate_entries_naming_the_setting(tmp_path, capsys):
    root = tmp_path / "runs"
    root.mkdir()
    mixed_jt_rows().to_csv(root / "results.csv", index=False)
    for seed in (0, 1):
        write_checkpoint_config(root, "synthav", "jt", f"short{seed}", f"sha-short-{seed}", epochs=1)
    write_checkpoint_config(root, "synthav", "jt", "long0", "sha-long-0", epochs=3)
    out = tmp_path / "out"
    assert main(["report", "--results", str(root / "results.csv"), "--out", str(out), "--tables", "1"]) == 0
    err = capsys.readouterr().err
    assert "label 'jt' has 2 configurations" in err and "train_config.epochs: 1 vs 3" in err
    table = pd.read_csv(out / "table1-synthav.csv")
    measured = table[table["source"] == "measured"].set_index("label")
    # never averaged together: 0.18 over two seeds, and 0.785 from one
    assert measured.loc["jt [cfg aaaaaaaa]", "clean_mean"] == pytest.approx(0.18)
    assert measured.loc["jt [cfg aaaaaaaa]", "n_seeds"] == 2
    assert measured.loc["jt [cfg bbbbbbbb]", "clean_mean"] == pytest.approx(0.785)
    assert measured.loc["jt [cfg bbbbbbbb]", "n_seeds"] == 1
    assert "jt" not in measured.index
    md = (out / "table1-synthav.md").read_text()
    assert "| JT [cfg aaaaaaaa] (`jt [cfg aaaaaaaa]`) | 0.180 ± 0.000 |" in md and "train_config.epochs: 1 vs 3" in md
    # refusing instead: the message names the differing setting and the way out
    assert main(["report", "--results", str(root / "results.csv"), "--out", str(out), "--refuse-mixed"]) == 2
    err = capsys.readouterr().err
    assert "refusing to report mixed configurations" in err and "epochs: 1 vs 3" in err and "--label" in err
    # without the checkpoints the split still happens, and the note says the settings are unknown
    assert (
        main(["report", "--results", str(root / "results.csv"), "--out", str(out), "--checkpoints", str(tmp_path)]) == 0
    )
    assert "settings unknown" in capsys.readouterr().err


def test_label_column_groups_and_old_csvs_read_with_defaults(tmp_path):
    from mmrobust_bench.reports.entries import resolve_entries

    rows = fixture_rows()
    # H3's rows: defense is the registry id, label names the configuration
    new = rows[rows["defense"] == "jt"].assign(label="jt_long", config_hash="d")
    both = pd.concat([rows.assign(label=rows["defense"]), new], ignore_index=True)
    resolved, notes = resolve_entries(both)
    assert {"jt", "jt_long"} <= set(resolved["entry"]) and not notes
    assert set(resolved.loc[resolved["entry"] == "jt_long", "defense_id"]) == {"jt"}
    # an old CSV without flags / label / config_hash columns still reports
    old = rows.drop(columns=["flags", "config_hash"])
    table = build_table(old, 1, "synthav")
    assert table.frame[table.frame["label"] == "jt"]["n_seeds"].iloc[0] == 3


def test_pivot_of_any_grid_and_dash_note(results_csv, tmp_path, capsys):
    from mmrobust_bench.reports.tables import latex_escape, pivot_table

    rows = fixture_rows()
    table = pivot_table(rows, "synthav", attacks=["pgd_l2"], modalities=["a"])
    assert [c.key for c in table.columns] == [
        "clean",
        "pgd_l2_a_eps0.25",
        "pgd_l2_a_eps0.5",
        "pgd_l2_a_eps1",
        "pgd_l2_a_eps2",
    ]
    jt = table.frame.set_index("label").loc["jt"]
    assert jt["pgd_l2_a_eps2_mean"] == pytest.approx(np.mean([accuracy("jt", "pgd_l2", "a", 2.0, s) for s in range(3)]))
    assert "PGD-ℓ2 audio ε=2" in table.markdown
    # a cell one entry lacks shows "—" and the note says why
    holes = rows[~((rows["defense"] == "gb") & (rows["modality"] == "a") & (rows["attack"] == "pgd_l2"))]
    md = pivot_table(holes, "synthav", attacks=["pgd_l2"], modalities=["a"]).markdown
    assert "| GB (`gb`) | 0.820 ± 0.010 | — |" in md and "“—”: no measured rows for that cell" in md
    with pytest.raises(ValueError, match="attacks in the rows: clean, fgm, missing, pgd_l2"):
        pivot_table(rows, "synthav", attacks=["pgd"])
    assert latex_escape("a_b & 50% #1 {x} ε±") == r"a\_b \& 50\% \#1 \{x\} $\varepsilon$$\pm$"
    out = tmp_path / "piv"
    assert (
        main(
            [
                "report",
                "--results",
                str(results_csv),
                "--out",
                str(out),
                "--tables",
                "0",
                "--pivot",
                "--attack",
                "pgd_l2",
                "--modality",
                "a",
                "--eps",
                "0.5,2",
            ]
        )
        == 0
    )
    frame = pd.read_csv(out / "pivot-synthav.csv")
    assert [c for c in frame.columns if c.endswith("_mean")] == [
        "clean_mean",
        "pgd_l2_a_eps0.5_mean",
        "pgd_l2_a_eps2_mean",
    ]
    assert (out / "pivot-synthav.tex").read_text().count(r"\toprule") == 1
    assert main(["report", "--results", str(results_csv), "--out", str(out), "--eps", "0.5"]) == 2
    assert "add --pivot" in capsys.readouterr().err


def test_model_cards_hold_config_sha_accuracies_certificates_and_environment(tmp_path):
    import json

    from mmrobust_bench.reports.leaderboard import model_cards

    root = tmp_path / "runs"
    rows = fixture_rows()
    rows = rows[rows["defense"].isin(["jt", "crmt_jt"])].assign(torch_version="2.11.0", threads=2)
    rows.loc[rows["defense"] == "crmt_jt", "threads"] = 0  # written before the column: not recorded
    # jt seed 0's rows at batch size 100, one of them written before the column (0: not recorded); the rest none
    rows = rows.assign(batch_size=((rows["defense"] == "jt") & (rows["seed"] == 0)).astype(int) * 100)
    rows.loc[rows.index[(rows["defense"] == "jt") & (rows["seed"] == 0)][0], "batch_size"] = 0
    write_checkpoint_config(root, "synthav", "jt", "k0", "jt0", epochs=3)
    certified = pd.DataFrame(
        [
            {
                "dataset": "synthav",
                "defense": "jt",
                "seed": 0,
                "checkpoint_sha256": "jt0",
                "config_hash": "c",
                "certificate": "eq5",
                "kind": "empirical",
                "method": "lipschitz",
                "variant": "min_j",
                "modality": "all",
                "radius": 0.5,
                "certified_accuracy": 0.4,
            }
        ]
    )
    certified = pd.concat([certified.assign(radius=0.0, certified_accuracy=0.9), certified], ignore_index=True)
    cards = {
        (c["entry"], c["seed"]): c
        for c in model_cards(rows, certified=certified, checkpoints=root / "checkpoints", command="cmd X")
    }
    assert len(cards) == 6
    card = json.loads(json.dumps(cards[("jt", 0)]))  # JSON-serialisable as written
    assert card["checkpoint_sha256"] == "jt0" and card["config"]["train_config"]["epochs"] == 3
    assert card["clean_accuracy"] == pytest.approx(accuracy("jt", "clean", "none", 0.0, 0))
    pgd = [t for t in card["robust_accuracy"] if t["attack"] == "pgd_l2" and t["modality"] == "a" and t["eps"] == 2.0]
    assert pgd[0]["accuracy"] == pytest.approx(accuracy("jt", "pgd_l2", "a", 2.0, 0))
    assert card["certificates"] == [
        {
            "certificate": "eq5",
            "kind": "empirical",
            "method": "lipschitz",
            "variant": "min_j",
            "modality": "all",
            "certified_accuracy_by_radius": [[0.0, 0.9], [0.5, 0.4]],
        }
    ]
    assert card["environment"]["torch_version"] == "2.11.0" and card["environment"]["threads"] == 2
    assert card["environment"]["batch_size"] == 100  # the 0 of a row that recorded none says nothing
    assert cards[("jt", 1)]["environment"]["batch_size"] is None  # not recorded, never shown as 0
    assert cards[("crmt_jt", 0)]["environment"]["threads"] is None
    assert card["card_made_by"] == "cmd X"
    assert cards[("jt", 1)]["config"] is None and "not found" in cards[("jt", 1)]["config_source"]


def test_report_removes_the_cards_of_models_the_rows_no_longer_hold_and_nothing_else(tmp_path):
    import json

    from mmrobust_bench.reports.leaderboard import write_leaderboard

    rows = fixture_rows()
    write_leaderboard(rows, tmp_path, command="first")
    folder = tmp_path / "cards" / "synthav"
    assert (folder / "jt-seed2.json").exists() and (folder / "crmt_jt-seed0.json").exists()
    (folder / "notes.json").write_text(json.dumps({"mine": 1}))  # not a card: kept
    (folder / "broken.json").write_text("{")  # unreadable: kept
    fewer = rows[(rows["defense"] != "crmt_jt") & ~((rows["defense"] == "jt") & (rows["seed"] == 2))]
    written = write_leaderboard(fewer, tmp_path, command="second")
    left = sorted(p.name for p in folder.glob("*.json"))
    assert "jt-seed2.json" not in left and not any(n.startswith("crmt_jt-") for n in left)
    assert {"notes.json", "broken.json", "jt-seed0.json", "jt-seed1.json"} <= set(left)
    cards = [p for p in written if p.suffix == ".json"]
    assert sorted(p.name for p in cards) == sorted(set(left) - {"notes.json", "broken.json"})
    assert all(json.loads(p.read_text())["card_made_by"] == "second" for p in cards)


CARD_PGD = "pgd_l2(steps=4, step_ratio=0.3333)"


def card_row(defense, seed, attack, cfg, mod, eps, acc, flags="", dataset="synthav", sha=None):
    return dict(
        dataset=dataset,
        defense=defense,
        label=defense,
        seed=seed,
        checkpoint_sha256=sha or f"s{defense}{seed}",
        config_hash="c1",
        attack=attack,
        attack_config=cfg,
        modality=mod,
        norm="l2",
        eps=eps,
        n=1000,
        accuracy=acc,
        flags=flags,
        outcomes="",
    )


def test_model_cards_keep_the_flags_of_the_clean_rows():
    from mmrobust_bench.reports.cards import model_cards

    rows = pd.DataFrame(
        [
            card_row("jt", 0, "clean", "clean", "none", 0.0, 0.31, flags="zero_gradients;non_finite"),
            card_row("jt", 0, "pgd_l2", CARD_PGD, "all", 0.5, 0.30, flags="non_finite"),
            card_row("gb", 0, "clean", "clean", "none", 0.0, 0.9),
            card_row("gb", 0, "pgd_l2", CARD_PGD, "all", 0.5, 0.5),
        ]
    )
    cards = {c["entry"]: c for c in model_cards(rows)}
    assert cards["jt"]["clean_accuracy"] == pytest.approx(0.31)
    assert cards["jt"]["clean_flags"] == "non_finite;zero_gradients"
    assert cards["jt"]["robust_accuracy"][0]["flags"] == "non_finite"
    assert cards["gb"]["clean_flags"] == ""
    assert list(cards["jt"]).index("clean_flags") == list(cards["jt"]).index("clean_accuracy") + 1


def test_model_cards_are_strict_json_with_an_infinite_radius_as_the_string_inf(tmp_path):
    import json

    from mmrobust_bench.reports.cards import model_cards, write_cards

    def refuse(constant):
        raise AssertionError(f"not strict JSON: {constant}")

    root = tmp_path / "runs"
    write_checkpoint_config(root, "synthav", "jt", "k0", "sjt0", epochs=3)
    config = root / "checkpoints" / "synthav" / "jt" / "k0" / "config.json"
    config.write_text(config.read_text().replace('"lr": 0.01', '"lr": 0.01, "clip": Infinity, "decay": NaN'))
    rows = pd.DataFrame([card_row("jt", 0, "clean", "clean", "none", 0.0, 0.9)])
    certified = pd.DataFrame(
        [
            {
                "dataset": "synthav",
                "defense": "jt",
                "seed": 0,
                "checkpoint_sha256": "sjt0",
                "config_hash": "c1",
                "certificate": "eq5",
                "kind": "empirical",
                "modality": "all",
                "radius": radius,
                "certified_accuracy": acc,
                "median_certified_radius": math.inf,
            }
            for radius, acc in ((0.0, 0.9), (math.inf, 0.9))
        ]
    )
    (card,) = model_cards(rows, certified=certified, checkpoints=root / "checkpoints")
    (path,) = write_cards([card], tmp_path / "out")
    back = json.loads(path.read_text(), parse_constant=refuse)
    (cert,) = back["certificates"]
    assert cert["median_certified_radius"] == "inf" and card["certificates"][0]["median_certified_radius"] == "inf"
    assert cert["certified_accuracy_by_radius"] == [[0.0, 0.9], ["inf", 0.9]]
    assert back["config"]["train_config"] == {"epochs": 3, "lr": 0.01, "clip": "inf", "decay": None}
    # what reaches write_cards by another way (a zoo's config) is cleaned the same way
    (path,) = write_cards([{**card, "config": {"clip": -math.inf}}], tmp_path / "out")
    assert json.loads(path.read_text(), parse_constant=refuse)["config"] == {"clip": "-inf"}


def test_checkpoint_configs_are_read_only_inside_the_checkpoint_folder(tmp_path, caplog):
    import json
    import logging

    from mmrobust_bench.reports.cards import model_cards
    from mmrobust_bench.reports.entries import find_checkpoint_configs

    root = tmp_path / "runs"
    write_checkpoint_config(root, "synthav", "jt", "k0", "inside", epochs=3)
    outside = tmp_path / "runs" / "outside" / "jt" / "k0"
    outside.mkdir(parents=True)
    (outside / "config.json").write_text(json.dumps({"secret": 1, "stages": {"final": {"sha256": "evil"}}}))
    checkpoints = root / "checkpoints"
    assert set(find_checkpoint_configs(checkpoints, "synthav")) == {"inside"}
    with caplog.at_level(logging.WARNING, logger="mmrobust_bench.reports.entries"):
        for name in ("../outside", str(root / "outside"), "synthav/../../outside", "..", "."):
            assert find_checkpoint_configs(checkpoints, name) == {}, name
    assert [r.getMessage().split(":")[0] for r in caplog.records][:2] == [
        "not reading checkpoint configs for dataset '../outside'",
        f"not reading checkpoint configs for dataset {str(root / 'outside')!r}",
    ]
    rows = pd.DataFrame([card_row("jt", 0, "clean", "clean", "none", 0.0, 0.9, dataset="../outside", sha="evil")])
    (card,) = model_cards(rows, checkpoints=checkpoints)
    assert card["config"] is None and "not found" in card["config_source"]


def test_a_filtered_pivot_says_which_filters_made_it():
    from mmrobust_bench.reports.tables import PIVOT_TITLE, pivot_title

    assert pivot_title() == PIVOT_TITLE
    assert pivot_title(["pgd_l2"], ["a", "v"], None) == "Pivot — attack pgd_l2; modality a, v (rows present)"
