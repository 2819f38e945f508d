"""The benchmark scripts that back README numbers run and print the JSON their readers expect."""

import json
import subprocess
import sys
from pathlib import Path

from mmrobust_bench.bench.environment import row_provenance

REPO = Path(__file__).resolve().parents[1]


def run_script(name: str, *args: str) -> dict:
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / name), *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    return json.loads(done.stdout)


def test_minimal_norm_gap_evaluates_the_chosen_model_and_reuses_its_checkpoint(tmp_path):
    args = [
        "--defense",
        "crmt_jt",
        "--seed",
        "1",
        "--n-train",
        "64",
        "--n-test",
        "32",
        "--epochs",
        "1",
        "--eps",
        "0.5,1",
        "--fmn-steps",
        "5",
        "--deepfool-steps",
        "0",
        "--eval-samples",
        "16",
        "--root",
        str(tmp_path),
    ]
    first = run_script("minimal_norm_gap.py", *args)
    assert (first["defense"], first["seed"], first["evaluated"], first["cached"]) == ("crmt_jt", 1, 16, False)
    assert set(first["accuracy"]) == {"pgd_l2", "pgd_l2_20steps", "fmn_l2"}  # DeepFool skipped
    assert all(len(v) == 2 and all(0 <= a <= 1 for a in v) for v in first["accuracy"].values())
    assert set(k for k in first if k.startswith("gap_")) == {
        "gap_fmn_l2_minus_pgd_l2",
        "gap_fmn_l2_minus_pgd_l2_20steps",
    }
    again = run_script("minimal_norm_gap.py", *args)
    assert again["cached"] and again["checkpoint_sha256"] == first["checkpoint_sha256"]
    assert again["accuracy"] == first["accuracy"]  # seeded attacks on the same checkpoint


def test_fista_forms_times_both_forms_and_reports_their_difference():
    out = run_script(
        "fista_forms.py", "--dim", "8", "--atoms", "32", "--batch", "6", "--iterations", "20", "--repeats", "1"
    )
    assert set(out["cpu_seconds_median"]) == {"residual", "gram"}
    assert all(v >= 0 for t in out["cpu_seconds_median"].values() for v in t.values())
    assert out["speedup_residual_over_gram"] > 0 and out["threads"] == 1
    assert 0 <= out["codes_relative_difference"] < 1e-3 and 0 <= out["input_gradient_relative_difference"] < 1e-2


def test_benchmark_json_records_the_machine_block_of_environment():
    tiny = ("--dim", "4", "--atoms", "8", "--batch", "2", "--iterations", "2", "--repeats", "1")
    machine, expected = run_script("fista_forms.py", *tiny)["machine"], row_provenance()
    assert (machine["cpu_capability"], machine["torch_build"]) == (expected["cpu_capability"], expected["torch_build"])
    assert machine["cpu_count"] >= 1


def test_busy_cores_measures_every_setting_on_idle_and_busy_cores():
    out = run_script("busy_cores.py", "--n-train", "64", "--epochs", "1", "--busy", "1")
    settings = [(r["requested_threads"], r["openmp_env"]) for r in out["rows"]]
    expected = [
        ("default", "unset"),
        ("default", "OMP_WAIT_POLICY=PASSIVE"),
        ("default", "GOMP_SPINCOUNT=10000"),
        ("default", "GOMP_SPINCOUNT=100000"),
        (1, "unset"),
        ("auto", "unset"),
    ]
    assert settings == expected * 2 and [r["cores"] for r in out["rows"]] == ["idle"] * 6 + ["busy"] * 6
    assert all(r["train_seconds"] > 0 for r in out["rows"])
    assert all(r["threads"] == 1 for r in out["rows"] if r["requested_threads"] == 1)
    cpus = out["machine"]["cpu_count"]
    assert all(1 <= r["threads"] <= cpus for r in out["rows"] if r["requested_threads"] == "auto")
    assert out["cpu_model"] and len(out["load_average_after"]) == 3
    picked = run_script("busy_cores.py", "--n-train", "64", "--epochs", "1", "--busy", "1", "--settings", "auto")
    assert [(r["cores"], r["requested_threads"]) for r in picked["rows"]] == [("idle", "auto"), ("busy", "auto")]


def test_msefm_batch_dependence_compares_batch_sizes_under_each_stopping_rule(tmp_path):
    args = [
        "--dataset-set",
        "n_train=96",
        "--dataset-set",
        "n_test=12",
        "--set",
        "epochs=1",
        "--set",
        "memory_size=32",
        "--n",
        "12",
        "--batch",
        "6",
        "--root",
        str(tmp_path),
    ]
    out = run_script("msefm_batch_dependence.py", *args)
    assert (out["dataset"], out["samples"], out["large_batch"], out["cached"]) == ("synthav", 12, 6, False)
    assert (out["stopping"], out["tol"]) == ("batch", 8e-4)  # the model's own settings, restored
    rules = out["rules"]
    assert set(rules) == {"batch", "sample", "none_tol_0"}
    assert all(r["codes"] == 2 * 12 for r in rules.values())  # one code per sample and modality
    batch, sample, floor = rules["batch"], rules["sample"], rules["none_tol_0"]
    assert floor["codes_stopped_early_batch_1"] == floor["codes_stopped_early_large_batch"] == 0
    assert floor["large_batch_vs_no_stopping_max_abs_logit_difference"] == 0
    # at batch 1 the two rules are the same test on the same vector, and here some codes stop early
    assert batch["codes_stopped_early_batch_1"] == sample["codes_stopped_early_batch_1"] > 0
    assert batch["fewest_iterations_batch_1"] == sample["fewest_iterations_batch_1"] < out["max_iter"]
    # per-sample codes stop where they stop alone, so batch 1 and batch 6 differ by rounding only
    assert sample["codes_stopped_early_large_batch"] == sample["codes_stopped_early_batch_1"]
    assert sample["max_abs_logit_difference"] <= floor["max_abs_logit_difference"] + 1e-4
    assert batch["max_abs_logit_difference"] > sample["max_abs_logit_difference"]  # the batch rule's dependence
    again = run_script("msefm_batch_dependence.py", *args)
    assert again["cached"] and again["rules"] == rules  # the reused checkpoint gives the same numbers


