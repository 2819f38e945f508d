"""Tensor files that say what they hold: safetensors with a key and a checksum in their metadata.

The data caches (synthav, avdigits) and the checkpoints' resume files are written with the key of the
configuration that made them and a sha256 of their tensors, and are used only when both match: a cache
copied from another configuration, a bit flip or a truncated file is rebuilt with a warning, never read
as data. No pickle: safetensors and JSON only.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .io import atomic_path

META = "mmrobust_bench"  # the metadata entry holding the JSON key, checksum and the writer's extra fields
# what a damaged or foreign file can raise while being read (never a reason to crash a run)
READ_ERRORS = (OSError, ValueError, KeyError, TypeError, SafetensorError, json.JSONDecodeError, RuntimeError)


def tensor_digest(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over names, dtypes, shapes and bytes of ``tensors`` (order-independent): the checksum that
    resume files and the data caches carry in their metadata, checked after loading."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name]
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        if t.numel():
            digest.update(memoryview(t.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy()))
    return digest.hexdigest()


def write_checked_tensors(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """The data caches' format: ``tensors``, written atomically, with ``meta`` (a ``key`` among it) and a sha256
    of the tensors in one metadata entry (one entry keeps the file reproducible: safetensors does not keep the
    order of several)."""
    meta = {**meta, "sha256": tensor_digest(tensors)}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={META: json.dumps(meta, sort_keys=True)})


def read_checked_tensors(path: Path, key: Any) -> tuple[dict[str, torch.Tensor] | None, dict[str, Any], str | None]:
    """``(tensors, meta, None)`` for a file of :func:`write_checked_tensors` written for ``key`` whose tensors
    match their checksum; otherwise ``(None, meta, problem)``, the problem in words for the caller's warning
    (no checksum, another key, a bit flip, a truncated or unreadable file)."""
    meta: dict[str, Any] = {}
    try:
        with safe_open(str(path), framework="pt") as fh:
            found = json.loads((fh.metadata() or {}).get(META, "null") or "null")
            if not isinstance(found, dict) or "sha256" not in found:
                return None, meta, "it has no checksum (written by an older version)"
            meta = found
            if meta.get("key") != key:
                return None, meta, f"it holds another configuration ({_key_change(meta.get('key'), key)})"
            tensors = {name: fh.get_tensor(name) for name in fh.keys()}  # noqa: SIM118 (a safe_open handle is not iterable)
            if tensor_digest(tensors) != meta["sha256"]:
                return None, meta, "its data do not match its checksum"
    except READ_ERRORS as exc:
        return None, meta, f"it cannot be read ({type(exc).__name__}: {exc})"
    return tensors, meta, None


def _key_change(found: Any, expected: Any) -> str:
    """How a stored cache key differs from the expected one: the fields that differ, or both keys."""
    if isinstance(found, dict) and isinstance(expected, dict):
        return "differs in " + ", ".join(sorted(k for k in {*found, *expected} if found.get(k) != expected.get(k)))
    return f"key {found}, expected {expected}"


__all__ = ["META", "READ_ERRORS", "read_checked_tensors", "tensor_digest", "write_checked_tensors"]
