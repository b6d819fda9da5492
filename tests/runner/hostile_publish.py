# ruff: noqa: PTH101, PTH102, PTH118, PTH120, PTH123, PTH202, SIM115  (stdlib-only payload; os calls mirror the syscalls tried)
"""A hostile job aimed at the publisher, run INSIDE the sandbox in place of the worker.

Sent as ``python -c <source> <attack> --job-file /in/job.json``; imports only the standard
library. It reads the job the host wrote, then does what its attack says to the one writable
file (/out/results.tar) and to anything else it can reach, and prints one JSON line
``{"event": "attack", ...}`` saying what the kernel let it do. The host side then checks the
user's folder for itself.
"""

import errno
import io
import json
import os
import struct
import sys
import tarfile
import zlib

ATTACK = sys.argv[1]
JOB = json.loads(open(sys.argv[sys.argv.index("--job-file") + 1]).read())
RESULTS = JOB["results"]
REPORT = {"event": "attack", "attack": ATTACK}


def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(width, height, extra=()):
    """An RGB PNG the host's decoder accepts, with any extra chunks before IDAT."""
    rows = b"".join(b"\x00" + bytes([200, 30, 90]) * width for _ in range(height))
    return b"".join(
        [b"\x89PNG\r\n\x1a\n", chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))]
        + [chunk(kind, data) for kind, data in extra]
        + [chunk(b"IDAT", zlib.compress(rows)), chunk(b"IEND", b"")]
    )


def archive(members, mode=0o644):
    """(name, bytes) pairs as a tar, every member with `mode`."""
    with open(RESULTS, "wb") as handle, tarfile.open(fileobj=handle, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = mode
            tar.addfile(info, io.BytesIO(data))


def attempt(name, func):
    try:
        func()
        REPORT[name] = "ok"
    except OSError as exc:
        REPORT[name] = errno.errorcode.get(exc.errno, str(exc.errno))


def fill(total):
    written = 0
    with open(RESULTS, "wb") as handle:
        block = b"\xff" * (1 << 20)
        try:
            while written < total:
                written += handle.write(block)
                handle.flush()
        except OSError as exc:
            REPORT["stopped"] = errno.errorcode.get(exc.errno, str(exc.errno))
    REPORT["written"] = os.path.getsize(RESULTS)


GOOD = png(8, 8)

if ATTACK == "names":
    # Results under names of the user's choosing: the photo next to OUTDIR, and paths out of it.
    archive([("face.png", GOOD), ("../face.png", GOOD), ("/tmp/face.png", GOOD)])
elif ATTACK == "non_png":
    archive([("000000.png", b"GIF89a" + b"\x00" * 64)])
elif ATTACK == "wrong_size":
    archive([("000000.png", png(4000, 1))])
elif ATTACK == "sparse":
    attempt("truncate_20GiB", lambda: os.truncate(RESULTS, 20 << 30))
    def seek_write():
        with open(RESULTS, "r+b") as handle:
            handle.seek((20 << 30) - 1)
            handle.write(b"\x00")
    attempt("seek_write_20GiB", seek_write)
    REPORT["size"] = os.path.getsize(RESULTS)
elif ATTACK == "fill":
    fill(1 << 30)
elif ATTACK == "many_files":
    def create_files():
        for i in range(100_000):
            with open(os.path.join(os.path.dirname(RESULTS), f"f{i:06d}.png"), "wb") as handle:
                handle.write(GOOD)
    attempt("create_100k_files", create_files)
    attempt("archive_100k_members", lambda: archive([(f"{i:06d}.png", GOOD) for i in range(100_000)]))
    REPORT["size"] = os.path.getsize(RESULTS)
elif ATTACK == "links":
    with open(RESULTS, "wb") as handle, tarfile.open(fileobj=handle, mode="w") as tar:
        link = tarfile.TarInfo("000000.png")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        tar.addfile(link)
elif ATTACK == "modes":
    # A result the host should publish, but with every bit a job could want on it.
    archive([("000000.png", GOOD)], mode=0o7777)
    attempt("chmod_results_setuid", lambda: os.chmod(RESULTS, 0o6777))
    attempt("chmod_out_0500", lambda: os.chmod(os.path.dirname(RESULTS), 0o500))
    attempt("mkdir_in_out", lambda: os.mkdir(os.path.join(os.path.dirname(RESULTS), "staging")))
    attempt("chmod_results_0000", lambda: os.chmod(RESULTS, 0))
elif ATTACK == "metadata":
    exif = b"MM\x00*\x00\x00\x00\x08\x00\x00\x00\x00\x00\x00"
    archive([("000000.png", png(8, 8, [
        (b"tEXt", b"Comment\x00planted by the job"),
        (b"zTXt", b"Note\x00\x00" + zlib.compress(b"planted" * 100)),
        (b"iTXt", b"XML:com.adobe.xmp\x00\x00\x00\x00\x00<x>planted</x>"),
        (b"eXIf", exif),
        (b"iCCP", b"planted\x00\x00" + zlib.compress(b"not a profile")),
    ]))])
else:
    raise SystemExit(f"unknown attack {ATTACK}")

print(json.dumps(REPORT), flush=True)
