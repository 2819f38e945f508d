"""The API's results as frames and text: the rows of :func:`~mmrobust_bench.plug.evaluate` as the Markdown table the
CLI prints, and the tidy form of a certificate result's per-sample and summary frames."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd


def format_table(frame: pd.DataFrame) -> str:
    """The rows of :func:`~mmrobust_bench.plug.evaluate` as the Markdown table the CLI prints.

    Args:
        frame: rows as :func:`~mmrobust_bench.plug.evaluate` returns them (or read back from its ``results`` CSV).

    Returns:
        The table, with a ``model`` column (and a ``flags`` column when a validity flag of ``bench.flags`` is
        raised).
    """
    # reason: bench.api pulls in training and figure drawing (matplotlib); only the table needs it, on demand
    from ..bench.api import format_table as cli_table

    return cli_table(frame, model_column=True)


def tidy_frame(
    samples: pd.DataFrame, summary: pd.DataFrame, summary_row: str, first: Sequence[str] = ("row",)
) -> pd.DataFrame:
    """``samples`` then ``summary`` in one frame with a ``row`` column (``"sample"`` / ``summary_row``), the
    columns ``first`` leading (those present) and the others after them in order of appearance."""
    frame = pd.concat([samples.assign(row="sample"), summary.assign(row=summary_row)], ignore_index=True)
    lead = [c for c in first if c in frame.columns]
    return frame[lead + [c for c in frame.columns if c not in lead]]


__all__ = ["format_table", "tidy_frame"]
