"""A hostile job sees only the images the host listed and accepted, never the rest of an input folder.

Attack: the user restores ``~/Documents`` (or any folder of mixed files). The job, once it
controls the worker, reads every file mounted under /in and hides what it found in the pixels
of the results the host then publishes (re-encoding keeps pixels). So a folder input must bring
into the sandbox its accepted images alone: no notes, keys or PDFs beside them, and no file the
host itself refused as an image (a ``.png`` that is really text).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from gpenguard.pipeline import run_worker
from gpenguard.policy import Policy
from gpenguard.runner.interface import Backend, EventSink, RunResult
from gpenguard.runner.mounts import neutral_sources
from gpenguard.runner.spec import HOST_IMAGE, INPUTS_DIR, SandboxSpec
from tests.runner import battery


class _Snoop:
    """What a job would find under /in: the staged sources, as the real backends mount them."""

    name = "snoop"
    seen: dict[str, list[str]]

    def output_owner(self, user: tuple[int, int]) -> tuple[int, int]:
        return user

    def run(self, spec: SandboxSpec, *, on_event: EventSink | None = None) -> RunResult:
        with neutral_sources(spec) as staged:
            self.seen = {
                b.target: sorted(p.name for p in Path(b.source).iterdir())
                for b in staged.binds
                if b.target.startswith(INPUTS_DIR + "/") and Path(b.source).is_dir()
            }
        return RunResult(backend=self.name, exit_code=0, events=(), stdout="", stderr_tail="", duration_s=0.0)


def test_a_folder_input_exposes_only_its_accepted_images(tmp_path: Path) -> None:
    album = tmp_path / "Documents"
    album.mkdir()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(album / "face.png")
    (album / "id_ed25519").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    (album / "taxes.pdf").write_bytes(b"%PDF-1.7 secret")
    (album / "diary.png").write_text("not an image: the host refuses it")  # refused by the host's decoder check
    backend = _Snoop()
    done = run_worker(backend, HOST_IMAGE, Policy(name="t"), [battery.stored_weights(tmp_path)], [album], tmp_path / "out")
    assert {f.source.name for f in done.failures} == {"diary.png", "face.png"}
    assert backend.seen == {f"{INPUTS_DIR}/0000-Documents": ["face.png"]}


LISTER = """
import json, os
seen = {}
for top in sorted(os.listdir("/in")):
    path = os.path.join("/in", top)
    seen[top] = sorted(os.listdir(path)) if os.path.isdir(path) else None
print(json.dumps({"event": "attack", "seen": seen}), flush=True)
"""


@pytest.fixture(params=[pytest.param("docker", marks=pytest.mark.docker), pytest.param("bwrap", marks=pytest.mark.bwrap)])
def sandbox(request: pytest.FixtureRequest) -> tuple[Backend, str]:
    if request.param == "docker":
        from gpenguard.runner.docker import DockerBackend

        return DockerBackend(request.getfixturevalue("docker_engine")), request.getfixturevalue("sandbox_image")
    from gpenguard.runner.bwrap import BwrapBackend

    return BwrapBackend(bwrap=request.getfixturevalue("bwrap_available")), HOST_IMAGE


def test_a_real_job_lists_only_the_accepted_images(tmp_path: Path, sandbox: tuple[Backend, str]) -> None:
    """The same attack as a real job: it lists /in inside the sandbox and reports what it found."""
    backend, image = sandbox
    album = tmp_path / "Documents"
    album.mkdir()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(album / "face.png")
    (album / "id_ed25519").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    (album / "diary.png").write_text("not an image")
    found: dict[str, object] = {}
    run_worker(
        backend, image, Policy(name="t"), [battery.stored_weights(tmp_path)], [album], tmp_path / "out",
        command=("python", "-c", LISTER), on_event=lambda e: found.update(e) if e.get("event") == "attack" else None,
    )  # fmt: skip
    seen = found["seen"]
    assert isinstance(seen, dict)
    assert {k: v for k, v in seen.items() if v is not None} == {"0000-Documents": ["face.png"]}
