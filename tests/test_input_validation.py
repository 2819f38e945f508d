"""Hostile input at the door: YAML alias bombs and repeated keys, sweep YAML rules, library attack options, ε of
the Python API. Each refusal is one short line naming the key or option, before any data or model exists."""

from __future__ import annotations

import math
import time
from argparse import Namespace

import pytest
import torch
import yaml
from torch import nn

import mmrobust_bench as mmr
from mmrobust_bench.attacks import build_attack
from mmrobust_bench.bench.sweep import build_plan, load_sweep_config
from mmrobust_bench.bench.validate import read_yaml_mapping
from mmrobust_bench.cli import main
from mmrobust_bench.cli.common import key_values, overrides
from mmrobust_bench.contracts import ModalitySpec
from mmrobust_bench.safe_yaml import MAX_DEPTH, load_yaml, preview

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def alias_bomb() -> str:
    """Nine levels of nine aliases each: 387 bytes that ``yaml.safe_load`` builds at once (the levels share
    structure) into a value whose repr has 435,848,049 leaves (9 + 9**2 + … + 9**9)."""
    levels = ["&a0 [lol,lol,lol,lol,lol,lol,lol,lol,lol]"]
    levels += [f"&a{k} [" + ",".join([f"*a{k - 1}"] * 9) + "]" for k in range(1, 9)]
    return "[" + ", ".join(levels) + "]"


def expanded_leaves(value: object, memo: dict[int, int] | None = None) -> int:
    """Leaves of ``value`` as ``repr`` would print them, counted once per shared list."""
    memo = {} if memo is None else memo
    if not isinstance(value, list):
        return 1
    if id(value) not in memo:
        memo[id(value)] = sum(expanded_leaves(v, memo) for v in value)
    return memo[id(value)]


def test_the_bomb_is_real_for_plain_safe_load():
    """What the refusals below guard against: safe_load builds it, and any message quoting it expands it."""
    bomb = alias_bomb()
    assert len(bomb) == 387
    assert expanded_leaves(yaml.safe_load(bomb)) == sum(9**k for k in range(1, 10))  # level k holds 9**k leaves


def refused_quickly(call) -> str:
    start = time.perf_counter()
    with pytest.raises(ValueError) as info:
        call()
    assert time.perf_counter() - start < 1.0
    message = str(info.value)
    assert len(message) < 300 and "\n" not in message, message
    return message


def test_alias_bomb_in_set_is_refused_quickly_with_a_short_message():
    message = refused_quickly(lambda: key_values([f"lr={alias_bomb()}"], "--set"))
    assert message.startswith("--set 'lr=[&a0 [lol,")
    assert message.endswith(
        "YAML anchor &a0 at line 1, column 2: anchors and aliases are not accepted; write the value out"
    )


def test_alias_bomb_in_a_config_file_is_refused_quickly(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(f"epochs: 1\nlr: {alias_bomb()}\n")
    args = Namespace(config=str(path), set=[])
    message = refused_quickly(lambda: overrides(args))
    assert message == (
        f"--config file {path}: YAML anchor &a0 at line 2, column 6: anchors and aliases are not "
        f"accepted; write the value out"
    )


SWEEP_PLACES = {
    "label": "defenses:\n  - {{defense: jt, label: {b}}}\n",
    "dataset_set": "dataset_set: {{n_train: {b}}}\n",
    "set": "set: {{epochs: {b}}}\n",
    "attack_set": "grid:\n  - {{attacks: [pgd_l2], modalities: [v], eps: [0.5], attack_set: {{steps: {b}}}}}\n",
    "seeds": "seeds: {b}\n",
    "eps": "grid:\n  - {{attacks: [pgd_l2], modalities: [v], eps: {b}}}\n",
    "defenses": "defenses: {b}\n",
}


@pytest.mark.parametrize("place", sorted(SWEEP_PLACES))
def test_alias_bomb_anywhere_in_a_sweep_file_is_refused_by_the_command(tmp_path, capsys, place):
    path = tmp_path / "sweep.yaml"
    path.write_text(SWEEP_PLACES[place].format(b=alias_bomb()))
    refused_quickly(lambda: load_sweep_config(path))
    start = time.perf_counter()
    rc = main(["sweep", "--config", str(path), "--root", str(tmp_path / "root"), "--no-progress"])
    assert time.perf_counter() - start < 1.0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert rc == 2 and len(lines) == 1 and len(lines[0]) < 300, err
    assert "anchors and aliases are not accepted" in lines[0] and "Traceback" not in err
    assert not (tmp_path / "root").exists() or not list((tmp_path / "root").rglob("*.safetensors"))


def test_alias_bomb_in_run_flags_is_a_one_line_error(tmp_path, capsys):
    for flag in ("--set", "--dataset-set", "--attack-set"):
        rc = main(["run", "--defense", "jt", "--root", str(tmp_path), "--no-progress", flag, f"x={alias_bomb()}"])
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if "error:" in line]
        assert rc == 2 and len(lines) == 1 and len(lines[0]) < 300, err
        assert "anchors and aliases are not accepted" in lines[0]
    assert not list(tmp_path.rglob("*.safetensors"))


