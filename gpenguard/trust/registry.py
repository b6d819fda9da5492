"""Load `weights-registry.yaml` strictly, check its detached signature, expiry and version.

The file is read once; the digest, the signature check and the parse all use those bytes. The
registry's signature is checked against a trust root pinned outside the registry (its own
``trust.keys`` only govern artifact signatures and are never a trust anchor for the file that
declares them). Parsing is strict: duplicate keys, unknown fields, aliases and wrong types are
errors naming the file and the line, because a lenient loader is where a forged entry hides.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import NoReturn, TypeVar

import yaml
from yaml.constructor import SafeConstructor

from gpenguard.errors import InputError, RegistryError, SignatureError
from gpenguard.fileio import read_regular
from gpenguard.formats.container import Format
from gpenguard.strict_yaml import StrictLoader
from gpenguard.trust import keys as keylib
from gpenguard.trust import state
from gpenguard.trust.dsse import parse_envelope
from gpenguard.trust.model import (
    Architecture,
    Artifact,
    FileSpec,
    Key,
    Registry,
    Role,
    SignatureRef,
    Status,
    TrustRoot,
)
from gpenguard.trust.signatures import verify_registry_envelope

SCHEMA_VERSION = 1
SIG_SUFFIX = ".sig"
MAX_REGISTRY_BYTES = 2**20
"""Largest registry or trust-root file read (its .sig may be twice this): about a thousand
entries. YAML parsing costs some 3 s per MiB and 60 times the file in memory, and without a
trust root (the default policy) the file is parsed unauthenticated, so the bound holds under
every policy. Nesting and node count are capped by `strict_yaml.MAX_DEPTH` and `MAX_NODES`."""
ROLE_NAMES = ("registry", "artifact")
SIGNATURE_KINDS = ("oms-bundle",)
ANY_PYTORCH = "pytorch"
"""A file format meaning "a PyTorch checkpoint, zip or legacy": for published files whose
container was never documented."""
FILE_FORMATS = (*(f.value for f in Format), ANY_PYTORCH)

_SHA256 = re.compile(r"[0-9a-f]{64}")
_KEY_ID = re.compile(r"sha256:[0-9a-f]{64}")
T = TypeVar("T")


def _kind(value: object) -> str:
    """How a person would call a YAML value's type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "the boolean"
    if isinstance(value, int | float):
        return "the number"
    if isinstance(value, datetime):
        return "the timestamp"
    return f"a {type(value).__name__}"


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


