"""Publishing a sandboxed job's results: the host names, decodes, re-encodes and writes them.

Nothing the job chose reaches the user's folder:

- **Names** are decided on the host from the inputs (`output_names`); the job's one output is a
  tar archive whose member names (``000003.png``) only say which listed input a result is for.
- **Size** is bounded while the job runs: the archive is a single host file bound at
  ``/out/results.tar`` (the rest of the sandbox is read-only or a sized tmpfs), and the
  backends set RLIMIT_FSIZE, so no file the job writes grows past the budget derived from the
  inputs (a 20 GiB sparse file, 1 GiB of junk or 100,000 files cannot be made). The host reads
  the archive through a pre-opened descriptor, with every read capped.
- **Content**: every result is decoded on the host by the PNG decoder only, with its
  dimensions fixed by the input and the mode, then its pixels are encoded again by the host
  (no chunk of the job's file is copied: no text, EXIF or other metadata; the colour profile
  comes from the input file itself).
- **Files** are written by the host with the caller's umask (no setuid, setgid, sticky or
  0777), fsynced in a private staging folder, then linked into OUTDIR, which never replaces an
  existing file unless the caller asked to (``--overwrite``).

Any sign that the job misbehaved (an unexpected entry, a member that is not a plain file, a
result that is not a PNG of the expected size, more bytes than the budget) refuses the whole
run: `SandboxError`, and nothing from it is published. An image the worker reported as failed
is one `ImageFailure`; the others are published.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import shutil
import stat
import tarfile
import tempfile
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from PIL import Image

from gpenguard.decoders import ImageHeader
from gpenguard.errors import InputError, SandboxError
from gpenguard.runner.worker import result_member

RESULTS_NAME = "results.tar"
JOB_NAME = "job.json"
RESULT_MODES = ("RGB", "RGBA", "L", "LA")
"""What the worker writes (`SplitImage.merge` keeps grayscale and alpha)."""
FSIZE_FLOOR = 64 * 2**20
"""RLIMIT_FSIZE never goes below this: the worker's own temp files (caches under /tmp) obey it too."""
_MEMBER_OVERHEAD = 1024
"""A tar header block and the padding after a member's data."""
_ARCHIVE_OVERHEAD = 64 * 1024
"""The end-of-archive blocks and tarfile's record padding, with room to spare."""
_REASON_CHARS = 300


@dataclass(frozen=True, slots=True)
class PlannedImage:
    """One input the host listed and accepted, and everything the host expects back for it."""

    index: int
    source: Path
    """The host path: what messages name."""
    sandbox_path: str
    """Where the worker reads it."""
    target: Path
    """``OUTDIR/<name>.png``, named by the host (`output_names`)."""
    sizes: tuple[tuple[int, int], ...]
    """The (width, height) a result may have: fixed by the input and the mode."""
    icc_profile: bytes | None = None
    """The input's own colour profile, carried to the output by the host."""

    @property
    def member(self) -> str:
        return result_member(self.index)

    @property
    def max_bytes(self) -> int:
        """The largest PNG the result can be: every pixel as 8-bit RGBA, stored uncompressed.

        From the result's own rows (a filter byte each), never the longer side squared: a
        1,000,000 x 1 strip would otherwise let the job write terabytes."""
        raw = max((4 * width + 1) * height for width, height in self.sizes)
        return raw + raw // 256 + len(self.icc_profile or b"") + 64 * 1024


@dataclass(frozen=True, slots=True)
class ImageFailure:
    """An input that was not restored, and why (the reason never names an in-sandbox path)."""

    source: Path
    reason: str

    def __str__(self) -> str:
        return f"{self.source}: {self.reason}"


def expected_sizes(header: ImageHeader, *, mode: str, size: int) -> tuple[tuple[int, int], ...]:
    """Result sizes for an input: the model size for aligned crops; the photo itself (upright or
    as stored, whichever way its EXIF turns it) for full images."""
    if mode == "aligned":
        return ((size, size),)
    upright = (header.height, header.width) if header.turned else (header.width, header.height)
    stored = (header.width, header.height)
    return (upright,) if upright == stored else (upright, stored)


