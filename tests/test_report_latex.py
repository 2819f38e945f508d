"""The LaTeX tables a paper pastes in: ``$\\ell_2$``, a ``\\label`` each, the best mean of each column in bold, wide
pivots split into several tables and every table shrunk to the line width only when wider; each compiled with
``pdflatex`` where one is installed (skipped otherwise, failed when ``MMROBUST_REQUIRE_PDFLATEX=1`` as in CI;
``apt-get install texlive-latex-base texlive-latex-recommended`` gives one), with no overfull box."""

import os
import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

from mmrobust_bench.reports.paper import display_name
from mmrobust_bench.reports.tables import build_table, build_tables, latex_escape, pivot_table, write_tables

from helpers import fixture_rows

HOSTILE = "a_b & 50% #1 {x} ^~\\ $y$"


def body_lines(tex: str) -> list[list[str]]:
    """The cells of every body row of every tabular in ``tex``."""
    rows = []
    for block in re.findall(r"\\midrule\n(.*?)\n\\bottomrule", tex, flags=re.S):
        rows += [line.removesuffix(r" \\").split(" & ") for line in block.splitlines()]
    return rows


def test_norms_are_subscripts_and_specials_are_escaped():
    assert latex_escape("PGD-ℓ2 ε=1") == r"PGD-$\ell_2$ $\varepsilon$=1"
    assert latex_escape("ℓ∞ and ℓ12, ℓ alone") == r"$\ell_\infty$ and $\ell_{12}$, $\ell$ alone"
    assert latex_escape(HOSTILE) == r"a\_b \& 50\% \#1 \{x\} \textasciicircum{}\textasciitilde{}\textbackslash{} \$y\$"


def test_table_has_a_label_and_the_best_mean_of_each_column_in_bold():
    rows = fixture_rows()
    table = build_table(rows, 1, "synthav")
    tex = table.latex
    assert tex.count(r"\label{tab:table1-synthav}") == 1 and tex.count(r"\begin{table}") == 1
    assert r"\caption{clean accuracy and multi-modal attacks on all modalities jointly (joint $\ell_2$ budget" in tex
    assert r"\resizebox{\ifdim\width>\linewidth\linewidth\else\width\fi}{!}{%" in tex
    measured = table.frame[table.frame["source"] == "measured"].reset_index(drop=True)
    lines = body_lines(tex)
    assert [cells[0] for cells in lines] == [display_name(label) for label in measured["label"]]
    for j, col in enumerate(table.columns, start=1):
        means = measured[f"{col.key}_mean"].round(3)
        bold = [i for i, cells in enumerate(lines) if cells[j].startswith(r"\textbf{")]
        assert bold == list(np.flatnonzero(means == means.max())), col.key
        assert lines[bold[0]][j] == (
            rf"\textbf{{{means.max():.3f}}}\,{{\scriptsize$\pm$"
            f"{measured.loc[bold[0], f'{col.key}_std']:.3f}}}"
        )
    assert "PGD-$\\ell_2$" in tex and "$\\ell$2" not in tex


def with_flags(rows: pd.DataFrame, label: str | None, attack: str, flags: str, seed: int = 0) -> pd.DataFrame:
    """``rows`` with one seed's ``attack`` rows (of ``label``, or of every label when None) flagged ``flags``."""
    rows = rows.copy()
    rows["flags"] = rows["flags"].astype(object)
    hit = (rows["attack"] == attack) & (rows["seed"] == seed)
    if label is not None:
        hit &= rows["defense"] == label
    rows.loc[hit, "flags"] = flags
    return rows


def test_a_flagged_cell_carries_a_dagger_is_named_in_a_note_and_is_never_bold():
    rows = with_flags(fixture_rows(), "crmt_jt_step2_only", "pgd_l2", "zero_gradients")  # the best PGD mean
    rows = with_flags(rows, None, "clean", "non_finite", seed=2)  # every clean cell flagged
    table = build_table(rows, 1, "synthav")
    measured = table.frame[table.frame["source"] == "measured"].reset_index(drop=True)
    lines = body_lines(table.latex)
    pgd = [c.key for c in table.columns].index("pgd_l2_all_eps0.5") + 1
    flagged_row = measured.index[measured["label"] == "crmt_jt_step2_only"][0]
    runner_up = measured.index[measured["label"] == "crmt_jt_step1_only"][0]
    std = measured.loc[flagged_row, "pgd_l2_all_eps0.5_std"]
    assert lines[flagged_row][pgd] == rf"0.790\textsuperscript{{\dag}}\,{{\scriptsize$\pm${std:.3f}}}"
    assert [i for i, cells in enumerate(lines) if cells[pgd].startswith(r"\textbf{")] == [runner_up]
    assert lines[runner_up][pgd].startswith(r"\textbf{0.780}\,")
    assert not any(cells[1].startswith(r"\textbf{") for cells in lines)  # Clean: every cell flagged, none bold
    assert all(r"\textsuperscript{\dag}" in cells[1] for cells in lines)
    fgm = [c.key for c in table.columns].index("fgm_all_eps0.5") + 1
    assert sum(r"\textsuperscript{\dag}" in cells[fgm] for cells in lines) == 0
    assert sum(cells[fgm].startswith(r"\textbf{0.790}") for cells in lines) == 1  # unflagged columns as before
    assert (
        r"{\footnotesize\raggedright\textsuperscript{\dag}\,Validity flags on the rows of that cell (any seed): "
        r"non\_finite, zero\_gradients; a flagged cell is never set in bold.\par}"
    ) in table.latex.splitlines()
    plain = build_table(fixture_rows(), 1, "synthav").latex
    assert r"\dag" not in plain and "Validity flags" not in plain


