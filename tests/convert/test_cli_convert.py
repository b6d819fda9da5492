"""`gpenguard convert`: exit codes 0 / 1 / 2, messages naming the file, nothing left behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gpenguard.cli import app
from tests._gatekit import Evil

torch = pytest.importorskip("torch")
ROOT = Path(__file__).resolve().parents[2]


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_converts_and_reports(tmp_path: Path) -> None:
    src = tmp_path / "m.pth"
    torch.save({"params_ema": {"module.w": torch.randn(2, 2).t()}}, src)
    out = tmp_path / "m.safetensors"
    code, stdout, _ = run("convert", str(src), "-o", str(out), "--select", "params_ema",
                          "--strip-prefix", "module.", "--json")
    assert code == 0
    record = json.loads(stdout)
    assert record["output"] == str(out) and record["materialised"] == ["w"]
    assert record["select"] == "params_ema" and record["strip_prefix"] == "module."
    from safetensors.torch import load_file

    assert torch.equal(load_file(out)["w"], torch.load(src, weights_only=True)["params_ema"]["module.w"])


def test_blocked_exits_1_with_every_reason(tmp_path: Path) -> None:
    src = tmp_path / "evil.pth"
    torch.save({"x": Evil()}, src)
    code, _, stderr = run("convert", str(src), "-o", str(tmp_path / "evil.safetensors"))
    assert code == 1
    assert "the gate blocks this file" in stderr and "getpid" in stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.pth"]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: None, "no such file"),
        (lambda p: torch.save({"a": {"b": torch.ones(1)}}, p), "entry 'a' is a dict, not a tensor"),
    ],
    ids=["missing", "no-flat-state-dict"],
)
def test_errors_exit_2(tmp_path: Path, make: object, message: str) -> None:
    src = tmp_path / "m.pth"
    make(src)  # type: ignore[operator]
    before = {p.name for p in tmp_path.iterdir()}
    code, _, stderr = run("convert", str(src), "-o", str(tmp_path / "m.safetensors"))
    assert code == 2
    assert str(src) in stderr and message in stderr
    assert {p.name for p in tmp_path.iterdir()} == before


def test_store_only(tmp_path: Path) -> None:
    src = tmp_path / "m.pth"
    torch.save({"w": torch.ones(3)}, src)
    code, stdout, _ = run("convert", str(src), "--store", str(tmp_path / "store"), "--json")
    assert code == 0
    stored = Path(json.loads(stdout)["stored"])
    assert stored.parent == tmp_path / "store" / "sha256"
    assert stored.name == f"{json.loads(stdout)['sha256']}.safetensors"


def test_console_entry_in_a_subprocess(tmp_path: Path) -> None:
    src = tmp_path / "m.pth"
    torch.save({"w": torch.ones(3)}, src)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "gpenguard", "convert", str(src), "-o", str(tmp_path / "m.safetensors")],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "converted" in proc.stdout and "provenance" in proc.stdout


def test_unusable_sign_key_fails_before_any_work(tmp_path: Path) -> None:
    src = tmp_path / "m.pth"
    torch.save({"w": torch.ones(3)}, src)
    key = tmp_path / "bad.key"
    key.write_text("not a key")
    code, _, stderr = run("convert", str(src), "-o", str(tmp_path / "m.safetensors"), "--sign-key", str(key))
    assert code == 2
    assert str(key) in stderr and "not a usable PEM private key" in stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.key", "m.pth"]


def test_signed_conversion_from_the_cli(tmp_path: Path) -> None:
    from tests.trust.factory import new_key

    src = tmp_path / "m.pth"
    torch.save({"w": torch.ones(3)}, src)
    key = new_key("ecdsa-p256")
    priv, pub = key.write(tmp_path, "converter")
    code, stdout, _ = run("convert", str(src), "-o", str(tmp_path / "m.safetensors"), "--sign-key", str(priv), "--json")
    assert code == 0
    assert json.loads(stdout)["signed_by"] == [key.key_id]
    from gpenguard.convert import read_provenance
    from gpenguard.trust.keys import load_public_key

    prov = read_provenance(tmp_path / "m.safetensors.intoto.json")
    assert prov.verified_by([load_public_key(pub)]) == (key.key_id,)


def test_fifo_input_is_refused_not_waited_on(tmp_path: Path) -> None:
    fifo = tmp_path / "m.pth"
    os.mkfifo(fifo)
    out = tmp_path / "m.safetensors"
    proc = subprocess.run(
        [sys.executable, "-m", "gpenguard", "convert", str(fifo), "-o", str(out)],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 2, proc.stderr
    assert "not a regular file" in proc.stderr and str(fifo) in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pth"]