class _Doc:
    """Typed access to a composed YAML tree, every error carrying the file and line."""

    def __init__(self, source: str, error: type[RegistryError] = RegistryError) -> None:
        self.source = source
        self.error = error
        self._scalars = SafeConstructor()

    def fail(self, node: yaml.Node | None, message: str) -> NoReturn:
        where = f"line {_line(node)}: " if node is not None else ""
        raise self.error(where + message, path=self.source)

    def mapping(
        self, node: yaml.Node, what: str, *, required: Iterable[str] = (), optional: Iterable[str] = ()
    ) -> dict[str, yaml.Node]:
        if not isinstance(node, yaml.MappingNode):
            self.fail(node, f"{what} must be a mapping")
        required, optional = tuple(required), tuple(optional)
        allowed = set(required) | set(optional)
        out: dict[str, yaml.Node] = {}
        first: dict[str, int] = {}
        for key_node, value_node in node.value:
            if not (isinstance(key_node, yaml.ScalarNode) and key_node.tag.endswith(":str")):
                self.fail(key_node, f"{what}: keys must be plain strings")
            key = str(key_node.value)
            if key in out:
                self.fail(key_node, f"{what}: duplicate key {key!r} (first at line {first[key]})")
            if key not in allowed:
                self.fail(
                    key_node,
                    f"{what}: unknown field {key!r} (allowed: {', '.join(sorted(allowed))})",
                )
            out[key] = value_node
            first[key] = _line(key_node)
        missing = [k for k in required if k not in out]
        if missing:
            self.fail(node, f"{what}: missing required field {missing[0]!r}")
        return out

    def sequence(self, node: yaml.Node, what: str) -> list[yaml.Node]:
        if not isinstance(node, yaml.SequenceNode):
            self.fail(node, f"{what} must be a list")
        return list(node.value)

    def _value(self, node: yaml.Node, what: str) -> object:
        if not isinstance(node, yaml.ScalarNode):
            self.fail(node, f"{what} must be a single value, not a {'list' if isinstance(node, yaml.SequenceNode) else 'mapping'}")
        try:
            return self._scalars.construct_object(node, deep=True)
        except (yaml.YAMLError, ValueError) as exc:
            self.fail(node, f"{what}: {exc}")

    def is_null(self, node: yaml.Node) -> bool:
        return isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null")

    def string(
        self, node: yaml.Node, what: str, *, pattern: re.Pattern[str] | None = None, hint: str = "", literal: bool = False
    ) -> str:
        """A non-empty string; `literal` takes a plain scalar's text as written.

        Digests and versions are text even when YAML would read them as numbers
        (``0123...`` as an int, ``1.10`` as the float 1.1), so those use `literal`.
        """
        value = self._value(node, what)
        if literal and isinstance(node, yaml.ScalarNode) and node.tag.rsplit(":", 1)[-1] in {"int", "float"}:
            value = str(node.value)
        if not isinstance(value, str) or not value:
            got = "an empty string" if value == "" else f"{_kind(value)} {node.value!r}"
            self.fail(node, f"{what} must be a non-empty string, got {got}" + (f"; {hint}" if hint else ""))
        if pattern is not None and not pattern.fullmatch(value):
            self.fail(node, f"{what} {value!r} is malformed{'; ' + hint if hint else ''}")
        return value

    def integer(self, node: yaml.Node, what: str, *, minimum: int = 0) -> int:
        value = self._value(node, what)
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(node, f"{what} must be an integer, got {node.value!r}")
        if value < minimum:
            self.fail(node, f"{what} must be at least {minimum}, got {value}")
        return value

    def time(self, node: yaml.Node, what: str) -> datetime:
        value = self._value(node, what)
        if isinstance(value, str):
            try:
                value = datetime.fromisoformat(value)
            except ValueError:
                self.fail(node, f"{what} must be an ISO 8601 time, got {value!r}")
        if not isinstance(value, datetime):
            self.fail(node, f"{what} must be an ISO 8601 time such as 2027-01-01T00:00:00Z, got {node.value!r}")
        if value.tzinfo is None:
            self.fail(node, f"{what} must include a timezone (end it with Z for UTC)")
        return value.astimezone(UTC)

    def optional(self, fields: dict[str, yaml.Node], key: str, read: Callable[[yaml.Node, str], T], what: str) -> T | None:
        node = fields.get(key)
        if node is None or self.is_null(node):
            return None
        return read(node, f"{what}.{key}")


# -- keys ---------------------------------------------------------------------------------------

_KEY_FIELDS = ("key_id", "type", "public_key_pem", "owner")
_KEY_OPTIONAL = ("not_before", "expires", "revoked")


