"""Figure 5 names the head-only stage after the head its rows were trained with (checkpoint config.json, or an
own_groups pinned in the sweep YAML, or the default its entry resolves to), and neutrally when none says."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from mmrobust_bench.cli import main
from mmrobust_bench.cli.report import read_results
from mmrobust_bench.reports.figures import HEAD_ONLY_STAGE, crmt_heads, figure5

from helpers import fixture_rows

REPO = Path(__file__).resolve().parents[1]


def tick_labels(fig) -> list[str]:
    return [t.get_text() for t in fig.axes[0].get_xticklabels()]


def write_config(root: Path, sha: str, own_groups: str | None) -> None:
    directory = root / "synthav" / "crmt_jt" / sha
    directory.mkdir(parents=True)
    defense_config = {"rho": 0.0} if own_groups is None else {"rho": 0.0, "own_groups": own_groups}
    (directory / "config.json").write_text(
        json.dumps(
            {
                "dataset": "synthav",
                "defense": "crmt_jt",
                "defense_config": defense_config,
                "train_config": {},
                "stages": {"final": {"file": "final.safetensors", "sha256": sha}},
            }
        )
    )


def test_neutral_stage_name_without_a_source():
    rows = fixture_rows()
    assert crmt_heads(rows) == {}
    labels = tick_labels(figure5(rows))
    assert f"{HEAD_ONLY_STAGE}\n(crmt_jt_orth_only)" in labels
    assert not any("orth." in t or "orthogonal" in t for t in labels)


def test_stage_named_from_checkpoint_configs(tmp_path):
    rows = fixture_rows()  # crmt_jt_orth_only seeds 0-2 have checkpoint sha256 crmt_jt_orth_only0 … 2
    for own, expected in (
        ("per_class", "unit-row head only"),
        ("per_class_unit_rows", "unit-row head only"),
        ("full", "orthogonal head only"),
    ):
        root = tmp_path / own
        for seed in range(3):
            write_config(root, f"crmt_jt_orth_only{seed}", own)
        heads = crmt_heads(rows, dataset="synthav", checkpoints=root)
        assert heads["crmt_jt_orth_only"] == (own, "checkpoint config.json")
        fig = figure5(rows, heads=heads)
        assert f"{expected}\n(crmt_jt_orth_only)" in tick_labels(fig)
        assert f"own_groups={own}" in fig._suptitle.get_text()
    # the models of one label disagree (or one has no own_groups): unknown, so neutral
    mixed = tmp_path / "mixed"
    write_config(mixed, "crmt_jt_orth_only0", "full")
    write_config(mixed, "crmt_jt_orth_only1", "per_class_unit_rows")
    write_config(mixed, "crmt_jt_orth_only2", None)
    heads = crmt_heads(rows, dataset="synthav", checkpoints=mixed)
    assert "crmt_jt_orth_only" not in heads
    assert f"{HEAD_ONLY_STAGE}\n(crmt_jt_orth_only)" in tick_labels(figure5(rows, heads=heads))


def test_stage_named_from_the_committed_synthav_sweep_yaml(tmp_path):
    """The committed rows and their sweep.yaml, which pins no own_groups: the CRMT entries train with the
    registered default, the paper's orthogonal head; a pin in the YAML wins over the default."""
    rows = read_results(str(REPO / "leaderboards/synthav/runs/results.csv"))
    sweep = yaml.safe_load((REPO / "leaderboards/synthav/sweep.yaml").read_text())
    heads = crmt_heads(rows, dataset="synthav", checkpoints=tmp_path, sweep=sweep)
    for label in ("crmt_jt", "crmt_at", "crmt_jt_orth_only", "crmt_jt_step1_only", "crmt_jt_step2_only"):
        assert heads[label] == ("full", "the defense's default; the sweep YAML pins none")
    assert "jt" not in heads and "msefm" not in heads  # no CRMT head
    labels = tick_labels(figure5(rows, heads=heads))
    assert "orthogonal head only\n(crmt_jt_orth_only)" in labels
    # a pin (here the reference code's unit-row head) names the head instead of the default
    pinned = {**sweep, "set": {"own_groups": "per_class_unit_rows"}}
    heads = crmt_heads(rows, dataset="synthav", checkpoints=tmp_path, sweep=pinned)
    assert heads["crmt_jt_orth_only"] == ("per_class_unit_rows", "pinned in the sweep YAML")
    assert "unit-row head only\n(crmt_jt_orth_only)" in tick_labels(figure5(rows, heads=heads))
    # a sweep YAML of another dataset says nothing about these rows
    assert crmt_heads(rows, dataset="synthav", sweep={**sweep, "dataset": "avdigits"}) == {}


def test_plot_cli_reads_the_sweep_config(tmp_path, capsys):
    results = tmp_path / "runs" / "results.csv"
    results.parent.mkdir()
    fixture_rows().to_csv(results, index=False)
    config = tmp_path / "sweep.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "dataset": "synthav",
                "defenses": [
                    {"defense": "crmt_jt", "label": "crmt_jt_orth_only", "set": {"own_groups": "full", "rho": 0.0}}
                ],
            }
        )
    )
    out = tmp_path / "figs"
    assert main(["plot", "--results", str(results), "--out", str(out), "--figures", "5", "--config", str(config)]) == 0
    assert (out / "figure5-synthav.png").exists()
    assert (
        main(
            [
                "plot",
                "--results",
                str(results),
                "--out",
                str(out),
                "--figures",
                "5",
                "--config",
                str(tmp_path / "absent.yaml"),
            ]
        )
        == 2
    )
    assert "absent.yaml does not exist" in capsys.readouterr().err
