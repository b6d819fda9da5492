"""The gate: scan + verify + policy -> one decision, with every reason, and its audit record.

`verify` opens the input once as a `Source` (one read-only mapping). The sha256, the scan and
the architecture fingerprint all read that mapping, so they describe one set of bytes
(DESIGN invariant 2). A file replaced or rewritten on disk while it is being checked is caught
by comparing the identity of the file actually mapped (fstat of its descriptor) with what the
path names after the last check: device, inode, size, mtime and ctime (ctime cannot be set back by an unprivileged writer, so an in-place
rewrite that restores mtime is caught too). The decision then blocks: what was checked is
no longer what a caller would load from that path.

Fail closed: a check that could not run is a reason to block (or, when the policy allows it,
an explicit "not checked" entry), never silently skipped. The verdict is

- ``pass``  every required check passed (warnings may remain);
- ``block`` the artifact must not be used (findings, mismatch, untrusted registry...);
- ``error`` gpenguard could not decide (missing file, bad configuration, audit log unwritable).

How an input is matched to a registry entry, first hit wins: ``name`` given by the caller
(the entry must then exist); sha256 (and size, where pinned); the file's base name equal to an
entry file's name (so a tampered ``GPEN-BFR-2048.pth`` is held to that entry instead of looking
"unknown"); a base name that merely resembles one (`trust.names.resembles`: case, homoglyphs,
a suffix), so renaming the tampered file does not make it unknown either. Whatever entry the
file is held to, bytes that any revoked entry lists block.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from gpenguard.audit import AppendedRecord, AuditEvent
from gpenguard.audit import append as audit_append
from gpenguard.errors import (
    AuditError,
    FormatError,
    GpenguardError,
    InputError,
    PolicyError,
    TrustError,
    UsageError,
    VerificationError,
)
from gpenguard.findings import FileReport, Severity, Verdict
from gpenguard.formats.source import Source
from gpenguard.policy import Policy, load_policy
from gpenguard.trust.fingerprint import Fingerprint
from gpenguard.trust.hashing import Progress, digests_equal, hash_source
from gpenguard.trust.model import Artifact, FileSpec, Registry, Status


class Outcome(StrEnum):
    """How one check ended."""

    PASS = "pass"
    FAIL = "fail"
    WARN = "warn"
    NOT_CHECKED = "not checked"


@dataclass(frozen=True)
class Check:
    """One line of the decision's checklist (size, sha256, scan, architecture...)."""

    name: str
    outcome: Outcome
    detail: str


@dataclass(frozen=True)
class GateDecision:
    """Everything `verify` concluded about one file; renderers and the audit log read this."""

    path: str
    verdict: Verdict
    policy: str
    reasons: tuple[str, ...] = ()
    """Every reason the verdict is not ``pass`` (all of them, not only the first)."""
    warnings: tuple[str, ...] = ()
    not_checked: tuple[str, ...] = ()
    checks: tuple[Check, ...] = ()
    sha256: str | None = None
    size: int | None = None
    artifact: str | None = None
    """``name@version`` of the registry entry the file was held to, if any."""
    artifact_status: str | None = None
    fingerprint: str | None = None
    state_dict_key: str | None = None
    """The nested state_dict the fingerprint was taken of (the entry's ``state_dict_key``)."""
    registry_path: str | None = None
    registry_name: str | None = None
    registry_version: int | None = None
    registry_sha256: str | None = None
    registry_signed_by: tuple[str, ...] = ()
    scan: FileReport | None = None
    audit: AppendedRecord | None = None
    audit_log: str | None = None

    @property
    def passed(self) -> bool:
        """True only for ``pass``."""
        return self.verdict is Verdict.PASS


def default_registry_path() -> Path | None:
    """The registry shipped with gpenguard (package data, else the source checkout's root)."""
    from gpenguard.trust.registry import default_registry_path as shipped

    path = shipped()
    return path if path.is_file() else None


def _resolve_policy(policy: Policy | str | os.PathLike[str] | None) -> Policy:
    return policy if isinstance(policy, Policy) else load_policy(policy)


def _of_stat(st: os.stat_result) -> tuple[int, ...]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _identity(path: Path) -> tuple[int, ...] | None:
    try:
        return _of_stat(path.stat())
    except OSError:
        return None