def output_names(sources: Sequence[Path]) -> list[str]:
    """``<stem>.png`` per input; where two inputs share a stem (``a.jpg``, ``a.png``), the first
    keeps it and the next get ``a-2.png``, ``a-3.png``..., skipping every name already taken.

    Names are compared case-insensitively, so two results never meet on a case-folding disk;
    the rule depends only on the list, so the same inputs always get the same names.
    """
    natural = [f"{Path(s.name).stem or 'image'}.png" for s in sources]
    names: list[str | None] = [None] * len(natural)
    taken: set[str] = set()
    for i, name in enumerate(natural):
        if name.casefold() not in taken:
            names[i] = name
            taken.add(name.casefold())
    for i, name in enumerate(natural):
        if names[i] is None:
            stem, n = name[: -len(".png")], 2
            while f"{stem}-{n}.png".casefold() in taken:
                n += 1
            names[i] = f"{stem}-{n}.png"
            taken.add(f"{stem}-{n}.png".casefold())
    return [name for name in names if name is not None]


def results_budget(plan: Iterable[PlannedImage]) -> int:
    """The most bytes an honest worker's archive can hold for this plan."""
    return _ARCHIVE_OVERHEAD + sum(p.max_bytes + _MEMBER_OVERHEAD for p in plan)


def check_targets(plan: Sequence[PlannedImage], *, overwrite: bool) -> None:
    """Refuse up front what publishing would refuse: a target that exists (unless `overwrite`),
    or one that is a link, folder or anything but a plain file (always)."""
    existing: list[str] = []
    for planned in plan:
        try:
            info = planned.target.lstat()
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise InputError(f"cannot check the output file: {exc.strerror}", path=planned.target) from exc
        if not stat.S_ISREG(info.st_mode):
            raise InputError("the result's name is taken by something that is not a plain file", path=planned.target)
        existing.append(planned.target.name)
    if existing and not overwrite:
        shown = ", ".join(existing[:5]) + (f" and {len(existing) - 5} more" if len(existing) > 5 else "")
        raise InputError(
            f"the output folder already has {shown}; restore never replaces a file unless asked",
            path=plan[0].target.parent,
            hint="pass --overwrite to replace them, or choose another --output folder",
        )


