"""``gpenguard registry pin``: record an approved file's size and sha256 in its registry entry.

An entry is written before anyone has the file (name, source, architecture); the digest is
pinned once an administrator has downloaded it and gpenguard has checked it: the scan must be
clean under the policy and the architecture fingerprint must match the entry. Only then are
``size`` and ``sha256`` written, the registry's ``version`` bumped (so clients that saw the
old one accept it and can never be rolled back to it) and the file re-signed.

The YAML is edited as text at the positions PyYAML reports for each node, so comments, key
order and quoting elsewhere in the file stay as the maintainers wrote them. The edited text is
parsed again with the strict registry parser before it replaces the old file (atomically).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from gpenguard.errors import RegistryError, VerificationError
from gpenguard.findings import Verdict
from gpenguard.formats.source import Source
from gpenguard.policy import Policy, load_policy
from gpenguard.trust.hashing import digests_equal, hash_source
from gpenguard.trust.model import Artifact, FileSpec
from gpenguard.trust.yamledit import Edit, apply_edits, insert_fields, mapping_items, scalar_edit


@dataclass(frozen=True)
class PinResult:
    """What `pin_artifact` wrote."""

    registry: str
    artifact: str
    file: str
    size: int
    sha256: str
    version: int
    signed_by: tuple[str, ...] = ()
    signature: str | None = None
    warnings: tuple[str, ...] = ()


def _edits(data: str, source: str, art_name: str, art_version: str, file_path: str,
           size: int, sha256: str, version: int) -> list[Edit]:
    root = yaml.compose(data, Loader=yaml.SafeLoader)
    if root is None:
        raise RegistryError("the registry is empty", path=source)
    items = mapping_items(root, "the registry", source)
    meta = mapping_items(items["registry"][1], "registry", source)
    edits = [scalar_edit(meta["version"][1], str(version + 1))]
    artifacts = items["artifacts"][1]
    assert isinstance(artifacts, yaml.SequenceNode)
    for art_node in artifacts.value:
        art = mapping_items(art_node, "artifact", source)
        if art["name"][1].value != art_name or str(art["version"][1].value) != art_version:
            continue
        files = art["files"][1]
        assert isinstance(files, yaml.SequenceNode)
        for file_node in files.value:
            spec = mapping_items(file_node, "file", source)
            if spec["path"][1].value != file_path:
                continue
            assert isinstance(file_node, yaml.MappingNode)
            missing: list[tuple[str, str]] = []
            for key, value in (("size", str(size)), ("sha256", f'"{sha256}"')):
                if key in spec:
                    edits.append(scalar_edit(spec[key][1], value))
                else:
                    missing.append((key, value))
            if missing:
                edits.append(insert_fields(file_node, data, missing))
            return edits
    raise RegistryError(f"entry {art_name}@{art_version} file {file_path} not found in the YAML", path=source)


def _pick(art: Artifact, file: Path) -> FileSpec:
    by_name = [s for s in art.files if Path(s.path).name == file.name]
    if by_name:
        return by_name[0]
    if len(art.files) == 1:
        return art.files[0]
    names = ", ".join(s.path for s in art.files)
    raise VerificationError(f"{art.name}@{art.version} lists several files ({names}); name the file like one of them", path=file)


def pin_artifact(
    registry_path: str | Path,
    name: str,
    file: str | Path,
    *,
    keys: Sequence[str | Path] = (),
    policy: Policy | None = None,
) -> PinResult:
    """Check `file` against entry `name` and pin its size and sha256; see the module docstring.

    Raises `VerificationError` (exit 1) when the file is not clean, does not fit the entry's
    architecture, or conflicts with a digest already pinned; `RegistryError` for registry
    problems. Nothing is written unless every check passed.
    """
    from gpenguard.fileio import write_atomic
    from gpenguard.gate import fingerprint_source
    from gpenguard.scan import scan_source
    from gpenguard.trust.keys import load_private_key
    from gpenguard.trust.registry import (
        MAX_REGISTRY_BYTES,
        find_artifact,
        parse_registry,
        read_bounded,
    )
    from gpenguard.trust.signatures import sign_registry

    reg_path = Path(registry_path)
    file_path = Path(file)
    pol = policy or load_policy("default")
    # Keys first: a bad key must stop the pin before the registry is rewritten, not after.
    private_keys = [load_private_key(Path(k)) for k in keys]
    raw = read_bounded(reg_path, MAX_REGISTRY_BYTES, "registry")
    registry = parse_registry(raw, str(reg_path))
    art = find_artifact(registry, name=name)
    if art is None:
        raise RegistryError(f"no artifact named {name!r} in registry {registry.name}", path=reg_path)
    spec = _pick(art, file_path)
    if art.architecture is None:
        raise VerificationError(
            f"{art.name}@{art.version} has no architecture fingerprint, so the file cannot be "
            "shown to be the approved network; add one before pinning", path=reg_path)

    with Source.open(file_path) as src:
        if spec.size is not None and spec.size != src.size:
            raise VerificationError(
                f"size is {src.size:,} bytes but the entry already pins {spec.size:,}", path=file_path)
        digest = hash_source(src).sha256
        report = scan_source(src, policy=pol)
        blocking = [f for f in report.findings if f.severity >= pol.fail_on]
        if report.verdict is not Verdict.PASS or blocking:
            why = "; ".join(f"{f.rule_id}: {f.message}" for f in blocking) or report.error or "the scan did not pass"
            raise VerificationError(f"not pinned: the scan is not clean ({why})", path=file_path)
        fp = fingerprint_source(src, state_dict_key=art.architecture.state_dict_key)
    if not digests_equal(fp.digest, art.architecture.fingerprint):
        raise VerificationError(
            f"not pinned: the architecture fingerprint {fp.digest} is not {art.architecture.family}'s "
            f"({fp.tensor_count} tensors, {fp.parameter_count:,} parameters; expected "
            f"{art.architecture.tensor_count} and {art.architecture.parameter_count:,})", path=file_path)
    if spec.sha256 is not None and not digests_equal(spec.sha256, digest):
        raise VerificationError(
            f"not pinned: {art.name}@{art.version} already pins sha256 {spec.sha256}; a different "
            "file needs a new artifact version", path=file_path)

    text = raw.decode("utf-8")
    new_text = apply_edits(text, _edits(text, str(reg_path), art.name, art.version, spec.path,
                                   src.size, digest, registry.version))
    check = parse_registry(new_text.encode(), str(reg_path))
    pinned = find_artifact(check, name=art.name, sha256=digest, size=src.size)
    if check.version != registry.version + 1 or pinned is None:
        raise RegistryError("internal error: the edited registry does not say what was pinned", path=reg_path)
    write_atomic(reg_path, new_text.encode(), mode=reg_path.stat().st_mode & 0o777)

    warnings: list[str] = []
    signed_by: tuple[str, ...] = ()
    signature: str | None = None
    sig = reg_path.with_name(reg_path.name + ".sig")
    if private_keys:
        sig_path, signed_by = sign_registry(reg_path, private_keys)
        signature = str(sig_path)
    else:
        if sig.exists():
            sig.unlink()
            warnings.append(f"removed {sig.name}: it signed the previous version's bytes")
        warnings.append("the registry is now unsigned; sign it (gpenguard registry sign) before "
                        "clients that require a signed registry use it")
    return PinResult(registry=str(reg_path), artifact=f"{art.name}@{art.version}", file=spec.path,
                     size=src.size, sha256=digest, version=registry.version + 1,
                     signed_by=signed_by, signature=signature, warnings=tuple(warnings))
