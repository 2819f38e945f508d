"""Tables 1–3 and Figures 1, 3, 4, 5 from a small fixture of result rows made here, via Python and the CLI."""
import math

import numpy as np
import pandas as pd
import pytest

from mmrobust_bench.bench.results import COLUMNS
from mmrobust_bench.cli import main
from mmrobust_bench.reports.figures import (DEFAULT_ABLATION, eta_ratio_matrix, figure1, figure3, figure4, figure5,
                                            plot_figures)
from mmrobust_bench.reports.paper import METHOD_NAMES, load_paper_tables, method_name
from mmrobust_bench.reports.tables import build_table, build_tables, write_tables

PGD = "pgd_l2(steps=4, step=eps*0.3333)"
LABELS = ["jt", "gb", "mmat", "crmt_jt", "crmt_at", "crmt_jt_orth_only", "crmt_jt_step1_only", "crmt_jt_step2_only",
          "mmt", "crmt_mmt"]


def accuracy(label: str, attack: str, modality: str, eps: float, seed: int) -> float:
    """A deterministic, plausible accuracy: robust defenses lose less, audio is the fragile modality."""
    base = 0.8 + 0.01 * LABELS.index(label)
    robust = 0.3 if label.startswith("crmt") else 0.6
    fragility = {"v": 0.2, "a": 0.5, "all": 0.6, "none": 0.0}[modality]
    if attack == "missing":
        return base - fragility / 2 + 0.01 * seed
    e = 0.0 if math.isnan(eps) else eps
    return max(0.0, base - robust * fragility * e) + 0.01 * seed


def fixture_rows(dataset: str = "synthav") -> pd.DataFrame:
    cells = [("clean", "clean", "none", 0.0), ("fgm", "fgm", "all", 0.5), ("pgd_l2", PGD, "all", 0.5)]
    cells += [(a, c, m, 1.0) for a, c in (("fgm", "fgm"), ("pgd_l2", PGD)) for m in ("v", "a")]
    cells += [("pgd_l2", PGD, m, e) for m in ("v", "a") for e in (0.25, 0.5, 2.0)]
    cells += [("missing", "missing(fill=zero)", m, math.nan) for m in ("v", "a")]
    rows = []
    for label in LABELS:
        for seed in (0, 1, 2):
            for attack, config, modality, eps in cells:
                rows.append({"dataset": dataset, "defense": label, "seed": seed, "checkpoint_sha256": f"{label}{seed}",
                             "config_hash": "c", "attack": attack, "attack_config": config, "library": "native",
                             "library_version": "0.1.0", "modality": modality, "norm": "l2", "eps": eps, "n": 64,
                             "accuracy": accuracy(label, attack, modality, eps, seed), "wall_seconds": 0.1,
                             "device": "cpu", "suite_version": "0.1.0", "timestamp": "2024-01-01T00:00:00+00:00"})
    return pd.DataFrame(rows, columns=COLUMNS)


def fixture_eta(k: int = 4) -> pd.DataFrame:
    rows = []
    for label, audio_scale in (("jt", 3.0), ("mmat", 2.5), ("crmt_jt", 1.2)):
        for seed in (0, 1):
            for m in ("v", "a"):
                for y in range(k):
                    for j in range(k):
                        if j != y:
                            eta = (audio_scale if m == "a" else 1.0) * (1 + 0.1 * y + 0.05 * j)
                            rows.append({"dataset": "synthav", "defense": label, "seed": seed,
                                         "checkpoint_sha256": f"{label}{seed}", "modality": m, "class_y": y,
                                         "class_j": j, "eta_pair": eta, "eta_eq10": math.nan, "eta_local_mean": eta})
    return pd.DataFrame(rows)


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
    assert len(paper) == 174


def test_table1_layout_mean_std_and_reported_block():
    rows = fixture_rows()
    table = build_table(rows, 1, "synthav")
    measured = table.frame[table.frame["source"] == "measured"].set_index("label")
    assert list(measured["method"])[:5] == ["JT", "GB", "MMAT", "CRMT-JT", "CRMT-AT"]  # the paper's order
    assert "mmt" not in measured.index  # transformers belong to Table 3
    accs = [accuracy("jt", "pgd_l2", "all", 0.5, s) for s in (0, 1, 2)]
    assert measured.loc["jt", "PGD-ℓ2 ε=0.5"] == pytest.approx(np.mean(accs))
    assert measured.loc["jt", "PGD-ℓ2 ε=0.5 std"] == pytest.approx(np.std(accs, ddof=1))
    assert measured.loc["jt", "seeds"] == 3
    md = table.markdown
    assert f"| JT (`jt`) | {np.mean([accuracy('jt', 'clean', 'none', 0, s) for s in (0, 1, 2)]):.3f} ± " in md
    assert "Reported in the paper (datasets KS, UCF101, VGGS — not synthav" in md and "JT (reported)" in md
    reported = table.frame[table.frame["source"] == "reported"]
    ks_jt = reported[(reported["dataset"] == "KS") & (reported["method"] == "JT")]
    assert ks_jt["Clean"].iloc[0] == pytest.approx(0.643) and ks_jt["FGM ε=0.5"].iloc[0] == pytest.approx(0.288)