def _key(doc: _Doc, node: yaml.Node, what: str) -> Key:
    f = doc.mapping(node, what, required=_KEY_FIELDS, optional=_KEY_OPTIONAL)
    declared_id = doc.string(f["key_id"], f"{what}.key_id", pattern=_KEY_ID, hint="expected sha256:<64 hex>")
    key_type = doc.string(f["type"], f"{what}.type")
    if key_type not in keylib.KEY_TYPES:
        doc.fail(f["type"], f"{what}.type must be one of {', '.join(keylib.KEY_TYPES)}, got {key_type!r}")
    pem = doc.string(f["public_key_pem"], f"{what}.public_key_pem")
    try:
        public = keylib.parse_public_pem(pem, expected_type=key_type)
    except SignatureError as exc:
        doc.fail(f["public_key_pem"], f"{what}.public_key_pem: {exc.message}")
    actual_id = keylib.key_id(public)
    if actual_id != declared_id:
        doc.fail(f["key_id"], f"{what}.key_id {declared_id} does not match its public key ({actual_id})")
    revoked_at = revoked_reason = None
    if "revoked" in f and not doc.is_null(f["revoked"]):
        r = doc.mapping(f["revoked"], f"{what}.revoked", required=("at",), optional=("reason",))
        revoked_at = doc.time(r["at"], f"{what}.revoked.at")
        revoked_reason = doc.optional(r, "reason", doc.string, f"{what}.revoked")
    return Key(
        key_id=declared_id,
        type=key_type,
        public_key_pem=pem,
        owner=doc.string(f["owner"], f"{what}.owner"),
        not_before=doc.optional(f, "not_before", doc.time, what),
        expires=doc.optional(f, "expires", doc.time, what),
        revoked_at=revoked_at,
        revoked_reason=revoked_reason,
    )


def _keys(doc: _Doc, node: yaml.Node, what: str) -> dict[str, Key]:
    out: dict[str, Key] = {}
    for i, item in enumerate(doc.sequence(node, what)):
        key = _key(doc, item, f"{what}[{i}]")
        if key.key_id in out:
            doc.fail(item, f"{what}[{i}]: key {key.key_id} is listed twice")
        out[key.key_id] = key
    return out


def _role(doc: _Doc, node: yaml.Node, what: str, keys: dict[str, Key]) -> Role:
    f = doc.mapping(node, what, required=("keyids", "threshold"))
    ids: list[str] = []
    for i, item in enumerate(doc.sequence(f["keyids"], f"{what}.keyids")):
        kid = doc.string(item, f"{what}.keyids[{i}]", pattern=_KEY_ID, hint="expected sha256:<64 hex>")
        if kid not in keys:
            doc.fail(item, f"{what}.keyids[{i}]: {kid} is not in trust.keys")
        if kid in ids:
            doc.fail(item, f"{what}.keyids[{i}]: {kid} is listed twice")
        ids.append(kid)
    threshold = doc.integer(f["threshold"], f"{what}.threshold", minimum=1)
    if threshold > len(ids):
        doc.fail(f["threshold"], f"{what}.threshold {threshold} exceeds its {len(ids)} key(s); it could never be met")
    return Role(keyids=tuple(ids), threshold=threshold)


# -- artifacts ----------------------------------------------------------------------------------


def _relative_path(doc: _Doc, node: yaml.Node, what: str) -> str:
    value = doc.string(node, what)
    p = PurePosixPath(value)
    if p.is_absolute() or ".." in p.parts or "\\" in value or value.startswith("~"):
        doc.fail(node, f"{what} {value!r} must be a relative path inside the registry's folder")
    return value


def _file(doc: _Doc, node: yaml.Node, what: str) -> FileSpec:
    f = doc.mapping(node, what, required=("path", "format"), optional=("size", "sha256"))
    fmt = doc.string(f["format"], f"{what}.format")
    if fmt not in FILE_FORMATS:
        doc.fail(f["format"], f"{what}.format must be one of {', '.join(FILE_FORMATS)}, got {fmt!r}")
    return FileSpec(
        path=_relative_path(doc, f["path"], f"{what}.path"),
        format=fmt,
        size=doc.optional(f, "size", doc.integer, what),
        sha256=doc.optional(
            f, "sha256", lambda n, w: doc.string(n, w, pattern=_SHA256, hint="expected 64 lowercase hex digits", literal=True), what
        ),
    )


