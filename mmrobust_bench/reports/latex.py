"""Report tables in LaTeX (booktabs): ``ℓ_2`` spelled out, a ``\\label`` per table, the best mean of each column
in bold, shrunk to the line width when wider, a wide pivot split into several tables. A cell whose rows carry a
validity flag gets a dagger, a note under the table names the flags, and it is never the bold best: a flagged
number may be a loose upper bound. Text from the rows is escaped (:func:`latex_escape`), so any name gives valid
LaTeX."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import pandas as pd

from .paths import slug
from .safe_text import LINE_BREAKS
from .table_cells import ATTACK_TITLES, Column, Table, flag_text

_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


_LATEX_UNICODE = {
    "ε": r"$\varepsilon$",
    "ℓ": r"$\ell$",
    "±": r"$\pm$",
    "—": "---",
    "–": "--",
    "η": r"$\eta$",
    "↳": r"$\hookrightarrow$",
    "×": r"$\times$",
    "“": "``",
    "”": "''",
    "∞": r"$\infty$",
}
# a norm's name: ℓ2 → $\ell_{2}$, ℓ∞ → $\ell_{\infty}$ (the subscript belongs to the ℓ)
_NORM = re.compile(r"ℓ(\d+|∞)")
#: most value columns one LaTeX table of a pivot holds (a wider pivot is split into parts); Tables 1–3 keep
#: the paper's layout, and every table shrinks to the line width only when it is wider (``\resizebox``)
LATEX_MAX_COLUMNS = 5


def latex_escape(text: str) -> str:
    """Plain text → LaTeX: the ten special characters escaped, the few Unicode symbols reports use spelled out
    (``ℓ2`` as ``$\\ell_2$``), line breaks and other control characters as one space (a blank line would end the
    table's paragraph)."""
    out = []
    for i, part in enumerate(_NORM.split(LINE_BREAKS.sub(" ", str(text)))):
        if i % 2:  # the subscript of a norm's ℓ: $\ell_2$, $\ell_\infty$, $\ell_{12}$
            sub = r"\infty" if part == "∞" else part
            out.append(rf"$\ell_{sub}$" if len(part) == 1 else rf"$\ell_{{{sub}}}$")
            continue
        out.extend(_LATEX_SPECIAL.get(ch) or _LATEX_UNICODE.get(ch) or ch for ch in part)
    return "".join(out)


def latex_label(table: Table, part: int = 0) -> str:
    """``tab:table1-synthav``, ``tab:pivot-synthav`` (``-2`` for the second part of a split pivot): the file's stem,
    the dataset as its slug, so any dataset name gives a valid ``\\label``."""
    stem = f"pivot-{slug(table.dataset)}" if table.number == 0 else f"table{table.number}-{slug(table.dataset)}"
    return f"tab:{stem}" + (f"-{part}" if part else "")


def latex_parts(columns: Sequence[Column], max_columns: int = LATEX_MAX_COLUMNS) -> list[list[Column]]:
    """A pivot's columns, in their order, in parts of at most ``max_columns``: an (attack, modality) group that fits
    in a part of its own starts one rather than being cut; a larger group fills parts as it comes."""
    groups: dict[tuple[str, str], list[Column]] = {}
    for col in columns:
        groups.setdefault(("", "") if col.attack == "clean" else (col.attack, col.modality), []).append(col)
    parts: list[list[Column]] = [[]]
    for group in groups.values():
        if parts[-1] and len(group) <= max_columns < len(parts[-1]) + len(group):
            parts.append([])
        for col in group:
            if len(parts[-1]) == max_columns:
                parts.append([])
            parts[-1].append(col)
    return [p for p in parts if p]


def _latex_head(col: Column) -> str:
    """A column's title on two lines (attack; modality and ε) so that columns stay narrow."""
    name = ATTACK_TITLES.get(col.attack, col.attack)
    rest = col.title[len(name) :].strip() if col.title.startswith(name) else ""
    if not rest:
        return latex_escape(col.title)
    return r"\shortstack{" + latex_escape(name) + r" \\ " + latex_escape(rest) + "}"


#: beside a flagged number, as ⚑ is in Markdown: the table's note names the flags
FLAG_DAGGER = r"\textsuperscript{\dag}"


def _latex_value(mean: float, std: float, best: bool, flagged: bool = False) -> str:
    if pd.isna(mean):
        return "---"
    shown = f"{mean:.3f}"
    shown = rf"\textbf{{{shown}}}" if best else shown
    shown += FLAG_DAGGER if flagged else ""
    return shown if std is None or pd.isna(std) else shown + rf"\,{{\scriptsize$\pm${std:.3f}}}"


def _flag_note(names: Sequence[str]) -> list[str]:
    """The line under the tabular naming the flags its daggers stand for (none when no cell is flagged)."""
    if not names:
        return []
    listed = latex_escape(", ".join(names))
    return [
        r"\par\smallskip",
        rf"{{\footnotesize\raggedright{FLAG_DAGGER}\,Validity flags on the rows of that cell (any seed): {listed}; "
        r"a flagged cell is never set in bold.\par}",
    ]


def _latex_names(rows: pd.DataFrame) -> list[str]:
    """Each row's name: the display name, with the label beside it only where two rows would share one."""
    names = [str(r["method"]) for _, r in rows.iterrows()]
    return [
        n if names.count(n) == 1 or r["label"] in ("", n) else f"{n} ({r['label']})"
        for n, (_, r) in zip(names, rows.iterrows())
    ]


def _latex_environment(table: Table, columns: Sequence[Column], label: str, part: str) -> str:
    rows = table.frame[~((table.frame["source"] == "reported") & (table.frame["label"] == ""))]
    rows = rows.reset_index(drop=True)  # other datasets' reported blocks: not comparable, left out of LaTeX
    measured = rows["source"] == "measured"
    flags = {  # a cell's flags where it shows a number of ours ("---" carries no mark, so no note either)
        col.key: rows.get(f"{col.key}_flags", pd.Series("", index=rows.index))
        .map(flag_text)
        .where(measured & rows[f"{col.key}_mean"].notna(), "")
        for col in columns
    }
    best = {}
    for col in columns:  # the best mean as shown (3 decimals) among our unflagged rows; ties are all bold
        values = pd.to_numeric(rows.loc[measured & (flags[col.key] == ""), f"{col.key}_mean"], errors="coerce")
        best[col.key] = values.round(3).max() if values.notna().any() else math.nan
    names = sorted({n for col in columns for v in flags[col.key] for n in v.split(";") if n})
    head = " & ".join(["Method"] + [_latex_head(c) for c in columns] + ["Seeds"]) + r" \\"
    body = []
    for (i, rec), name in zip(rows.iterrows(), _latex_names(rows)):
        if rec["source"] == "reported":
            cells = [latex_escape(f"↳ {rec['method']} (reported, {rec['dataset']})")]
            cells += [_latex_value(rec[f"{c.key}_mean"], None, False) for c in columns] + ["---"]
        else:
            cells = [latex_escape(name)]
            cells += [
                _latex_value(
                    rec[f"{c.key}_mean"],
                    rec[f"{c.key}_std"],
                    not flags[c.key][i]
                    and pd.notna(rec[f"{c.key}_mean"])
                    and round(float(rec[f"{c.key}_mean"]), 3) == best[c.key],
                    bool(flags[c.key][i]),
                )
                for c in columns
            ]
            cells.append(str(int(rec["n_seeds"])))
        body.append(" & ".join(cells) + r" \\")
    title = re.sub(r"^Table \d+ — ", "", table.title)  # LaTeX numbers the table itself
    caption = latex_escape(
        f"{title} — {table.dataset}{part}. Accuracy, mean ± sample std over seeds; the best mean "
        "of each column in bold."
    )
    return "\n".join(
        [
            r"\begin{table}[t]",
            r"\centering",
            r"\small",
            r"\setlength{\tabcolsep}{4pt}",
            r"\resizebox{\ifdim\width>\linewidth\linewidth\else\width\fi}{!}{%",
            r"\begin{tabular}{l" + "r" * (len(columns) + 1) + "}",
            r"\toprule",
            head,
            r"\midrule",
            *body,
            r"\bottomrule",
            r"\end{tabular}}",
            *_flag_note(names),
            rf"\caption{{{caption}}}",
            rf"\label{{{label}}}",
            r"\end{table}",
        ]
    )


def latex_table(table: Table, *, max_columns: int = LATEX_MAX_COLUMNS) -> str:
    """The measured rows (and reported rows beside them) as booktabs ``table`` environments, mean ± std, the best
    unflagged mean of each column in bold, a flagged cell marked with a dagger and its flags named in a note, each
    with a ``\\label`` (:func:`latex_label`) and shrunk to the line width when wider. A pivot wider than
    ``max_columns`` value columns is split into several tables (:func:`latex_parts`).

    Needs ``\\usepackage{booktabs}`` and ``\\usepackage{graphicx}`` in the preamble."""
    parts = latex_parts(table.columns, max_columns) if table.number == 0 else [list(table.columns)]
    environments = [
        _latex_environment(
            table,
            cols,
            latex_label(table, k if len(parts) > 1 else 0),
            f" (part {k} of {len(parts)})" if len(parts) > 1 else "",
        )
        for k, cols in enumerate(parts, 1)
    ]
    return "\n\n".join([r"% needs \usepackage{booktabs} and \usepackage{graphicx}", *environments]) + "\n"


__all__ = [
    "LATEX_MAX_COLUMNS",
    "latex_escape",
    "latex_label",
    "latex_parts",
    "latex_table",
]
