"""The paper's reported numbers (Tables 1–3 of CRMT, ICLR 2024), the names that link them to ours, and the one
display name (:func:`display_name`) and figure family (:func:`family`) of every entry, so that the page, the
tables and the figures never call one defense two names.

``paper_tables.csv`` ships inside this package (columns table, dataset, method, attack, modality,
eps, accuracy) and is read with :mod:`importlib.resources`, so it works from a wheel as well.
"""

from __future__ import annotations

from importlib import resources

import pandas as pd

PAPER_CSV = "paper_tables.csv"

# our defense ids -> the paper's method names (as spelled in paper_tables.csv)
METHOD_NAMES: dict[str, str] = {
    "jt": "JT",
    "gb": "GB",
    "ogm_ge": "OGM",
    "pmr": "PMR",
    "mmat": "MMAT",
    "mixup": "Mixup",
    "msefm": "MSEFM",
    "crmt_jt": "CRMT-JT",
    "crmt_at": "CRMT-AT",
    "crmt_mix": "CRMT-Mix",
    "mmt": "MMT",
    "crmt_mmt": "CRMT-MMT",
}
# the paper's row order (Tables 1–2, then Table 3)
PAPER_ORDER: tuple[str, ...] = (
    "JT",
    "GB",
    "OGM",
    "PMR",
    "MMAT",
    "Mixup",
    "MSEFM",
    "CRMT-JT",
    "CRMT-AT",
    "CRMT-Mix",
    "MMT",
    "CRMT-MMT",
)
# our dataset ids -> the paper's dataset names; synthav has no counterpart
DATASET_NAMES: dict[str, str] = {
    "kinetics_sounds": "KS",
    "ks": "KS",
    "ucf101": "UCF101",
    "vggsound": "VGGS",
    "vggs": "VGGS",
}


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


#: our ablation variants' display names (they have no name in the paper); every report shows these
VARIANT_NAMES: dict[str, str] = {
    "crmt_jt_orth_only": "CRMT-JT head only",
    "crmt_jt_step1_only": "CRMT-JT step 1 only",
    "crmt_jt_step2_only": "CRMT-JT step 2 only",
}
#: where the paper's table name would be ambiguous among our defenses: its "OGM" is OGM-GE, and ``ogm`` (plain OGM,
#: without the noise) is a registered defense of its own
DISAMBIGUATED_NAMES: dict[str, str] = {"ogm_ge": "OGM-GE"}
DISPLAY_NAMES: dict[str, str] = {**METHOD_NAMES, **VARIANT_NAMES, **DISAMBIGUATED_NAMES}

#: families that figures draw in separate panels (each beside JT, the reference), in drawing order
BASELINES = "baselines"
CRMT = "CRMT variants"
TRANSFORMERS = "transformers"
OTHER = "other entries"
FAMILIES: tuple[str, ...] = (BASELINES, CRMT, TRANSFORMERS, OTHER)
_FAMILY_OF: dict[str, str] = {
    **{d: BASELINES for d in ("jt", "gb", "ogm_ge", "pmr", "mmat", "mixup", "msefm")},
    **{d: CRMT for d in ("crmt_jt", "crmt_at", "crmt_mix", *VARIANT_NAMES)},
    "mmt": TRANSFORMERS,
    "crmt_mmt": TRANSFORMERS,
}
REFERENCE = "jt"


def _split_tag(label: object) -> tuple[str, str]:
    text = str(label)
    if text.endswith("]") and " [cfg " in text:
        base, rest = text.split(" [cfg ", 1)
        return base, " [cfg " + rest
    return text, ""


def display_name(label: object) -> str:
    """The one name every report (HTML, tables, figures) shows for a defense id or label: the paper's name
    (``crmt_at`` → ``CRMT-AT``), our variants' names (``crmt_jt_step1_only`` → ``CRMT-JT step 1 only``), any
    other label as it is. An entry split by configuration keeps its tag (``JT [cfg b30dba09]``)."""
    base, tag = _split_tag(label)
    return DISPLAY_NAMES.get(base, base) + tag


def family(label: object, defense_id: object = None) -> str:
    """Which :data:`FAMILIES` panel an entry belongs to: by its label, else by its registry id (a label such as
    ``jt_long`` of defense ``jt``), else by name (``crmt_*`` with ``mmt``: transformers, other ``crmt_*``: CRMT)."""
    for name in (_split_tag(label)[0], None if defense_id is None else _split_tag(defense_id)[0]):
        if name in _FAMILY_OF:
            return _FAMILY_OF[name]
    base = _split_tag(label)[0]
    if base.startswith("crmt_"):
        return TRANSFORMERS if "mmt" in base else CRMT
    return OTHER


def paper_dataset(dataset: str) -> str | None:
    """The paper's name of one of our datasets, or None (synthav) when the paper has no such dataset."""
    return DATASET_NAMES.get(str(dataset).lower())


__all__ = [
    "BASELINES",
    "CRMT",
    "DATASET_NAMES",
    "DISPLAY_NAMES",
    "FAMILIES",
    "METHOD_NAMES",
    "OTHER",
    "PAPER_ORDER",
    "REFERENCE",
    "TRANSFORMERS",
    "VARIANT_NAMES",
    "display_name",
    "family",
    "load_paper_tables",
    "method_name",
    "paper_dataset",
]
