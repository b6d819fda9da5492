"""Which files under a directory the CI gate must judge, and which it may skip.

A repository holds source, configs, READMEs and images next to its checkpoints. The gate scans
every file that *could* be loaded as a model artifact and skips the rest, decided by content
(never by name: a protocol-0 pickle is ASCII text and may be called ``notes.txt``). The probe
errs toward scanning: a file is skipped only when no loader could get an import or a call out
of it, i.e. it carries no archive, array or tensor magic, no zip end record in its tail, and
its first bytes are not a pickle program that reaches an import or a call before it breaks
off. Everything skipped or left out is counted and named, never dropped silently.

Patterns (``--include``/``--exclude``, and ``.gpenguardignore`` files) are gitignore-style and
apply to files found by walking a directory; a file named on the command line is always judged.
An ignore file is repository content: a change to it changes the gate, so review it like CI
configuration (the report names every ignored file that looks like a model artifact).
"""

from __future__ import annotations

import io
import os
import re
import stat
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:
    import pickletools

    from pathspec import GitIgnoreSpec

IGNORE_FILE = ".gpenguardignore"
SKIPPED_DIRS = frozenset({".git"})
"""Directories never descended into by default (version-control metadata, not artifacts)."""

_PROBE_BYTES = 64 * 1024
"""How much of a file's head the pickle probe decodes; a program still valid there is scanned."""
_TAIL_BYTES = 65_557
"""A zip end record lies in the last 22 + 65535 bytes (its comment is at most 64 KiB)."""

_MAGIC = (
    b"PK\x03\x04",  # zip (torch.save, npz, joblib archives)
    b"PK\x05\x06",  # empty zip
    b"PK\x07\x08",  # spanned zip
    b"\x93NUMPY",  # npy
    b"\x1f\x8b",  # gzip (joblib compress=gzip, tar.gz)
    b"BZh",  # bz2 (joblib)
    b"\xfd7zXZ\x00",  # xz (joblib)
    b"\x04\x22\x4d\x18",  # lz4 frame (joblib)
    b"\x89HDF\r\n\x1a\n",  # HDF5 (Keras .h5)
)
# zlib streams (joblib compress=zlib) start 0x78 0x01/0x5e/0x9c/0xda; lzma-alone 0x5d 0x00 0x00.
_ZLIB = re.compile(rb"\x78[\x01\x5e\x9c\xda]|\x5d\x00\x00")

# Opcodes that call something: reaching one (or a clean STOP) means the file is a pickle
# worth judging, whatever it is named. An import alone (GLOBAL, STACK_GLOBAL, EXT*) only
# imports a module by name; a word list whose first line starts with "c" ("cat\ndog\n")
# decodes as one, and a stream that breaks off before any call cannot use what it imported.
_ACTING = frozenset({"INST", "OBJ", "REDUCE", "NEWOBJ", "NEWOBJ_EX", "BUILD", "STACK_GLOBAL"})
# Opcodes that call a method of an object on the stack: `list.append`, `__setitem__`, `add`.
# On an imported object they act without any call opcode (``sys.path.append``, ``os.environ``).
_MUTATING = frozenset({"APPEND", "APPENDS", "SETITEM", "SETITEMS", "ADDITEMS"})
_NUMBER = re.compile(
    rb"[-+]?\s*(0[xX][0-9a-fA-F_]+|0[oObB]?[0-7_]+|[0-9_]+|[0-9_]*\.[0-9_]*([eE][-+]?[0-9]+)?"
    rb"|inf|nan|infinity)L?",
    re.IGNORECASE,
)
_DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


@dataclass(frozen=True)
class Discovery:
    """What a walk found, in input order."""

    files: tuple[str, ...]
    """To scan: every file named, and every possible model artifact under a directory."""
    skipped: tuple[str, ...] = ()
    """Found under a directory, judged by content not to be a model artifact."""
    ignored: tuple[str, ...] = ()
    """Left out by --include/--exclude or an ignore file (not probed)."""
    unopened: tuple[str, ...] = ()
    """Subdirectories not descended into (``recursive=False``, or ``.git``)."""


def could_be_model(path: str | os.PathLike[str], *, local_modules: frozenset[str] = frozenset()) -> bool:
    """Could a loader (torch.load, pickle, numpy, joblib, safetensors) read this as a model?

    True for anything that cannot be read or is not a regular file: the scan reports why.
    `local_modules` are top-level names the scanned tree itself could make importable (its
    ``.py`` files and folders): a pickle importing one of them runs code the same change adds.
    """
    try:
        # O_NONBLOCK: a FIFO must not hang the walk (its scan then reports it)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                return True
            head = f.read(_PROBE_BYTES)
            if not head:
                return False  # an empty file loads as nothing at all
            from gpenguard.formats.tar import header_checksum_ok

            if (
                head.startswith(_MAGIC)
                or _ZLIB.match(head) is not None
                or head[257:262] == b"ustar"
                # tar, V7 too (pre-1.0 torch.save): tarfile's first test only, as a pax or
                # GNU long-name record in the first header may run past the probe window
                or header_checksum_ok(memoryview(head))
                or _is_safetensors(head)
                or _pickle_acts(head, truncated=st.st_size > len(head), local=local_modules)
            ):
                return True
            return _has_zip_end(f, st.st_size)
    except OSError:
        return True


