"""YAML for configuration gpenguard trusts: safe types only, no duplicate keys, no aliases.

PyYAML's safe loader silently keeps the *last* of two equal keys, so a reviewer reading the
first ``require_signed_registry: true`` could approve a file whose second line says ``false``.
This loader refuses that, and non-string keys; its `StrictLoader` (shared with the registry) refuses
anchors, aliases, explicit tags, deep nesting, too many values and YAML 1.1's surprising
number forms, and remembers the line of every key so that
validation errors can name ``file:line``.
"""

from __future__ import annotations

import re
from typing import Any

import yaml
from yaml.nodes import MappingNode, ScalarNode

MAX_DEPTH = 32
"""Deepest nesting accepted; configuration files are shallow, hostile ones are not."""
MAX_NODES = 100_000
"""Most values in one document: some 25 per registry entry, so thousands of entries; a hostile
file of tiny values (``- a``) is refused before building a tree for every one of them."""

_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_PLAIN_NUMBER = {
    _INT: re.compile(r"[-+]?(0|[1-9][0-9]*)"),
    _FLOAT: re.compile(r"[-+]?([0-9]+\.[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?|[-+]?\.(inf|Inf|INF)|\.(nan|NaN|NAN)"),
}
"""The number forms a reader reads the same in every YAML version. YAML 1.1 (PyYAML) also
takes ``010`` as octal 8, ``1:20`` as sexagesimal 80, ``0x10``, ``0b10`` and ``1_000``: a
reviewer reading ``version: 010`` would approve something other than what is loaded. Other forms
are read as text, so a field that wants a number refuses them."""


class StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses anchors, aliases and deep nesting, naming the line.

    Aliases let one node appear in many places (and "billion laughs" expansion); a registry has
    no need for them. Duplicate keys are refused while the composed tree is walked
    (`_Doc.mapping`), where the line of both occurrences is known.
    """

    depth = 0
    nodes = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise yaml.constructor.ConstructorError(
                None, None, "YAML anchors and aliases are not allowed", event.start_mark
            )
        if self.depth >= MAX_DEPTH:
            # PyYAML composes recursively: "[[[[..." would otherwise end in a RecursionError.
            raise yaml.constructor.ConstructorError(
                None, None, f"nesting deeper than {MAX_DEPTH} levels", event.start_mark
            )
        tag = getattr(event, "tag", None)
        if tag is not None and tag != "!":
            # `!!int 010` would bring back the forms refused below; `!!python/...` is refused anyway.
            raise yaml.constructor.ConstructorError(
                None, None, f"explicit YAML tags ({tag}) are not allowed", event.start_mark
            )
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise yaml.constructor.ConstructorError(
                None, None, f"more than {MAX_NODES} values in one document", event.start_mark
            )
        self.depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def compose_scalar_node(self, anchor: Any) -> ScalarNode:
        """Read a YAML 1.1-only number form as the text it is written as, never as a number.

        So ``version: 010`` is the string ``"010"``, which every integer field refuses with its
        line, while a digest or version that is text anyway (``0123…``) stays as written.
        """
        node = super().compose_scalar_node(anchor)
        plain = _PLAIN_NUMBER.get(node.tag)
        if plain is not None and not plain.fullmatch(node.value):
            node.tag = "tag:yaml.org,2002:str"
        return node


class LinedMap(dict[str, Any]):
    """A mapping that knows the 1-based line where it and each of its keys start."""

    line: int = 0
    key_lines: dict[str, int]

    def line_of(self, key: str) -> int:
        """Line of `key` (or of the mapping itself when the key is absent)."""
        return self.key_lines.get(key, self.line)


class StrictYAMLError(ValueError):
    """A document is not acceptable; `line` is 1-based, or None when unknown."""

    def __init__(self, message: str, line: int | None):
        self.message = message
        self.line = line
        super().__init__(f"line {line}: {message}" if line else message)


class _Loader(StrictLoader):
    """`StrictLoader` plus line-aware mappings."""


def _construct_map(loader: _Loader, node: MappingNode) -> LinedMap:
    data = LinedMap()
    data.line = node.start_mark.line + 1
    data.key_lines = {}
    for key_node, value_node in node.value:
        line = key_node.start_mark.line + 1
        if key_node.tag == "tag:yaml.org,2002:merge":
            raise StrictYAMLError("merge keys (<<) are not allowed", line)
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, str):
            raise StrictYAMLError(f"keys must be strings, got {key!r}", line)
        if key in data:
            raise StrictYAMLError(
                f"duplicate key {key!r} (first on line {data.key_lines[key]})", line
            )
        data[key] = loader.construct_object(value_node, deep=True)
        data.key_lines[key] = line
    return data


_Loader.add_constructor("tag:yaml.org,2002:map", _construct_map)


def load(text: str | bytes) -> Any:
    """Parse one YAML document strictly; raises `StrictYAMLError` naming the line."""
    try:
        return yaml.load(text, Loader=_Loader)  # _Loader derives from SafeLoader
    except StrictYAMLError:
        raise
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        msg = " ".join(p for p in (exc.context, exc.problem) if p) or "invalid YAML"
        raise StrictYAMLError(msg, mark.line + 1 if mark else None) from None
    except yaml.YAMLError as exc:
        raise StrictYAMLError(f"invalid YAML: {exc}", None) from None
