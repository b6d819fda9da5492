"""Writing outputs so that nothing is lost or half-written: a temp file, fsync, one rename.

Every file gpenguard writes (reports, signatures, registries, state, images) goes through
`atomic_output`, so a failure at any point, an interrupt included, leaves the old file (or no
file) in place and no temp file behind.
"""

from __future__ import annotations

import errno
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


def read_regular(path: str | os.PathLike[str], limit: int | None = None) -> bytes:
    """The bytes of a regular file, refusing FIFOs, devices and more than `limit` bytes.

    Opened with O_NONBLOCK so a FIFO cannot hang the caller waiting for a writer. Failures are
    `OSError`s (``strerror`` says why), for each caller to name its file in its own terms.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    with os.fdopen(fd, "rb") as handle:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(errno.EISDIR, "is a directory", str(path))
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        data = handle.read() if limit is None else handle.read(limit + 1)
    if limit is not None and len(data) > limit:
        raise OSError(errno.EFBIG, f"larger than {limit} bytes", str(path))
    return data
