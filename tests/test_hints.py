"""One wording for every "unknown name" error (mmrobust_bench.hints)."""

from __future__ import annotations

import pytest

from mmrobust_bench.hints import closest, did_you_mean, unknown_message


def test_closest_and_hint_wording():
    assert closest("epoch", ["epochs", "lr"]) == "epochs"
    assert closest("zzz", ["epochs", "lr"]) is None
    assert did_you_mean("epoch", ["epochs", "lr"]) == " (did you mean 'epochs'?)"
    assert did_you_mean("zzz", ["epochs", "lr"]) == ""
    # the prefix is shown, not compared
    assert did_you_mean("PGDL", ["PGDL2", "FGSM"], prefix="torchattacks:") == " (did you mean 'torchattacks:PGDL2'?)"


def test_unknown_message_lists_every_valid_name_and_narrows_suggestions_by_pool():
    msg = unknown_message("defense 'jt'", ["epoch", "zzz"], ["lr", "epochs", "lr"])
    assert msg == "defense 'jt': unknown option(s) epoch (did you mean 'epochs'?), zzz; valid: epochs, lr"
    # a pool that excludes the closest name suggests the next one it allows, still listing all valid names
    msg = unknown_message("pgd_l2", ["step"], ["steps", "step_ratio"], pool=lambda _: ["step_ratio"], cutoff=0.5)
    assert msg == "pgd_l2: unknown option(s) step (did you mean 'step_ratio'?); valid: step_ratio, steps"
    assert unknown_message("x", ["a"], []).endswith("valid: none")


@pytest.mark.parametrize(
    "make, expected",
    [
        (
            lambda: __import__("mmrobust_bench.contracts", fromlist=["ThreatModel"]).ThreatModel(("a",), 1.0, "Linf"),
            "unknown norm 'Linf' (did you mean 'linf'?); valid: l2, linf, l1, l0",
        ),
    ],
)
def test_callers_share_the_wording(make, expected):
    with pytest.raises(ValueError) as err:
        make()
    assert str(err.value) == expected
