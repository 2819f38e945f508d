"""``report --findings``: the honesty table reads only empirical certificates and calls its counts lower bounds,
runner-up radii say "not a bound", smoothing rows get their own section, and the reference (JT) sections stay
filled when JT is split by configuration."""

from __future__ import annotations

import pandas as pd

from mmrobust_bench.bench.results import rows_frame
from mmrobust_bench.reports.entries import resolve_entries
from mmrobust_bench.reports.findings import findings_markdown, reference_entries

from helpers import fixture_rows, mixed_jt_rows, result_row


def empirical_rows(
    defense: str, seed: int, certificate: str, variant: str, violations: int, certified: int, *, new_columns: bool
) -> list[dict]:
    rows = []
    for radius in (0.0, 0.5):
        row = {
            "dataset": "synthav",
            "defense": defense,
            "defense_id": defense,
            "seed": seed,
            "checkpoint_sha256": f"{defense}{seed}",
            "config_hash": "c",
            "certificate": certificate,
            "variant": variant,
            "modality": "all",
            "radius": radius,
            "n": 100,
            "certified_accuracy": 0.9 - radius,
            "median_certified_radius": 1.0 + seed,
            "honesty_attack": "pgd_l2(steps=20, step=eps*0.125)",
            "honesty_certified": certified,
            "honesty_violations": violations,
        }
        if new_columns:
            row.update(
                method="empirical", kind="not a bound (runner-up only)" if variant == "runner_up" else "empirical"
            )
        rows.append(row)
    return rows


def smoothing_rows(defense: str, seed: int, accs: dict[float, float]) -> list[dict]:
    return [
        {
            "dataset": "synthav",
            "defense": defense,
            "defense_id": defense,
            "seed": seed,
            "checkpoint_sha256": f"{defense}{seed}",
            "config_hash": "c",
            "certificate": "smoothing[a]",
            "variant": "sigma=0.25",
            "modality": "a",
            "radius": r,
            "n": 100,
            "certified_accuracy": acc,
            "median_certified_radius": 0.4,
            "honesty_attack": "SmoothAdv",
            "honesty_certified": 50,
            "honesty_violations": 1,
            "method": "smoothing",
            "kind": "sound (probabilistic, 1-alpha)",
            "sigma": 0.25,
            "n0": 100,
            "n_noise": 1000,
            "alpha": 0.001,
            "abstained": 0.1,
        }
        for r, acc in accs.items()
    ]


def certified_frame() -> pd.DataFrame:
    old = (
        empirical_rows("jt", 0, "eq5", "min_j", 3, 90, new_columns=False)  # written before method/kind
        + empirical_rows("jt", 0, "eq5", "runner_up", 30, 90, new_columns=False)
    )
    new = (
        empirical_rows("jt", 1, "eq5", "min_j", 4, 80, new_columns=True)
        + empirical_rows("jt", 1, "eq5", "runner_up", 20, 80, new_columns=True)
        + smoothing_rows("jt", 0, {0.0: 0.8, 0.5: 0.6})
        + smoothing_rows("jt", 1, {0.0: 0.7, 0.5: 0.4})
    )
    return pd.concat([pd.DataFrame(old), pd.DataFrame(new)], ignore_index=True)


def table_lines(text: str, heading: str) -> list[str]:
    part = text.split(heading, 1)[1].split("\n#", 1)[0]
    return [line for line in part.splitlines() if line.startswith("|")]


def test_honesty_counts_only_empirical_rows_as_lower_bounds_and_runner_up_is_not_a_bound():
    text = findings_markdown(fixture_rows(), certified=certified_frame())
    honesty = table_lines(text, "### Honesty check of the empirical certificates")
    assert "≥ violations found (lower bound)" in honesty[0]
    # min over j, both seeds, one row per model (not per radius); the smoothing rows' 1 / 50 are not added in
    assert honesty[2:] == ["| `jt` | eq5 | empirical | 1.500 | ≥ 7 / 170 (≥ 4.1%) |"]
    runner = table_lines(text, "#### Runner-up radii — **not a bound**")
    assert runner[2:] == ["| `jt` | eq5 | **not a bound (runner-up only)** | 1.500 | ≥ 50 / 170 (≥ 29.4%) |"]
    # smoothing: certified accuracy per noise set and radius, mean ± std over the two seeds, σ, n, α, the kind
    smooth = table_lines(text, "### Randomized smoothing — sound (probabilistic, 1−α)")
    assert smooth[0].startswith(
        "| defense | noise on | σ | n (noise draws) | α | kind | cert. acc @ 0 | cert. acc @ 0.5"
    )
    assert smooth[2] == (
        "| `jt` | a | 0.25 | 1000 | 0.001 | sound (probabilistic, 1−α) | 0.750 ± 0.071 | "
        "0.500 ± 0.141 | 10.0% | ≥ 2 / 100 | 100 | 2 |"  # 100 test samples certified per seed
    )