class Staging:
    """A private folder in OUTDIR for one run: the job's description, its results archive, and
    the host's re-encoded images until they are published. Removed on exit, whatever it holds."""

    def __init__(self, output_dir: Path, *, results_owner: tuple[int, int] | None = None) -> None:
        self.output_dir = output_dir
        self.results_owner = results_owner
        self.path = Path(tempfile.mkdtemp(prefix=".gpenguard-run-", dir=output_dir)).resolve()
        self._fd = -1
        try:
            self.results = self.path / RESULTS_NAME
            fd = os.open(self.results, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            os.close(fd)
            if results_owner is not None:
                os.chown(self.results, *results_owner)
            # Opened now: the job may chmod the file to 0000; this descriptor still reads it.
            self._fd = os.open(self.results, os.O_RDONLY | os.O_NOFOLLOW)
            self.clean = self.path / "clean"
            self.clean.mkdir(mode=0o700)
            self.job = self.path / JOB_NAME
        except OSError as exc:
            self.close()
            raise SandboxError(f"cannot prepare the staging folder: {exc.strerror}", path=self.path) from exc

    def __enter__(self) -> Staging:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        try:
            self.close()
        except SandboxError:
            if kind is None:
                raise

    def write_job(self, text: str) -> Path:
        """The worker's instructions, bound read-only (too long for a command line with many photos)."""
        fd = os.open(self.job, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        self.job.chmod(0o644)  # readable by the sandbox user whatever the caller's umask
        return self.job

    def collect(self, plan: Sequence[PlannedImage], *, budget: int) -> dict[int, Path]:
        """Check every result the job left and re-encode it into the staging folder.

        Returns index -> the host's own PNG. Raises `SandboxError` (nothing to publish) if the
        archive shows the job did anything an honest worker does not.
        """
        size = os.fstat(self._fd).st_size
        if size > budget:
            raise SandboxError(
                f"the sandboxed job wrote {size} bytes of results, more than its {budget}-byte budget; nothing published"
            )
        if size == 0:
            return {}
        by_member = {p.member: p for p in plan}
        largest = max((p.max_bytes for p in plan), default=0)
        reader = _CappedReader(self._fd, size, max_read=largest)
        done: dict[int, Path] = {}
        try:
            # Members are refused past the plan's count (unexpected or repeated), so the headers
            # tarfile keeps stay few.
            with tarfile.open(fileobj=reader, mode="r:") as archive:
                while (member := archive.next()) is not None:
                    planned = by_member.get(member.name)
                    if planned is None or planned.index in done:
                        raise _refuse(f"an unexpected entry {member.name!r} in its results")
                    if not member.isreg() or member.issparse():
                        raise _refuse(f"a {_kind(member)} among its results", planned)
                    if member.size > planned.max_bytes:
                        raise _refuse(f"a {member.size}-byte result, more than a PNG of that size can be", planned)
                    extracted = archive.extractfile(member)
                    assert extracted is not None  # a regular member always has data
                    data = extracted.read(member.size)
                    done[planned.index] = self._reencode(data, planned)
                # tarfile ends quietly at an invalid header past the first member: everything
                # after the last member must be the end-of-archive zeros, or it was junk.
                end = archive.offset
            if not _zeros(self._fd, end, size):
                raise tarfile.ReadError(f"junk after the last member, at byte {end}")
        except (tarfile.TarError, _ReadTooLarge) as exc:
            raise _refuse(f"results that are not a well-formed archive ({exc})") from exc
        return done

    def _reencode(self, data: bytes, planned: PlannedImage) -> Path:
        pixels = decode_result(data, planned)
        target = self.clean / planned.member
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666)  # less the umask
        with os.fdopen(fd, "wb") as handle:
            options: dict[str, object] = {}
            if planned.icc_profile is not None:
                options["icc_profile"] = planned.icc_profile
            pixels.save(handle, format="PNG", **options)
            handle.flush()
            os.fsync(handle.fileno())
        return target

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        try:
            remove_tree(self.path)
        except OSError as exc:
            raise SandboxError(f"cannot remove the staging folder: {exc.strerror or exc}", path=self.path) from exc


def decode_result(data: bytes, planned: PlannedImage) -> Image.Image:
    """The result's pixels, decoded by the PNG decoder alone within the expected size, as a new
    image that carries none of the file's chunks. `SandboxError` if it is anything else."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=["PNG"]) as image:
                if image.format != "PNG" or getattr(image, "is_animated", False):
                    raise _refuse("a result that is not a single PNG image", planned)
                if image.size not in planned.sizes:
                    want = " or ".join(f"{w}x{h}" for w, h in planned.sizes)
                    raise _refuse(f"a {image.size[0]}x{image.size[1]} result where {want} was due", planned)
                if image.mode not in RESULT_MODES:
                    raise _refuse(f"a result in mode {image.mode!r}", planned)
                image.load()
                return Image.frombytes(image.mode, image.size, image.tobytes())
    except SandboxError:
        raise
    except Exception as exc:  # Pillow's decoders raise a wide range on hostile bytes
        raise _refuse(f"a result that is not a readable PNG ({type(exc).__name__}: {exc})", planned) from exc


def publish(
    staged: Mapping[int, Path], plan: Sequence[PlannedImage], *, overwrite: bool, failed: Mapping[int, str]
) -> tuple[tuple[Path, ...], tuple[ImageFailure, ...]]:
    """Move each re-encoded result to its host-chosen name; say why the others are missing.

    A target is never replaced unless `overwrite`, and never when it is not a plain file (a
    link, a folder), even if it appeared after the early check.
    """
    outputs: list[Path] = []
    failures: list[ImageFailure] = []
    owner = None
    if os.geteuid() == 0:  # results belong to whoever owns OUTDIR, as a copy by them would
        info = plan[0].target.parent.stat() if plan else None
        owner = (info.st_uid, info.st_gid) if info is not None else None
    for planned in plan:
        clean = staged.get(planned.index)
        if clean is None:
            reason = failed.get(planned.index) or "the sandbox returned no result for it"
            failures.append(ImageFailure(planned.source, reason))
            continue
        try:
            if owner is not None:
                os.chown(clean, *owner)
            _place(clean, planned.target, overwrite=overwrite)
        except InputError as exc:
            failures.append(ImageFailure(planned.source, f"{planned.target}: {exc.message}"))
            continue
        except OSError as exc:
            failures.append(ImageFailure(planned.source, f"cannot write {planned.target}: {exc.strerror or exc}"))
            continue
        outputs.append(planned.target)
    return tuple(outputs), tuple(failures)


def _place(clean: Path, target: Path, *, overwrite: bool) -> None:
    try:
        info = target.lstat()
    except FileNotFoundError:
        info = None
    if info is not None and not stat.S_ISREG(info.st_mode):
        raise InputError("not replaced: it is not a plain file (a link or a folder)")
    if overwrite:
        clean.replace(target)
        return
    try:
        os.link(clean, target)  # fails if the name exists: never a replacement
    except FileExistsError:
        raise InputError("not replaced: the file appeared during the run (--overwrite replaces it)") from None
    except OSError as exc:
        if exc.errno not in {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK}:
            raise
        # A file system without hard links: claim the name first, then rename over our claim.
        try:
            os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
        except FileExistsError:
            raise InputError("not replaced: the file appeared during the run (--overwrite replaces it)") from None
        clean.replace(target)
        return
    clean.unlink()


def remove_tree(root: Path) -> None:
    """Remove `root` whatever a job left in it: every folder is made ``u+rwx`` first (links are
    never followed: only what `lstat` says is a folder is changed), then `shutil.rmtree`, which
    unlinks links, FIFOs, devices and hard links without opening them."""
    stack = [str(root)]
    while stack:
        path = stack.pop()
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            continue
        if not stat.S_ISDIR(info.st_mode):
            continue
        if info.st_mode & 0o700 != 0o700:
            Path(path).chmod(stat.S_IMODE(info.st_mode) | 0o700)
        with os.scandir(path) as entries:
            stack.extend(e.path for e in entries if e.is_dir(follow_symlinks=False))
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(root)


def failure_reason(text: object) -> str:
    """A worker's reason for a failed image, as plain text of bounded length (it came from the job)."""
    cleaned = "".join(ch if ch.isprintable() else " " for ch in str(text))
    return cleaned[:_REASON_CHARS] + ("…" if len(cleaned) > _REASON_CHARS else "")


def _zeros(fd: int, start: int, end: int) -> bool:
    while start < end:
        chunk = os.pread(fd, min(2**20, end - start), start)
        if not chunk:
            return True
        if chunk.count(0) != len(chunk):
            return False
        start += len(chunk)
    return True


def _refuse(what: str, planned: PlannedImage | None = None) -> SandboxError:
    about = f" (for {planned.source})" if planned is not None else ""
    return SandboxError(f"the sandboxed job left {what}{about}; nothing from it is published")


def _kind(member: tarfile.TarInfo) -> str:
    if member.issym() or member.islnk():
        return "link"
    if member.isdir():
        return "folder"
    if member.issparse():
        return "sparse file"
    if member.isdev():
        return "device or FIFO"
    return "non-file entry"


class _ReadTooLarge(Exception):
    pass


class _CappedReader(io.RawIOBase):
    """A seekable view of the results file in which no single read may ask for more than
    `max_read` bytes: tarfile's reads of headers (pax, long names) stay within one result's size."""

    def __init__(self, fd: int, size: int, *, max_read: int) -> None:
        super().__init__()
        self._fd = fd
        self._size = size
        self._pos = 0
        self._max = max(max_read, tarfile.RECORDSIZE)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            size = self._size - self._pos
        if size > self._max:
            raise _ReadTooLarge(f"a {size}-byte header or entry")
        data = os.pread(self._fd, min(size, max(0, self._size - self._pos)), self._pos)
        self._pos += len(data)
        return data

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)
