"""What ``verify`` hands back and prints: the outcome, the Markdown table of re-measured values, the largest
difference and, for values that moved, the provenance recorded with them beside this machine's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from .verify_measure import SHOWN


@dataclass
class VerifyOutcome:
    rows: pd.DataFrame  # one per re-measured value: recorded vs reproduced, allowed difference, verdict
    table: str
    ok: bool  # every re-measured value passes
    scratch: Path | None  # the scratch root (None once removed)
    mode: str = "retrain"  # "zoo" or "retrain"
    report: list[str] = field(default_factory=list)  # the summary: tolerance or spread, largest difference, provenance
    problems: list[str] = field(default_factory=list)  # why the check fails although no value does (nothing compared)
    models: int = 0  # the models chosen and re-measured, whether or not a value of theirs was compared


def largest_difference(frame: pd.DataFrame) -> list[str]:
    size = frame["difference"].abs()
    top = float(size.max()) if len(size) else 0.0
    if top == 0:
        other_n = int((frame["n"] != frame["recorded_n"]).sum()) if len(frame) else 0
        if other_n:
            return [f"largest difference: 0, but {other_n} value(s) were measured on another number of samples"]
        return ["largest difference: 0 (every value reproduced exactly)"]
    reached = frame[size == top]
    names = [_name(r) for r in reached.itertuples(index=False)]
    more = f" and {len(names) - 5} more" if len(names) > 5 else ""
    return [f"largest difference: {top:.6g}, reached by {'; '.join(names[:5])}{more}"]


def _name(r: Any) -> str:
    at = "" if r.at in ("—", "") else f" at {r.at}"
    return f"{r.label} seed {r.seed} {r.what} on {r.modality}{at}"


def make_outcome(
    frame: pd.DataFrame,
    mode: str,
    report: list[str],
    scratch: Path | None,
    *,
    problems: list[str] | None = None,
    models: int = 0,
) -> VerifyOutcome:
    problems = list(problems or [])
    ok = bool(len(frame)) and bool(frame["passes"].all()) and not problems
    if len(frame):
        report = report + _provenance_lines(frame)
    return VerifyOutcome(frame, format_verify_table(frame, mode), ok, scratch, mode, report, problems, models)


def certificate_problems(compared: dict[tuple[str, int], tuple[int, int]]) -> list[str]:
    """With ``--certificates``: a failure for every model whose stored certificate and η values were not compared
    at all ((label, seed) -> (compared, stored)), so asking for them can never pass on the results alone."""
    total = sum(c for c, _ in compared.values())
    stored = sum(n for _, n in compared.values())
    if not compared or total == 0:
        return [f"0 of {stored} certificate values compared (--certificates found nothing to check)"]
    return [
        f"0 of {n} certificate values of {label} seed {seed} compared"
        for (label, seed), (c, n) in sorted(compared.items())
        if c == 0
    ]


def _describe(values: dict[str, Any]) -> str:
    def text(key: str) -> str:
        value = values.get(key, "")
        return "not recorded" if str(value) in ("", "nan", "0", "None") else str(value)

    size = text("batch_size")  # said only where recorded: certificate rows have none
    return (
        f"{text('cpu_capability')}, torch {text('torch_version')} build {text('torch_build')}, "
        f"{text('threads')} thread(s), {text('device')} ({text('device_name')})"
        + ("" if size == "not recorded" else f", batch size {size}")
    )


def _provenance_lines(frame: pd.DataFrame) -> list[str]:
    """Recorded vs re-measured provenance (each value's ``here``: what its fresh row recorded), once per distinct
    pair among values that moved."""
    moved = frame[frame["reproduced"] != frame["recorded"]]
    seen: dict[tuple[str, str], int] = {}
    for r in moved.to_dict("records"):
        pair = (_describe({k: r.get(f"recorded_{k}", "") for k in SHOWN}), _describe(r.get("here") or {}))
        seen[pair] = seen.get(pair, 0) + 1
    return [
        f"{count} value(s) that moved were recorded on: {recorded}; re-measured here on: {here}"
        for (recorded, here), count in seen.items()
    ]


def format_verify_table(frame: pd.DataFrame, mode: str = "zoo") -> str:
    """Markdown table: one line per re-measured value, recorded vs reproduced, the allowed difference, verdict.
    Certificate and η values (hundreds per model) are listed only when they are not exactly equal."""
    reference = "recorded" if mode == "zoo" else "seed mean"
    lines = [
        f"| kind | label | seed | measure | modality | ε / r / pair | {reference} | reproduced | difference | "
        f"allowed | checkpoint | verdict |",
        "|---|---|---:|---|---|---|---:|---:|---:|---:|---|---|",
    ]
    if frame.empty:
        return "\n".join(lines)
    hidden = (frame["kind"] != "result") & (frame["reproduced"] == frame["recorded"])
    for r in frame[~hidden].to_dict("records"):
        sha = r["recorded_sha256"][:12] + (
            " =" if r["reproduced_sha256"] == r["recorded_sha256"] else f" → {r['reproduced_sha256'][:12]}"
        )
        lines.append(
            f"| {r['kind']} | {r['label']} | {r['seed']} | {r['what']} | {r['modality']} | {r['at']} | "
            f"{r['reference']:.6g} | {r['reproduced']:.6g} | {r['difference']:+.6g} | {r['allowed']:.6g} | "
            f"{sha} | {r['status']} |"
        )
    if hidden.any():
        lines.append(f"({int(hidden.sum())} certificate and η values reproduced exactly are not listed)")
    return "\n".join(lines)


__all__ = ["VerifyOutcome", "make_outcome", "certificate_problems", "largest_difference", "format_verify_table"]
