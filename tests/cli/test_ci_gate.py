"""The CI gate in a real repository: the Action's and the hook's own commands on a typical ML
checkout (code, configs, README, images, a CSV named ``*.data``, real ``torch.save``
checkpoints, a ``.git`` folder), which must pass; and the same checkout with a poisoned
checkpoint or a protocol-0 pickle hidden in a subfolder, which must be blocked.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from gpenguard.demo import make_demo_pair
from gpenguard.discover import could_be_model, discover

ROOT = Path(__file__).resolve().parents[2]
# A 1x1 PNG, as an image editor writes it (signature, IHDR, IDAT, IEND).
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
    "0000000d4944415478da63f8cfc0f01f0005000201a0d8e1fa0000000049454e44ae426082"
)


class _Payload:
    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, ("true",))  # harmless if it ever ran; it must never run


def make_ml_repo(root: Path) -> Path:
    """A checkout as people push them: what a gate must pass without any configuration."""
    (root / "src" / "net").mkdir(parents=True)
    (root / "src" / "net" / "__init__.py").write_text("")
    (root / "src" / "net" / "train.py").write_text(
        "import torch\nfrom torch import nn\n\n\ndef main() -> None:\n    print('train')\n")
    (root / "README.md").write_text("# net\n\n1. Install\n2. `python -m net.train`\n")
    (root / "LICENSE").write_text("Copyright 2026 someone\n\nPermission is hereby granted...\n")
    (root / "requirements.txt").write_text("torch>=2.4\nnumpy\n")
    (root / "configs").mkdir()
    (root / "configs" / "model.yaml").write_text("model:\n  channels: 64\n  layers: [2, 2]\n")
    (root / "configs" / "params.json").write_text(json.dumps({"lr": 0.001, "epochs": 3}))
    (root / "data").mkdir()
    (root / "data" / "table.data").write_text("a,b,label\n1,2,0\n3,4,1\n")  # a CSV, named .data
    (root / "data" / "classes.txt").write_text("cat\ndog\n")
    (root / "docs").mkdir()
    (root / "docs" / "figure.png").write_bytes(PNG)
    models = root / "models"
    models.mkdir()
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    torch.save(net.state_dict(), models / "net.pth")
    torch.save({"model": net.state_dict(), "epoch": 3}, models / "legacy.pt",
               _use_new_zipfile_serialization=False)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    net(torch.zeros(1, 3, 8, 8)).sum().backward()
    opt.step()
    torch.save({"optimizer": opt.state_dict()}, models / "optimizer.ckpt")
    (models / "labels.pkl").write_bytes(pickle.dumps({"classes": ["cat", "dog"]}, protocol=0))
    if shutil.which("git"):
        git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main"]
        subprocess.run([*git, "init", "-q"], cwd=root, check=True)
        subprocess.run([*git, "add", "-A"], cwd=root, check=True)
        subprocess.run([*git, "commit", "-qm", "init"], cwd=root, check=True)
    return root


def poison(root: Path, poisoned_checkpoint: Path) -> list[Path]:
    """A poisoned torch.save checkpoint in a subfolder, and a protocol-0 pickle as .txt."""
    deep = root / "models" / "v2"
    deep.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(poisoned_checkpoint, deep / "best.pth")
    (root / "data" / "notes.txt").write_bytes(pickle.dumps(_Payload(), protocol=0))
    return [deep / "best.pth", root / "data" / "notes.txt"]


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_demo_pair(tmp_path_factory.mktemp("demo"))


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_ml_repo(tmp_path / "repo")


def _gpenguard_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


# --- the Action -------------------------------------------------------------------------------


def _action_scan(workspace: Path, tmp_path: Path, **overrides: str) -> tuple[str, dict[str, Any], str]:
    """Run the Action's own Scan step (bash, its env mapping, its defaults) in `workspace`."""
    action = yaml.safe_load((ROOT / "action.yml").read_text())
    (step,) = (s for s in action["runs"]["steps"] if s.get("name") == "Scan")
    inputs = {k: str(v.get("default", "")) for k, v in action["inputs"].items()} | overrides
    shim = tmp_path / "bin"
    shim.mkdir(exist_ok=True)
    python = shim / "python"  # a script, not a link: a venv's python keeps its venv
    python.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} \"$@\"\n")
    python.chmod(0o755)
    github_output = tmp_path / "github_output"
    github_output.write_text("")
    env = {**_gpenguard_env(), "PATH": f"{shim}{os.pathsep}{os.environ['PATH']}",
           "GITHUB_OUTPUT": str(github_output)}
    for key, value in step["env"].items():
        match = re.fullmatch(r"\$\{\{ inputs\.([\w-]+) \}\}", value)
        assert match, value
        env[key] = inputs[match.group(1)]
    proc = subprocess.run(["bash", "-eo", "pipefail", "-c", step["run"]], cwd=workspace, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr  # the script itself never fails the step
    (code,) = re.findall(r"exit-code=(\d+)", github_output.read_text())
    sarif = json.loads((workspace / inputs["sarif-file"]).read_text())
    return code, sarif, proc.stdout + proc.stderr


def test_action_passes_a_typical_ml_repository(repo: Path, tmp_path: Path) -> None:
    code, sarif, log = _action_scan(repo, tmp_path)
    assert code == "0", log
    scanned = {a["location"]["uri"] for a in sarif["runs"][0]["artifacts"]}
    assert scanned == {"models/net.pth", "models/legacy.pt", "models/optimizer.ckpt",
                       "models/labels.pkl"}


def test_action_blocks_a_poisoned_checkpoint_added_in_a_subfolder(
    repo: Path, tmp_path: Path, pair: tuple[Path, Path]
) -> None:
    poison(repo, pair[1])
    code, sarif, log = _action_scan(repo, tmp_path)
    assert code == "1", log
    flagged = {r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
               for r in sarif["runs"][0]["results"] if r["level"] == "error"}
    assert {"models/v2/best.pth", "data/notes.txt"} <= flagged


def test_action_action_installs_only_the_core() -> None:
    action = yaml.safe_load((ROOT / "action.yml").read_text())
    (step,) = (s for s in action["runs"]["steps"] if s.get("name") == "Install gpenguard")
    assert "torch" not in step["run"] and "[" not in step["run"]


# --- the pre-commit hook ----------------------------------------------------------------------


def _hook() -> dict[str, Any]:
    (hook,) = (h for h in yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
               if h["id"] == "gpenguard-scan")
    return dict(hook)


def _staged_files_the_hook_gets(repo: Path, hook: dict[str, Any]) -> list[str]:
    """What pre-commit passes: tracked files matching `files`, not `exclude`, of `types`."""
    files = re.compile(hook.get("files", ""))
    exclude = re.compile(hook["exclude"]) if hook.get("exclude") else None
    names = [str(p.relative_to(repo)) for p in sorted(repo.rglob("*"))
             if p.is_file() and ".git" not in p.relative_to(repo).parts]
    return [n for n in names if files.search(n) and not (exclude and exclude.search(n))]


def _run_hook(repo: Path) -> subprocess.CompletedProcess[str]:
    hook = _hook()
    entry = shlex.split(hook["entry"])
    assert entry[:2] == ["gpenguard", "scan"]
    argv = [sys.executable, "-m", "gpenguard", *entry[1:], *hook.get("args", []),
            *_staged_files_the_hook_gets(repo, hook)]
    return subprocess.run(argv, cwd=repo, env=_gpenguard_env(), capture_output=True, text=True,
                          timeout=300, check=False)


def test_hook_passes_a_typical_ml_repository(repo: Path) -> None:
    proc = _run_hook(repo)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "4 files scanned" in proc.stdout and "skipped as not model artifacts" in proc.stdout


def test_hook_blocks_a_poisoned_checkpoint_and_a_text_pickle(repo: Path, pair: tuple[Path, Path]) -> None:
    poison(repo, pair[1])
    proc = _run_hook(repo)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "BLOCK  models/v2/best.pth" in proc.stdout and "BLOCK  data/notes.txt" in proc.stdout


def test_hook_does_not_block_a_csv_named_data(tmp_path: Path) -> None:
    csv = tmp_path / "table.data"
    csv.write_text("a,b\n1,2\n")
    hook = _hook()
    assert not hook.get("files") or re.search(hook["files"], "table.data")  # it reaches the probe
    proc = subprocess.run([sys.executable, "-m", "gpenguard", *shlex.split(hook["entry"])[1:],
                           str(csv)], env=_gpenguard_env(), capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --- the directory walk -----------------------------------------------------------------------


def test_walk_judges_checkpoints_by_content_and_counts_the_rest(repo: Path) -> None:
    found = discover([repo])
    rel = {str(Path(f).relative_to(repo)) for f in found.files}
    assert rel == {"models/net.pth", "models/legacy.pt", "models/optimizer.ckpt", "models/labels.pkl"}
    skipped = {str(Path(f).relative_to(repo)) for f in found.skipped}
    assert {"README.md", "data/table.data", "docs/figure.png", "src/net/train.py",
            "configs/params.json", "src/net/__init__.py"} <= skipped
    if (repo / ".git").is_dir():
        assert str(repo / ".git") + "/" in found.unopened  # named, not walked


def test_a_renamed_checkpoint_is_still_found(repo: Path, pair: tuple[Path, Path]) -> None:
    """Names decide nothing: a checkpoint called README.md or a pickle called .json is judged."""
    shutil.copyfile(pair[1], repo / "docs" / "README.md")
    (repo / "configs" / "x.json").write_bytes(pickle.dumps(_Payload(), protocol=1))
    found = {str(Path(f).relative_to(repo)) for f in discover([repo]).files}
    assert {"docs/README.md", "configs/x.json"} <= found


@pytest.mark.parametrize("protocol", range(6))
def test_every_pickle_protocol_is_a_possible_model(tmp_path: Path, protocol: int) -> None:
    for i, obj in enumerate([{"a": [1, 2.5, "x"]}, _Payload(), [None, True, (1, 2)]]):
        path = tmp_path / f"p{i}.txt"
        path.write_bytes(pickle.dumps(obj, protocol=protocol))
        assert could_be_model(path), (protocol, obj)


@pytest.mark.parametrize("text", [
    b"# Title\n", b"1. first\n2. second\n", b"a,b,c\n1,2,3\n", b"import os\nimport sys\n",
    b"README.md\npyproject.toml\n", b'{"lr": 0.1}\n', b"key: value\n", b"(not a pickle)\n",
    b"Copyright 2026\n", b"",
])
def test_ordinary_text_is_not_a_model(tmp_path: Path, text: bytes) -> None:
    path = tmp_path / "f"
    path.write_bytes(text)
    assert not could_be_model(path)


def test_a_zip_appended_to_a_text_file_is_a_possible_model(tmp_path: Path, pair: tuple[Path, Path]) -> None:
    """torch's zip reader finds the end record from the end: prepended text hides nothing."""
    path = tmp_path / "README.md"
    path.write_bytes(b"# readme\n" * 50 + pair[1].read_bytes())
    assert could_be_model(path)


def test_patterns_and_the_ignore_file_leave_files_out_by_name(repo: Path, tmp_path: Path) -> None:
    (repo / ".gpenguardignore").write_text("# test fixtures\nmodels/legacy.pt\n*.ckpt\n")
    found = discover([repo], exclude=["labels.pkl"])
    rel = {str(Path(f).relative_to(repo)) for f in found.files}
    assert rel == {"models/net.pth"}
    ignored = {str(Path(f).relative_to(repo)) for f in found.ignored}
    assert {"models/legacy.pt", "models/optimizer.ckpt", "models/labels.pkl"} <= ignored
    only = discover([repo], include=["*.pth"], ignore_files=False)
    assert {Path(f).name for f in only.files} == {"net.pth"}


def test_ignored_files_are_named_in_the_report(repo: Path) -> None:
    (repo / ".gpenguardignore").write_text("models/legacy.pt\n")
    proc = subprocess.run([sys.executable, "-m", "gpenguard", "scan", "--format", "json", "."],
                          cwd=repo, env=_gpenguard_env(), capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["not_scanned"]["ignored"] == ["models/legacy.pt"]
    assert doc["summary"]["ignored"] == 1 and doc["summary"]["skipped"] >= 6


def test_without_recursion_a_poisoned_subfolder_is_named_not_passed(
    repo: Path, pair: tuple[Path, Path]
) -> None:
    poison(repo, pair[1])
    plain = subprocess.run([sys.executable, "-m", "gpenguard", "scan", "models"], cwd=repo,
                           env=_gpenguard_env(), capture_output=True, text=True, timeout=120,
                           check=False)
    assert plain.returncode == 1 and "models/v2/best.pth" in plain.stdout  # descends by default
    flat = subprocess.run([sys.executable, "-m", "gpenguard", "scan", "--no-recursive", "models"],
                          cwd=repo, env=_gpenguard_env(), capture_output=True, text=True,
                          timeout=120, check=False)
    assert "not opened: models/v2/" in flat.stdout, flat.stdout


def test_a_repository_without_models_passes_and_says_so(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("# nothing here\n")
    proc = subprocess.run([sys.executable, "-m", "gpenguard", "scan", str(tmp_path)],
                          env=_gpenguard_env(), capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    assert "0 files scanned" in proc.stdout and "1 skipped as not model artifacts" in proc.stdout


def test_a_tar_without_the_ustar_magic_is_a_possible_model(tmp_path: Path) -> None:
    """tarfile (torch's pre-1.0 reader) takes any header whose checksum is right (V7 tar)."""
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        data = pickle.dumps(_Payload(), protocol=0)
        info = tarfile.TarInfo("pickle")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    raw = bytearray(buf.getvalue())
    raw[257:265] = bytes(8)  # no magic, no version: a V7 header
    header = bytearray(raw[:512])
    header[148:156] = b" " * 8
    raw[148:156] = b"%06o\0 " % sum(header)
    path = tmp_path / "README"
    path.write_bytes(bytes(raw))
    with tarfile.open(path) as tar:  # the oracle: tarfile reads it
        assert tar.getnames() == ["pickle"]
    assert could_be_model(path)


@pytest.mark.parametrize("prefix", [b"I0x10\n", b"I 7\n", b"L0o17L\n", b"F1e5\n"])
def test_numbers_cpython_reads_leniently_do_not_hide_a_payload(tmp_path: Path, prefix: bytes) -> None:
    """pickletools refuses INT ``0x10``; CPython's unpickler (strtol base 0) reads it and runs on."""
    pickle.loads(prefix + b".")  # the oracle: CPython reads the number (a plain number, nothing runs)
    path = tmp_path / "notes.txt"
    path.write_bytes(prefix + pickle.dumps(_Payload(), protocol=0))
    assert could_be_model(path)
