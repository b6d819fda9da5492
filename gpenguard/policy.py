"""Gate policies: which checks must pass, and how strictly, as one validated value.

OWNER: trust/gate helper (loading, validation, policies/*.yaml). The `Policy` fields below are a
contract other stages read (scan: fail_on / scan_profile / extra allowlist; runner: sandbox).
Add fields compatibly.

Policies are YAML (policies/README.md documents every field). They are read strictly: safe
types only, duplicate keys, unknown fields, anchors and wrongly typed values are errors naming
``file:line``, because a policy that silently means something other than what a reviewer read
is worse than none. Relative paths in a policy resolve against the policy file's folder.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from gpenguard import strict_yaml
else:  # NOTE: YAML is loaded on first use: `gpenguard scan` without --policy never parses any
    from gpenguard._lazy import lazy_module

    strict_yaml = lazy_module("gpenguard.strict_yaml")
from gpenguard.errors import PolicyError
from gpenguard.findings import Severity


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
    runtime: str = "runc"
    """Docker's OCI runtime: ``runc``, ``runsc`` (gVisor), or ``auto`` (runsc where registered)."""


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
    description: str = ""
    require_architecture: bool = False
    """A registry entry without an architecture fingerprint blocks instead of warning."""
    allow_deprecated: bool = True
    """Deprecated artifacts pass with a warning (True) or block (False)."""


SHIPPED = ("default", "strict", "ci")
"""Policies shipped with gpenguard, loadable by name."""

OUTPUT_FORMATS = ("text", "json", "sarif")
SCAN_PROFILES = ("default", "strict")
SANDBOX_BACKENDS = ("docker", "bwrap")
SECCOMP_PROFILES = ("gpenguard", "default")
SANDBOX_RUNTIMES = ("runc", "runsc", "auto")

_T = TypeVar("_T")