def _architecture(doc: _Doc, node: yaml.Node, what: str) -> Architecture:
    f = doc.mapping(
        node,
        what,
        required=("family", "fingerprint", "tensor_count", "parameter_count"),
        optional=("state_dict_key",),
    )
    return Architecture(
        family=doc.string(f["family"], f"{what}.family"),
        # Stored as bare hex, the form trust/fingerprint.py computes; a "sha256:" prefix is optional.
        fingerprint=doc.string(
            f["fingerprint"], f"{what}.fingerprint", pattern=re.compile(r"(sha256:)?[0-9a-f]{64}"),
            hint="expected sha256:<64 hex>",
            literal=True,
        ).removeprefix("sha256:"),
        tensor_count=doc.integer(f["tensor_count"], f"{what}.tensor_count", minimum=1),
        parameter_count=doc.integer(f["parameter_count"], f"{what}.parameter_count", minimum=1),
        state_dict_key=doc.optional(f, "state_dict_key", doc.string, what),
    )


def _signature_ref(doc: _Doc, node: yaml.Node, what: str, keys: dict[str, Key]) -> SignatureRef:
    f = doc.mapping(node, what, required=("kind", "path"), optional=("key_id",))
    kind = doc.string(f["kind"], f"{what}.kind")
    if kind not in SIGNATURE_KINDS:
        doc.fail(f["kind"], f"{what}.kind must be one of {', '.join(SIGNATURE_KINDS)}, got {kind!r}")
    key_id = doc.optional(
        f, "key_id", lambda n, w: doc.string(n, w, pattern=_KEY_ID, hint="expected sha256:<64 hex>"), what
    )
    if key_id is not None and key_id not in keys:
        doc.fail(f["key_id"], f"{what}.key_id {key_id} is not in trust.keys")
    return SignatureRef(kind=kind, path=_relative_path(doc, f["path"], f"{what}.path"), key_id=key_id)


def _artifact(doc: _Doc, node: yaml.Node, what: str, keys: dict[str, Key]) -> Artifact:
    f = doc.mapping(
        node,
        what,
        required=("name", "version", "status", "files"),
        optional=("source", "license", "architecture", "signatures"),
    )
    name = doc.string(f["name"], f"{what}.name")
    what = f"{what} ({name})"
    status_text = doc.string(f["status"], f"{what}.status")
    try:
        status = Status(status_text)
    except ValueError:
        doc.fail(f["status"], f"{what}.status must be one of {', '.join(s.value for s in Status)}, got {status_text!r}")
    source_url = None
    if "source" in f and not doc.is_null(f["source"]):
        source_url = doc.string(doc.mapping(f["source"], f"{what}.source", required=("url",))["url"], f"{what}.source.url")
    files = tuple(_file(doc, n, f"{what}.files[{i}]") for i, n in enumerate(doc.sequence(f["files"], f"{what}.files")))
    if not files:
        doc.fail(f["files"], f"{what}.files must list at least one file")
    paths = [spec.path for spec in files]
    if len(set(paths)) != len(paths):
        doc.fail(f["files"], f"{what}.files lists the same path twice")
    signatures: tuple[SignatureRef, ...] = ()
    if "signatures" in f and not doc.is_null(f["signatures"]):
        signatures = tuple(
            _signature_ref(doc, n, f"{what}.signatures[{i}]", keys)
            for i, n in enumerate(doc.sequence(f["signatures"], f"{what}.signatures"))
        )
    return Artifact(
        name=name,
        version=doc.string(f["version"], f"{what}.version", literal=True),
        status=status,
        files=files,
        source_url=source_url,
        license=doc.optional(f, "license", doc.string, what),
        architecture=doc.optional(f, "architecture", lambda n, w: _architecture(doc, n, w), what),
        signatures=signatures,
        line=_line(node),
    )


# -- documents ----------------------------------------------------------------------------------


def _compose(data: bytes, source: str, error: type[RegistryError] = RegistryError) -> yaml.Node:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"not UTF-8 text (byte {exc.start})", path=source) from exc
    try:
        node = yaml.compose(text, Loader=StrictLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}: " if mark is not None else ""
        raise error(f"{where}invalid YAML: {exc.problem or exc.context}", path=source) from exc
    except yaml.YAMLError as exc:
        raise error(f"invalid YAML: {exc}", path=source) from exc
    if node is None:
        raise error("file is empty", path=source)
    return node


