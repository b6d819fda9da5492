"""The publisher against hostile jobs, in the real sandbox, for every backend.

Each test runs `pipeline.run_worker` (the host path a restore takes: listing, staging, the
size-capped results file, collection, publishing) with a hostile payload in place of the
worker (tests/runner/hostile_publish.py), then checks the user's folder for itself: the photos
already there are untouched, nothing the job chose was published, no staging folder is left.
"""

from __future__ import annotations

import hashlib
import os
import stat
import struct
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from gpenguard.errors import SandboxError
from gpenguard.pipeline import WorkerOutcome, run_worker
from gpenguard.policy import Policy, SandboxPolicy
from gpenguard.runner.interface import Backend
from gpenguard.runner.publish import FSIZE_FLOOR
from gpenguard.runner.spec import HOST_IMAGE
from tests.runner import battery

PAYLOAD = Path(__file__).with_name("hostile_publish.py").read_text(encoding="utf-8")
POLICY = Policy(name="battery", sandbox=SandboxPolicy(memory_bytes=512 * 2**20, pids_limit=64, cpus=1.0, timeout_s=120.0))
RED = (200, 30, 90)
"""The colour of the PNG every payload writes."""


@pytest.fixture(params=[pytest.param("docker", marks=pytest.mark.docker), pytest.param("bwrap", marks=pytest.mark.bwrap)])
def sandbox(request: pytest.FixtureRequest) -> tuple[Backend, str]:
    if request.param == "docker":
        from gpenguard.runner.docker import DockerBackend

        return DockerBackend(request.getfixturevalue("docker_engine")), request.getfixturevalue("sandbox_image")
    from gpenguard.runner.bwrap import BwrapBackend

    return BwrapBackend(bwrap=request.getfixturevalue("bwrap_available")), HOST_IMAGE


def _folder(root: Path) -> dict[str, tuple[int, str]]:
    """Every entry of the user's folder: mode and content digest (links and folders included)."""
    found: dict[str, tuple[int, str]] = {}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if stat.S_ISREG(info.st_mode) else ""
        found[str(path.relative_to(root))] = (info.st_mode, digest)
    return found


class Attack:
    """The user's photo folder (OUTDIR) holding a photo to restore and one to keep, and a run."""

    def __init__(self, tmp_path: Path, sandbox: tuple[Backend, str]) -> None:
        self.tmp_path = tmp_path
        self.backend, self.image = sandbox
        self.photos = tmp_path / "photos"
        self.photos.mkdir()
        self.face = self.photos / "face.jpg"
        Image.new("RGB", (8, 8), (10, 200, 10)).save(self.face)
        self.kept = self.photos / "holiday.png"
        Image.new("RGB", (8, 8), (1, 2, 3)).save(self.kept)
        self.before = _folder(self.photos)
        self.report: dict[str, Any] = {}

    def run(self, attack: str) -> WorkerOutcome:
        def on_event(event: Any) -> None:
            if event.get("event") == "attack":
                self.report.update(event)

        try:
            return run_worker(
                self.backend, self.image, POLICY, [battery.stored_weights(self.tmp_path)], [self.face], self.photos,
                mode="full", command=("python", "-c", PAYLOAD, attack), on_event=on_event,
            )  # fmt: skip
        finally:
            assert self.report, "the payload reported nothing: it did not run"

    def untouched(self) -> None:
        """The folder is exactly as before: no result, no staging folder, no change."""
        assert _folder(self.photos) == self.before


def test_results_under_names_the_job_chose_are_refused(tmp_path: Path, sandbox: tuple[Backend, str]) -> None:
    attack = Attack(tmp_path, sandbox)
    with pytest.raises(SandboxError, match=r"unexpected entry 'face\.png'.*nothing from it is published"):
        attack.run("names")
    attack.untouched()


@pytest.mark.parametrize(
    ("payload", "why"),
    [
        ("non_png", r"not a readable PNG"),
        ("wrong_size", r"a 4000x1 result where 8x8 was due"),
        ("links", r"a link among its results"),
    ],
)
def test_a_result_that_is_not_the_expected_png_refuses_the_run(
    tmp_path: Path, sandbox: tuple[Backend, str], payload: str, why: str
) -> None:
    attack = Attack(tmp_path, sandbox)
    with pytest.raises(SandboxError, match=why) as caught:
        attack.run(payload)
    assert str(attack.face) in str(caught.value)  # the host path, never /in/...
    attack.untouched()


def test_a_sparse_20_gib_results_file_cannot_be_made(tmp_path: Path, sandbox: tuple[Backend, str]) -> None:
    attack = Attack(tmp_path, sandbox)
    done = attack.run("sparse")
    assert attack.report["truncate_20GiB"] == "EFBIG"
    assert attack.report["seek_write_20GiB"] == "EFBIG"
    assert attack.report["size"] == 0
    assert done.outputs == ()
    assert [str(f) for f in done.failures] == [f"{attack.face}: the sandbox returned no result for it"]
    attack.untouched()


def test_one_gib_into_the_results_is_stopped_at_the_budget(tmp_path: Path, sandbox: tuple[Backend, str]) -> None:
    attack = Attack(tmp_path, sandbox)
    with pytest.raises(SandboxError, match=r"wrote \d+ bytes of results, more than its \d+-byte budget; nothing published"):
        attack.run("fill")
    assert attack.report["stopped"] == "EFBIG"
    assert attack.report["written"] == FSIZE_FLOOR  # the kernel's limit, far below 1 GiB
    attack.untouched()


def test_a_hundred_thousand_files_cannot_be_made_or_published(tmp_path: Path, sandbox: tuple[Backend, str]) -> None:
    attack = Attack(tmp_path, sandbox)
    with pytest.raises(SandboxError, match="nothing"):
        attack.run("many_files")
    assert attack.report["create_100k_files"] == "EROFS"  # /out itself is read-only
    assert attack.report["archive_100k_members"] == "EFBIG"
    attack.untouched()


def _chunks(data: bytes) -> list[bytes]:
    kinds, offset = [], 8
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kinds.append(data[offset + 4 : offset + 8])
        offset += 12 + length
    return kinds


def _host_encoding() -> bytes:
    import io

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), RED).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("payload", ["modes", "metadata"])
def test_published_results_are_the_hosts_own_bytes(
    tmp_path: Path, sandbox: tuple[Backend, str], payload: str
) -> None:
    """Setuid and 0777 bits, a 0000 results file, text, EXIF and colour-profile chunks: the host
    publishes a PNG it encoded itself, with the caller's umask, and removes its staging folder."""
    attack = Attack(tmp_path, sandbox)
    old = os.umask(0o027)
    try:
        done = attack.run(payload)
    finally:
        os.umask(old)
    result = attack.photos / "face.png"
    assert done.outputs == (result,) and done.failures == ()
    assert stat.S_IMODE(result.lstat().st_mode) == 0o640
    assert result.read_bytes() == _host_encoding()
    assert set(_chunks(result.read_bytes())) == {b"IHDR", b"IDAT", b"IEND"}
    after = _folder(attack.photos)
    assert set(after) == {*attack.before, "face.png"}  # no staging folder left behind
    assert {k: v for k, v in after.items() if k != "face.png"} == attack.before
    if payload == "modes":
        assert attack.report["chmod_results_0000"] == "ok"  # the job did lock its file; the host read it anyway
        assert attack.report["mkdir_in_out"] == "EROFS"
