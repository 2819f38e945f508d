"""The rows of :func:`~mmrobust_bench.plug.evaluate` as the Markdown table the CLI prints."""

from __future__ import annotations

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


__all__ = ["format_table"]