def _mapped_identity(src: Source, fallback: tuple[int, ...] | None) -> tuple[int, ...] | None:
    """Identity of the file actually mapped (fstat of its descriptor), else `fallback`.

    The baseline must be the open file, not the path: a path swapped between the caller's
    open and this check would otherwise look unchanged at the end.
    """
    fd = src.fileno()
    if fd is None:
        return fallback
    try:
        return _of_stat(os.fstat(fd))
    except OSError:
        return None


@dataclass
class _Run:
    """Mutable accumulator for one decision; frozen into a `GateDecision` at the end."""

    path: Path
    policy: Policy
    reasons: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    not_checked: list[str] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    values: dict[str, Any] = field(default_factory=dict)
    tuf: bool = False
    """The registry came through TUF's update workflow: a file must then be one of its targets."""

    def ok(self, name: str, detail: str) -> None:
        self.checks.append(Check(name, Outcome.PASS, detail))

    def fail(self, name: str, reason: str) -> None:
        self.checks.append(Check(name, Outcome.FAIL, reason))
        self.reasons.append(f"{name}: {reason}")

    def warn(self, name: str, message: str) -> None:
        self.checks.append(Check(name, Outcome.WARN, message))
        self.warnings.append(f"{name}: {message}")

    def skip(self, name: str, why: str, *, required: bool = False) -> None:
        """A check that could not run: blocks when `required`, else recorded as not checked."""
        if required:
            self.fail(name, f"not checked ({why}), and the policy requires it")
        else:
            self.checks.append(Check(name, Outcome.NOT_CHECKED, why))
            self.not_checked.append(f"{name}: {why}")

    def error(self, name: str, reason: str) -> None:
        self.checks.append(Check(name, Outcome.FAIL, reason))
        self.errors.append(f"{name}: {reason}")

    def decision(self) -> GateDecision:
        if self.errors:
            verdict = Verdict.ERROR
        elif self.reasons:
            verdict = Verdict.BLOCK
        else:
            verdict = Verdict.PASS
        return GateDecision(
            path=str(self.path),
            verdict=verdict,
            policy=self.policy.name,
            reasons=tuple(self.errors + self.reasons),
            warnings=tuple(self.warnings),
            not_checked=tuple(self.not_checked),
            checks=tuple(self.checks),
            **self.values,
        )


def verify(
    path: str | os.PathLike[str],
    *,
    registry: str | os.PathLike[str] | None = None,
    name: str | None = None,
    policy: Policy | str | os.PathLike[str] | None = None,
    trust_root: str | os.PathLike[str] | None = None,
    audit_log: str | os.PathLike[str] | None = None,
    now: datetime | None = None,
    state_dir: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
    source: Source | None = None,
    tuf_repo: str | None = None,
) -> GateDecision:
    """Decide whether the checkpoint at `path` may be used, under `policy` (default: ``default``).

    Arguments override the policy's registry, trust root and audit log. With `tuf_repo` (a
    folder or URL) the registry is the targets TUF's client workflow trusts, anchored in the
    pinned root.json that `trust_root` names, instead of a YAML file. Never raises for a
    property of the file or the registry: those become reasons. Raises `PolicyError` only
    when the policy itself cannot be loaded (there is nothing to decide with).
    """
    pol = _resolve_policy(policy)
    run = _Run(path=Path(path), policy=pol)
    log_path = Path(audit_log) if audit_log is not None else pol.audit_log
    if pol.require_audit_log and log_path is None:
        run.error("audit", f"policy {pol.name!r} requires an audit log; pass --audit-log or set audit.log")
        return run.decision()
    try:
        _decide(run, registry=registry, name=name, trust_root=trust_root, now=now,
                state_dir=state_dir, progress=progress, source=source, tuf_repo=tuf_repo)
    except GpenguardError as exc:  # anything unforeseen still ends in a decision, never a pass
        run.error("gate", str(exc))
    except (OSError, ValueError, KeyError, TypeError, RecursionError, MemoryError) as exc:
        # NOTE: a bug or an environment failure must not crash into exit 1 ("blocked") or
        # look like a decision that was reached; it is an error, and it is logged as one.
        run.error("gate", f"internal error: {type(exc).__name__}: {exc}")
    decision = run.decision()
    if log_path is not None:
        decision = _log(decision, log_path)
    return decision


