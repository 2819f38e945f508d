"""Help texts that name choices stay true: `run --data-root` names every built-in dataset read from a folder."""

from __future__ import annotations

import argparse

from mmrobust_bench.cli import build_parser


def test_run_data_root_help_names_every_dataset_read_from_a_folder():
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    (action,) = [a for a in sub.choices["run"]._actions if "--data-root" in a.option_strings]
    for dataset in ("ks", "vggsound", "ucf101", "avdigits"):
        assert dataset in action.help, dataset
    assert "data_root" in action.help  # the dataset option it sets
