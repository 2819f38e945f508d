"""mmrobust-bench: adversarial robustness of multi-modal classifiers.

``import mmrobust_bench as mmr`` gives the "bring your own model" API of :mod:`mmrobust_bench.plug`:
``mmr.wrap`` (declare how to call any ``nn.Module``), ``mmr.attack`` (torchattacks / ART / native attacks
on chosen modalities), ``mmr.evaluate`` / ``mmr.benchmark`` (clean and robust accuracy over an ε grid from a
DataLoader, as tidy rows), ``mmr.eta`` and ``mmr.certificates`` (for models that expose uni-modal scores),
``mmr.smooth_certify`` (randomized smoothing of any model: sound with probability 1 − α).
``mmr.load_model`` and ``mmr.load_dataset`` (:mod:`mmrobust_bench.hub`) give a leaderboard's models (its committed
zoo) and data back, ready for those calls. ``mmr.run`` (``mmrobust_bench.bench.api.run``) is what
``mmrobust-bench run`` calls. The names load on
first use, so importing the package (and ``mmrobust-bench --help``) stays free of torch.
"""

from __future__ import annotations

import importlib

from ._version import __version__

# Public name -> the module that defines it; imported on first attribute access (PEP 562). A name must not be
# a subpackage's (attacks, bench, certify, ...): importing the subpackage would overwrite it.
_LAZY = {
    "Modality": "plug.declare",
    "WrappedModel": "plug.declare",
    "wrap": "plug.declare",
    "attack": "plug.attacking",
    "drop": "plug.attacking",
    "evaluate": "plug.evaluation",
    "benchmark": "plug.evaluation",
    "state_dict_sha256": "plug.evaluation",
    "eta": "plug.unimodal",
    "certificates": "plug.unimodal",
    "smooth_certify": "plug.smoothing",
    "format_table": "plug.formatting",
    "run": "bench.api",
    "load_model": "hub",
    "load_dataset": "hub",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'mmrobust_bench' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The public names only (what ``__all__`` lists), not the module's own helpers."""
    return sorted(__all__)