def verify_source(
    source: Source,
    *,
    registry: str | os.PathLike[str] | None = None,
    name: str | None = None,
    policy: Policy | str | os.PathLike[str] | None = None,
    trust_root: str | os.PathLike[str] | None = None,
    audit_log: str | os.PathLike[str] | None = None,
    now: datetime | None = None,
    state_dir: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
    tuf_repo: str | None = None,
) -> GateDecision:
    """`verify` on an already-open `Source`, which the caller keeps and goes on using.

    This is how a later stage (convert) uses exactly the bytes the gate hashed and scanned
    (DESIGN invariant 2): one mapping, checked here, read there. The caller owns and closes it.
    """
    return verify(
        source.name, registry=registry, name=name, policy=policy, trust_root=trust_root,
        audit_log=audit_log, now=now, state_dir=state_dir, progress=progress, source=source,
        tuf_repo=tuf_repo,
    )


def _log(decision: GateDecision, log_path: Path) -> GateDecision:
    event = AuditEvent(
        file=str(Path(decision.path).absolute()),
        sha256=decision.sha256,
        size=decision.size,
        policy=decision.policy,
        verdict=str(decision.verdict),
        reasons=decision.reasons,
        warnings=decision.warnings,
        not_checked=decision.not_checked,
        artifact=decision.artifact,
        registry_name=decision.registry_name,
        registry_version=decision.registry_version,
        registry_sha256=decision.registry_sha256,
        registry_path=decision.registry_path,
    )
    try:
        record = audit_append(log_path, event)
    except AuditError as exc:
        # A decision that cannot be recorded is not a pass: the log is how it is accounted for.
        return replace(
            decision,
            verdict=Verdict.ERROR,
            reasons=(*decision.reasons, f"audit: {exc}"),
            audit_log=str(log_path),
        )
    return replace(decision, audit=record, audit_log=str(log_path))


def _load_registry(run: _Run, registry: str | os.PathLike[str] | None,
                   trust_root: str | os.PathLike[str] | None, now: datetime | None,
                   state_dir: str | os.PathLike[str] | None, tuf_repo: str | None = None) -> Registry | None:
    from gpenguard.trust.anchor import open_registry

    pol = run.policy
    if tuf_repo is not None:
        if registry is not None:  # one would be silently ignored: the user named both
            run.error("registry", f"--registry {registry} and --tuf-repo {tuf_repo} both name the registry; give one")
            return None
        return _load_tuf_registry(run, tuf_repo, trust_root, state_dir)
    reg_path = Path(registry) if registry is not None else pol.registry or default_registry_path()
    if reg_path is None:
        run.error("registry", "no registry given and no shipped weights-registry.yaml found")
        return None
    root_path = Path(trust_root) if trust_root is not None else pol.trust_root
    run.values["registry_path"] = str(reg_path)
    if pol.require_signed_registry and root_path is None:
        run.error("registry", f"policy {pol.name!r} requires a signed registry, but no trust root "
                  "was given (--trust-root or verify.trust_root)")
        return None
    try:
        reg = open_registry(reg_path, trust_root=root_path,
                            state_dir=Path(state_dir) if state_dir is not None else None, now=now)
    except (InputError, UsageError, PolicyError) as exc:
        run.error("registry", str(exc))
        return None
    except (TrustError, FormatError) as exc:
        run.fail("registry", str(exc))
        return None
    run.values.update(registry_name=reg.name, registry_version=reg.version,
                      registry_sha256=reg.sha256, registry_signed_by=tuple(reg.signed_by))
    signed = (f", signature verified ({len(reg.signed_by)} trust-root key(s))" if reg.signed_by
              else ", signature not verified")
    run.ok("registry", f"{reg.name} version {reg.version}{signed}")
    if root_path is None:
        run.skip("registry signature", "no trust root given")
    return reg


