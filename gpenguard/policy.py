"""Gate policies: which checks must pass, and how strictly, as one validated value.

OWNER: trust/gate helper (loading, validation, policies/*.yaml). The `Policy` fields below are a
contract other stages read (scan: fail_on / scan_profile / extra allowlist; runner: sandbox).
Add fields compatibly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from gpenguard.scan.findings import Severity


@dataclass(frozen=True)
class AllowEntry:
    """An extra import a policy allows, with the reason a reviewer accepted it."""

    name: str
    """``module.qualname``."""
    reason: str


@dataclass(frozen=True)
class SandboxPolicy:
    """Resource limits and hardening choices for the run stage."""

    backend: str = "docker"
    """``docker`` or ``bwrap``."""
    allow_gpu: bool = True
    memory_bytes: int = 16 * 2**30
    pids_limit: int = 256
    cpus: float = 2.0
    timeout_s: float = 1800.0
    seccomp: str = "gpenguard"
    """``gpenguard`` (the tighter profile in sandbox/), or ``default`` (Docker's)."""
    min_nvidia_toolkit: str = "1.17.8"


@dataclass(frozen=True)
class Policy:
    """Everything the gate needs to decide; loaded from policies/*.yaml."""

    name: str = "default"
    fail_on: Severity = Severity.HIGH
    """Scan findings at or above this severity block."""
    scan_profile: str = "default"
    """``default`` allows ordinary checkpoint contents; ``strict`` allows plain tensors only."""
    allow: tuple[AllowEntry, ...] = ()
    deny: tuple[str, ...] = ()
    """Imports to refuse even if the built-in allowlist has them."""
    require_registry_entry: bool = False
    """Unknown artifacts block (strict) instead of passing with a warning (default)."""
    require_signed_registry: bool = False
    require_pinned_sha256: bool = False
    require_artifact_signatures: bool = False
    require_audit_log: bool = False
    audit_log: Path | None = None
    trust_root: Path | None = None
    """The keys allowed to sign the registry, pinned outside the registry."""
    registry: Path | None = None
    """None means the shipped weights-registry.yaml."""
    output_format: str = "text"
    sandbox: SandboxPolicy = field(default_factory=SandboxPolicy)
    source: str | None = None
    """The file this policy was read from, for messages and the audit log."""
