"""Hand-built scan reports covering every shape a renderer must handle.

They are built from the shared value types directly, so the renderers are tested without
depending on what the scanner happens to find in a given fixture.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gpenguard.findings import FileReport, Finding, Rule, ScanReport, Severity, Verdict
from tests.report import sarif_schema as sarif_schema_module

ROOT = Path(__file__).resolve().parents[2]
SHA_A = "a" * 64
SHA_B = "0123456789abcdef" * 4

RULES = (
    Rule("GG101", "dangerous-import", "The pickle imports a callable that can run code. "
         "Loading the file would run it.", Severity.CRITICAL),
    Rule("GG102", "unknown-import", "The pickle imports something outside the allowlist.", Severity.HIGH),
    Rule("GG201", "odd-opcode", "An opcode torch.save never writes.", Severity.MEDIUM),
)


def make_report(root: Path, *, fail_on: Severity = Severity.HIGH) -> ScanReport:
    """Three files: clean, poisoned (two findings), unscannable; paths under `root`."""
    clean = FileReport(
        path=str(root / "models" / "clean.pth"), verdict=Verdict.PASS, format="torch-zip",
        size=1234, sha256=SHA_A, globals_seen=("collections.OrderedDict", "torch._utils._rebuild_tensor_v2"),
    )
    poisoned_path = str(root / "models" / "sub dir" / "poisoned.pth")
    poisoned = FileReport(
        path=poisoned_path, verdict=Verdict.BLOCK, format="torch-zip", size=4096, sha256=SHA_B,
        findings=(
            Finding("GG201", Severity.MEDIUM, "BUILD on a non-tensor object.", poisoned_path,
                    member="archive/data.pkl", offset=12),
            Finding("GG101", Severity.CRITICAL, "Imports os.system, which runs a shell command.",
                    poisoned_path, member="archive/data.pkl", offset=311,
                    global_name="os.system", call="os.system('true')"),
        ),
        globals_seen=("os.system",),
    )
    broken = FileReport(
        path=str(root / "models" / "broken.bin"), verdict=Verdict.ERROR, size=7,
        error="not a checkpoint: unknown magic bytes b'garbage'",
        not_checked=("pickle opcodes: the container could not be read",),
    )
    return ScanReport(files=(clean, poisoned, broken), tool_version="0.1.0", fail_on=fail_on, rules=RULES)


@pytest.fixture
def report(tmp_path: Path) -> ScanReport:
    return make_report(tmp_path)


@pytest.fixture
def clean_report(tmp_path: Path) -> ScanReport:
    full = make_report(tmp_path)
    return ScanReport(files=full.files[:1], tool_version="0.1.0", rules=RULES)


@pytest.fixture(scope="session")
def sarif_schema() -> dict[str, Any]:
    return sarif_schema_module.load()