def _load_tuf_registry(run: _Run, repo: str, trust_root: str | os.PathLike[str] | None,
                       state_dir: str | os.PathLike[str] | None) -> Registry | None:
    from gpenguard.trust.state import default_state_dir
    from gpenguard.trust.tuf_client import load_tuf_registry

    root_path = Path(trust_root) if trust_root is not None else run.policy.trust_root
    run.values["registry_path"] = repo
    if root_path is None:
        run.error("registry", "a TUF repository needs its pinned root.json (--trust-root or verify.trust_root)")
        return None
    try:
        reg = load_tuf_registry(repo, root_path, state_dir=Path(state_dir) if state_dir is not None else default_state_dir())
    except (InputError, UsageError, PolicyError) as exc:
        run.error("registry", str(exc))
        return None
    except (TrustError, FormatError) as exc:
        run.fail("registry", str(exc))
        return None
    run.tuf = True
    run.values.update(registry_name=reg.name, registry_version=reg.version,
                      registry_sha256=reg.sha256, registry_signed_by=tuple(reg.signed_by))
    run.ok("registry", f"{reg.name} targets version {reg.version}, TUF update verified "
           f"({len(reg.signed_by)} targets key signature(s))")
    return reg


def _match(reg: Registry, src: Source, name: str | None,
           sha256: Callable[[], str | None]) -> tuple[Artifact | None, FileSpec | None, str]:
    """Find the entry the file is held to; returns (artifact, file spec, how it matched)."""
    from gpenguard.trust.registry import find_artifact

    base = Path(src.name).name
    if name is not None:
        art = find_artifact(reg, name=name)
        if art is None:
            return None, None, "name"
        return art, _pick_file(art.files, base, src.size), "name"
    # A pinned sha256 identifies the bytes whether or not the entry pins a size too: a
    # revocation listing only the digest must still catch them.
    candidates = [a for a in reg.artifacts for f in a.files if f.sha256 and f.size in (None, src.size)]
    if candidates:
        digest = sha256()
        if digest is not None:
            art = find_artifact(reg, sha256=digest)
            if art is not None:
                return art, _pick_file(art.files, base, src.size, digest), "sha256"
    for art in reg.artifacts:
        for spec in art.files:
            if Path(spec.path).name == base:
                return art, spec, "file name"
    from gpenguard.trust.names import resembles

    for art in reg.artifacts:
        for spec in art.files:
            if resembles(base, Path(spec.path).name):
                return art, spec, f"a file name resembling {Path(spec.path).name!r} (renamed?)"
    return None, None, ""


def _check_revocations(run: _Run, reg: Registry, held: Artifact | None, digest: str | None) -> None:
    """Block bytes that any revoked entry lists, whatever name, size or entry they were held to.

    A revocation is a statement about bytes: ``--name A`` must not pass what entry B revokes.
    """
    if digest is None:
        return
    for art in reg.artifacts:
        if art.status is not Status.REVOKED or art is held:
            continue
        if any(f.sha256 and digests_equal(digest, f.sha256) for f in art.files):
            run.fail("revocation", f"these bytes (sha256 {digest}) are revoked as {art.name}@{art.version}")


def _pick_file(files: Iterable[FileSpec], base: str, size: int, digest: str | None = None) -> FileSpec | None:
    specs = list(files)
    if digest is not None:
        for s in specs:
            if s.sha256 and digests_equal(digest, s.sha256):
                return s
    for s in specs:
        if Path(s.path).name == base:
            return s
    sized = [s for s in specs if s.size == size]
    if len(sized) == 1:
        return sized[0]
    return specs[0] if len(specs) == 1 else None


