"""What ``certify.radii.certify`` returns: per-sample radii of each bound (:class:`CertifiedRadius`) and the whole
certificate of one model (:class:`Certificate`) with its tidy frames and plain-text report (docs/methods.md §11)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd
from torch import Tensor

from ..contracts import ALL_MODALITIES
from .eta import eta_ratio_modalities
from .honesty import HONESTY_SLACK, HonestyCheck

EMPIRICAL = "empirical (gradient-based Lipschitz estimates)"
MIN_J, RUNNER_UP = "min_j", "runner_up"
DEFAULT_RADII = (0.0, 0.25, 0.5, 1.0)
# The ``kind`` column of certified.csv: what a row's radius is worth.
KIND_EMPIRICAL = "empirical"
KIND_NOT_A_BOUND = "not a bound (runner-up only)"
KIND_HEURISTIC = "heuristic (modalities mix before the head)"
KIND_SOUND = "sound (probabilistic, 1-alpha)"
HEURISTIC_NOTE = (
    "heuristic: the model mixes modalities before the head (MMT joint layers), so a 'uni-modal' score "
    "depends on every input and the uni-modal Jacobian misses the cross-modal terms; these radii are "
    "not certificates"
)


@dataclass
class CertifiedRadius:
    """One certificate: per-sample radii (N,) of one equation and variant, against the given modalities."""

    name: str  # eq5, eq7[v], eq10, eq10[a]
    equation: str
    modalities: tuple[str, ...]
    variant: str
    radius: Tensor
    honesty: HonestyCheck | None = None
    heuristic: bool = False

    @property
    def kind(self) -> str:
        """What the radius is worth: runner-up radii are not bounds; on mixing models all are heuristic."""
        if self.variant == RUNNER_UP:
            return KIND_NOT_A_BOUND
        return KIND_HEURISTIC if self.heuristic else KIND_EMPIRICAL

    @property
    def variant_label(self) -> str:
        return f"{self.variant} (not a bound)" if self.variant == RUNNER_UP else self.variant

    @property
    def modality_label(self) -> str:
        return self.modalities[0] if len(self.modalities) == 1 else ALL_MODALITIES

    def median_certified(self) -> float:
        """Median radius over the certified samples (r > 0); NaN when none is certified."""
        pos = self.radius[self.radius > 0]
        return float(pos.median()) if pos.numel() else math.nan

    def certified_accuracy(self, eps: float) -> float:
        """Fraction of *all* test samples that are correct with r(x) ≥ ε (r > 0 implies correct)."""
        ok = (self.radius > 0) & (self.radius >= eps)
        return float(ok.float().mean()) if self.radius.numel() else 0.0


@dataclass
class Certificate:
    """Everything `certify` computes for one model; tensors on the CPU, radii over the test split."""

    modalities: tuple[str, ...]
    head: str
    labels: Tensor
    predictions: Tensor
    runner_up: Tensor
    tau: dict[str, Tensor]  # per-class τ_k^(m) used by Eq. 10
    tau_estimated: dict[str, Tensor]  # max_x sqrt(G_kk) over the training samples seen
    tau_source: str
    pair_eta: dict[str, Tensor]  # global L_{y,j}^(m) (K, K)
    eq10_eta: dict[str, Tensor]  # |a_y|τ_y + |a_j|τ_j (K, K); empty for the concat head
    local_eta: dict[str, Tensor]  # η^(m) at (y, runner-up) per test sample (N,)
    local_pair_mean: dict[str, Tensor]  # mean over test samples of class y of local η_{y,j} (K, K)
    radii: list[CertifiedRadius]
    n_train: int
    label: str = EMPIRICAL
    notes: list[str] = field(default_factory=list)
    heuristic: bool = False  # the uni-modal bounds do not hold (MMT-family models): every row says so

    @property
    def n(self) -> int:
        return int(self.labels.numel())

    @property
    def clean_accuracy(self) -> float:
        return float((self.predictions == self.labels).float().mean()) if self.n else 0.0

    def primary(self) -> str:
        """The head's own certificate: Eq. 10 for the CRMT head, Eq. 5 for the concat head."""
        return "eq10" if self.head == "crmt" else "eq5"

    def get(self, name: str, variant: str = MIN_J) -> CertifiedRadius:
        for r in self.radii:
            if r.name == name and r.variant == variant:
                return r
        raise KeyError(f"no certificate {name!r} ({variant}); have {sorted({r.name for r in self.radii})}")

    def vulnerability(self) -> pd.DataFrame:
        """Per modality: mean over test samples of η at (y, runner-up), local and global, and ratios
        against the first modality (η^(a)/η^(v) on synthav)."""
        idx = (self.labels, self.runner_up)
        rows = []
        for m in self.modalities:
            rows.append(
                {
                    "modality": m,
                    "eta_local": float(self.local_eta[m].mean()) if self.n else math.nan,
                    "eta_global": float(self.pair_eta[m][idx].mean()) if self.n else math.nan,
                    "eta_eq10": float(self.eq10_eta[m][idx].mean()) if self.eq10_eta and self.n else math.nan,
                }
            )
        frame = pd.DataFrame(rows)
        for col in ("eta_local", "eta_global", "eta_eq10"):
            frame[f"{col}_ratio"] = frame[col] / frame[col].iloc[0]
        return frame

    def summary_frame(self, eps_grid: Sequence[float] = DEFAULT_RADII) -> pd.DataFrame:
        """Tidy rows: one per (certificate, variant, radius) with certified accuracy and the honesty check."""
        rows = []
        for r in self.radii:
            h = r.honesty
            for eps in eps_grid:
                rows.append(
                    {
                        "certificate": r.name,
                        "equation": r.equation,
                        "variant": r.variant,
                        "modality": r.modality_label,
                        "radius": float(eps),
                        "n": self.n,
                        "certified_accuracy": r.certified_accuracy(float(eps)),
                        "median_certified_radius": r.median_certified(),
                        "honesty_attack": h.attack if h else "",
                        "honesty_certified": h.certified if h else -1,
                        "honesty_violations": h.violations if h else -1,
                        "honesty_fraction": h.fraction if h else math.nan,
                        "honesty_counts": "lower bound (>= violations found)" if h else "",
                        "tau_source": self.tau_source,
                        "certificate_label": self.label + (" — " + HEURISTIC_NOTE if self.heuristic else ""),
                        "method": "empirical",
                        "kind": r.kind,
                    }
                )
        return pd.DataFrame(rows)

    def pairs_frame(self) -> pd.DataFrame:
        """Tidy per-pair η: one row per (modality, y, j ≠ y), for the Figure-3 heat maps."""
        rows = []
        k = self.pair_eta[self.modalities[0]].shape[0]
        for m in self.modalities:
            for y in range(k):
                for j in range(k):
                    if j == y:
                        continue
                    rows.append(
                        {
                            "modality": m,
                            "class_y": y,
                            "class_j": j,
                            "eta_pair": float(self.pair_eta[m][y, j]),
                            "eta_eq10": float(self.eq10_eta[m][y, j]) if self.eq10_eta else math.nan,
                            "eta_local_mean": float(self.local_pair_mean[m][y, j]),
                            "tau_y": float(self.tau[m][y]),
                            "tau_j": float(self.tau[m][j]),
                            "certificate_label": self.label,
                        }
                    )
        return pd.DataFrame(rows)

    def samples_frame(self) -> pd.DataFrame:
        """Per test sample: label, prediction, runner-up, local η per modality and every radius."""
        frame = pd.DataFrame(
            {
                "y": self.labels.numpy(),
                "prediction": self.predictions.numpy(),
                "runner_up": self.runner_up.numpy(),
                "certificate_label": self.label,
            }
        )
        for m in self.modalities:
            frame[f"eta_local[{m}]"] = self.local_eta[m].numpy()
        for r in self.radii:
            frame[f"{r.name}:{r.variant}"] = r.radius.numpy()
        return frame

    def format(self, eps_grid: Sequence[float] = DEFAULT_RADII) -> str:
        """A plain-text report; every certificate line carries the empirical label and its honesty check."""
        lines = [
            f"certified radii — {self.label}",
            f"head {self.head}; τ from {self.tau_source}; global constants over {self.n_train} training samples; "
            f"{self.n} test samples, clean accuracy {self.clean_accuracy:.3f}",
        ]
        lines += [f"note: {n}" for n in self.notes]
        if self.heuristic:
            lines.append(f"note: {HEURISTIC_NOTE}")
        lines.append(
            "note: runner-up radii (variant 'runner_up') only compare y with the runner-up class: they are not bounds."
        )
        header = (
            "| certificate | variant | kind | attacked | median r (certified) | "
            + " | ".join(f"cert. acc @ {e:g}" for e in eps_grid)
            + " | honesty: violations found / certified |"
        )
        lines += ["", header, "|" + "---|" * (6 + len(eps_grid))]
        for r in self.radii:
            accs = " | ".join(f"{r.certified_accuracy(float(e)):.3f}" for e in eps_grid)
            h = r.honesty.short() if r.honesty else "not run"
            lines.append(
                f"| {r.equation} ({r.name}) | {r.variant_label} | {r.kind} | {r.modality_label} | "
                f"{r.median_certified():.4g} | {accs} | {h} |"
            )
        checks = [r.honesty for r in self.radii if r.honesty is not None]
        if checks:
            broken = sum(c.violations for c in checks)
            lines += [
                "",
                f"honesty check [{self.label}]: {checks[0].attack} at a per-sample budget "
                f"r(x)·(1−{HONESTY_SLACK:g}) on every certified sample; '≥ N' counts adversarial examples "
                f"found inside the claimed radius (≥ {broken} in all). These are lower bounds: a stronger "
                "attack may find more. Any non-zero count means that certificate overclaims.",
            ]
        vul = self.vulnerability()
        lines.append("")
        lines.append(f"vulnerability indicator η at (y, runner-up), mean over test samples [{self.label}]:")
        for row in vul.itertuples():
            extra = f", Eq. 10 {row.eta_eq10:.4g}" if not math.isnan(row.eta_eq10) else ""
            lines.append(f"  η^({row.modality}): local {row.eta_local:.4g}, global {row.eta_global:.4g}{extra}")
        if len(self.modalities) == 2:  # the orientation every report uses (certify.eta: η^(a)/η^(v))
            num, den = eta_ratio_modalities(self.modalities)
            by = vul.set_index("modality")
            local, glob = (by.at[num, c] / by.at[den, c] for c in ("eta_local", "eta_global"))
            lines.append(f"  ratio η^({num})/η^({den}): local {local:.4g}, global {glob:.4g}")
        elif len(self.modalities) > 2:
            first = self.modalities[0]
            for row in vul.iloc[1:].itertuples():
                lines.append(
                    f"  ratio η^({row.modality})/η^({first}): local {row.eta_local_ratio:.4g}, "
                    f"global {row.eta_global_ratio:.4g}"
                )
        return "\n".join(lines)


__all__ = [
    "EMPIRICAL",
    "MIN_J",
    "RUNNER_UP",
    "DEFAULT_RADII",
    "KIND_EMPIRICAL",
    "KIND_NOT_A_BOUND",
    "KIND_HEURISTIC",
    "KIND_SOUND",
    "HEURISTIC_NOTE",
    "Certificate",
    "CertifiedRadius",
]