class _Reader:
    """Validates one policy document, naming ``file:line`` in every error."""

    def __init__(self, source: str, base: Path | None):
        self.source = source
        self.base = base

    def fail(self, message: str, line: int | None) -> PolicyError:
        where = f"{self.source}:{line}" if line else self.source
        return PolicyError(message, path=where)

    def section(self, doc: strict_yaml.LinedMap, key: str, allowed: set[str]) -> strict_yaml.LinedMap:
        value = doc.get(key)
        if value is None:
            empty = strict_yaml.LinedMap()
            empty.line, empty.key_lines = doc.line_of(key), {}
            return empty
        if not isinstance(value, strict_yaml.LinedMap):
            raise self.fail(f"{key!r} must be a mapping", doc.line_of(key))
        self.known(value, allowed, f"{key}.")
        return value

    def known(self, doc: strict_yaml.LinedMap, allowed: set[str], where: str) -> None:
        for key in doc:
            if key not in allowed:
                names = ", ".join(sorted(allowed))
                raise self.fail(f"unknown field {where}{key!r} (expected one of: {names})", doc.line_of(key))

    def get(self, doc: strict_yaml.LinedMap, key: str, kind: type[_T] | tuple[type, ...], default: _T) -> _T:
        if key not in doc or doc[key] is None:
            return default
        value = doc[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in kinds:
            value = None  # YAML's yes/true is not a number
        if value is None or not isinstance(value, kinds):
            names = " or ".join(k.__name__ for k in kinds)
            raise self.fail(f"{key!r} must be {names}, got {doc[key]!r}", doc.line_of(key))
        return value  # type: ignore[return-value]

    def choice(self, doc: strict_yaml.LinedMap, key: str, options: tuple[str, ...], default: str) -> str:
        value = self.get(doc, key, str, default)
        if value not in options:
            raise self.fail(f"{key!r} must be one of {', '.join(options)}, got {value!r}", doc.line_of(key))
        return value

    def number(self, doc: strict_yaml.LinedMap, key: str, default: float, *, positive: bool = True) -> float:
        value = float(self.get(doc, key, (int, float), default))
        if not math.isfinite(value) or (positive and value <= 0):
            raise self.fail(f"{key!r} must be a finite{' positive' if positive else ''} number, got {value!r}", doc.line_of(key))
        return value

    def path(self, doc: strict_yaml.LinedMap, key: str) -> Path | None:
        value = self.get(doc, key, str, "")
        if not value:
            return None
        if "\0" in value:  # no file system accepts it; open() would raise ValueError, not OSError
            raise self.fail(f"{key!r} must be a path, got one with a NUL character", doc.line_of(key))
        p = Path(value).expanduser()
        return p if p.is_absolute() or self.base is None else self.base / p

    def strings(self, doc: strict_yaml.LinedMap, key: str) -> tuple[str, ...]:
        value = self.get(doc, key, list, [])
        if not all(isinstance(v, str) and v for v in value):
            raise self.fail(f"{key!r} must be a list of non-empty strings", doc.line_of(key))
        return tuple(value)


def _parse(doc: Any, reader: _Reader) -> Policy:
    if not isinstance(doc, strict_yaml.LinedMap):
        raise reader.fail("a policy must be a YAML mapping", None)
    reader.known(doc, {"name", "description", "scan", "verify", "audit", "output", "sandbox"}, "")
    r = reader
    scan = r.section(doc, "scan", {"fail_on", "profile", "allow", "deny"})
    verify = r.section(
        doc,
        "verify",
        {"registry", "trust_root", "require_registry_entry", "require_signed_registry",
         "require_pinned_sha256", "require_artifact_signatures", "require_architecture",
         "allow_deprecated"},
    )
    audit = r.section(doc, "audit", {"log", "required"})
    output = r.section(doc, "output", {"format"})
    sandbox = r.section(
        doc,
        "sandbox",
        {"backend", "allow_gpu", "memory_bytes", "pids_limit", "cpus", "timeout_s", "seccomp",
         "min_nvidia_toolkit", "runtime"},
    )

    fail_on_text = r.get(scan, "fail_on", str, "high")
    try:
        fail_on = Severity.parse(fail_on_text)
    except ValueError as exc:
        raise r.fail(str(exc), scan.line_of("fail_on")) from None

    allow: list[AllowEntry] = []
    for item in r.get(scan, "allow", list, []):
        line = getattr(item, "line", scan.line_of("allow"))
        if not isinstance(item, strict_yaml.LinedMap):
            raise r.fail("each 'allow' entry must be a mapping with 'name' and 'reason'", line)
        r.known(item, {"name", "reason"}, "allow.")
        name, reason = r.get(item, "name", str, ""), r.get(item, "reason", str, "")
        if "." not in name or not reason.strip():
            raise r.fail("an 'allow' entry needs name: module.qualname and a non-empty reason", line)
        allow.append(AllowEntry(name=name, reason=reason))

    defaults = SandboxPolicy()
    pids = r.get(sandbox, "pids_limit", int, defaults.pids_limit)
    memory = r.get(sandbox, "memory_bytes", int, defaults.memory_bytes)
    for key, value in (("pids_limit", pids), ("memory_bytes", memory)):
        if value <= 0:
            raise r.fail(f"{key!r} must be positive, got {value}", sandbox.line_of(key))

    audit_log = r.path(audit, "log")
    require_audit = r.get(audit, "required", bool, False)
    name = r.get(doc, "name", str, "")
    if not name:
        raise r.fail("a policy needs a 'name'", doc.line)
    booleans: dict[str, bool] = {
        key: r.get(verify, key, bool, default)
        for key, default in (
            ("require_registry_entry", False), ("require_signed_registry", False),
            ("require_pinned_sha256", False), ("require_artifact_signatures", False),
            ("require_architecture", False), ("allow_deprecated", True),
        )
    }
    return Policy(
        name=name,
        description=r.get(doc, "description", str, ""),
        fail_on=fail_on,
        scan_profile=r.choice(scan, "profile", SCAN_PROFILES, "default"),
        allow=tuple(allow),
        deny=r.strings(scan, "deny"),
        registry=r.path(verify, "registry"),
        trust_root=r.path(verify, "trust_root"),
        audit_log=audit_log,
        require_audit_log=require_audit,
        output_format=r.choice(output, "format", OUTPUT_FORMATS, "text"),
        sandbox=SandboxPolicy(
            backend=r.choice(sandbox, "backend", SANDBOX_BACKENDS, defaults.backend),
            allow_gpu=r.get(sandbox, "allow_gpu", bool, defaults.allow_gpu),
            memory_bytes=memory,
            pids_limit=pids,
            cpus=r.number(sandbox, "cpus", defaults.cpus),
            timeout_s=r.number(sandbox, "timeout_s", defaults.timeout_s),
            seccomp=r.choice(sandbox, "seccomp", SECCOMP_PROFILES, defaults.seccomp),
            min_nvidia_toolkit=r.get(sandbox, "min_nvidia_toolkit", str, defaults.min_nvidia_toolkit),
            runtime=r.choice(sandbox, "runtime", SANDBOX_RUNTIMES, defaults.runtime),
        ),
        source=reader.source,
        **booleans,
    )


def parse_policy(text: str | bytes, *, source: str = "<policy>", base: Path | None = None) -> Policy:
    """Validate policy YAML already in memory; `base` resolves relative paths."""
    reader = _Reader(source, base)
    try:
        doc = strict_yaml.load(text)
    except strict_yaml.StrictYAMLError as exc:
        raise reader.fail(exc.message, exc.line) from None
    return _parse(doc, reader)


def shipped_policy_text(name: str) -> str:
    """The YAML of a policy shipped inside the package (`SHIPPED`)."""
    if name not in SHIPPED:
        raise PolicyError(f"no shipped policy named {name!r} (shipped: {', '.join(SHIPPED)})")
    from importlib import resources

    return resources.files("gpenguard").joinpath("data", "policies", f"{name}.yaml").read_text("utf-8")


def is_policy_path(spec: str) -> bool:
    """Whether a ``--policy`` string names a file: it holds a ``/`` or ends in .yaml/.yml.

    Everything else is a shipped policy's name. A file in the working directory called
    ``strict`` can then never stand in for the shipped ``strict`` policy: in CI the working
    directory is a checkout that a pull request can change, so a bare name must not reach it.
    """
    return "/" in spec or os.sep in spec or spec.lower().endswith((".yaml", ".yml"))


def load_policy(spec: str | os.PathLike[str] | None = None) -> Policy:
    """Load a policy by shipped name (``default``, ``strict``, ``ci``) or from a YAML file.

    A string is a file only when `is_policy_path` says so (``./mine``, ``mine.yaml``); any other
    string must be a shipped name, whatever files the working directory holds. A `PathLike` is
    always a file. None means ``default``. Errors name the file and line and say what was expected.
    """
    if spec is None:
        spec = "default"
    if isinstance(spec, str) and not is_policy_path(spec):
        if spec not in SHIPPED:
            raise PolicyError(
                f"no shipped policy named {spec!r} (shipped policies: {', '.join(SHIPPED)})",
                hint=f"name a policy file by a path: ./{spec} or a name ending in .yaml",
            )
        return parse_policy(shipped_policy_text(spec), source=f"<shipped policy {spec}>")
    from gpenguard.fileio import read_regular

    path = Path(os.fspath(spec))
    try:
        data = read_regular(path, 16 * 2**20)
    except FileNotFoundError:
        raise PolicyError(
            f"no such policy file (shipped policies: {', '.join(SHIPPED)})", path=path
        ) from None
    except IsADirectoryError:
        raise PolicyError("is a directory, not a policy file", path=path) from None
    except OSError as exc:
        raise PolicyError(f"cannot read policy: {exc.strerror}", path=path) from exc
    return parse_policy(data, source=str(path), base=path.resolve().parent)


def with_overrides(policy: Policy, **changes: Any) -> Policy:
    """A copy of `policy` with the given fields changed (CLI options win over the file)."""
    valid = {f.name for f in fields(Policy)}
    unknown = set(changes) - valid
    if unknown:
        raise PolicyError(f"unknown policy fields: {', '.join(sorted(unknown))}")
    return replace(policy, **{k: v for k, v in changes.items() if v is not None})


