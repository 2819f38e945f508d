"""The paper's reported numbers (Tables 1–3 of CRMT, ICLR 2024) and the names that link them to ours.

``paper_tables.csv`` ships inside this package (columns table, dataset, method, attack, modality,
eps, accuracy) and is read with :mod:`importlib.resources`, so it works from a wheel as well.
"""
from __future__ import annotations

from importlib import resources

import pandas as pd

PAPER_CSV = "paper_tables.csv"

# our defense ids -> the paper's method names (as spelled in paper_tables.csv)
METHOD_NAMES: dict[str, str] = {
    "jt": "JT", "gb": "GB", "ogm_ge": "OGM", "pmr": "PMR", "mmat": "MMAT", "mixup": "Mixup", "msefm": "MSEFM",
    "crmt_jt": "CRMT-JT", "crmt_at": "CRMT-AT", "crmt_mix": "CRMT-Mix", "mmt": "MMT", "crmt_mmt": "CRMT-MMT",
}
# the paper's row order (Tables 1–2, then Table 3)
PAPER_ORDER: tuple[str, ...] = ("JT", "GB", "OGM", "PMR", "MMAT", "Mixup", "MSEFM", "CRMT-JT", "CRMT-AT", "CRMT-Mix",
                                "MMT", "CRMT-MMT")
# our dataset ids -> the paper's dataset names; synthav has no counterpart
DATASET_NAMES: dict[str, str] = {"kinetics_sounds": "KS", "ks": "KS", "ucf101": "UCF101", "vggsound": "VGGS",
                                 "vggs": "VGGS"}


def load_paper_tables() -> pd.DataFrame:
    """Every reported accuracy of Tables 1–3 (eps 0 for clean and missing-modality rows)."""
    with resources.files(__package__).joinpath(PAPER_CSV).open("r", encoding="utf-8") as fh:
        frame = pd.read_csv(fh)
    frame["eps"] = frame["eps"].astype(float)
    return frame


def method_name(label: str) -> str:
    """The paper's name of a defense id; other labels (ablation variants, plugins) stay as they are. A report
    entry split by configuration keeps its tag: ``"jt [cfg b30dba09]"`` → ``"JT [cfg b30dba09]"``."""
    text = str(label)
    base, tag = text, ""
    if text.endswith("]") and " [cfg " in text:
        base, rest = text.split(" [cfg ", 1)
        tag = " [cfg " + rest
    return METHOD_NAMES.get(base, base) + tag


def paper_dataset(dataset: str) -> str | None:
    """The paper's name of one of our datasets, or None (synthav) when the paper has no such dataset."""
    return DATASET_NAMES.get(str(dataset).lower())


__all__ = ["METHOD_NAMES", "PAPER_ORDER", "DATASET_NAMES", "load_paper_tables", "method_name", "paper_dataset"]