def _schema_version(doc: _Doc, fields: dict[str, yaml.Node]) -> None:
    version = doc.integer(fields["schema_version"], "schema_version")
    if version != SCHEMA_VERSION:
        doc.fail(fields["schema_version"], f"schema_version {version} is not supported (this gpenguard reads {SCHEMA_VERSION})")


def parse_registry(data: bytes, source: str, *, sha256: str | None = None) -> Registry:
    """Validate registry bytes into a `Registry` (no signature, expiry or rollback checks)."""
    doc = _Doc(source)
    root = doc.mapping(
        _compose(data, source), "registry file", required=("schema_version", "registry", "artifacts"), optional=("trust",)
    )
    _schema_version(doc, root)
    meta = doc.mapping(root["registry"], "registry", required=("name", "version", "expires"))
    keys: dict[str, Key] = {}
    roles: dict[str, Role] = {}
    if "trust" in root and not doc.is_null(root["trust"]):
        trust = doc.mapping(root["trust"], "trust", optional=("keys", "roles"))
        if "keys" in trust:
            keys = _keys(doc, trust["keys"], "trust.keys")
        if "roles" in trust:
            role_nodes = doc.mapping(trust["roles"], "trust.roles", optional=ROLE_NAMES)
            roles = {name: _role(doc, n, f"trust.roles.{name}", keys) for name, n in role_nodes.items()}
    artifacts: list[Artifact] = []
    seen: dict[tuple[str, str], int] = {}
    for i, node in enumerate(doc.sequence(root["artifacts"], "artifacts")):
        art = _artifact(doc, node, f"artifacts[{i}]", keys)
        ident = (art.name, art.version)
        if ident in seen:
            doc.fail(node, f"artifacts[{i}]: {art.name} {art.version} is listed twice (first at line {seen[ident]})")
        seen[ident] = _line(node)
        artifacts.append(art)
    return Registry(
        path=source,
        sha256=sha256 or hashlib.sha256(data).hexdigest(),
        name=doc.string(meta["name"], "registry.name"),
        version=doc.integer(meta["version"], "registry.version"),
        expires=doc.time(meta["expires"], "registry.expires"),
        keys=keys,
        roles=roles,
        artifacts=tuple(artifacts),
    )


def read_bounded(path: Path, limit: int, what: str) -> bytes:
    """Read a whole small file once, refusing more than `limit` bytes (no unbounded reads)."""
    try:
        return read_regular(path, limit)
    except FileNotFoundError as exc:
        raise InputError(f"{what} not found", path=path) from exc
    except IsADirectoryError as exc:
        raise InputError(f"{what} is a directory, not a file", path=path) from exc
    except OSError as exc:
        raise InputError(f"cannot read {what}: {exc.strerror or exc}", path=path) from exc


def load_trust_root(path: Path) -> TrustRoot:
    """Read the pinned registry keys: YAML or JSON ``{schema_version: 1, threshold, keys: [...]}``."""
    source = str(path)
    data = read_bounded(path, MAX_REGISTRY_BYTES, "trust root")
    doc = _Doc(source)
    root = doc.mapping(_compose(data, source), "trust root", required=("schema_version", "threshold", "keys"))
    _schema_version(doc, root)
    keys = _keys(doc, root["keys"], "keys")
    if not keys:
        doc.fail(root["keys"], "keys must list at least one key")
    threshold = doc.integer(root["threshold"], "threshold", minimum=1)
    if threshold > len(keys):
        doc.fail(root["threshold"], f"threshold {threshold} exceeds the {len(keys)} key(s) listed; it could never be met")
    return TrustRoot(path=source, keys=keys, threshold=threshold)


