"""The one option-value system (mmrobust_bench.config): coercion of each type, unknown keys, ranges, ε."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import pytest

from mmrobust_bench import config
from mmrobust_bench.config import (
    MAX_EPS,
    apply_overrides,
    check_count,
    check_eps,
    check_fields,
    check_known,
    check_nonnegative,
    check_option_type,
    coerce_floats,
    unknown_option_message,
)


@dataclass
class Settings:
    epochs: int = 10
    lr: float = 0.1
    name: str = "x"
    flag: bool = False
    margin: float | None = None
    n_workers: int = -1
    pairs: dict[str, str] | None = None


def test_module_imports_no_upper_layer() -> None:
    import grimp

    graph = grimp.build_graph("mmrobust_bench")
    assert graph.find_modules_directly_imported_by("mmrobust_bench.config") == {
        "mmrobust_bench.hints",
        "mmrobust_bench.safe_yaml",
    }


@pytest.mark.parametrize(
    "raw, field, expected",
    [
        ("3", "epochs", 3),
        (4, "epochs", 4),
        ("5e-4", "lr", 5e-4),
        ("2", "lr", 2.0),
        (1, "lr", 1.0),
        ("0.25", "lr", 0.25),
        ("abc", "name", "abc"),
        ("true", "flag", True),
        ("Yes", "flag", True),
        ("1", "flag", True),
        ("no", "flag", False),
        ("0", "flag", False),
        ("0.5", "margin", 0.5),
        ("null", "margin", None),
        ("{a: b}", "pairs", {"a": "b"}),
    ],
)
def test_apply_overrides_coerces_each_type(raw: object, field: str, expected: object) -> None:
    out, rest = apply_overrides(Settings(), {field: raw}, "owner")
    assert rest == {}
    value = getattr(out, field)
    assert value == expected and type(value) is type(expected)


def test_apply_overrides_returns_unknown_keys_and_leaves_the_original() -> None:
    original = Settings()
    out, rest = apply_overrides(original, {"epochs": "2", "epoch": 3}, "owner")
    assert (out.epochs, rest, original.epochs) == (2, {"epoch": 3}, 10)


@pytest.mark.parametrize(
    "field, raw, message",
    [
        ("epochs", "ten", "owner: epochs expects int, got 'ten'"),
        ("epochs", "true", "owner: epochs expects int, got 'true'"),
        ("epochs", 2.5, "owner: epochs expects int, got 2.5"),
        ("lr", "fast", "owner: lr expects float, got 'fast'"),
        ("flag", "maybe", "owner: flag expects true/false, got 'maybe'"),
        ("name", 3, "owner: name expects str, got 3"),
    ],
)
def test_apply_overrides_refuses_wrong_types(field: str, raw: object, message: str) -> None:
    with pytest.raises(ValueError) as err:
        apply_overrides(Settings(), {field: raw}, "owner")
    assert str(err.value) == message


def test_coerce_floats_reads_number_text_of_float_fields_only() -> None:
    assert coerce_floats(Settings, {"lr": "1e3", "margin": "5e-4", "epochs": "3", "name": "1.5", "other": "2"}) == {
        "lr": 1000.0,
        "margin": 5e-4,
        "epochs": "3",
        "name": "1.5",
        "other": "2",
    }
    assert coerce_floats(Settings, {"lr": "fast"}) == {"lr": "fast"}


def test_check_known_suggests_the_close_name() -> None:
    with pytest.raises(ValueError) as err:
        check_known("synthav", {"n_trian": 3, "zzz": 1}, ["n_train", "n_test"])
    assert str(err.value) == (
        "synthav: unknown option(s) n_trian (did you mean 'n_train'?), zzz; valid: n_test, n_train"
    )
    check_known("synthav", {"n_train": 3}, ["n_train", "n_test"])


def test_unknown_option_message_suggests_a_name_of_the_value_type() -> None:
    valid, defaults = ["step_ratio", "steps"], {"step_ratio": 0.25, "steps": 10}
    assert unknown_option_message("pgd_l2", ["step"], valid, {"step": 0.1}, defaults) == (
        "pgd_l2: unknown option(s) step (did you mean 'step_ratio'?); valid: step_ratio, steps"
    )
    assert unknown_option_message("pgd_l2", ["step"], valid, {"step": 3}, defaults) == (
        "pgd_l2: unknown option(s) step (did you mean 'steps'?); valid: step_ratio, steps"
    )


@pytest.mark.parametrize(
    "settings, message",
    [
        (Settings(epochs=0), "owner: epochs must be >= 1, got 0"),
        (Settings(epochs=True), "owner: epochs must be an integer, got True"),
        (Settings(epochs=2.5), "owner: epochs must be an integer, got 2.5"),  # type: ignore[arg-type]
        (Settings(lr=math.nan), "owner: lr must be a finite number, got nan"),
        (Settings(lr="x"), "owner: lr must be a number, got 'x'"),  # type: ignore[arg-type]
        (Settings(name=1), "owner: name must be a string, got 1"),  # type: ignore[arg-type]
        (Settings(flag=1), "owner: flag must be a true/false, got 1"),  # type: ignore[arg-type]
        (Settings(n_workers=-2), "owner: n_workers must be >= 0 (or -1: automatic), got -2"),
    ],
)
def test_check_fields_ranges_and_types(settings: Settings, message: str) -> None:
    with pytest.raises(ValueError) as err:
        check_fields(settings, "owner")
    assert str(err.value) == message


def test_check_fields_accepts_defaults_ints_for_floats_and_the_automatic_value() -> None:
    check_fields(Settings(lr=1, n_workers=-1, margin=None), "owner")  # type: ignore[arg-type]
    check_fields(Settings(n_workers=0), "owner")


@pytest.mark.parametrize(
    "value, default, strict, message",
    [
        ("ten", 10, False, "pgd option steps takes an integer like its default 10, got 'ten'"),
        ("ten", 0.5, False, "pgd option steps takes a number like its default 0.5, got 'ten'"),
        (2.5, 10, True, "pgd option steps takes an integer like its default 10, got 2.5"),
        (1, True, False, "pgd option steps takes true or false like its default True, got 1"),
        (1, "a", False, "pgd option steps takes a string like its default 'a', got 1"),
    ],
)
def test_check_option_type_refuses(value: object, default: object, strict: bool, message: str) -> None:
    with pytest.raises(ValueError) as err:
        check_option_type("pgd", "steps", value, default, strict=strict)
    assert str(err.value) == message


def test_check_option_type_accepts() -> None:
    for value, default, strict in [
        (2.5, 10, False),
        (3, 10, True),
        (None, 10, True),
        ("x", None, True),
        (0.5, 1.0, True),
        (False, True, True),
        ([1], [0], True),
    ]:
        check_option_type("pgd", "steps", value, default, strict=strict)


def test_check_count() -> None:
    assert check_count(4.0, "--batch-size") == 4 and check_count(-1, "n", sentinel=-1) == -1
    for value, message in [
        (0, "--batch-size must be >= 1, got 0"),
        (2.5, "--batch-size must be an integer, got 2.5"),
        (True, "--batch-size must be an integer, got True"),
    ]:
        with pytest.raises(ValueError) as err:
            check_count(value, "--batch-size")
        assert str(err.value) == message
    with pytest.raises(ValueError) as err:
        check_count(-2, "n", sentinel=-1)
    assert str(err.value) == "n must be >= 1 (or -1), got -2"


def test_check_nonnegative_and_eps() -> None:
    assert check_nonnegative("0.5", "sigma") == 0.5
    with pytest.raises(ValueError) as err:
        check_nonnegative(-1.0, "sigma")
    assert str(err.value) == "sigma must be a finite number >= 0, got -1.0"
    with pytest.raises(ValueError) as err:
        check_nonnegative("x", "sigma")
    assert str(err.value) == "sigma must be a number >= 0, got 'x'"
    assert check_eps([1, 0.5, 1.0, "0.25"]) == [0.25, 0.5, 1.0]
    with pytest.raises(ValueError) as err:
        check_eps([math.inf])
    assert str(err.value) == "eps must be finite numbers >= 0, got inf"
    with pytest.raises(ValueError) as err:
        check_eps([2 * MAX_EPS], "radii")
    assert str(err.value) == (
        "radii 20000 is above 10000: no meaningful perturbation of normalised inputs is that "
        "large (and such values overflow the attack's step sizes)"
    )
    with pytest.raises(ValueError) as err:
        check_eps([])
    assert str(err.value) == "eps is empty: give at least one value, e.g. 0.5,1"


def test_callers_share_the_one_system() -> None:
    from mmrobust_bench import defenses
    from mmrobust_bench.attacks import view
    from mmrobust_bench.bench import validate
    from mmrobust_bench.data import base

    assert defenses.apply_overrides is config.apply_overrides
    assert base.check_options is config.check_known
    assert view.check_option_type is config.check_option_type
    assert validate.check_fields is config.check_fields and validate.MAX_EPS == config.MAX_EPS
    assert not hasattr(defenses, "_coerce")
    assert [f.name for f in dataclasses.fields(Settings)][:2] == ["epochs", "lr"]
