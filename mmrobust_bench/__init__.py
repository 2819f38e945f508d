"""mmrobust-bench: adversarial robustness of multi-modal classifiers.

The public Python API mirrors the CLI: :func:`mmrobust_bench.bench.api.run` is what
``mmrobust-bench run`` calls.
"""
__version__ = "0.1.0"
