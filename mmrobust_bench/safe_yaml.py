"""Reading YAML a user typed or wrote (``--set``, ``--config``, sweep files), and quoting user values in errors.

``yaml.safe_load`` runs no code but still trusts the document's shape: a few hundred bytes of nested aliases
(``&a [*b, *b, …]``, "billion laughs") build a value whose ``repr`` — any error message quoting it — exhausts
memory; a few thousand ``[`` overflow the recursive composer; a key given twice silently keeps the last value.
:func:`load_yaml` refuses all three before any value is built, each with one line naming the key or position.
No configuration of the suite needs anchors (every block is short), so they are refused rather than budgeted.

:func:`preview` is the bounded ``repr`` every error message uses for a value the user supplied, whatever its
size or nesting (a value built in Python can be as large as an alias bomb).

This module imports nothing of the package, so every layer may use it.
"""

from __future__ import annotations

import itertools
import reprlib
from typing import Any

import yaml

#: Deepest nesting of sequences and mappings accepted (a sweep file nests four levels).
MAX_DEPTH = 50
#: Longest preview of a value in an error message, in characters.
PREVIEW_CHARS = 80

_MERGE_TAG = "tag:yaml.org,2002:merge"


class YamlInputError(ValueError):
    """Bad YAML from the user: the message is one line naming where it came from and what to fix. ``syntax``:
    the text is not YAML at all (for a ``--set`` value, quoting it may be the fix)."""

    def __init__(self, message: str, *, syntax: bool = False) -> None:
        super().__init__(message)
        self.syntax = syntax


def _position(mark: Any) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "an unknown position"


def _cut(text: str, limit: int) -> str:
    """``text`` on one line, at most ``limit`` characters."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _StrictLoader(yaml.SafeLoader):
    """``SafeLoader`` without anchors or aliases, with a nesting limit and refusing duplicate mapping keys."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            kind = "alias *" if isinstance(event, yaml.AliasEvent) else "anchor &"
            raise YamlInputError(
                f"YAML {kind}{_cut(event.anchor, 30)} at {_position(event.start_mark)}: "
                f"anchors and aliases are not accepted; write the value out"
            )
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise YamlInputError(
                    f"YAML nested more than {MAX_DEPTH} levels deep at {_position(event.start_mark)}; flatten the value"
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            first: dict[Any, Any] = {}
            for key_node, _ in node.value:
                if key_node.tag == _MERGE_TAG:
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    earlier = first.setdefault(key, key_node)
                except TypeError:  # an unhashable key: SafeLoader's own error says so
                    continue
                if earlier is not key_node:
                    shown = key_node.value if isinstance(key_node, yaml.ScalarNode) else key
                    raise YamlInputError(
                        f"duplicate key {preview(shown)} at {_position(key_node.start_mark)} "
                        f"(first at {_position(earlier.start_mark)}); keep one of them"
                    )
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str, what: str) -> Any:
    """The value of one YAML document ``text``; any problem is a :class:`YamlInputError` (a ValueError) of one
    line starting with ``what`` (``"--set lr"``, ``"sweep config s.yaml"``)."""
    loader = None
    try:
        loader = _StrictLoader(text)  # the reader refuses control characters here, before any parsing
        return loader.get_single_data()
    except YamlInputError as exc:
        raise YamlInputError(f"{what}: {exc}") from None
    except yaml.MarkedYAMLError as exc:
        where = f" at {_position(exc.problem_mark)}" if exc.problem_mark is not None else ""
        problem = exc.problem or exc.context or str(exc)
        raise YamlInputError(f"{what}: invalid YAML{where}: {_cut(problem, 120)}", syntax=True) from None
    except yaml.YAMLError as exc:
        raise YamlInputError(f"{what}: invalid YAML ({_cut(str(exc), 120)})", syntax=True) from None
    except ValueError as exc:  # a value YAML matched but Python cannot build (a date 2024-13-45, a 5000-digit int)
        if "integer string conversion" in str(exc):
            raise YamlInputError(f"{what}: a number of more than 4300 digits; write a shorter one") from None
        raise YamlInputError(f"{what}: cannot read the value ({_cut(str(exc), 120)}); quote it if it is text") from None
    finally:
        if loader is not None:
            loader.dispose()


class _BoundedRepr(reprlib.Repr):
    """``reprlib`` with small limits, mappings in their own order (as the user wrote them), and integers too long
    for ``repr`` shown by their size."""

    def __init__(self) -> None:
        super().__init__()
        self.maxlevel = 3
        self.maxtuple = self.maxlist = self.maxarray = self.maxset = self.maxfrozenset = self.maxdeque = 4
        self.maxdict = 4
        self.maxstring = PREVIEW_CHARS
        self.maxother = PREVIEW_CHARS

    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() > 10_000:  # repr() refuses ints beyond 4300 digits
            return f"<{x.bit_length()}-bit integer>"
        return super().repr_int(x, level)

    def repr_dict(self, x: dict, level: int) -> str:
        if not x:
            return "{}"
        if level <= 0:
            return "{...}"
        pieces = [
            f"{self.repr1(k, level - 1)}: {self.repr1(v, level - 1)}"
            for k, v in itertools.islice(x.items(), self.maxdict)
        ]
        return "{" + ", ".join(pieces + (["..."] if len(x) > self.maxdict else [])) + "}"


_REPR = _BoundedRepr()


def preview(value: Any, limit: int = PREVIEW_CHARS) -> str:
    """``repr(value)`` cut to at most ``limit`` characters, computed without ever expanding a large or deeply
    nested value (containers show their first items, ``...`` for the rest)."""
    try:
        text = _REPR.repr(value)
    except Exception:
        text = f"<{type(value).__name__} object>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


__all__ = ["MAX_DEPTH", "PREVIEW_CHARS", "YamlInputError", "load_yaml", "preview"]
