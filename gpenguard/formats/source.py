"""The one read of an input file that every stage shares (DESIGN invariant 2).

A `Source` maps the file read-only once; scanning, hashing and conversion all look at that
same mapping, so a file swapped on disk after it was opened cannot change what was checked.
"""

from __future__ import annotations

import contextlib
import gc
import mmap
import os
import stat
from pathlib import Path
from types import TracebackType

from gpenguard.errors import InputError


class Source:
    """A read-only view over the bytes of one input, from a file (mmapped) or from memory."""

    def __init__(self, name: str, data: bytes | mmap.mmap | memoryview, *, _fd: int | None = None):
        self.name = name
        self._data = data
        self._fd = _fd
        self.buf = memoryview(data)
        self.size = len(self.buf)

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> Source:
        """Map `path` read-only; errors name the file and the reason."""
        p = Path(path)
        try:
            # O_NONBLOCK: opening a FIFO would otherwise wait for a writer forever; the fstat
            # below then refuses it. It changes nothing for a regular file.
            fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
        except FileNotFoundError:
            raise InputError("no such file", path=p) from None
        except IsADirectoryError:
            raise InputError("is a directory, not a file", path=p) from None
        except PermissionError:
            raise InputError("permission denied", path=p) from None
        except OSError as exc:
            raise InputError(f"cannot open: {exc.strerror}", path=p) from exc
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise InputError("not a regular file", path=p)
            if st.st_size == 0:
                os.close(fd)
                return cls(str(p), b"")
            data = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
        except InputError:
            os.close(fd)
            raise
        except OSError as exc:
            os.close(fd)
            raise InputError(f"cannot read: {exc.strerror}", path=p) from exc
        return cls(str(p), data, _fd=fd)

    @classmethod
    def from_bytes(cls, data: bytes, name: str = "<memory>") -> Source:
        """Wrap bytes already in memory (nested archive members, tests)."""
        return cls(name, bytes(data))

    def fileno(self) -> int | None:
        """The descriptor of the mapped file (None for in-memory bytes), for identity checks."""
        return self._fd

    def advise(self, start: int, length: int, *, need: bool) -> None:
        """Hint the kernel about a byte range of the mapping: read it ahead, or drop its pages.

        Dropping is safe on this read-only shared mapping: a later touch re-reads the page
        cache. It keeps peak memory flat while a large file is streamed once (hashing).
        """
        if not isinstance(self._data, mmap.mmap) or length <= 0 or start >= self.size:
            return
        page = start - start % mmap.PAGESIZE
        advice = mmap.MADV_WILLNEED if need else mmap.MADV_DONTNEED
        with contextlib.suppress(OSError, ValueError):
            self._data.madvise(advice, page, min(length + start - page, self.size - page))

    def close(self) -> None:
        """Release the mapping; views taken from `buf` must not be used afterwards.

        Views still held elsewhere (a container kept past the ``with`` block) keep the
        mapping alive until they are dropped; closing then only releases what it can.
        """
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self.buf.release()
        if isinstance(self._data, mmap.mmap):
            try:
                self._data.close()
            except BufferError:
                gc.collect()
                with contextlib.suppress(BufferError):
                    self._data.close()

    def __enter__(self) -> Source:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