def test_sparse_coding_backward_compares_the_masked_threshold_with_the_formula():
    out = run_script(
        "sparse_coding_backward.py",
        "--dim",
        "8",
        "--atoms",
        "32",
        "--batch",
        "6",
        "--iterations",
        "20",
        "--repeats",
        "1",
    )
    assert set(out["cpu_seconds"]) == {"masked", "op_by_op"} and out["threads"] == 1
    assert out["bit_identical"] is True
    assert out["graph_bytes_ratio"] > 10  # three float tensors a code against one byte
    assert all(v >= 0 for r in out["cpu_seconds"].values() for t in ("first", "again_median") for v in r[t].values())


def test_api_defaults_times_each_certificate_call_of_a_zoo_model():
    """Needs FSDD for the avdigits zoo's data ($MMROBUST_FSDD_ROOT); CI has none and skips it."""
    import os

    import pytest

    root = os.environ.get("MMROBUST_FSDD_ROOT")
    if not root:
        pytest.skip("set MMROBUST_FSDD_ROOT to FSDD's recordings/ folder")
    out = run_script("api_defaults.py", "--data-root", root, "--samples", "3", "--train-samples", "8")
    assert out["samples"] == 3 and out["model"]["entry"] == "jt"
    assert out["machine"]["cpu_capability"] == row_provenance()["cpu_capability"]
    calls = out["calls"]
    assert set(calls) == {
        "smooth_certify[v]",
        "smooth_certify[a]",
        "smooth_certify[all]",
        "certificates",
        "certificates[leaderboard check]",
    }
    assert all(c["seconds"] > 0 and c["whole_test_split_minutes"] > 0 for c in calls.values())
    assert "every runner-up" in calls["certificates"]["honesty_attack"]
    assert "top 3 runner-up" in calls["certificates[leaderboard check]"]["honesty_attack"]
    assert calls["smooth_certify[v]"]["largest_radius"] == 0.616  # 0.25·Φ⁻¹(0.001^(1/1000))


def test_autoattack_cost_on_a_subset_of_threat_sets_reports_no_any(tmp_path):
    args = ["--n-train", "64", "--n-test", "16", "--epochs", "1", "--samples", "4", "--eps", "1.0"]
    out = run_script("autoattack_cost.py", *args, "--seed", "1", "--sets", "a", "--root", str(tmp_path))
    (measured,) = out["datasets"]
    assert (measured["seed"], measured["samples"], measured["test_samples"]) == (1, 4, 16)
    assert set(measured["attacks"]) == {
        "pgd_l2",
        "autoattack:fast",
        "autoattack:fast-all-targets",
        "autoattack:standard",
    }
    for rows in measured["attacks"].values():
        assert set(rows) == {"a"}  # `any` is the worst case over every set: not reported from one
        assert 0 <= rows["a"]["accuracy"] <= 1
        # extrapolated to the 16 test samples from 4 (both rounded: 0.01 s and 0.1 s)
        assert abs(rows["a"]["seconds_per_model"] - 4 * rows["a"]["seconds"]) <= 0.1
    assert measured["gap_reference"] == "standard" and set(measured["gap"]) == {"fast", "fast-all-targets"}
    assert "leaderboard_hours" not in measured
    standard = measured["attacks"]["autoattack:standard"]["a"]
    for version, gap in measured["gap"].items():
        assert set(gap) == {"a"}
        assert gap["a"]["accuracy"] == round(
            standard["accuracy"] - measured["attacks"][f"autoattack:{version}"]["a"]["accuracy"], 4
        )
    assert set(standard["breaks"]) == {"apgd-ce", "apgd-t", "fab-t", "square"}
    script = str(REPO / "benchmarks" / "autoattack_cost.py")
    done = subprocess.run(
        [sys.executable, script, *args, "--sets", "x", "--root", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert done.returncode != 0 and "--sets: x not among synthav's threat sets v, a, all" in done.stderr
    # without standard, each gap is to the last version named
    two = run_script(
        "autoattack_cost.py",
        *args,
        "--seed",
        "1",
        "--sets",
        "a",
        "--root",
        str(tmp_path),
        "--versions",
        "fast,fast-all-targets",
    )["datasets"][0]
    assert two["checkpoint_sha256"] == measured["checkpoint_sha256"]  # the checkpoint is reused
    assert set(two["attacks"]) == {"pgd_l2", "autoattack:fast", "autoattack:fast-all-targets"}
    assert two["gap_reference"] == "fast-all-targets" and set(two["gap"]) == {"fast"}
    once, again = measured["attacks"]["autoattack:fast"]["a"], two["attacks"]["autoattack:fast"]["a"]
    assert (again["accuracy"], again["breaks"]) == (once["accuracy"], once["breaks"])  # seeded: the same numbers
    bad = subprocess.run(
        [sys.executable, script, *args, "--versions", "fastest", "--root", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert bad.returncode != 0 and "unknown autoattack version 'fastest'" in bad.stderr
