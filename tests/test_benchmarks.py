"""The benchmark scripts that back README numbers run and print the JSON their readers expect."""
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_script(name: str, *args: str) -> dict:
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / name), *args], capture_output=True, text=True,
                          check=True, timeout=600)
    return json.loads(done.stdout)


def test_minimal_norm_gap_evaluates_the_chosen_model_and_reuses_its_checkpoint(tmp_path):
    args = ["--defense", "crmt_jt", "--seed", "1", "--n-train", "64", "--n-test", "32", "--epochs", "1",
            "--eps", "0.5,1", "--fmn-steps", "5", "--deepfool-steps", "0", "--eval-samples", "16", "--root", str(tmp_path)]
    first = run_script("minimal_norm_gap.py", *args)
    assert (first["defense"], first["seed"], first["evaluated"], first["cached"]) == ("crmt_jt", 1, 16, False)
    assert set(first["accuracy"]) == {"pgd_l2", "pgd_l2_20steps", "fmn_l2"}  # DeepFool skipped
    assert all(len(v) == 2 and all(0 <= a <= 1 for a in v) for v in first["accuracy"].values())
    assert set(k for k in first if k.startswith("gap_")) == {"gap_fmn_l2_minus_pgd_l2", "gap_fmn_l2_minus_pgd_l2_20steps"}
    again = run_script("minimal_norm_gap.py", *args)
    assert again["cached"] and again["checkpoint_sha256"] == first["checkpoint_sha256"]
    assert again["accuracy"] == first["accuracy"]  # seeded attacks on the same checkpoint
