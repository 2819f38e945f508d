"""``autoattack``: the standard strong evaluation, an AutoAttack-style ensemble (Croce & Hein, ICML 2020).

A robust accuracy measured with one gradient attack is an upper bound that gradient masking (saturated
softmax, sparse-coding layers, orthogonal heads) can make arbitrarily loose. AutoAttack's answer, RobustBench's
standard, is a fixed, parameter-free ensemble with a per-sample worst case:

1. APGD-CE: step-size-free PGD on the cross-entropy;
2. APGD-T: APGD on the targeted DLR loss, once per top runner-up class (scale-invariant, so a saturated
   softmax does not hide the margin);
3. FAB-T: minimal-norm boundary search towards each top runner-up class;
4. Square: a gradient-free random search on the margin, blind to masked gradients.

Each member is torchattacks' own implementation, run through the single-input view of
:mod:`.torchattacks_adapter`, so every modality shape and box works as it does for any ``torchattacks:NAME``,
with one difference: where a uniform box's map would need one library call per sample (a random start larger
than the view's tag margin), the member takes the centred map and the view clamps the box, so every member makes
one library call per batch.
Members run in order, each on the samples that are still classified correctly; a sample counts as broken
when the model misclassifies the returned (projected, boxed) input, measured here with the model itself,
never with a library flag. The returned batch holds, per sample, the first member's adversarial input that
fooled the model, else the clean input.

Versions: ``standard`` (the original AutoAttack's settings: 100 iterations, 9 target classes, 5000 Square
queries), ``fast`` (fewer iterations, targets and queries) and ``fast-all-targets`` (``fast`` with APGD-T towards
every runner-up class, which closed ``fast``'s gap where it was found); each gap to ``standard`` is measured by
``benchmarks/autoattack_cost.py``. The version is in :meth:`describe` (the rows'
``attack_config``); every member's settings and how many samples each broke are in :meth:`take_breaks` (the rows'
``details``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn

from ..contracts import Batch, ModalitySpec, ThreatModel
from ..hints import did_you_mean
from . import ATTACKS
from .base import Attack
from .torchattacks_adapter import TorchattacksAttack, import_torchattacks
from .view import clean_logits


@dataclass(frozen=True)
class Member:
    """One ensemble member: a torchattacks class, its options, and how many top runner-up classes it targets
    (``targets``: None for an untargeted member, :data:`EVERY_RUNNER_UP` for all of them)."""

    name: str
    attack: str
    options: Mapping[str, Any] = field(default_factory=dict)
    targets: int | str | None = None
    min_classes: int = 2  # fewer classes than this: the member cannot run and is skipped (recorded)

    def target_count(self, n_classes: int) -> int:
        """How many runner-up classes it targets on a model with ``n_classes`` classes (1 when untargeted)."""
        if self.targets is None:
            return 1
        if self.targets == EVERY_RUNNER_UP:
            return max(1, n_classes - 1)
        return max(1, min(int(self.targets), n_classes - 1))

    def describe(self) -> str:
        opts = dict(self.options)
        if self.targets is not None:
            opts["targets"] = self.targets
        return f"{self.name}[{', '.join(f'{k}={v}' for k, v in sorted(opts.items()))}]"


EVERY_RUNNER_UP = "all"

# The targeted DLR loss reads the 4th-largest logit (torchattacks APGDT), so it needs 4 classes.
# ``fast-all-targets``: ``fast`` with APGD-T towards every runner-up class. The runner-ups' order on the clean
# logits can miss the class an attack reaches: on a synthav CRMT-MMT, APGD-T towards the top 3 left 0.61 of 100
# test samples robust on the audio at ε 1 and towards all 9 left 0.45 (standard: 0.45), at 50 or 100 steps alike
# (benchmarks/results/autoattack_cost-*-targets-*.json). It costs ~1.2-1.5x ``fast`` (APGD-T is cheap beside
# FAB-T and Square, which broke no sample in any measurement), ~5x less than ``standard``.
VERSIONS: dict[str, tuple[Member, ...]] = {
    "standard": (
        Member("apgd-ce", "APGD", {"loss": "ce", "steps": 100, "n_restarts": 1}),
        Member("apgd-t", "APGDT", {"steps": 100, "n_restarts": 1}, targets=9, min_classes=4),
        Member("fab-t", "FAB", {"steps": 100, "n_restarts": 1, "multi_targeted": True}, targets=9),
        Member("square", "Square", {"n_queries": 5000, "n_restarts": 1}),
    ),
    "fast": (
        Member("apgd-ce", "APGD", {"loss": "ce", "steps": 50, "n_restarts": 1}),
        Member("apgd-t", "APGDT", {"steps": 50, "n_restarts": 1}, targets=3, min_classes=4),
        Member("fab-t", "FAB", {"steps": 50, "n_restarts": 1, "multi_targeted": True}, targets=3),
        Member("square", "Square", {"n_queries": 1000, "n_restarts": 1}),
    ),
    "fast-all-targets": (
        Member("apgd-ce", "APGD", {"loss": "ce", "steps": 50, "n_restarts": 1}),
        Member("apgd-t", "APGDT", {"steps": 50, "n_restarts": 1}, targets=EVERY_RUNNER_UP, min_classes=4),
        Member("fab-t", "FAB", {"steps": 50, "n_restarts": 1, "multi_targeted": True}, targets=3),
        Member("square", "Square", {"n_queries": 1000, "n_restarts": 1}),
    ),
}
DEFAULT_VERSION = "standard"


def check_version(version: str) -> tuple[Member, ...]:
    if version not in VERSIONS:
        raise ValueError(
            f"unknown autoattack version {version!r}{did_you_mean(version, list(VERSIONS))}; valid: "
            f"{', '.join(VERSIONS)}"
        )
    return VERSIONS[version]


class AutoAttackEnsemble(Attack):
    """The ensemble of the module docstring, ``version`` one of :data:`VERSIONS`; ``members`` (a comma list of
    member names) runs a subset, in the version's order (for ablations; the rows record which ran)."""

    name = "autoattack"
    library = "torchattacks"
    per_sample_eps = False
    norms = ("l2", "linf")
    # zero cross-entropy gradients do not blind it (the scale-invariant DLR loss and the gradient-free Square
    # attack), so ``bench.flags`` does not raise ``zero_gradients`` on its numbers
    masking_resistant = True

    def __init__(
        self, specs: Sequence[ModalitySpec], *, seed: int = 0, version: str = DEFAULT_VERSION, members: str = ""
    ) -> None:
        super().__init__(specs, seed=seed)
        chosen = check_version(version)
        if members:
            wanted = [m.strip() for m in members.split(",") if m.strip()]
            unknown = [m for m in wanted if m not in {c.name for c in chosen}]
            if unknown or not wanted:
                raise ValueError(
                    f"autoattack: unknown member(s) {', '.join(unknown) or repr(members)}; valid: "
                    f"{', '.join(c.name for c in chosen)}"
                )
            chosen = tuple(c for c in chosen if c.name in wanted)
        self.version = version
        self.members = chosen
        self.member_option = members
        self.breaks: dict[str, int] = {}
        self.skipped: dict[str, str] = {}

    def gradient_passes(self, num_classes: int) -> float:
        """At most how many forward-backward passes one sample costs (every member on every sample, a Square query
        counted as a third of one): what an up-front time estimate multiplies (``mmr.evaluate``)."""
        total = 0.0
        for member in self.members:
            if num_classes < member.min_classes:
                continue
            opts = member.options
            targets = member.target_count(num_classes)
            restarts = max(1, int(opts.get("n_restarts", 1)))
            if "n_queries" in opts:
                total += restarts * int(opts["n_queries"]) / 3
            else:
                total += restarts * targets * int(opts["steps"])
        return total

    @property
    def library_version(self) -> str:
        return str(import_torchattacks().__version__)

    def describe(self) -> str:
        """``autoattack(version='standard')``: a version fixes every member's settings (:data:`VERSIONS`, also in the
        rows' details); a subset of members is named."""
        subset = f", members={self.member_option!r}" if self.member_option else ""
        return f"autoattack(version={self.version!r}{subset})"

    def validate(self, threat: ThreatModel) -> None:
        super().validate(threat)
        if not threat.joint and len(threat.modalities) > 1 and threat.norm != "linf":
            raise ValueError("autoattack has one budget per input; use a joint threat or attack one modality at a time")

    def take_breaks(self) -> dict[str, Any]:
        """How many samples each member broke (and which members were skipped, with why) since the last call;
        the counter starts again at zero."""
        out: dict[str, Any] = {
            "version": self.version,
            "members": [m.describe() for m in self.members],
            "breaks": dict(self.breaks),
        }
        if self.skipped:
            out["skipped"] = dict(self.skipped)
        self.breaks = {m.name: 0 for m in self.members}
        self.skipped = {}
        return out

    def _member_attack(self, member: Member, n_classes: int) -> Attack:
        options = dict(member.options)
        if member.targets is not None:
            # torchattacks targets the top n_classes − 1 runner-ups: n_classes sets how many are tried
            options["n_classes"] = member.target_count(n_classes) + 1
        attack = TorchattacksAttack(member.attack, list(self.specs.values()), seed=self.seed, **options)
        attack.batched = True  # one library call per batch on every box (see TorchattacksAttack.plan)
        return attack

    def perturb(
        self,
        model: nn.Module,
        batch: Batch,
        labels: Tensor,
        threat: ThreatModel,
        eps: Tensor,
        *,
        targets: Tensor | None = None,
    ) -> Batch:
        if targets is not None:
            raise ValueError("autoattack measures untargeted robustness; it has no targeted mode")
        for member in self.members:
            self.breaks.setdefault(member.name, 0)
        adv = {m: batch[m].clone() for m in threat.modalities}
        if float(eps[0]) == 0.0:
            return adv
        logits = clean_logits(model, batch)
        n_classes = int(logits.shape[1])
        robust = logits.argmax(1) == labels
        for member in self.members:
            if n_classes < member.min_classes:
                self.skipped[member.name] = f"needs at least {member.min_classes} classes, the model has {n_classes}"
                continue
            index = robust.nonzero().flatten()
            if index.numel() == 0:
                break
            sub = {m: x[index] for m, x in batch.items()}
            found = self._member_attack(member, n_classes)(model, sub, labels[index], threat, eps[index])
            fooled = clean_logits(model, {**sub, **found}).argmax(1) != labels[index]
            if bool(fooled.any()):
                hit = index[fooled]
                for m in threat.modalities:
                    adv[m][hit] = found[m][fooled].to(adv[m].dtype)
                robust[hit] = False
                self.breaks[member.name] += int(fooled.sum())
        return adv


@ATTACKS.register("autoattack")
def _autoattack(
    specs: Sequence[ModalitySpec], *, seed: int = 0, version: str = DEFAULT_VERSION, members: str = ""
) -> AutoAttackEnsemble:
    """The standard strong evaluation: APGD-CE, APGD-T, FAB-T and Square (torchattacks) with a per-sample worst
    case, ``version`` standard|fast|fast-all-targets."""
    return AutoAttackEnsemble(specs, seed=seed, version=version, members=members)


__all__ = ["AutoAttackEnsemble", "Member", "VERSIONS", "DEFAULT_VERSION", "EVERY_RUNNER_UP", "check_version"]
