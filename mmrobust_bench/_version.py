"""The package version, from one source: pyproject.toml as installed (a bottom-layer module any layer imports)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _distribution_version

try:
    __version__ = _distribution_version("mmrobust-bench")
except PackageNotFoundError:  # a source tree on sys.path without an install
    __version__ = "0+unknown"
