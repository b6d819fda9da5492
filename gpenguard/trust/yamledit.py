"""Edit YAML as text at the positions PyYAML reports for each node.

Comments, key order and quoting elsewhere in a maintainer's file stay as they were written:
`registry pin` and `registry revoke` change one scalar or add one field, never re-dump the file.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import yaml

from gpenguard.errors import RegistryError


@dataclass(frozen=True)
class Edit:
    start: int
    end: int
    text: str


def scalar_edit(node: yaml.Node, text: str) -> Edit:
    return Edit(node.start_mark.index, node.end_mark.index, text)


def mapping_items(node: yaml.Node, what: str, source: str) -> dict[str, tuple[yaml.Node, yaml.Node]]:
    if not isinstance(node, yaml.MappingNode):
        raise RegistryError(f"{what} is not a mapping", path=source)
    return {str(k.value): (k, v) for k, v in node.value}


def insert_fields(node: yaml.MappingNode, data: str, fields: Sequence[tuple[str, str]]) -> Edit:
    """Add ``key: value`` pairs to a mapping, in its own style (block or flow)."""
    if node.flow_style:
        close = node.end_mark.index - 1  # the closing brace
        text = "".join(f", {k}: {v}" for k, v in fields)
        return Edit(close, close, text)
    first_key = node.value[0][0]
    indent = " " * first_key.start_mark.column
    last_value = node.value[-1][1]
    # Insert after the end of the line holding the last value (keeps a trailing comment there).
    end = data.find("\n", last_value.end_mark.index)
    end = len(data) if end < 0 else end
    text = "".join(f"\n{indent}{k}: {v}" for k, v in fields)
    return Edit(end, end, text)


def apply_edits(data: str, edits: list[Edit]) -> str:
    """Apply non-overlapping edits from the end, so earlier positions stay valid."""
    for e in sorted(edits, key=lambda e: e.start, reverse=True):
        data = data[: e.start] + e.text + data[e.end :]
    return data
