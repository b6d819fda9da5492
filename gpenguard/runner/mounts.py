"""Job files enter the sandbox from a neutral per-run folder, so no host path is named inside.

A bind mount's source path is visible in the sandbox: the kernel prints it as the mount's root
in /proc/self/mountinfo. A checkpoint store under /home/alice/... or an input under
/cases/2024-117/... would tell the job who runs it and on what. Each read-only file is
therefore linked (or, across file systems, copied) into a private temporary folder under its
sandbox name, and mounted from there; the folder is removed after the run. An input folder
becomes a staged folder of its plain files (the worker does not descend into subfolders).

The writable output folder is a directory and cannot be linked: its source stays the
publisher's staging folder.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from gpenguard.errors import SandboxError
from gpenguard.runner.spec import SandboxSpec

PREFIX = "gpenguard-mnt-"


@contextlib.contextmanager
def neutral_sources(spec: SandboxSpec) -> Iterator[SandboxSpec]:
    """`spec` with every read-only file bind sourced from a private per-run folder."""
    folder = Path(tempfile.mkdtemp(prefix=PREFIX))
    try:
        binds = []
        for bind in spec.binds:
            if bind.read_only:
                name = bind.target.strip("/").replace("/", "-")
                bind = dataclasses.replace(bind, source=_stage(bind.source, folder / name, bind.entries))
            binds.append(bind)
        yield dataclasses.replace(spec, binds=tuple(binds))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _stage(source: str, target: Path, entries: tuple[str, ...] | None = None) -> str:
    """Link the file or folder at `source` (never through a link) to `target`; return target.
    Of a folder, only the plain files named in `entries` (all of them if None)."""
    try:
        fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise SandboxError(f"cannot open a file for the sandbox: {exc.strerror}", path=source) from exc
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            target.mkdir()
            target.chmod(0o755)  # whatever the umask: the sandbox user lists it
            for entry in os.scandir(fd):
                if entry.is_file(follow_symlinks=False) and (entries is None or entry.name in entries):
                    try:
                        child = os.open(entry.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=fd)
                    except OSError as exc:
                        raise SandboxError(f"cannot open a file for the sandbox: {exc.strerror}", path=f"{source}/{entry.name}") from exc
                    try:
                        _link_or_copy(child, target / entry.name)
                    finally:
                        os.close(child)
        elif stat.S_ISREG(mode):
            _link_or_copy(fd, target)
        else:
            raise SandboxError("only plain files and folders are mounted into the sandbox", path=source)
        return str(target)
    finally:
        os.close(fd)


def _link_or_copy(fd: int, target: Path) -> None:
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        return
    parent = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        # The opened inode itself, not whatever the path names by now: linkat() with
        # AT_SYMLINK_FOLLOW on the descriptor's /proc link (a dir fd makes CPython use linkat).
        os.link(f"/proc/self/fd/{fd}", target.name, dst_dir_fd=parent, follow_symlinks=True)
    except OSError:  # another file system, or protected_hardlinks: copy instead
        # A copy carries no special bits (setuid, setgid) and no exec bit.
        with target.open("xb") as out, os.fdopen(os.dup(fd), "rb") as data:
            shutil.copyfileobj(data, out, 2**20)
        target.chmod(0o444)
    finally:
        os.close(parent)
