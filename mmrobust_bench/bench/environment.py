"""What machine and software made a number: the provenance that explains why a rerun differs.

A float reduction's result depends on the kernels torch dispatches to (its CPU capability: AVX2 and
AVX512 kernels order sums differently), on how torch was built (BLAS, OpenMP, oneDNN), on the device
and on the intra-op thread count. Rows, certificates, checkpoint configs and model cards record these
values so that ``verify`` can show, beside a difference, what differed. Nothing here is part of a
checkpoint key: the same model may be trained or evaluated anywhere.
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform
import re
from typing import Any

import torch

# Columns every result and certificate row carries for it ("" or 0: written before they existed).
PROVENANCE_COLUMNS = ("torch_version", "cpu_capability", "torch_build", "device_name", "threads")
# What must be equal for a rerun to be expected bit for bit (besides the thread count and the device).
SOFTWARE_FIELDS = ("cpu_capability", "torch_version", "torch_build")


def cpu_capability() -> str:
    """The CPU kernels torch dispatches to (``AVX512``, ``AVX2``, ``DEFAULT``…); ``ATEN_CPU_CAPABILITY`` lowers it."""
    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except (AttributeError, RuntimeError):
        return ""


def _build_text() -> str:
    """torch's build configuration without its line on the running CPU (that is the machine, not the build)."""
    text = torch.__config__.show()
    return "\n".join(line for line in text.splitlines() if "CPU capability usage" not in line)


@functools.lru_cache(maxsize=1)
def torch_build() -> dict[str, str]:
    """A short sha256 of torch's build configuration and its fields that change float results: BLAS, OpenMP,
    MKL and oneDNN versions ("" when the build has none)."""
    text = _build_text()

    def find(pattern: str) -> str:
        match = re.search(pattern, text)
        return match.group(1).strip() if match else ""

    return {
        "sha256": hashlib.sha256(text.encode()).hexdigest()[:12],
        "blas": find(r"BLAS_INFO=([^,\s]+)"),
        "openmp": find(r"OpenMP (\d+)"),
        "mkl": find(r"Math Kernel Library Version ([^\s]+)"),
        "onednn": find(r"MKL-DNN (v[^\s]+)"),
    }


@functools.lru_cache(maxsize=1)
def cpu_name() -> str:
    """The CPU model (``/proc/cpuinfo``'s model name where it exists, else what ``platform`` says)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: torch.device | str | None = None) -> str:
    """The GPU's name for a CUDA device, else the CPU model."""
    try:
        dev = torch.device(device) if device is not None else torch.device("cpu")
    except (RuntimeError, TypeError):  # a device string torch does not know: describe the host
        return cpu_name()
    if dev.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_name(dev)
    return cpu_name()


def row_provenance(device: torch.device | str | None = None) -> dict[str, Any]:
    """The provenance columns of a row measured now on ``device`` (:data:`PROVENANCE_COLUMNS`)."""
    return {
        "torch_version": torch.__version__,
        "cpu_capability": cpu_capability(),
        "torch_build": torch_build()["sha256"],
        "device_name": device_name(device),
        "threads": torch.get_num_threads(),
    }


def machine_provenance(device: torch.device | str | None = None) -> dict[str, Any]:
    """Everything recorded about the machine in checkpoint configs and the zoo: the row columns plus the build's
    key fields and the interpreter."""
    build = torch_build()
    return {
        **row_provenance(device),
        "torch_build_fields": {k: v for k, v in build.items() if k != "sha256"},
        "python_version": platform.python_version(),
        "machine": platform.machine(),
    }


def benchmark_machine(device: torch.device | str | None = None) -> dict[str, Any]:
    """The machine block of a benchmark's JSON: :func:`machine_provenance` plus the core count. Why: a timing or
    float difference between two runs of a script is explained by the CPU capability, the torch build, the
    device, the thread count and the cores; one block written the same way by every script records all of
    them, where hand-made copies kept only some."""
    return {**machine_provenance(device), "cpu_count": os.cpu_count()}


def same_software(recorded: dict[str, Any], current: dict[str, Any] | None = None) -> bool:
    """Whether ``recorded`` names the CPU capability, torch version and build of ``current`` (this process by
    default); False when any of them was not recorded."""
    current = current or row_provenance()
    return all(
        str(recorded.get(k) or "") not in ("", "nan") and str(recorded.get(k)) == str(current.get(k))
        for k in SOFTWARE_FIELDS
    )


__all__ = [
    "PROVENANCE_COLUMNS",
    "SOFTWARE_FIELDS",
    "cpu_capability",
    "torch_build",
    "cpu_name",
    "device_name",
    "row_provenance",
    "machine_provenance",
    "benchmark_machine",
    "same_software",
]
