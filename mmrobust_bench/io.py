"""Crash-safe file writes and content hashes.

Every file the suite writes goes through a temporary file in the same directory and an atomic
``os.replace``, so a crash leaves either the old file or the new one, never a torn one; the file gets
the mode the umask allows (0644 under 022), like any file ``open`` creates. Files that several
processes read, modify and write (the results CSV, the certificate tables) do so under ``file_lock``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import tempfile
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import filelock

_UMASK_LOCK = threading.Lock()


#: longest simplified part of a file-name slug; a longer name is cut there and told apart by its hash
MAX_SLUG = 60
HASH_CHARS = 10
_UNSAFE = re.compile(r"[^a-z0-9.]+")


def name_hash(name: str) -> str:
    """A short hash of the raw name (UTF-8, surrogates escaped so any Python string has one)."""
    data = str(name).encode("utf-8", "surrogatepass")
    return hashlib.sha256(data).hexdigest()[:HASH_CHARS]


def file_slug(name: object) -> str:
    """A file-name-safe form of a name from rows or the command line (``../../x``, ``a/b``, 5,000 characters):
    itself when it is already a plain slug (lower-case letters, digits, ``_``, ``.``; no leading or trailing dot)
    of at most :data:`MAX_SLUG` characters, else its simplified form plus ``-`` and a hash of the raw name, so two
    names never share a file by accident and no slug climbs out of its folder."""
    text = str(name)
    simple = _UNSAFE.sub("_", text.lower()).strip("_").strip("._")
    if simple and simple == text and len(simple) <= MAX_SLUG:
        return simple
    simple = simple[:MAX_SLUG].strip("._") or "name"
    return f"{simple}-{name_hash(text)}"


def current_umask() -> int:
    """The process umask: from /proc on Linux, else by setting it and putting it back (os.umask has no getter)."""
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def file_lock(path: str | os.PathLike, timeout: float = -1) -> filelock.FileLock:
    """An inter-process lock for read-modify-write of ``path``: the lock file ``.<name>.lock`` beside it.

    ``filelock`` takes an OS lock (``flock``) on that file, released by the kernel if the holder dies, so a
    killed writer never leaves a stale lock; NFS v4 and Lustre honour it, so processes on several
    machines sharing one filesystem serialise too. ``timeout`` < 0 waits forever.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return filelock.FileLock(str(path.parent / f".{path.name}.lock"), timeout=timeout)


def _write_failure(exc: BaseException, path: Path) -> OSError | None:
    """A failure to write ``path`` as an OSError naming ``path``, or None for an error that is not one.

    A full disk reported by ``write()`` names no file, one reported while creating or renaming the temporary names
    only the temporary, and safetensors reports it as ``SafetensorError('… (os error 28)')``; the user needs the
    file they asked for (``No space left on device: runs/checkpoints/…/final.safetensors``)."""
    if isinstance(exc, OSError):
        named = exc.filename is None or Path(exc.filename).name.startswith(f".{path.name}.")
        code = exc.errno if named else None
    else:
        found = re.search(r"\(os error (\d+)\)", str(exc)) if type(exc).__name__ == "SafetensorError" else None
        code = int(found.group(1)) if found else None
    return None if code is None else OSError(code, os.strerror(code), str(path))


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` atomically. A failure to write
    (a full disk, a read-only folder) is an OSError naming ``path``, whoever reported it."""
    path = Path(path)
    tmp = ""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        yield Path(tmp)
        with open(tmp, "rb+") as fh:
            # mkstemp creates 0600, and a writer may have replaced the file by its own 0600 temporary
            # (safetensors does): the final file gets what open() would give it, 0666 less the umask
            os.fchmod(fh.fileno(), 0o666 & ~current_umask())
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except Exception as exc:
        failure = _write_failure(exc, path)
        if failure is None:
            raise
        raise failure from exc
    finally:
        if tmp:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def non_finite_entries(obj: Any, where: str = "") -> list[str]:
    """The dotted paths of NaN and ±inf floats inside nested dicts, lists and tuples: standard JSON has no
    spelling for them (Python writes ``Infinity``, which other readers refuse)."""
    if isinstance(obj, float):
        return [] if math.isfinite(obj) else [f"{where or 'value'} = {obj}"]
    if isinstance(obj, Mapping):
        return [p for k, v in obj.items() for p in non_finite_entries(v, f"{where}.{k}" if where else str(k))]
    if isinstance(obj, (list, tuple)):
        return [p for i, v in enumerate(obj) for p in non_finite_entries(v, f"{where}[{i}]")]
    return []


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Standard JSON only: a NaN or inf is refused before anything is written, naming where it is."""
    bad = non_finite_entries(obj)
    if bad:
        raise ValueError(f"{path}: JSON cannot record the non-finite number(s) {', '.join(bad)}; give finite values")
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str, allow_nan=False) + "\n")


def json_normalised(obj: Any) -> Any:
    """``obj`` as it reads back from a JSON file written by :func:`atomic_write_json` (tuples become lists, other
    objects their text): the form in which a stored and a rebuilt value are compared."""
    return json.loads(json.dumps(obj, sort_keys=True, default=str))


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def stable_hash(obj: Any, length: int = 16) -> str:
    """Short hash of a JSON-serialisable object, independent of dict ordering."""
    text = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def default_root() -> Path:
    """Where datasets caches, checkpoints, results and plots go: $MMROBUST_HOME or ./runs."""
    return Path(os.environ.get("MMROBUST_HOME", "runs"))
