"""Writing outputs so that nothing is lost or half-written: a temp file, fsync, one rename.

Every file gpenguard writes (reports, signatures, registries, state, images) goes through
`atomic_output`, so a failure at any point, an interrupt included, leaves the old file (or no
file) in place and no temp file behind.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from gpenguard.errors import InputError


@contextmanager
def atomic_output(path: str | os.PathLike[str], *, mode: int | None = None) -> Iterator[BinaryIO]:
    """Yield a binary handle whose bytes replace `path` in one step when the block ends well.

    `mode` defaults to what a plain ``open`` would give (0o666 less the umask; mkstemp's 0o600
    would hide a shared report). A link, device or FIFO already at `path` is written through
    instead: renaming over it would replace the node itself (as root, ``-o /dev/null`` would
    destroy ``/dev/null``). OS errors become `InputError` naming the file.
    """
    target = Path(path)
    if _exists_not_regular(target):
        try:
            with target.open("wb") as through:
                yield through
        except OSError as exc:
            raise InputError(f"cannot write: {exc.strerror or exc}", path=target) from exc
        return
    try:
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as exc:
        raise InputError(f"cannot write: {exc.strerror or exc}", path=target) from exc
    temp = Path(tmp)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        temp.chmod(mode if mode is not None else 0o666 & ~_umask())
        temp.replace(target)
    except OSError as exc:
        temp.unlink(missing_ok=True)
        raise InputError(f"cannot write: {exc.strerror or exc}", path=target) from exc
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def write_atomic(path: str | os.PathLike[str], data: bytes, *, mode: int | None = None) -> None:
    """Replace `path` with `data` in one step (see `atomic_output`)."""
    with atomic_output(path, mode=mode) as handle:
        handle.write(data)


def _exists_not_regular(path: Path) -> bool:
    """Whether `path` itself (links not followed) exists and is not a regular file."""
    try:
        mode = path.lstat().st_mode
    except OSError:
        return False
    return not stat.S_ISREG(mode)


def _umask() -> int:
    current = os.umask(0o022)
    os.umask(current)
    return current
