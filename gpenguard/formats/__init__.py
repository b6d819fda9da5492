"""Container readers: what kind of file is this, and where are its pickles and storages?

Formats are detected by content (magic bytes and structure), never by extension. Reading a
container never executes anything: it only locates byte ranges. Interpreting pickles is the
scanner's job (`gpenguard.scan`) or the weights-only reader's (`gpenguard.formats.weights`).

Contract used by scan/, trust/ (fingerprint) and convert.py:

    with Source.open(path) as src:
        box = read_container(src, limits=Limits())
        box.format        # Format
        box.pickles       # every pickle stream, with member name and byte offset
        box.storages      # torch zip: storage key -> raw bytes (zero-copy where stored)
        box.legacy_tail   # legacy torch stream: bytes after the last pickle (storage records)
        box.findings      # container-level findings (zip hardening, polyglots, trailing data)
        box.children      # nested containers (archives inside archives)
"""

from __future__ import annotations

from gpenguard.formats.container import (
    Container,
    Format,
    Limits,
    PickleStream,
    read_container,
)
from gpenguard.formats.source import Source

__all__ = ["Container", "Format", "Limits", "PickleStream", "Source", "read_container"]
