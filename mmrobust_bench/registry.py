"""Name → factory registries for defenses, attacks, datasets and encoders.

Built-ins register with a decorator; third parties add entries through the Python entry-point
groups ``mmrobust_bench.defenses`` / ``.attacks`` / ``.datasets`` / ``.encoders``. Entry points are loaded lazily
(only when a name is asked for or the list is shown), a duplicate name is an error naming both
providers, and a plugin that fails to import is reported by name without breaking other entries.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import pkgutil
import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Generic, TypeVar

from .hints import did_you_mean

log = logging.getLogger(__name__)

T = TypeVar("T")

BUILTIN = "builtin"


class RegistryError(LookupError):
    """An unknown, duplicate or broken registry entry; the message names the fix."""


@dataclass
class Entry(Generic[T]):
    name: str
    provider: str  # "builtin" or "<distribution> (entry point <value>)"
    obj: T | None = None
    entry_point: EntryPoint | None = None
    error: str | None = None
    description: str | None = None  # one line for `mmrobust-bench list`; else the object's docstring

    def summary(self) -> str:
        """The entry's one-line description: the registered one, else the first line of its docstring."""
        if self.description:
            return self.description
        return summary_line(self.obj) if self.obj is not None else ""

    def load(self, kind: str) -> T:
        if self.obj is None and self.entry_point is not None and self.error is None:
            try:
                self.obj = self.entry_point.load()
            except Exception as exc:  # a plugin may fail in any way; say which one
                self.error = f"{type(exc).__name__}: {exc}"
        if self.error is not None:
            raise RegistryError(
                f"{kind} {self.name!r} from {self.provider} failed to load ({self.error}); fix or uninstall that plugin"
            )
        return self.obj  # type: ignore[return-value]


class Registry(Generic[T]):
    """A registry of one kind of component, keyed by user-facing id."""

    def __init__(self, kind: str, group: str | None, builtin_package: str | None = None) -> None:
        self.kind = kind
        self.group = group
        self._builtin_package = builtin_package
        self._entries: dict[str, Entry[T]] = {}
        self._builtins_loaded = False
        self._plugins_loaded = False

    def register(self, name: str, *, description: str | None = None) -> Callable[[T], T]:
        """Decorator for built-ins: ``@DEFENSES.register("jt")``. ``description`` is the one line that
        ``mmrobust-bench list`` shows (default: the first line of the object's own docstring)."""

        def deco(obj: T) -> T:
            self._add(Entry(name=name, provider=BUILTIN, obj=obj, description=description))
            return obj

        return deco

    def _add(self, entry: Entry[T]) -> None:
        old = self._entries.get(entry.name)
        if old is not None and not (old.provider == entry.provider and old.obj is entry.obj):
            raise RegistryError(
                f"duplicate {self.kind} name {entry.name!r}: provided by {old.provider} and by {entry.provider}; "
                f"uninstall one of them or rename its entry point"
            )
        self._entries[entry.name] = entry

    def _ensure_loaded(self) -> None:
        if not self._builtins_loaded:
            self._builtins_loaded = True
            if self._builtin_package is not None:
                # every module of the package registers its built-ins on import: one file per entry
                package = importlib.import_module(self._builtin_package)
                for info in pkgutil.iter_modules(package.__path__):
                    if not info.name.startswith("_"):
                        importlib.import_module(f"{self._builtin_package}.{info.name}")
        if not self._plugins_loaded and self.group is not None:
            self._plugins_loaded = True
            for ep in entry_points(group=self.group):
                dist = getattr(ep, "dist", None)
                dist_name = dist.metadata["Name"] if dist is not None else "unknown distribution"
                self._add(Entry(name=ep.name, provider=f"{dist_name} (entry point {ep.value})", entry_point=ep))

    def names(self) -> list[str]:
        self._ensure_loaded()
        return sorted(self._entries)

    def entries(self) -> list[Entry[T]]:
        self._ensure_loaded()
        return [self._entries[n] for n in sorted(self._entries)]

    def __contains__(self, name: str) -> bool:
        self._ensure_loaded()
        return name in self._entries

    def get(self, name: str) -> T:
        self._ensure_loaded()
        entry = self._entries.get(name)
        if entry is None:
            raise RegistryError(self.unknown_message(name))
        return entry.load(self.kind)

    def unknown_message(self, name: str) -> str:
        valid = self.names()
        return f"unknown {self.kind} {name!r}{did_you_mean(name, valid)}; valid: {', '.join(valid)}"

    def describe(self) -> list[dict[str, Any]]:
        """One row per entry with its provider and load status, for ``mmrobust-bench list``."""
        rows = []
        for entry in self.entries():
            status = "ok"
            if entry.entry_point is not None:
                try:
                    entry.load(self.kind)
                except RegistryError:
                    status = f"broken: {entry.error}"
            rows.append(
                {
                    "kind": self.kind,
                    "name": entry.name,
                    "provider": entry.provider,
                    "status": status,
                    "description": entry.summary() if status == "ok" else "",
                }
            )
        return rows


def _own_doc(obj: Any) -> str:
    """The docstring written on ``obj`` itself (not one inherited from a base class)."""
    doc = vars(obj).get("__doc__") if inspect.isclass(obj) else getattr(obj, "__doc__", None)
    return inspect.cleandoc(doc) if isinstance(doc, str) else ""


def summary_line(obj: Any) -> str:
    """First line of ``obj``'s own docstring; for a factory function without one, that of the class it is
    annotated to return (``def _pgd_l2(...) -> PGDL2``)."""
    doc = _own_doc(obj)
    if not doc and inspect.isfunction(obj):
        try:
            returned = inspect.signature(obj, eval_str=True).return_annotation
        except Exception:  # an annotation that does not evaluate: no description rather than a crash
            returned = None
        if inspect.isclass(returned) and returned.__module__.split(".")[0] == obj.__module__.split(".")[0]:
            doc = _own_doc(returned)  # only a class of the same package: not torch's nn.Module docstring
    if not doc:
        return ""
    line = doc.split("\n\n")[0].replace("\n", " ").strip()
    line = re.sub(r":\w+:`\.?([^`]+)`", r"\1", line)  # :class:`.x.Y` -> x.Y
    return line.replace("``", "")
