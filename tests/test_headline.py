"""The leaderboards' headline (``reports.headline``): ranked by ``any``, flags on their cells, the masking check."""

from __future__ import annotations

import math

import pandas as pd

from mmrobust_bench.bench.results import ResultRow, rows_frame
from mmrobust_bench.reports.findings import findings_markdown
from mmrobust_bench.reports.headline import FLAG_MARK, headline, headline_markdown, masking_check

STANDARD = "autoattack(version='standard')"


def row(label, seed, attack, modality, eps, accuracy, flags="", config=None, n=1000):
    return ResultRow(
        dataset="d",
        defense=label,
        label=label,
        seed=seed,
        checkpoint_sha256=f"{label}{seed}",
        config_hash="c" * 16,
        attack=attack,
        attack_config=config or attack,
        library="x",
        library_version="1",
        modality=modality,
        norm="l2",
        eps=eps,
        n=n,
        accuracy=accuracy,
        wall_seconds=0.0,
        device="cpu",
        suite_version="0",
        flags=flags,
    )


def rows_of_two_entries() -> pd.DataFrame:
    out = []
    for seed in (0, 1):
        for label, strong, pgd in (
            ("jt", {"v": 0.30, "a": 0.60, "all": 0.20, "any": 0.10}, 0.31),
            ("crmt_jt", {"v": 0.35, "a": 0.50, "all": 0.25, "any": 0.05}, 0.74),
        ):
            out.append(row(label, seed, "clean", "none", 0.0, 0.9))
            for m, acc in strong.items():
                out.append(row(label, seed, "autoattack", m, 0.5, acc + 0.01 * seed, config=STANDARD))
            out.append(row(label, seed, "autoattack", "any", 1.0, 0.0, config=STANDARD))  # another ε: not headline
            out.append(row(label, seed, "pgd_l2", "v", 0.5, pgd, flags="zero_gradients" if label == "crmt_jt" else ""))
    # a fast-version row must not mix into the standard headline
    out.append(row("jt", 0, "autoattack", "any", 0.5, 0.9, config="autoattack(version='fast')"))
    return rows_frame(out)


def test_headline_is_ranked_by_any_at_the_headline_eps_with_flags():
    rows = rows_of_two_entries()
    rows.loc[(rows["label"] == "crmt_jt") & (rows["modality"] == "a") & (rows["attack"] == "autoattack"), "flags"] = (
        "non_monotone"
    )
    head = headline(rows)
    assert head.eps == 0.5 and head.attack_config == STANDARD
    assert head.modalities == ["a", "v", "all", "any"]
    assert list(head.table["entry"]) == ["jt", "crmt_jt"]  # any 0.105 > 0.055, although crmt_jt wins on v
    jt = head.table.iloc[0]
    assert math.isclose(jt["any"], 0.105) and math.isclose(jt["any_std"], math.sqrt(0.00005))
    text = headline_markdown(head)
    assert f"0.505 ± 0.007 {FLAG_MARK} non_monotone" in text
    assert text.splitlines()[2].startswith("| 1 | `jt` |")


def test_masking_check_names_the_cells_pgd_overstates():
    check = masking_check(rows_of_two_entries()).set_index("entry")
    assert bool(check.loc["crmt_jt", "masking"]) and math.isclose(check.loc["crmt_jt", "gap"], 0.74 - 0.355)
    assert check.loc["crmt_jt", "pgd_flags"] == "zero_gradients"
    assert not bool(check.loc["jt", "masking"])  # 0.31 against 0.305: binomial noise at n = 1000


def test_findings_open_with_the_headline():
    text = findings_markdown(rows_of_two_entries())
    assert "### 0. Headline: standard strong evaluation" in text
    assert "1 of 2 cells measured by both attacks" in text
    assert text.index("### 0. Headline") < text.index("### 3. Robust accuracy")


def test_no_autoattack_rows_no_headline():
    rows = rows_of_two_entries()
    assert headline(rows[rows["attack"] != "autoattack"]) is None
    assert masking_check(rows[rows["attack"] != "autoattack"]).empty


def test_every_findings_table_marks_flagged_cells():
    text = findings_markdown(rows_of_two_entries())
    section3 = text[text.index("### 3. Robust accuracy") :]
    crmt = next(line for line in section3.splitlines() if line.startswith("| `crmt_jt` |"))
    jt = next(line for line in section3.splitlines() if line.startswith("| `jt` |"))
    assert f"0.740 ± 0.000 {FLAG_MARK} zero_gradients" in crmt and FLAG_MARK not in jt