def test_a_wide_pivot_is_split_into_tables_of_at_most_five_columns():
    table = pivot_table(fixture_rows(), "synthav")
    assert len(table.columns) == 15
    tex = table.latex
    heads = re.findall(r"\\toprule\n(.*?) \\\\\n", tex)
    widths = [len(h.split(" & ")) - 2 for h in heads]  # less Method and Seeds
    assert widths == [5, 5, 5] and sum(widths) == len(table.columns)
    assert re.findall(r"\\label\{([^}]+)\}", tex) == [
        "tab:pivot-synthav-1",
        "tab:pivot-synthav-2",
        "tab:pivot-synthav-3",
    ]
    assert [f"(part {k} of 3)" in part for k, part in enumerate(tex.split(r"\end{table}")[:3], 1)] == [True] * 3
    assert heads[0].startswith("Method & Clean & ")
    narrow = pivot_table(fixture_rows(), "synthav", attacks=["pgd_l2"], modalities=["a"])
    assert narrow.latex.count(r"\begin{table}") == 1 and r"\label{tab:pivot-synthav}" in narrow.latex


def pdflatex() -> str:
    """pdflatex's path; skips the test without one (fails it when CI sets MMROBUST_REQUIRE_PDFLATEX=1)."""
    path = shutil.which("pdflatex")
    if path:
        return path
    reason = "no pdflatex on PATH; install it with `apt-get install -y texlive-latex-base texlive-latex-recommended`"
    if os.environ.get("MMROBUST_REQUIRE_PDFLATEX") == "1":
        pytest.fail(reason + " — MMROBUST_REQUIRE_PDFLATEX=1 (CI) requires it")
    pytest.skip(reason)


def test_every_table_compiles_and_fits_the_page(tmp_path):
    latex = pdflatex()
    rows = fixture_rows()
    rows = pd.concat([rows, rows[rows["defense"] == "gb"].assign(defense=HOSTILE)], ignore_index=True)
    rows = with_flags(with_flags(rows, "jt", "pgd_l2", "zero_gradients;non_monotone"), HOSTILE, "fgm", HOSTILE)
    rows = with_flags(rows, "mmt", "clean", "non_finite")  # Table 3 holds the transformers alone
    tables = build_tables(rows) + [pivot_table(rows, "synthav")]
    paths = [p for p in write_tables(tables, tmp_path, command="mmrobust-bench report ℓ2 & 50%") if p.suffix == ".tex"]
    assert all(r"\textsuperscript{\dag}" in p.read_text() for p in paths)  # the flagged cells, and their note
    assert sorted(p.name for p in paths) == [
        "pivot-synthav.tex",
        "table1-synthav.tex",
        "table2-synthav.tex",
        "table3-synthav.tex",
    ]
    inputs = "\n".join(rf"\input{{{p.name}}}\clearpage" for p in paths)
    (tmp_path / "paper.tex").write_text(
        "\\documentclass{article}\n\\usepackage{booktabs}\n\\usepackage{graphicx}\n"
        f"\\begin{{document}}\n{inputs}\n\\end{{document}}\n"
    )
    result = subprocess.run(
        [latex, "-interaction=nonstopmode", "-halt-on-error", "paper.tex"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    log = (tmp_path / "paper.log").read_text(errors="replace")
    assert result.returncode == 0, log[-3000:]
    assert "Overfull \\hbox" not in log and "Undefined control sequence" not in log
    labels = re.findall(r"\\newlabel\{([^}]+)\}", (tmp_path / "paper.aux").read_text())
    assert labels == [
        "tab:table1-synthav",
        "tab:table2-synthav",
        "tab:table3-synthav",
        "tab:pivot-synthav-1",
        "tab:pivot-synthav-2",
        "tab:pivot-synthav-3",
    ]
    assert (tmp_path / "paper.pdf").read_bytes().startswith(b"%PDF")