def _has_zip_end(f: BinaryIO, size: int) -> bool:
    """A zip end record near the end whose central directory a zip reader would find.

    torch's reader (miniz) finds the end record from the end of the file, so a zip appended
    to any file loads. The signature alone also occurs in ordinary binaries (compiled Python
    that handles zips), so a candidate counts when its directory offset, taken literally
    (miniz) or shifted by prepended bytes (zipfile), lands on a directory entry, or is zip64.
    """
    start = max(size - _TAIL_BYTES, 0)
    f.seek(start)
    tail = f.read(_TAIL_BYTES)
    at = tail.rfind(b"PK\x05\x06")
    while at >= 0:
        record = tail[at : at + 22]
        if len(record) == 22:
            entries, cd_size, cd_offset = struct.unpack_from("<xxxxxxxxxxHII", record)
            if 0xFFFFFFFF in (cd_size, cd_offset) or entries == 0xFFFF:  # zip64: scan
                return True
            end = start + at  # the directory ends here, or before a zip64 record + locator
            for offset in (cd_offset, end - cd_size, end - 76 - cd_size):
                if 0 <= offset < size:
                    f.seek(offset)
                    if f.read(4) == b"PK\x01\x02":
                        return True
        at = tail.rfind(b"PK\x05\x06", 0, at)
    return False


def _is_safetensors(head: bytes) -> bool:
    if len(head) < 9:
        return False
    n = int.from_bytes(head[:8], "little")
    return 0 < n < 100 * 2**20 and head[8:9] == b"{"


def _pickle_acts(head: bytes, *, truncated: bool, local: frozenset[str] = frozenset()) -> bool:
    """Does the head decode as a pickle program that calls something, or ends cleanly?

    Opcodes are decoded by `pickletools` and their stack and memo effects followed (the
    operands CPython's unpickler would pop, its MARK and memo checks); the walk stops at the
    first opcode the unpickler would refuse. Nothing before that point imported or called
    anything, so such a file cannot act when loaded. A program still valid where the probe
    window ends is judged by a full scan.
    """
    import pickletools  # NOTE: only a probe needs it; `scan FILE` alone must start fast

    stack: list[bool] = []  # True: a MARK
    memo: set[object] = set()
    stream = io.BytesIO(head)
    nxt = 0  # where the next opcode starts
    imported = False
    try:
        for op, arg, _pos in pickletools.genops(stream):
            nxt = stream.tell()
            name = op.name
            if name in ("GLOBAL", "INST"):
                module, _, qual = str(arg).partition(" ")
                if _DOTTED.fullmatch(module) and _importable(module, local):
                    return True  # importing runs the module (``this``, ``antigravity``)
                if not (_DOTTED.fullmatch(module) and _DOTTED.fullmatch(qual)):
                    return False  # find_class would raise: the load stops here
                imported = True
            if name in ("GET", "BINGET", "LONG_BINGET") and arg not in memo:
                return False
            if name in ("PUT", "BINPUT", "LONG_BINPUT"):
                memo.add(arg)
            elif name == "MEMOIZE":
                memo.add(len(memo))
            if not _apply(stack, op):
                return False  # the unpickler would find too few operands or no MARK
            if name in _ACTING or name == "STOP" or (name in _MUTATING and imported):
                # a mutation after an import may call a method of the imported object
                return True
    except (ValueError, UnicodeDecodeError, OverflowError):
        if truncated and nxt >= len(head) - 4096:
            return True  # the window ends here, not necessarily the program
        return _lenient_number(head, nxt) or _raw_import(head, nxt, local)
    return truncated  # the window ended inside a valid program


def _raw_import(head: bytes, at: int, local: frozenset[str] = frozenset()) -> bool:
    """A GLOBAL or INST pickletools refuses (it escape-decodes the names as ASCII) whose module
    CPython would import: it reads the module line as raw UTF-8 and imports before it looks
    up the name, so a name it cannot find still leaves the module run."""
    if head[at : at + 1] not in (b"c", b"i"):
        return False
    line = head[at + 1 :].split(b"\n", 1)
    if len(line) < 2:
        return False
    try:
        module = line[0].decode("utf-8")
    except UnicodeDecodeError:
        return False
    return _DOTTED.fullmatch(module) is not None and _importable(module, local)


def _importable(module: str, local: frozenset[str] = frozenset()) -> bool:
    """Could `find_class` import `module` here, or where the scanned tree is on the path: its
    top-level package is found (not run) or the tree holds a module or folder of that name."""
    import importlib.util
    import sys

    top = module.partition(".")[0]
    if top in local or top in sys.stdlib_module_names or top in sys.builtin_module_names:
        return True
    try:
        return importlib.util.find_spec(top) is not None
    except (ImportError, ValueError):
        return True  # a finder that fails cannot say it is absent


