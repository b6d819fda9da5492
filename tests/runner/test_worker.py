"""The in-sandbox worker's checks, and the host side's re-check and publishing, without a sandbox."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from gpenguard.errors import SandboxError, VerificationError
from gpenguard.pipeline import StoredInput, recheck
from gpenguard.runner import worker
from gpenguard.runner.worker import WeightFile, WorkerJob


def _weights(tmp_path: Path, *, digest: str | None = None, envelope: bool = False) -> WeightFile:
    path = tmp_path / "w.safetensors"
    save_file({"a": torch.arange(4, dtype=torch.float32)}, str(path))
    sha = digest or hashlib.sha256(path.read_bytes()).hexdigest()
    statement = {"_type": "https://in-toto.io/Statement/v1", "subject": [{"name": "w.safetensors", "digest": {"sha256": sha}}]}
    record = tmp_path / "w.safetensors.intoto.json"
    if envelope:
        payload = base64.b64encode(json.dumps(statement).encode()).decode()
        record.write_text(json.dumps({"payloadType": "application/vnd.in-toto+json", "payload": payload, "signatures": []}))
    else:
        record.write_text(json.dumps(statement))
    return WeightFile(path=str(path), provenance=str(record))


@pytest.mark.parametrize("envelope", [False, True])
def test_verified_weights_load(tmp_path: Path, envelope: bool) -> None:
    weight = _weights(tmp_path, envelope=envelope)
    tensors = worker.load_tensors(worker.read_verified(weight), weight.path)
    assert torch.equal(tensors["a"], torch.arange(4, dtype=torch.float32))


def test_tampered_weights_are_refused(tmp_path: Path) -> None:
    weight = _weights(tmp_path)
    data = bytearray(Path(weight.path).read_bytes())
    data[-1] ^= 1
    Path(weight.path).write_bytes(bytes(data))
    with pytest.raises(VerificationError, match="does not match the provenance record"):
        worker.read_verified(weight)


def test_only_safetensors_cross_into_the_sandbox(tmp_path: Path) -> None:
    weight = _weights(tmp_path)
    pth = Path(weight.path).with_suffix(".pth")
    Path(weight.path).rename(pth)
    with pytest.raises(VerificationError, match=r"only \.safetensors"):
        worker.read_verified(WeightFile(path=str(pth), provenance=weight.provenance))


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ("not json", "cannot read provenance"),
        (json.dumps({"subject": []}), "no subject"),
        (json.dumps({"subject": [{"name": "w.safetensors", "digest": {"sha1": "ab"}}]}), "no sha256"),
        (json.dumps({"subject": [{"name": "x", "digest": {"sha256": "0" * 64}}, {"name": "y", "digest": {"sha256": "1" * 64}}]}), "does not name"),
    ],
)
def test_unusable_provenance_is_refused(tmp_path: Path, record: str, message: str) -> None:
    weight = _weights(tmp_path)
    Path(weight.provenance).write_text(record)
    with pytest.raises(VerificationError, match=message):
        worker.read_verified(weight)


def test_worker_refuses_before_building_anything(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    weight = _weights(tmp_path, digest="0" * 64)
    job = WorkerJob(gpen=weight, inputs=(), results=str(tmp_path / "results.tar"), size=256)
    assert worker.main(["--job", job.to_json()]) == 1
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert events[-1]["event"] == "error"
    assert events[-1]["kind"] == "VerificationError"
    assert not any(e["event"] == "model-loaded" for e in events)


def test_job_round_trips_through_json(tmp_path: Path) -> None:
    weight = _weights(tmp_path)
    job = WorkerJob(gpen=weight, detector=weight, inputs=("/in/0000-a.png",), results="/out/results.tar", mode="full", size=512)
    assert WorkerJob.from_json(job.to_json()) == job
    with pytest.raises(SandboxError, match="malformed worker job"):
        WorkerJob.from_json('{"inputs": []}')


def test_recheck_refuses_a_store_file_changed_after_conversion(tmp_path: Path) -> None:
    weight = _weights(tmp_path)
    sha = hashlib.sha256(Path(weight.path).read_bytes()).hexdigest()
    record = Path(weight.provenance)
    record.write_text(json.dumps({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": "w.safetensors", "digest": {"sha256": sha}}],
        "predicateType": "https://slsa.dev/provenance/v1",
        "predicate": {"buildDefinition": {"resolvedDependencies": [{"digest": {"sha256": "f" * 64}}]}},
    }))  # fmt: skip
    stored = StoredInput(role="gpen", source=tmp_path / "x.pth", path=Path(weight.path), provenance=record, sha256=sha)
    recheck(stored)
    Path(weight.path).write_bytes(Path(weight.path).read_bytes() + b" ")
    with pytest.raises(VerificationError, match="provenance record says"):
        recheck(stored)


class _Identity:
    """Stands in for the restorer: returns the decoded image, so the test is about I/O."""

    def restore_image(self, image: object) -> object:
        return image


def test_one_bad_image_never_stops_the_others(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import io
    import tarfile

    from PIL import Image

    good = tmp_path / "good.png"
    Image.new("RGB", (16, 16), (1, 2, 3)).save(good)
    tiff = tmp_path / "scan.png"
    Image.new("RGB", (16, 16)).save(tiff, format="TIFF")
    noise = io.BytesIO()
    Image.effect_noise((128, 128), 64).convert("RGB").save(noise, format="JPEG")
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(noise.getvalue()[: len(noise.getvalue()) // 2])
    also_good = tmp_path / "also-good.png"
    Image.new("L", (8, 4), 9).save(also_good)
    monkeypatch.setattr(worker, "build_restorer", lambda job, weights: _Identity())
    results = tmp_path / "results.tar"
    job = WorkerJob(gpen=_weights(tmp_path), inputs=tuple(map(str, (good, tiff, cut, also_good))), results=str(results))
    assert worker.run(job) == 2
    with tarfile.open(results) as archive:
        assert archive.getnames() == ["000000.png", "000003.png"]
        with Image.open(archive.extractfile("000003.png")) as restored:  # type: ignore[arg-type]
            assert (restored.format, restored.mode, restored.size) == ("PNG", "L", (8, 4))
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    failed = {e["index"]: e["reason"] for e in events if e["event"] == "image-failed"}
    assert failed == {1: "TIFF is not an accepted input format (use PNG, JPEG or WebP)", 2: failed[2]}
    assert failed[2].startswith("cannot read image")
    assert str(tmp_path) not in json.dumps(failed)  # reasons never carry an in-sandbox path
    assert events[-1] == {"event": "done", "images": 2, "seconds": events[-1]["seconds"]}
