"""One exception tree for gpenguard, and the exit-code contract.

Every failure the library can report is a `GpenguardError`; the CLI catches only the root,
once, and maps it to an exit code. Third-party errors are translated at the boundary with
``raise ... from exc`` so callers never see a PyYAML, zipfile or docker exception.

    GpenguardError                 exit 2 (usage or I/O) unless a subclass says otherwise
    ├── UsageError                 bad options or arguments
    ├── InputError                 a file cannot be read (missing, permission, not a file)
    ├── FormatError                bytes are not a checkpoint we understand, or are malformed
    │   └── LimitExceeded          a size, count, depth or time bound was hit
    ├── ScanError                  the scanner could not run
    ├── PolicyError                a policy file is invalid
    ├── TrustError
    │   ├── RegistryError          registry file invalid, expired, rolled back, unsigned
    │   ├── SignatureError         a signature or key is bad, expired, revoked, of the wrong role
    │   └── VerificationError      exit 1: the artifact does not match what was approved
    ├── AuditError                 the audit log cannot be written, or fails verification (exit 1)
    ├── ConversionError            weights could not be converted safely
    ├── ModelError                 a network's weights do not fit its architecture
    ├── RestoreError               an image could not be restored
    └── SandboxError               the sandbox could not be set up or the job failed inside it
        └── SandboxTimeout, SandboxOOM

`Blocked` (exit 1) is raised where a gate decision must stop the caller (convert, restore).
"""

from __future__ import annotations

from enum import IntEnum
from pathlib import Path


class ExitCode(IntEnum):
    """The CLI's exit codes; a contract for CI users, documented in the README."""

    PASS = 0
    BLOCKED = 1
    ERROR = 2


class GpenguardError(Exception):
    """Root of every error gpenguard raises.

    `path` names the file concerned (when there is one) so every message can say which file
    and why; `hint` is an optional next step for a person, rendered apart from the message.
    """

    exit_code: ExitCode = ExitCode.ERROR

    def __init__(self, message: str, *, path: str | Path | None = None, hint: str | None = None):
        self.message = message
        self.path = str(path) if path is not None else None
        self.hint = hint
        super().__init__(self.__str__())

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class UsageError(GpenguardError):
    """The caller asked for something that makes no sense."""


class InputError(GpenguardError):
    """A file could not be opened or read."""


class FormatError(GpenguardError):
    """The bytes are not a format we understand, or they are malformed."""


class LimitExceeded(FormatError):
    """A bound on size, count, nesting or time was hit; the input is not trusted further."""


class ScanError(GpenguardError):
    """The scanner itself could not run."""


class PolicyError(GpenguardError):
    """A policy file is invalid."""


class TrustError(GpenguardError):
    """Base of the trust stage: registry, keys, signatures, verification."""


class RegistryError(TrustError):
    """The registry file is invalid, unsigned, expired or rolled back."""


class SignatureError(TrustError):
    """A signature, key or bundle is invalid or cannot be used."""


class VerificationError(TrustError):
    """The artifact is not the one that was approved."""

    exit_code = ExitCode.BLOCKED


class AuditError(GpenguardError):
    """The audit log could not be written, or it fails verification."""

    exit_code = ExitCode.BLOCKED


class ConversionError(GpenguardError):
    """The weights could not be converted without trusting the input."""


class ModelError(GpenguardError):
    """Weights do not fit the architecture they are loaded into."""


class RestoreError(GpenguardError):
    """An image could not be restored."""


class SandboxError(GpenguardError):
    """The sandbox could not be prepared, or the job inside it failed."""


class SandboxTimeout(SandboxError):
    """The job ran past its time limit and was killed."""


class SandboxOOM(SandboxError):
    """The job ran out of its memory limit and was killed."""


class Blocked(GpenguardError):
    """A gate decision blocked the artifact; `reasons` says why, one line each."""

    exit_code = ExitCode.BLOCKED

    def __init__(
        self,
        message: str,
        *,
        reasons: tuple[str, ...] = (),
        path: str | Path | None = None,
        hint: str | None = None,
    ):
        self.reasons = reasons
        super().__init__(message, path=path, hint=hint)