def _decide(run: _Run, *, registry: str | os.PathLike[str] | None, name: str | None,
            trust_root: str | os.PathLike[str] | None, now: datetime | None,
            state_dir: str | os.PathLike[str] | None, progress: Progress | None,
            source: Source | None = None, tuf_repo: str | None = None) -> None:
    pol = run.policy
    reg = _load_registry(run, registry, trust_root, now, state_dir, tuf_repo)
    if run.errors:
        return
    before = _identity(run.path)
    if source is not None:
        src_cm: contextlib.AbstractContextManager[Source] = contextlib.nullcontext(source)
    else:
        try:
            src_cm = Source.open(run.path)
        except InputError as exc:
            run.error("file", exc.message)
            return
    with src_cm as src:
        before = _mapped_identity(src, before)
        run.values["size"] = src.size
        digest_cache: dict[str, str] = {}

        def sha256(expected_size: int | None = None) -> str | None:
            if "sha256" not in digest_cache:
                digest_cache["sha256"] = hash_source(src, expected_size=expected_size, progress=progress).sha256
                run.values["sha256"] = digest_cache["sha256"]
            return digest_cache["sha256"]

        art: Artifact | None = None
        spec: FileSpec | None = None
        if reg is not None:
            art, spec, how = _match(reg, src, name, sha256)
            _check_entry(run, reg, art, spec, how, name, src, sha256, now)
        if "sha256" not in digest_cache and (spec is None or spec.size in (None, src.size)):
            sha256()  # the audit log records the digest of every decided file
        if reg is not None:
            _check_revocations(run, reg, art, digest_cache.get("sha256"))
        _scan(run, src)
        if art is not None and art.architecture is not None:
            _check_architecture(run, src, art)
        elif art is not None:
            run.skip("architecture", f"entry {art.name} has no architecture fingerprint",
                     required=pol.require_architecture)
        after = _identity(run.path)
        in_memory = src.fileno() is None and source is not None
    if in_memory:
        return  # bytes handed over in memory: there is no path that could change
    if before is None or after is None or before != after:
        run.fail("file", "the file changed on disk while it was being checked; what was "
                 "checked is not what is at the path now")


def _check_entry(run: _Run, reg: Registry, art: Artifact | None, spec: FileSpec | None, how: str,
                 name: str | None, src: Source, sha256: Callable[..., str | None],
                 now: datetime | None) -> None:
    pol = run.policy
    if art is None:
        if name is not None:
            run.fail("registry entry", f"registry {reg.name} has no artifact named {name!r}")
        elif pol.require_registry_entry:
            run.fail("registry entry", f"the file is not in registry {reg.name} (policy {pol.name!r} requires an entry)")
        elif run.tuf:
            run.fail("registry entry", f"the file is not a target of TUF repository {run.values.get('registry_path')} (only its targets are trusted)")
        else:
            run.warn("registry entry", f"the file is not in registry {reg.name}: it was scanned, but nobody approved it")
        return
    run.values.update(artifact=f"{art.name}@{art.version}", artifact_status=str(art.status))
    run.ok("registry entry", f"{art.name}@{art.version} (matched by {how})")
    if art.status is Status.REVOKED:
        run.fail("status", f"{art.name}@{art.version} is revoked")
    elif art.status is Status.DEPRECATED:
        if pol.allow_deprecated:
            run.warn("status", f"{art.name}@{art.version} is deprecated")
        else:
            run.fail("status", f"{art.name}@{art.version} is deprecated (policy {pol.name!r} allows approved only)")
    else:
        run.ok("status", "approved")
    if spec is None:
        run.fail("file", f"{art.name}@{art.version} lists no file matching {Path(src.name).name!r}")
        return
    size_ok = spec.size is None or spec.size == src.size
    if spec.size is None:
        run.skip("size", "the entry does not pin a size", required=pol.require_pinned_sha256)
    elif size_ok:
        run.ok("size", f"{src.size:,} bytes")
    else:
        run.fail("size", f"{src.size:,} bytes, the registry expects {spec.size:,}")
        run.skip("sha256", "not hashed: the size is already wrong")
    if size_ok:
        try:
            digest = sha256(spec.size)
        except VerificationError as exc:  # pragma: no cover - size was compared just above
            run.fail("size", exc.message)
            return
        assert digest is not None
        if spec.sha256 is None:
            run.skip("sha256", f"{art.name}@{art.version} has no pinned sha256 (gpenguard registry pin)",
                     required=pol.require_pinned_sha256)
        elif digests_equal(digest, spec.sha256):
            run.ok("sha256", digest)
        else:
            run.fail("sha256", f"{digest} does not match the pinned {spec.sha256.lower()}")
    _check_signatures(run, reg, art, src, now)


