"""Text from the rows, made safe wherever it lands: a Markdown cell, a Markdown code span, a CSV cell.

Names in result rows are text, never markup or formulas: Markdown cells escape ``|``, ``<`` and line breaks
(:func:`markdown_cell`), and a CSV cell that a spreadsheet would run as a formula gets a leading ``'``
(:func:`csv_safe`). LaTeX escapes its own specials (``reports.latex.latex_escape``)."""

from __future__ import annotations

import re

import pandas as pd

LINE_BREAKS = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]+")
# what a spreadsheet reads as the start of a formula (OWASP's CSV injection list)
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n")


def markdown_cell(text: object) -> str:
    """Text for Markdown (a table cell, a heading, a note): backslash and ``|`` escaped, ``<`` as ``&lt;`` (no raw
    HTML), line breaks and other control characters as one space."""
    out = LINE_BREAKS.sub(" ", str(text)).replace("\\", "\\\\").replace("|", "\\|")
    return out.replace("<", "&lt;")


def markdown_code(text: object) -> str:
    """A Markdown code span of ``text`` (in a table cell too): fenced by more backticks than any run inside it."""
    body = LINE_BREAKS.sub(" ", str(text)).replace("|", "\\|")
    fence = "`" * (max((len(run) for run in re.findall(r"`+", body)), default=0) + 1)
    pad = " " if body.startswith("`") or body.endswith("`") else ""
    return f"{fence}{pad}{body}{pad}{fence}"


def _csv_cell(value: object) -> object:
    if not isinstance(value, str) or not value.startswith(_FORMULA_START):
        return value
    try:
        float(value)  # -0.5, +inf: a number, not a formula
        return value
    except ValueError:
        return "'" + value


def csv_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with every text cell that a spreadsheet would run as a formula (``=``, ``+``, ``-``, ``@``, tab,
    CR or LF first) prefixed with ``'``; numbers, and text that reads as a number such as ``-0.5``, stay as they are."""
    out = frame.copy()
    for column in out.columns:
        if out[column].dtype == object or pd.api.types.is_string_dtype(out[column].dtype):
            out[column] = out[column].map(_csv_cell)
    return out


__all__ = [
    "csv_safe",
    "markdown_cell",
    "markdown_code",
]
