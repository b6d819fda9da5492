"""The container model shared by every stage, and format dispatch by content.

OWNER: formats/scan helper. The dataclasses below are a contract other stages code against;
extend them compatibly (new optional fields are fine, renames are not).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from gpenguard.findings import Finding
from gpenguard.formats.source import Source
from gpenguard.pickling.walker import WalkLimits


class Format(StrEnum):
    """Kinds of file gpenguard recognises, by content."""

    TORCH_ZIP = "torch-zip"
    TORCH_LEGACY = "torch-legacy"
    TORCH_TAR = "torch-tar"
    PICKLE = "pickle"
    NUMPY = "npy"
    NUMPY_ZIP = "npz"
    ZIP = "zip"
    TAR = "tar"
    SAFETENSORS = "safetensors"


@dataclass(frozen=True)
class Limits:
    """Bounds that keep any input, however hostile, within bounded time and memory."""

    max_file_bytes: int = 64 * 2**30
    max_pickle_bytes: int = 1 * 2**30
    max_opcodes: int = 50_000_000
    max_memo: int = 10_000_000
    max_stack_depth: int = 10_000
    max_members: int = 100_000
    max_nesting: int = 4
    max_uncompressed_bytes: int = 64 * 2**30
    max_compression_ratio: float = 200.0
    max_safetensors_header: int = 100 * 2**20
    max_stack_items: int = 1_000_000
    """Values on one pickle stack frame (protocol 0 lists push every item before LIST)."""

    def walk_limits(self) -> WalkLimits:
        """The bounds that apply to one pickle walk."""
        return WalkLimits(self.max_opcodes, self.max_memo, self.max_stack_depth, self.max_stack_items)


@dataclass(frozen=True)
class PickleStream:
    """One pickle program inside a container."""

    member: str | None
    """Archive member holding it (None for a bare file or legacy stream)."""
    offset: int
    """Byte offset of the first opcode inside `member` (or inside the file)."""
    data: memoryview
    index: int = 0
    """Position in a multi-pickle stream (legacy torch format: magic, protocol, sys_info, ...)."""
    record: memoryview | None = None
    """The bytes a loader reading this pickle sees: from its first opcode to the end of its
    member (or file). None: just `data`. The CPython cross-check feeds these."""


@dataclass(frozen=True)
class Container:
    """What a file is and where its interpretable parts lie; nothing here was executed."""

    path: str
    format: Format
    pickles: tuple[PickleStream, ...] = ()
    storages: Mapping[str, memoryview] = field(default_factory=dict)
    """torch zip: storage key (the name under ``<root>/data/``) -> raw little-endian bytes."""
    legacy_tail: memoryview | None = None
    """legacy torch stream: the bytes after the storage-key list (numel-prefixed storages)."""
    findings: tuple[Finding, ...] = ()
    children: tuple[Container, ...] = ()
    member: str | None = None
    """For a nested container: its member path inside the parent."""
    root: str | None = None
    """torch zip: the archive's root folder name (``archive``, ``GPEN-BFR-2048``, ...)."""
    main_pickle: str | None = None
    """torch zip: the member torch reads as ``data.pkl`` (found ignoring case, as torch does)."""
    byteorder: str | None = None
    """torch zip: the ``byteorder`` record (``little``/``big``); None when absent (little)."""


def read_container(source: Source, *, limits: Limits | None = None) -> Container:
    """Identify `source` by content and locate its pickles and storages.

    Raises `FormatError` (naming the file) when the bytes are no format we know, and
    `LimitExceeded` when a bound is hit.
    """
    from gpenguard.formats import detect

    return detect.read_top(source, limits or Limits())