def test_reported_numbers_beside_ours_when_the_dataset_matches():
    table = build_table(fixture_rows("kinetics_sounds"), 2, "kinetics_sounds")
    frame = table.frame
    rep = frame[(frame["source"] == "reported") & (frame["method"] == "JT")]
    assert rep["dataset"].iloc[0] == "KS"
    assert rep["PGD-ℓ2 #a ε=1"].iloc[0] == pytest.approx(0.110) and rep["Missing #v"].iloc[0] == pytest.approx(0.480)
    assert "↳ JT (reported, KS)" in table.markdown and "not comparable" not in table.markdown


def test_table2_and_table3_columns_and_rows():
    rows = fixture_rows()
    t2 = build_table(rows, 2, "synthav")
    assert [c.title for c in t2.columns] == ["Clean", "FGM #v ε=1", "FGM #a ε=1", "PGD-ℓ2 #v ε=1", "PGD-ℓ2 #a ε=1",
                                             "Missing #v", "Missing #a"]
    jt = t2.frame[(t2.frame["label"] == "jt") & (t2.frame["source"] == "measured")].iloc[0]
    assert jt["Missing #a"] == pytest.approx(np.mean([accuracy("jt", "missing", "a", math.nan, s) for s in (0, 1, 2)]))
    t3 = build_table(rows, 3, "synthav")
    assert set(t3.frame[t3.frame["source"] == "measured"]["method"]) == {"MMT", "CRMT-MMT"}
    assert "VGGS" in t3.markdown
    assert [t.number for t in build_tables(rows[~rows["defense"].isin(["mmt", "crmt_mmt"])])] == [1, 2]


def test_attack_configuration_choice_is_noted():
    rows = fixture_rows()
    extra = rows[(rows["attack"] == "pgd_l2") & (rows["defense"] == "jt")].head(2).assign(attack_config="pgd_l2(steps=10)")
    table = build_table(pd.concat([rows, extra]), 1, "synthav")
    assert any("left out 'pgd_l2(steps=10)'" in n for n in table.notes)


def test_every_figure_from_the_fixture(tmp_path):
    rows, eta = fixture_rows(), fixture_eta()
    cmd = "mmrobust-bench plot --results fixture.csv"
    for fig in (figure1(rows, command=cmd), figure3(eta, command=cmd), figure4(rows, command=cmd),
                figure5(rows, command=cmd)):
        assert any(cmd in t.get_text() for t in fig.texts)
    mat = eta_ratio_matrix(eta[eta["defense"] == "jt"], "a", "v")
    assert np.isnan(np.diag(mat)).all() and np.nanmax(np.abs(mat - 3.0)) < 1e-9
    saved, notes = plot_figures(rows, tmp_path, command=cmd, eta_pairs=eta)
    assert sorted(s.number for s in saved) == [1, 3, 4, 5] and not notes
    for item in saved:
        assert item.path.stat().st_size > 5000
        assert cmd in item.sidecar.read_text()
    # without ablation rows or η rows the figure is skipped with a reason, the others still come
    saved, notes = plot_figures(rows[~rows["defense"].isin([lab for _, lab in DEFAULT_ABLATION[1:4]])
                                     & (rows["defense"] != "jt") & (rows["defense"] != "crmt_jt")],
                                tmp_path / "b", command=cmd, eta_pairs=None)
    assert sorted(s.number for s in saved) == [1, 4]
    assert any("figure 3" in n for n in notes) and any("figure 5" in n for n in notes)


def test_write_tables_names_the_command(tmp_path):
    paths = write_tables(build_tables(fixture_rows()), tmp_path, command="mmrobust-bench report X")
    assert {p.name for p in paths} >= {"table1-synthav.md", "table2-synthav.csv", "table3-synthav.md", "report.md"}
    assert (pd.read_csv(tmp_path / "table1-synthav.csv")["made_by"] == "mmrobust-bench report X").all()
    assert "mmrobust-bench report X" in (tmp_path / "table2-synthav.md").read_text()


def test_report_and_plot_cli(results_csv, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["report", "--results", str(results_csv), "--out", str(out)]) == 0
    report = (out / "report.md").read_text()
    assert "made by: `mmrobust-bench report --results" in report and "Table 3" in report
    assert main(["plot", "--results", str(results_csv), "--out", str(out), "--figures", "1,3,5",
                 "--ablation", "JT=jt,Full=crmt_jt"]) == 0
    assert {p.name for p in out.glob("figure*")} == {
        f"figure{n}-synthav.png{s}" for n in (1, 3, 5) for s in ("", ".txt")}
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