def _check_signatures(run: _Run, reg: Registry, art: Artifact, src: Source, now: datetime | None) -> None:
    pol = run.policy
    if not art.signatures:
        run.skip("signatures", f"{art.name}@{art.version} lists no artifact signatures",
                 required=pol.require_artifact_signatures)
        return
    digest = run.values.get("sha256")
    if digest is None:
        run.fail("signatures", "not checked: the file was not hashed (its size is already wrong)")
        return
    from gpenguard.trust.signatures import verify_artifact_signatures

    try:
        result = verify_artifact_signatures(reg, art, Path(src.name), sha256=digest, now=now)
    except TrustError as exc:
        run.fail("signatures", str(exc))
        return
    if result.passed:
        vouched = "" if reg.signed_by else " (by keys of a registry whose own signature was not verified)"
        run.ok("signatures", f"{len(result.valid_key_ids)} of {result.threshold} required valid signature(s){vouched}")
        return
    why = "; ".join(f"{r.path}: {r.reason}" for r in result.rejected)
    if result.threshold == 0:
        summary = "the registry's artifact role requires no signatures, so none can count"
    else:
        summary = f"{len(result.valid_key_ids)} of {result.threshold} required valid signature(s)"
    run.fail("signatures", f"{summary}{' (' + why + ')' if why else ''}")


def _scan(run: _Run, src: Source) -> None:
    from gpenguard.scan import scan_source

    pol = run.policy
    try:
        report = scan_source(src, policy=pol)
    except GpenguardError as exc:
        run.error("scan", f"could not scan: {exc.message}")
        return
    run.values["scan"] = report
    if report.verdict is Verdict.ERROR:
        # unknown, empty or unreadable content: exit 2 ("could not decide"), as `scan` says
        run.error("scan", f"could not scan: {report.error or 'unknown error'}")
        return
    blocking = [f for f in report.findings if f.severity >= pol.fail_on]
    for f in blocking:
        where = f" ({f.member})" if f.member else ""
        run.fail("scan", f"{f.severity.name.lower()} {f.rule_id}{where}: {f.message}")
    for note in report.not_checked:
        run.skip("scan", note)
    if report.verdict is Verdict.BLOCK and not blocking:
        run.fail("scan", "the scanner blocked the file")
    if not blocking and report.verdict is Verdict.PASS:
        lesser = [f for f in report.findings if f.severity < pol.fail_on]
        extra = f", {len(lesser)} finding(s) below {pol.fail_on.name.lower()}" if lesser else ""
        run.ok("scan", f"clean ({report.format or 'unknown format'}){extra}")


def _check_architecture(run: _Run, src: Source, art: Artifact) -> None:
    arch = art.architecture
    assert arch is not None
    try:
        fp = fingerprint_source(src, state_dict_key=arch.state_dict_key)
    except GpenguardError as exc:
        run.fail("architecture", f"not checked: the state_dict could not be read ({exc.message})")
        return
    run.values["fingerprint"] = fp.digest
    run.values["state_dict_key"] = arch.state_dict_key
    if digests_equal(fp.digest, arch.fingerprint):
        run.ok("architecture", f"{arch.family}: {fp.tensor_count} tensors, {fp.parameter_count:,} parameters")
        return
    detail = [f"fingerprint {fp.digest[:16]}… is not {arch.family}'s {arch.fingerprint[:16]}…"]
    if fp.tensor_count != arch.tensor_count:
        detail.append(f"{fp.tensor_count} tensors, expected {arch.tensor_count}")
    if fp.parameter_count != arch.parameter_count:
        detail.append(f"{fp.parameter_count:,} parameters, expected {arch.parameter_count:,}")
    run.fail("architecture", "; ".join(detail))


def fingerprint_source(src: Source, *, state_dict_key: str | None = None) -> Fingerprint:
    """The architecture fingerprint of the checkpoint in `src`, read without loading tensors.

    Uses the converter's weights-only reader, so the structure fingerprinted is exactly the
    structure `gpenguard convert` would write out.
    """
    from gpenguard.formats.container import read_container
    from gpenguard.formats.weights import read_tensors
    from gpenguard.trust.fingerprint import fingerprint

    state_dict = read_tensors(read_container(src), select=state_dict_key)
    if not len(state_dict):
        raise FormatError("no tensors found in the checkpoint", path=src.name)
    return fingerprint(state_dict)


__all__ = ["Check", "GateDecision", "Outcome", "Severity", "default_registry_path", "fingerprint_source", "verify", "verify_source"]