def _lenient_number(head: bytes, at: int) -> bool:
    """An INT, LONG or FLOAT pickletools refuses but CPython's unpickler may read.

    CPython parses these text arguments with ``strtol(..., 0)`` and friends (``0x1f``,
    ``0o7``, spaces): the probe must not call a program broken that the loader runs on.
    """
    if head[at : at + 1] not in (b"I", b"L", b"F"):
        return False  # unknown opcode, unquoted STRING...: CPython stops there too
    line = head[at + 1 :].split(b"\n", 1)[0].strip()
    return _NUMBER.fullmatch(line) is not None


def _apply(stack: list[bool], op: pickletools.OpcodeInfo) -> bool:
    """Follow one opcode's stack effect; False where CPython's unpickler would raise."""
    import pickletools
    before = op.stack_before
    if op.name == "POP":  # pops an object, or a MARK when it is on top
        if not stack:
            return False
        stack.pop()
        return True
    below = len(before)
    if pickletools.markobject in before:
        if True not in stack:
            return False
        while stack.pop() is not True:
            pass
        below = before.index(pickletools.markobject)  # operands under the MARK (APPENDS' list)
    if len(stack) < below:
        return False
    del stack[len(stack) - below :]
    stack.extend(item is pickletools.markobject for item in op.stack_after)
    return True


def discover(
    paths: Sequence[str | os.PathLike[str]],
    *,
    recursive: bool = True,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    ignore_files: bool = True,
) -> Discovery:
    """Files to scan under `paths`; see the module docstring for what is skipped and why.

    Files named directly are always scanned. Under a directory, a file must match an
    `include` pattern (when any are given), match no `exclude` pattern nor a pattern of a
    ``.gpenguardignore`` in the walked directory, and pass `could_be_model`.
    """
    files: list[str] = []
    skipped: list[str] = []
    ignored: list[str] = []
    unopened: list[str] = []
    inc = _spec(include) if include else None
    for raw in paths:
        top = Path(raw)
        if not _is_dir(top):
            files.append(str(top))
            continue
        exc = _spec([*exclude, *(_ignore_lines(top) if ignore_files else [])])
        walked = _walk(top, recursive=recursive)
        local = _local_modules(rel for _found, rel, _is_dir in walked)
        for found, rel, is_dir in walked:
            if is_dir:
                unopened.append(found)
            elif (inc is not None and not inc.match_file(rel)) or exc.match_file(rel):
                ignored.append(found)
            elif could_be_model(found, local_modules=local):
                files.append(found)
            else:
                skipped.append(found)
    return Discovery(tuple(files), tuple(skipped), tuple(ignored), tuple(unopened))


def _local_modules(relative: Iterable[str]) -> frozenset[str]:
    """Top-level names a loader could import from the tree, with any of its folders on the
    path: every folder (a package, or a namespace package) and every Python module file."""
    names: set[str] = set()
    for rel in relative:
        *folders, leaf = PurePosixPath(rel.rstrip("/")).parts or ("",)
        names.update(folders)
        if rel.endswith("/"):
            names.add(leaf)
        else:
            stem, _, suffix = leaf.partition(".")
            if suffix in ("py", "pyc") or suffix.endswith(("so", "pyd")):
                names.add(stem)
    return frozenset(names)


def _walk(top: Path, *, recursive: bool) -> list[tuple[str, str, bool]]:
    """(path, path relative to `top`, is a directory left unopened), sorted per directory.

    Links to directories are not followed (no loops); a directory that cannot be listed is
    returned as a file, so its scan reports the error instead of it vanishing.
    """
    out: list[tuple[str, str, bool]] = []
    stack = [(top, "")]
    while stack:
        directory, prefix = stack.pop()
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError:
            out.append((str(directory), prefix or ".", False))
            continue
        subdirs: list[tuple[Path, str]] = []
        for entry in entries:
            rel = f"{prefix}{entry.name}"
            try:
                is_dir = entry.is_dir(follow_symlinks=False)
            except OSError:
                is_dir = False
            if not is_dir and entry.is_symlink() and _is_dir(Path(entry.path)):
                out.append((f"{entry.path}/", f"{rel}/", True))  # a link to a directory: not followed
            elif not is_dir:
                out.append((entry.path, rel, False))
            elif recursive and entry.name not in SKIPPED_DIRS:
                subdirs.append((Path(entry.path), f"{rel}/"))
            else:
                out.append((f"{entry.path}/", f"{rel}/", True))
        stack.extend(reversed(subdirs))
    return out


def _spec(patterns: Sequence[str]) -> GitIgnoreSpec:
    from pathspec import GitIgnoreSpec  # NOTE: only a directory walk pays for it

    return GitIgnoreSpec.from_lines(patterns)


def _ignore_lines(top: Path) -> list[str]:
    try:
        return (top / IGNORE_FILE).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as exc:
        from gpenguard.errors import UsageError

        raise UsageError(f"cannot read the ignore file: {exc}", path=top / IGNORE_FILE) from exc


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:
        return False
