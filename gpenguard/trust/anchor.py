"""One way to open a registry against its pinned trust root, shared by `verify` and `registry show`.

Both commands must reach the same conclusion about the same files: the trust root is read the
same way, a given trust root always requires the registry's signature, and the errors fall in
the same classes. A trust root that cannot be used is the operator's configuration, like a
policy, so it is an `InputError` (exit 2: could not decide); a registry that fails its checks
is a `TrustError` (blocked).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from gpenguard.errors import InputError, TrustError, UsageError
from gpenguard.trust.model import Registry, TrustRoot
from gpenguard.trust.registry import load_registry, load_trust_root


def read_trust_root(path: Path) -> TrustRoot:
    """The pinned registry keys; a missing, unreadable or malformed file is an `InputError`."""
    try:
        return load_trust_root(path)
    except TrustError as exc:
        raise InputError(f"invalid trust root: {exc.message}", path=exc.path or path, hint=exc.hint) from exc


def open_registry(
    path: Path,
    *,
    trust_root: Path | None,
    require_signed: bool = False,
    state_dir: Path | None = None,
    now: datetime | None = None,
) -> Registry:
    """Load `path` with every check; with a trust root its signature is always required."""
    if require_signed and trust_root is None:
        raise UsageError(
            "a signed registry is required but no trust root was given",
            path=path,
            hint="pass the pinned registry keys (policy trust_root / --trust-root)",
        )
    root = read_trust_root(trust_root) if trust_root is not None else None
    return load_registry(path, trust_root=root, require_signature=root is not None, state_dir=state_dir, now=now)