def test_duplicate_keys_are_refused_with_the_key_and_both_lines(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("epochs: 1\nlr: 0.1\nepochs: 2\n")
    with pytest.raises(ValueError) as info:
        read_yaml_mapping(path, "--config file")
    assert str(info.value) == (
        f"--config file {path}: duplicate key 'epochs' at line 3, column 1 (first at line 1, "
        f"column 1); keep one of them"
    )
    with pytest.raises(
        ValueError,
        match=r"^--set 'noise_sigma=\{a: 0.1, a: 0.2\}': duplicate key 'a' at line 1, "
        r"column 10 \(first at line 1, column 2\); keep one of them$",
    ):
        key_values(["noise_sigma={a: 0.1, a: 0.2}"], "--set")
    nested = tmp_path / "s.yaml"
    nested.write_text("defenses:\n  - defense: jt\n    label: one\n    label: two\n")
    with pytest.raises(ValueError, match=r"duplicate key 'label' at line 4, column 5 \(first at line 3, column 5\)"):
        load_sweep_config(nested)


def test_distinct_keys_and_inline_merges_still_load():
    assert load_yaml("a: 1\nb: [1, 2]\nc: {d: x}\n", "t") == {"a": 1, "b": [1, 2], "c": {"d": "x"}}
    assert load_yaml("<<: {a: 1, b: 2}\nb: 3\n", "t") == {"a": 1, "b": 3}  # an explicit key overrides a merge
    assert load_yaml("1: a\n'1': b\n", "t") == {1: "a", "1": "b"}  # an int and a string are two keys


def test_deep_nesting_is_refused_before_the_composer_recurses():
    text = "[" * 5000 + "]" * 5000
    with pytest.raises(
        ValueError,
        match=rf"^--set 'x=\[\[\[.*: YAML nested more than {MAX_DEPTH} levels deep at "
        rf"line 1, column {MAX_DEPTH + 1}; flatten the value$",
    ):
        key_values([f"x={text}"], "--set")
    assert load_yaml("[" * MAX_DEPTH + "]" * MAX_DEPTH, "t") is not None


def test_yaml_errors_stay_one_short_line():
    with pytest.raises(
        ValueError,
        match=r"^--set 'x=\[': invalid YAML at line 1, column 2: .*; quote the value or "
        r"fix it$",
    ):
        key_values(["x=["], "--set")
    with pytest.raises(
        ValueError,
        match=r"^--set 'x=9999999999999999999999999999999999\.\.\.: a number of more "
        r"than 4300 digits; write a shorter one$",
    ):
        key_values(["x=" + "9" * 5000], "--set")
    with pytest.raises(ValueError, match="could not determine a constructor for the tag"):
        key_values(["x=!!python/object/apply:os.system [echo]"], "--set")


def test_preview_is_bounded_for_values_built_in_python():
    bomb: list = ["lol"]
    for _ in range(40):
        bomb = [bomb] * 10  # 10**40 leaves when printed in full
    start = time.perf_counter()
    shown = [preview(bomb), preview(10**6000), preview("x" * 10**6), preview({i: i for i in range(10**4)})]
    assert time.perf_counter() - start < 0.1
    assert all(len(s) <= 80 for s in shown)
    assert shown[1] == "<19932-bit integer>"
    assert shown[3] == "{0: 0, 1: 1, 2: 2, 3: 3, ...}"
    assert preview([1, 2]) == "[1, 2]" and preview("lr") == "'lr'"
    # the messages of the checks quote user values through it
    message = refused_quickly(lambda: build_plan({"seeds": [bomb]}, defenses=["jt"]))
    assert message.startswith("sweep: seeds must be integers >= 0 such as 0,1,2, got [[[[...], [...], [...], [...], ")
    message = refused_quickly(lambda: build_attack("torchattacks:PGD", [ModalitySpec("x", (4,))], steps=bomb))
    assert message.startswith("torchattacks:PGD option steps takes an integer like its default 10, got [[[[")


# ----------------------------------------------------------------------------- sweep YAML rules


def plan_error(config: dict, **kwargs) -> str:
    with pytest.raises(ValueError) as info:
        build_plan({"defenses": ["jt"], **config}, **kwargs)
    message = str(info.value)
    assert "\n" not in message and len(message) < 300
    return message


SEED_CASES = [
    ([0.5], "got 0.5"),  # int(0.5) trained seed 0
    ([-1], "got -1"),
    ([True], "got True"),  # int(True) trained seed 1
    (["x"], "got 'x'"),
    ([[1]], "got [1]"),
    ([math.inf], "got inf"),
]


@pytest.mark.parametrize("seeds, got", SEED_CASES, ids=[repr(c[0]) for c in SEED_CASES])
def test_seeds_are_non_negative_integers(seeds, got):
    assert plan_error({"seeds": seeds}) == f"sweep: seeds must be integers >= 0 such as 0,1,2, {got}"


def test_seed_spellings_that_mean_integers_are_kept():
    assert build_plan({"defenses": ["jt"], "seeds": "0, 2,1"}).seeds == [0, 2, 1]
    assert build_plan({"defenses": ["jt"], "seeds": [1.0, 0, 1]}).seeds == [1, 0]
    assert build_plan({"defenses": ["jt"]}).seeds == [0]
    assert build_plan({"defenses": ["jt"], "seeds": [0]}, seeds=[3, 4]).seeds == [3, 4]


def test_sweep_seeds_flag_refuses_a_negative_seed_before_work(tmp_path, capsys):
    rc = main(["sweep", "--defenses", "jt", "--seeds", "-1", "--root", str(tmp_path), "--no-progress"])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert rc == 2 and len(lines) == 1, err
    assert lines[0].endswith("sweep: seeds must be integers >= 0 such as 0,1,2, got -1")
    assert not list(tmp_path.rglob("*.safetensors"))


@pytest.mark.parametrize("grid", [[], None, ""])
def test_an_empty_grid_is_refused_not_the_default_grid(grid):
    assert plan_error({"grid": grid}) == (
        "sweep: grid is empty; give at least one block such as {attacks: [pgd_l2], "
        "modalities: [v], eps: [0.5]}, or leave grid out for the default grid"
    )


def test_a_missing_grid_still_means_the_default_grid():
    plan = build_plan({"defenses": ["jt"]})
    assert [(b.attacks, b.eps) for b in plan.grid] == [(("fgm", "pgd_l2"), (0.5, 1.0))]


RADII_CASES = [
    ([[1]], "sweep: certify radii must be numbers >= 0 such as [0, 0.25, 0.5], got [1]"),  # was a TypeError
    ("abc", "sweep: certify radii must be numbers >= 0, got 'abc'"),  # named no key
    ([-1], "sweep: certify radii must be finite numbers >= 0, got -1"),
    ([math.nan], "sweep: certify radii must be finite numbers >= 0, got nan"),
    ([True], "sweep: certify radii must be numbers >= 0 such as [0, 0.25, 0.5], got True"),
    ([{"r": 1}], "sweep: certify radii must be numbers >= 0 such as [0, 0.25, 0.5], got {'r': 1}"),
]


@pytest.mark.parametrize("radii, message", RADII_CASES, ids=[repr(c[0]) for c in RADII_CASES])
def test_certify_radii_are_finite_non_negative_numbers(radii, message):
    assert plan_error({"certify": {"radii": radii}}) == message


def test_certify_radii_that_are_numbers_are_kept_sorted():
    plan = build_plan({"defenses": ["jt"], "certify": {"radii": [1, "0.5", 0]}})
    assert plan.certify is not None and plan.certify.radii == (0.0, 0.5, 1.0)
    assert build_plan({"defenses": ["jt"], "certify": {"radii": "0, 0.25"}}).certify.radii == (0.0, 0.25)


def test_certify_numbers_name_their_key():
    assert plan_error({"certify": {"honesty_steps": [1]}}) == "sweep: certify honesty_steps must be an integer, got [1]"
    assert plan_error({"certify": {"n0": 2.5}}) == "sweep: certify n0 must be an integer, got 2.5"
    assert plan_error({"certify": {"sigma": "abc"}}) == "sweep: certify sigma must be a finite number, got 'abc'"
    assert build_plan({"defenses": ["jt"], "certify": {"n": 200.0, "sigma": "0.5"}}).certify.smoothing.n == 200


def test_defense_entries_need_a_string_id_and_a_scalar_label():
    assert plan_error({"defenses": [{"defense": ["jt"]}]}) == (
        "sweep: defense in a defense entry must be a defense id such as jt, got ['jt']"
    )
    assert plan_error({"defenses": [{"defense": "jt", "label": ["a"]}]}) == (
        "sweep: label of defense entry 'jt' must be a name such as jt_v2, got ['a']"
    )
    assert build_plan({"defenses": [{"defense": "jt", "label": "jt_b"}]}).defenses[0].label == "jt_b"


def test_grid_block_eps_that_are_not_numbers_name_eps():
    message = plan_error({"grid": [{"attacks": ["fgm"], "modalities": ["v"], "eps": [[0.5]]}]})
    assert message == (
        "sweep: grid block {'attacks': ['fgm'], 'modalities': ['v'], 'eps': [[0.5]]}: eps must be "
        "numbers >= 0 such as [0.5, 1], got [0.5]"
    )


# ----------------------------------------------------------------------------- library attack options

SPECS = [ModalitySpec("x", (4,))]
OPTION_CASES = [
    ("torchattacks:PGDL2", {"steps": 0}, "torchattacks:PGDL2 option steps must be an integer >= 1, got 0"),
    ("torchattacks:PGDL2", {"steps": -5}, "torchattacks:PGDL2 option steps must be an integer >= 1, got -5"),
    ("torchattacks:PGDL2", {"steps": 2.5}, "torchattacks:PGDL2 option steps must be an integer >= 1, got 2.5"),
    (
        "torchattacks:PGDL2",
        {"alpha": -1.5},
        "torchattacks:PGDL2 option alpha must be > 0 (a step size or constant of 0 or below runs no attack), got -1.5",
    ),
    (
        "torchattacks:PGDL2",
        {"alpha": 0},
        "torchattacks:PGDL2 option alpha must be > 0 (a step size or constant of 0 or below runs no attack), got 0",
    ),
    ("torchattacks:PGDL2", {"alpha": math.nan}, "torchattacks:PGDL2 option alpha must be a finite number, got nan"),
    (
        "torchattacks:PGDL2",
        {"alpha": 1e6},
        "torchattacks:PGDL2 option alpha must be at most 10000 (a length in model-input space, like ε), got 1000000.0",
    ),
    ("torchattacks:Square", {"n_queries": 0}, "torchattacks:Square option n_queries must be an integer >= 1, got 0"),
    ("torchattacks:APGD", {"n_restarts": 0}, "torchattacks:APGD option n_restarts must be an integer >= 1, got 0"),
    (
        "torchattacks:JSMA",
        {"theta": 0},
        "torchattacks:JSMA option theta must be a non-zero number (either sign), got 0",
    ),
    (
        "art:ProjectedGradientDescent",
        {"max_iter": 0},
        "art:ProjectedGradientDescent option max_iter must be an integer >= 1, got 0",
    ),
    (
        "art:ProjectedGradientDescent",
        {"eps_step": -1.5},
        "art:ProjectedGradientDescent option eps_step must be > 0 (a step size or constant of 0 or below runs no "
        "attack), got -1.5",
    ),
    (
        "art:ProjectedGradientDescent",
        {"num_random_init": -1},
        "art:ProjectedGradientDescent option num_random_init must be an integer >= 0 (ART FGM/PGD: 0 starts from the "
        "clean input (its default)), got -1",
    ),
    ("art:DeepFool", {"nb_grads": 0}, "art:DeepFool option nb_grads must be an integer >= 1, got 0"),
    ("art:SquareAttack", {"p_init": 1.5}, "art:SquareAttack option p_init must be in (0, 1], got 1.5"),
    ("art:CarliniL2Method", {"confidence": -1.0}, "art:CarliniL2Method option confidence must be >= 0, got -1.0"),
]


@pytest.mark.parametrize(
    "name, options, message", OPTION_CASES, ids=[f"{c[0]}-{next(iter(c[1].items()))}" for c in OPTION_CASES]
)
def test_library_options_are_range_checked_when_the_attack_is_built(name, options, message):
    pytest.importorskip("art" if name.startswith("art:") else "torchattacks")
    with pytest.raises(ValueError) as info:
        build_attack(name, SPECS, **options)
    assert str(info.value) == message


def test_library_options_in_range_and_documented_zeros_are_kept():
    pytest.importorskip("torchattacks")
    pytest.importorskip("art")
    assert build_attack("torchattacks:PGDL2", SPECS, steps=1, alpha=0.1).options == {"steps": 1, "alpha": 0.1}
    assert build_attack("torchattacks:JSMA", SPECS, theta=-1.0).options == {"theta": -1.0}  # documented sign
    assert build_attack("art:ProjectedGradientDescent", SPECS, num_random_init=0, max_iter=1).options == {
        "num_random_init": 0,
        "max_iter": 1,
    }


def test_run_refuses_a_negative_library_step_before_training(tmp_path, capsys):
    pytest.importorskip("torchattacks")
    rc = main(
        [
            "run",
            "--defense",
            "jt",
            "--attack",
            "torchattacks:PGDL2",
            "--attack-set",
            "alpha=-0.1",
            "--root",
            str(tmp_path),
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert rc == 2 and len(lines) == 1, err
    assert lines[0].endswith(
        "torchattacks:PGDL2 option alpha must be > 0 (a step size or constant of 0 or below runs no attack), got -0.1"
    )
    assert not list(tmp_path.rglob("*.safetensors"))


# ----------------------------------------------------------------------------- ε of the Python API


class _Sum(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(6, 3)

    def forward(self, a, v):
        return self.head(torch.cat([a, v], 1))


@pytest.mark.parametrize(
    "eps, message",
    [
        (
            1e6,
            "eps 1e+06 is above 10000: no meaningful perturbation of normalised inputs is that large (and such values "
            "overflow the attack's step sizes)",
        ),
        (-1.0, "eps must be finite numbers >= 0, got -1.0"),
        (math.nan, "eps must be finite numbers >= 0, got nan"),
    ],
)
def test_mmr_attack_checks_eps_like_the_command_line(eps, message):
    wrapped = mmr.wrap(_Sum().eval(), {"a": mmr.Modality((3,)), "v": mmr.Modality((3,))}, call="positional")
    gen = torch.Generator().manual_seed(0)
    a, v, y = torch.randn(4, 3, generator=gen), torch.randn(4, 3, generator=gen), torch.tensor([0, 1, 2, 0])
    with pytest.raises(ValueError) as info:
        mmr.attack(wrapped, (a, v), y, attack="pgd_l2", modality="a", eps=eps)
    assert str(info.value) == message
    adv_a, adv_v = mmr.attack(wrapped, (a, v), y, attack="pgd_l2", modality="a", eps=0.5)
    assert torch.equal(adv_v, v) and float((adv_a - a).norm(dim=1).max()) <= 0.5 * (1 + 1e-5)


def test_any_yaml_scalar_through_set_is_a_value_or_one_bounded_line():
    """Arbitrary text after ``--set lr=`` (and through a defense's typed fields): a value, or a ValueError of one
    line whose length does not grow with the input; never another exception."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from mmrobust_bench.cli.common import key_values
    from mmrobust_bench.defenses import build_defense

    @settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(
        st.one_of(
            st.text(max_size=400),
            st.sampled_from(
                [
                    "&a [1]",
                    "*a",
                    "[&a [1], *a]",
                    "{a: 1, a: 2}",
                    "!!python/object:os.system",
                    "1e400",
                    "[[[[[[1]]]]]]",
                    "nan",
                    ".inf",
                    "- 1\n- 2",
                    "'",
                    '"',
                ]
            ),
        )
    )
    def check(value: str) -> None:
        try:
            parsed = key_values([f"lr={value}"], "--set")
            build_defense("jt", parsed)
        except ValueError as exc:  # the CLI prints it as one line
            text = str(exc)
            assert "\n" not in text.strip() or text.count("\n") <= 1
            assert len(text) < 600

    check()