def signature_path(registry_path: Path) -> Path:
    """Where a registry's detached DSSE envelope lives: ``<registry>.sig``."""
    return registry_path.with_name(registry_path.name + SIG_SUFFIX)


def load_registry(
    path: Path,
    *,
    trust_root: TrustRoot | None = None,
    require_signature: bool = False,
    state_dir: Path | None = None,
    now: datetime | None = None,
) -> Registry:
    """Load and check a registry: signature (against `trust_root`), schema, expiry, rollback.

    A present ``.sig`` is verified whenever a trust root is given, even if not required: a bad
    signature is evidence of tampering, not something to ignore. Without a trust root nothing
    is verified and `Registry.signed_by` stays empty.
    """
    now = keylib.as_utc(now)
    source = str(path)
    if require_signature and trust_root is None:
        raise RegistryError(
            "a signed registry is required but no trust root was given",
            path=source,
            hint="pass the pinned registry keys (policy trust_root / --trust-root)",
        )
    data = read_bounded(path, MAX_REGISTRY_BYTES, "registry")
    digest = hashlib.sha256(data).hexdigest()
    sig_path = signature_path(path)
    signed_by: tuple[str, ...] = ()
    if trust_root is not None:
        if sig_path.exists() or sig_path.is_symlink():  # a directory or FIFO there is an error, not "unsigned"
            sig_bytes = read_bounded(sig_path, MAX_REGISTRY_BYTES * 2, "registry signature")
            try:
                envelope = parse_envelope(sig_bytes, str(sig_path))
            except SignatureError as exc:
                raise RegistryError(exc.message, path=exc.path) from exc
            signed_by = verify_registry_envelope(envelope, data, trust_root, now=now, source=str(sig_path))
        elif require_signature:
            raise RegistryError(
                f"registry is unsigned: {sig_path.name} not found",
                path=source,
                hint="sign it with `gpenguard registry sign`",
            )
    registry = parse_registry(data, source, sha256=digest)
    if registry.expires is not None and now >= registry.expires:
        raise RegistryError(
            f"registry {registry.name!r} version {registry.version} expired at {registry.expires.isoformat()}",
            path=source,
            hint="fetch a current registry; an expired one may be a replay of stale approvals",
        )
    state.check_version(
        registry.name,
        registry.version,
        digest,
        state_dir=state_dir or state.default_state_dir(),
        record=bool(signed_by),
        now=now,
        source=source,
    )
    return replace(registry, signed_by=signed_by)


def find_artifact(
    registry: Registry, *, name: str | None = None, sha256: str | None = None, size: int | None = None
) -> Artifact | None:
    """The artifact matching every criterion given (digest and size must fit the same file).

    When several match, a lookup by digest returns a revoked entry first: the same bytes
    revoked under one name must not pass as approved under another (fail closed). A lookup by
    name alone prefers an approved entry, so a revoked old version does not shadow the current
    one; otherwise the first listed wins.
    """
    if name is None and sha256 is None and size is None:
        return None
    matches = []
    for art in registry.artifacts:
        if name is not None and art.name != name:
            continue
        if (sha256 is not None or size is not None) and not any(
            (sha256 is None or f.sha256 == sha256.lower()) and (size is None or f.size == size)
            for f in art.files
        ):
            continue
        matches.append(art)
    if not matches:
        return None
    order = (
        (Status.REVOKED, Status.APPROVED, Status.DEPRECATED)
        if sha256 is not None
        else (Status.APPROVED, Status.DEPRECATED, Status.REVOKED)
    )
    return min(matches, key=lambda a: order.index(a.status))


def default_registry_path() -> Path:
    """The registry shipped with gpenguard: a packaged copy, else the one at the source root."""
    packaged = Path(__file__).resolve().parents[1] / "data" / "weights-registry.yaml"
    if packaged.is_file():
        return packaged
    return Path(__file__).resolve().parents[2] / "weights-registry.yaml"
