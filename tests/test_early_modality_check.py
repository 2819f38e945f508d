"""``run --modality`` is refused before any data are generated when the dataset's builder names its modalities."""

from __future__ import annotations

import pytest

from mmrobust_bench.cli import main
from mmrobust_bench.data import DATASETS, build_dataset


def test_bad_modality_is_refused_before_the_dataset_is_built(tmp_path, capsys):
    code = main(["run", "--defense", "jt", "--modality", "x", "--root", str(tmp_path), "--eps", "0.5"])
    err = capsys.readouterr().err
    assert code == 2 and "unknown modality x; valid: v, a or 'all'" in err
    assert not (tmp_path / "datasets").exists()  # nothing generated


@pytest.mark.parametrize("name", ["synthav"])
def test_declared_modality_names_match_the_built_specs(tmp_path, name):
    ds = build_dataset(name, cache_dir=tmp_path, n_train=16, n_test=8)
    assert tuple(s.name for s in ds.specs) == DATASETS.get(name).modality_names


def test_avdigits_declares_its_modalities_in_spec_order():
    from mmrobust_bench.data.avdigits import AVDigitsConfig, audio_spec, visual_spec

    assert (visual_spec().name, audio_spec(AVDigitsConfig()).name) == DATASETS.get("avdigits").modality_names
