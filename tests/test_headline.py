"""The leaderboards' headline (``reports.headline``): ranked by ``any``, flags on their cells, the masking check."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import torch

from mmrobust_bench.bench.results import rows_frame
from mmrobust_bench.reports.findings import findings_markdown
from mmrobust_bench.reports.headline import (
    FLAG_MARK,
    headline,
    headline_markdown,
    masking_check,
    masking_markdown,
    reference_comparison,
)

from helpers import result_row

STANDARD = "autoattack(version='standard')"


row = result_row


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


def test_difference_is_welch_t_over_seeds_with_a_binomial_floor():
    from scipy import stats

    from mmrobust_bench.reports.headline import difference

    a, b = np.array([0.5, 0.6, 0.7]), np.array([0.1, 0.2, 0.3])
    d, half, verdict = difference(a, 1e9, b, 1e9)  # binomial noise negligible: Welch, df = 4 exactly here
    assert math.isclose(d, 0.4) and verdict == "higher"
    assert math.isclose(half, stats.t.ppf(0.975, 4) * math.sqrt(0.02 / 3))
    assert difference(b, 1e9, a, 1e9)[2] == "lower"
    # seeds that agree exactly do not make a difference certain: the binomial noise of n = 500 samples a seed
    same = np.array([0.5, 0.5, 0.5])
    d, half, verdict = difference(same, 500, same, 500)
    assert d == 0 and verdict == "within noise"
    assert math.isclose(half, stats.t.ppf(0.975, 4) * math.sqrt(2 * 0.25 / 1500))
    assert difference(np.array([0.6] * 3), 500, same, 500)[2] == "higher"  # 0.1 against a half-width of 0.051
    assert difference(np.array([0.9]), 500, same, 500)[2] == "untested"  # one seed: no interval


def test_findings_compare_every_entry_with_the_reference_under_the_strong_evaluation():
    rows = rows_of_two_entries()
    head = headline(rows)
    comparison = reference_comparison(head, "jt").set_index("entry")
    assert list(comparison.index) == ["crmt_jt"]
    # crmt_jt − jt per seed: v +0.05 (both seeds), a −0.10, any −0.05; 2 seeds, equal spreads: noise-floored
    assert math.isclose(comparison.loc["crmt_jt", "v"], 0.05) and math.isclose(comparison.loc["crmt_jt", "a"], -0.1)
    assert comparison.loc["crmt_jt", "clean_verdict"] == "within noise"
    text = findings_markdown(rows)
    section = text[text.index("### 0c. Against `jt`") : text.index("### 1.")]
    # a: −0.1 against t(0.975, 2) · √(0.605·0.395/2000 + 0.505·0.495/2000) = 0.067 (binomial floor, df 2): a loss
    assert (
        "| `crmt_jt` | +0.000 ± 0.041 | -0.100 ± 0.067 ▼ | +0.050 ± 0.064 | +0.050 ± 0.057 | -0.050 ± 0.037 ▼ | 2 |"
        in section.splitlines()
    )


def test_masking_check_pairs_the_samples_when_rows_hold_outcomes():
    """PGD on all 1000 samples, the strong evaluation on the first 500: both accuracies on those 500, and McNemar's
    count of the samples they disagree on decides."""
    from mmrobust_bench.bench.result_rows import encode_outcomes

    def outcomes(correct: list[int], n: int) -> str:
        bits = torch.zeros(n, dtype=torch.bool)
        bits[correct] = True
        return encode_outcomes(bits)

    out = []
    for label, broke, kept in (("masked", 50, 0), ("honest", 10, 8)):
        pgd_right = list(range(300)) + list(range(600, 1000))  # 300 of the first 500, 700 of 1000 overall
        strong_right = list(range(broke, 300)) + list(range(300, 300 + kept))  # PGD-right broken, PGD-wrong kept
        pgd = row(label, 0, "pgd_l2", "v", 0.5, 0.7, n=1000)
        strong = row(label, 0, "autoattack", "v", 0.5, len(strong_right) / 500, config=STANDARD, n=500)
        out += [
            dataclasses.replace(pgd, outcomes=outcomes(pgd_right, 1000)),
            dataclasses.replace(strong, outcomes=outcomes(strong_right, 500)),
        ]
    check = masking_check(rows_frame(out)).set_index("entry")
    assert check["paired"].all()
    assert math.isclose(check.loc["masked", "pgd_l2"], 0.6)  # on the first 500, not the row's 0.7 over 1000
    assert math.isclose(check.loc["masked", "autoattack"], 0.5) and math.isclose(check.loc["masked", "gap"], 0.1)
    assert bool(check.loc["masked", "masking"])  # b − c = 50 > 2·√50
    assert math.isclose(check.loc["honest", "gap"], 0.004) and not bool(check.loc["honest", "masking"])  # 2 < 2·√18


def test_the_comparison_counts_seeds_as_the_headline_does_while_a_sweep_is_partial():
    """An entry whose last seed has its single-modality cells but not yet `any` (a sweep still running): the
    comparison's seed count is the headline's, not the count of one column."""
    rows = rows_of_two_entries()
    partial = (rows["label"] == "crmt_jt") & (rows["seed"] == 1) & (rows["modality"] == "any")
    head = headline(rows[~partial])
    comparison = reference_comparison(head, "jt").set_index("entry")
    seeds = head.table.set_index("entry")["seeds"]
    assert seeds["crmt_jt"] == 2 and comparison.loc["crmt_jt", "seeds"] == seeds["crmt_jt"]


PAPER_PGD = "pgd_l2(steps=4, step_ratio=0.3333)"


def test_the_masking_verdict_uses_one_pgd_configuration_whatever_the_row_order():
    """With two PGD configurations in the rows, the check uses the one with the most rows (the paper's here) and
    names it; the order of the rows in the file changes nothing."""
    base = [row("jt", s, "autoattack", "a", 1.0, 0.20, config=STANDARD) for s in (0, 1)]
    paper = [row("jt", s, "pgd_l2", "a", 1.0, 0.80, config=PAPER_PGD) for s in (0, 1)]
    long = [row("jt", 0, "pgd_l2", "a", 1.0, 0.20, config="pgd_l2(steps=100, step_ratio=0.05)")]
    for order in (base + paper + long, base + long + paper, long + paper + base):
        check = masking_check(rows_frame(order))
        assert len(check) == 1 and bool(check["masking"].iloc[0])
        assert check["pgd_l2"].iloc[0] == 0.80 and check["pgd_config"].iloc[0] == PAPER_PGD


def test_the_masking_table_shows_the_flags_of_both_numbers_and_says_only_compared_cells_were_checked():
    rows = rows_frame(
        [
            row("jt", 0, "pgd_l2", "a", 1.0, 0.8, flags="zero_gradients", config=PAPER_PGD),
            row("jt", 0, "autoattack", "a", 1.0, 0.3, flags="randomness", config=STANDARD),
        ]
    )
    text = masking_markdown(masking_check(rows))
    line = next(x for x in text.splitlines() if x.startswith("| `jt`"))
    assert f"0.800 {FLAG_MARK} zero_gradients" in line and f"0.300 {FLAG_MARK} randomness" in line
    assert "Only these cells were compared" in text and f"`{PAPER_PGD}`" in text


def test_the_masking_check_skips_a_cell_without_an_accuracy():
    rows = rows_frame(
        [
            row("jt", 0, "pgd_l2", "a", 1.0, 0.8, config=PAPER_PGD),
            row("jt", 0, "autoattack", "a", 1.0, 0.3, config=STANDARD),
        ]
    )
    rows.loc[rows["attack"] == "autoattack", "accuracy"] = math.nan
    assert masking_check(rows).empty
    assert "nan" not in masking_markdown(masking_check(rows))


def test_the_headline_keeps_one_norm_l2_first_and_names_it():
    """APGD-style attacks describe themselves the same way under ℓ2 and ℓ∞: the norm keeps the two apart."""
    rows = []
    for seed in (0, 1):
        rows.append(row("jt", seed, "clean", "none", 0.0, 0.9))
        for norm, acc in (("l2", 0.6), ("linf", 0.0)):
            for m in ("a", "any"):
                rows.append(dataclasses.replace(row("jt", seed, "autoattack", m, 0.5, acc, config=STANDARD), norm=norm))
    head = headline(rows_frame(rows))
    assert head.norm == "l2" and math.isclose(head.table["any"].iloc[0], 0.6)
    assert "standard strong evaluation (`autoattack(version='standard')`, ℓ2) at ε = 0.5" in findings_markdown(
        rows_frame(rows)
    )
    only_linf = rows_frame([r for r in rows if r.norm != "l2"])
    assert headline(only_linf).norm == "linf" and math.isclose(headline(only_linf).table["any"].iloc[0], 0.0)
