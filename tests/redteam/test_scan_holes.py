"""Attacks on the scan gate that once passed: each file here made torch.load act while gpenguard
said nothing. Payloads are harmless and never run by the tests (the oracle is a subprocess that
runs only the harmless ones)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gpenguard.discover import could_be_model, discover

# Pickles that act without any call opcode (REDUCE, BUILD, INST, OBJ, NEWOBJ) and break off
# before STOP: the loader has already run what they did when it raises on the junk.
ACT_WITHOUT_CALL = {
    # sys.path.append('/tmp/evil'): list.append on an imported object
    "append": b"csys\npath\nS'/nonexistent/evil'\na" + b"\xff" * 8,
    # os.environ['X'] = '1': putenv through __setitem__
    "setitem": b"cos\nenviron\nS'GG_REDTEAM'\nS'1'\ns" + b"\xff" * 8,
    "setitems": b"\x80\x02cos\nenviron\n(X\x02\x00\x00\x00GGX\x01\x00\x00\x001u" + b"\xff" * 8,
    # importing a module runs it: `this` prints, `antigravity` opens a browser
    "import": b"cthis\nx\n" + b"\xff" * 8,
    "stack_global": b"\x80\x04\x8c\x04this\x8c\x01s\x93" + b"\xff" * 8,
}


@pytest.mark.parametrize("name", sorted(ACT_WITHOUT_CALL))
def test_a_directory_scan_does_not_skip_a_pickle_that_acts_without_a_call(
    tmp_path: Path, name: str
) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(ACT_WITHOUT_CALL[name])
    assert could_be_model(path)
    assert discover([tmp_path]).files == (str(path),)


def test_the_oracle_shows_those_pickles_act(tmp_path: Path) -> None:
    """CPython's unpickler (what torch.load(weights_only=False) runs first) mutates the process
    before it raises: checked in a throwaway interpreter on the harmless `this` and env cases."""
    code = (
        "import pickle, sys, os\n"
        "for blob in sys.argv[1:]:\n"
        "    try: pickle.loads(bytes.fromhex(blob))\n"
        "    except Exception: pass\n"
        "print('this' in sys.modules, os.environ.get('GG_REDTEAM'))\n"
    )
    blobs = [ACT_WITHOUT_CALL["import"].hex(), ACT_WITHOUT_CALL["setitem"].hex()]
    out = subprocess.run([sys.executable, "-c", code, *blobs], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert out.strip().splitlines()[-1] == "True 1"


@pytest.mark.parametrize("text", [b"cat\ndog\n", b"cnot_a_module_anywhere\nx\n\xff"])
def test_a_word_list_naming_no_module_is_still_skipped(tmp_path: Path, text: bytes) -> None:
    path = tmp_path / "classes.txt"
    path.write_bytes(text)
    assert not could_be_model(path)


def _pax_tar_beyond_the_probe(payload: bytes) -> bytes:
    """A legacy torch tar whose first header is a pax record larger than the probe's window,
    renamed and without the ustar magic (a V7 header, which tarfile takes)."""
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in ("storages", "tensors", "pickle"):
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            info.pax_headers = {"comment": "A" * 70_000}
            tar.addfile(info, io.BytesIO(payload))
    raw = bytearray(buf.getvalue())
    raw[0:100] = b"zpax".ljust(100, b"\0")  # 'z' is no pickle opcode
    raw[257:265] = bytes(8)  # no "ustar"
    raw[148:156] = b" " * 8
    raw[148:156] = b"%06o\0 " % sum(raw[:512])
    return bytes(raw)


def test_a_tar_whose_first_pax_record_outgrows_the_probe_is_scanned(tmp_path: Path) -> None:
    """torch.load(path) opens any file tarfile opens and unpickles its ``storages`` member."""
    import tarfile

    payload = b"\x80\x02cposix\nsystem\nX\x04\x00\x00\x00true\x85R."  # named, never run
    path = tmp_path / "model.bin"
    path.write_bytes(_pax_tar_beyond_the_probe(payload))
    with tarfile.open(path) as tar:  # the oracle: the reader torch.load tries first
        assert tar.getnames() == ["storages", "tensors", "pickle"]
    assert could_be_model(path)
    proc = subprocess.run([sys.executable, "-m", "gpenguard", "scan", str(tmp_path)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "posix.system" in proc.stdout


@pytest.mark.parametrize("blob", [
    b"cthis\n-\n\xff",  # a qualname no getattr finds: the module was imported first
    "cthis\n\u00e9\n".encode() + b"\xff",  # a UTF-8 name pickletools refuses (ASCII only)
    b"(ithis\nx y\n\xff",
])
def test_an_import_whose_name_lookup_fails_still_counts(tmp_path: Path, blob: bytes) -> None:
    code = ("import pickle, sys\ntry: pickle.loads(bytes.fromhex(sys.argv[1]))\n"
            "except Exception: pass\nprint('this' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code, blob.hex()], capture_output=True,
                         text=True, timeout=60, check=True).stdout
    assert out.strip().splitlines()[-1] == "True"  # the oracle: CPython imported (ran) `this`
    path = tmp_path / "notes.txt"
    path.write_bytes(blob)
    assert could_be_model(path)
