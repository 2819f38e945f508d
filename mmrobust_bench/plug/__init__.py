"""Bring your own model: attack and benchmark any multi-modal PyTorch classifier (``import mmrobust_bench as mmr``).

Three calls, shaped like the libraries users know (torchattacks' ``Attack(model, eps=…)``, ART's estimator
+ attack, RobustBench's ``benchmark()``)::

    wrapped = mmr.wrap(model, modalities={"audio": mmr.Modality((40, 64)),
                                          "video": mmr.Modality((3, 32, 32), box=(0, 1))})
    x_adv = mmr.attack(wrapped, (audio, video), labels, attack=torchattacks.PGDL2, modality="audio",
                       eps=1.0, alpha=0.2, steps=10)
    table = mmr.evaluate(wrapped, loader, attack="torchattacks:PGDL2", modality="audio", eps=[0.5, 1.0])

A thin layer over the suite's core, one module per idea: declaring a model (:mod:`.declare`: :func:`wrap`,
:class:`Modality`, :class:`WrappedModel`), the user's batches (:mod:`.batches`), library attacks
(:mod:`.attacking`: :func:`attack`, :func:`drop`, :func:`resolve_attack`), clean and robust accuracy
(:mod:`.evaluation`: :func:`evaluate`, through ``bench.evaluate.robust_accuracy``), features of models with
uni-modal scores (:mod:`.unimodal`: :func:`eta`, :func:`certificates`, through ``certify.radii.certify``),
randomized smoothing (:mod:`.smoothing`) and the printed table (:mod:`.formatting`). :func:`wrap` adapts the
user's ``forward`` to the suite's contract, so every attack of the suite runs on it unchanged: native ones,
``missing`` and the torchattacks / ART adapters (docs/design.md §4, "Adapting single-input attack libraries").
:func:`attack` and :func:`evaluate` take the user's own batches (dicts, tuples or a tensor) and give them back
in the same format; :func:`evaluate` returns the tidy rows the CLI writes (``bench.results.ResultRow``).
"""

from __future__ import annotations

from .attacking import ResolvedAttack, attack, drop, norm_name, resolve_attack
from .batches import LABEL, LABEL_KEYS
from .declare import CALLS, Modality, WrappedModel, wrap
from .evaluation import benchmark, evaluate, state_dict_sha256
from .formatting import format_table
from .smoothing import SmoothingResult, smooth_certify
from .unimodal import certificates, eta

__all__ = [
    "Modality",
    "WrappedModel",
    "wrap",
    "attack",
    "drop",
    "evaluate",
    "benchmark",
    "eta",
    "certificates",
    "smooth_certify",
    "SmoothingResult",
    "format_table",
    "resolve_attack",
    "ResolvedAttack",
    "norm_name",
    "state_dict_sha256",
    "CALLS",
    "LABEL_KEYS",
    "LABEL",
]