def test_no_smoothing_section_without_smoothing_rows():
    frame = certified_frame()
    text = findings_markdown(fixture_rows(), certified=frame[frame.get("method").fillna("empirical") != "smoothing"])
    assert "Randomized smoothing" not in text and "### Honesty check" in text


def test_reference_sections_stay_filled_when_jt_is_split_by_configuration():
    rows = mixed_jt_rows()  # jt under configs aaaa… (seeds 0, 1; accuracy 0.18) and bbbb… (seed 0; 0.785)
    resolved, _ = resolve_entries(rows)
    assert reference_entries(resolved) == ["jt [cfg aaaaaaaa]", "jt [cfg bbbbbbbb]"]  # most seeds first
    for given in (rows, resolved):  # raw rows are grouped inside; resolved ones are taken as they are
        text = findings_markdown(given)
        assert "split by configuration into 2 entries" in text and "sections 1, 2 and 4 show each" in text
        pref = table_lines(text, "### 1. Preference")
        assert pref[2].startswith("| `jt [cfg aaaaaaaa]` | 0.180 ± 0.000 |") and pref[2].endswith("| 2 |")
        assert pref[3].startswith("| `jt [cfg bbbbbbbb]` | 0.785 |") and pref[3].endswith("| 1 |")
        for entry, value in (("jt [cfg aaaaaaaa]", "0.180"), ("jt [cfg bbbbbbbb]", "0.785")):
            grid = table_lines(text, f"Fragility: `{entry}`")
            assert len(grid) == 4 and grid[2].startswith(f"| a | {value}")
        ablation = table_lines(text, "### 4. CRMT ablation")
        assert [line.split("|")[1].strip() for line in ablation[2:4]] == ["`jt [cfg aaaaaaaa]`", "`jt [cfg bbbbbbbb]`"]


def test_reference_by_defense_id_when_no_entry_has_the_label():
    rows = fixture_rows()
    rows = rows.assign(label=rows["defense"].where(rows["defense"] != "jt", "jt_baseline"))
    resolved, _ = resolve_entries(rows)
    assert reference_entries(resolved) == ["jt_baseline"]
    text = findings_markdown(resolved)
    assert "### 1. Preference: `jt_baseline`" in text
    assert table_lines(text, "### 1. Preference")[2].startswith("| `jt_baseline` | 0.810 ± 0.010 |")
    none = findings_markdown(rows[rows["defense"] != "jt"].drop(columns="label"))
    assert "No entry is the reference `jt`" in none and "### 1." not in none


PAPER_PGD = "pgd_l2(steps=4, step_ratio=0.3333)"


def configurations_frame() -> pd.DataFrame:
    rows = []
    for seed in (0, 1):
        rows += [
            result_row("jt", seed, "clean", "none", 0.0, 0.9, config="clean"),
            result_row("jt", seed, "pgd_l2", "a", 1.0, 0.80, config=PAPER_PGD, flags="zero_gradients" if seed else ""),
            result_row("jt", seed, "pgd_l2", "v", 1.0, 0.70, config=PAPER_PGD),
            result_row("jt", seed, "missing", "a", 0.0, 0.10, config="missing(fill=zero)"),
            result_row("jt", seed, "missing", "v", 0.0, 0.50, config="missing(fill=zero)"),
        ]
    rows += [  # one seed of other configurations: never averaged in
        result_row("jt", 0, "pgd_l2", "a", 1.0, 0.20, config="pgd_l2(steps=100, step_ratio=0.05)"),
        result_row("jt", 0, "missing", "a", 0.0, 0.70, config="missing(fill=mean)"),
    ]
    return rows_frame(rows)


def test_findings_keep_one_configuration_per_attack_name_it_and_say_what_was_left_out():
    text = findings_markdown(configurations_frame())
    assert f"under uni-modal ℓ2-PGD (`{PAPER_PGD}`)" in text
    assert "with one modality missing (`missing(fill=zero)`)" in text
    fragility = table_lines(text, "### 2. Fragility")
    assert fragility[2].startswith("| a | 0.800 ± 0.000 ⚑ zero_gradients")  # not 0.600 (with 100 steps' 0.20)
    preference = table_lines(text, "### 1. Preference")
    assert "| 0.100 ± 0.000 |" in preference[2]  # not 0.300 (with fill=mean's 0.70)
    assert "left out 'pgd_l2(steps=100, step_ratio=0.05)' (ℓ2)" in text
    assert "left out 'missing(fill=mean)' (ℓ2)" in text


def test_no_nan_in_the_certificate_tables():
    """A median radius is NaN when nothing is certified; σ, α and the abstention rate may be missing."""
    certified = certified_frame()
    certified["median_certified_radius"] = float("nan")
    certified.loc[certified["method"] == "smoothing", ["sigma", "alpha", "abstained"]] = float("nan")
    text = findings_markdown(fixture_rows(), certified=certified)
    assert "### Randomized smoothing" in text and "### Honesty check" in text
    assert "nan" not in text.lower()
