"""The rule catalogue: every finding cites one of these stable ids (SARIF lists them).

GG1xx are about pickle programs, GG2xx about archives, GG3xx about file formats. Ids are never
reused or renumbered; a retired rule keeps its id out of circulation.
"""

from __future__ import annotations

from gpenguard.findings import Finding, Rule, Severity

_C, _H, _M, _L, _I = Severity.CRITICAL, Severity.HIGH, Severity.MEDIUM, Severity.LOW, Severity.INFO

_TABLE: tuple[tuple[str, str, Severity, str], ...] = (
    # pickle programs
    (
        "GG100",
        "dangerous-import",
        _C,
        "The pickle imports a callable known to run code, spawn processes, touch files or the network, or re-enter a loader.",
    ),
    (
        "GG101",
        "unknown-import",
        _H,
        "The pickle imports something that is not on the allowlist of the active profile; unpickling would import and possibly call it.",
    ),
    ("GG102", "denied-import", _H, "The pickle imports something the policy denies explicitly."),
    (
        "GG103",
        "unresolved-stack-global",
        _C,
        "STACK_GLOBAL takes module and name computed at load time; the import cannot be known statically.",
    ),
    (
        "GG104",
        "unknown-extension-code",
        _C,
        "EXT1/EXT2/EXT4 names an extension code absent from the copyreg registry; what it imports depends on the loading process.",
    ),
    (
        "GG105",
        "extension-code-import",
        _M,
        "The pickle imports through the copyreg extension registry (EXT opcodes), which ordinary checkpoints never use.",
    ),
    (
        "GG106",
        "call-on-computed-value",
        _H,
        "REDUCE/NEWOBJ calls the result of another call (getattr chains and similar gadgets).",
    ),
    (
        "GG107",
        "imported-object-mutated",
        _H,
        "BUILD/SETITEM/APPEND targets an imported class or function itself, which monkey-patches it.",
    ),
    (
        "GG110",
        "malformed-pickle",
        _H,
        "The pickle is truncated or invalid; an unpickler runs everything before the error, so the rest cannot be vouched for.",
    ),
    ("GG111", "unknown-opcode", _H, "A byte that is no pickle opcode."),
    (
        "GG112",
        "trailing-data",
        _H,
        "Bytes follow the STOP of a pickle where the format expects none; no reader accounts for them.",
    ),
    (
        "GG113",
        "multiple-pickles",
        _H,
        "More than one pickle program where the format expects one; loaders that read on would run them.",
    ),
    (
        "GG114",
        "memo-miss",
        _H,
        "A GET reads a memo slot that was never set; the program is malformed or tries to confuse scanners.",
    ),
    (
        "GG115",
        "pickle-limit",
        _H,
        "The pickle exceeds an opcode, memo, stack or nesting bound; it was not analysed to the end.",
    ),
    (
        "GG116",
        "memo-overwrite",
        _M,
        "A memo slot is overwritten with a different value (a known scanner-confusion trick).",
    ),
    (
        "GG117",
        "out-of-band-buffer",
        _M,
        "Protocol 5 out-of-band buffers; a checkpoint file cannot supply them.",
    ),
    (
        "GG118",
        "opcode-anomaly",
        _L,
        "PROTO out of place or values left on the stack: harmless to the VM, unusual in files written by pickle.",
    ),
    (
        "GG119",
        "noncanonical-encoding",
        _H,
        "An opcode argument in a form no pickle writer emits (INT/LONG/FLOAT text with leading zeros, octal, whitespace, underscores or bytes after a NUL; a memo index no writer reaches); CPython's C and Python unpicklers read such text differently.",
    ),
    (
        "GG120",
        "frame-straddle",
        _H,
        "An opcode crosses a FRAME boundary, a FRAME opens inside another, or STOP leaves part of its frame unread: CPython reads these differently when fed bytes, BytesIO or a file.",
    ),
    (
        "GG121",
        "parser-differential",
        _H,
        "CPython's C unpickler, run over the same bytes with inert globals, requested other globals or stopped elsewhere than gpenguard's reading, or could not be run to the end.",
    ),
    # archives
    (
        "GG200",
        "zip-duplicate-member",
        _H,
        "Two members share a name; readers disagree on which one is used.",
    ),
    (
        "GG201",
        "zip-path-traversal",
        _H,
        "A member name is absolute or climbs out of the archive with '..'.",
    ),
    ("GG202", "zip-encrypted-member", _H, "An encrypted member cannot be inspected."),
    (
        "GG203",
        "zip-compression-bomb",
        _H,
        "A member or the whole archive expands beyond the compression ratio or size bound.",
    ),
    (
        "GG204",
        "archive-member-limit",
        _H,
        "The archive has more members than the bound; the rest was not inspected.",
    ),
    (
        "GG205",
        "zip-crc-mismatch",
        _M,
        "A member's CRC-32 does not match; torch ignores CRCs, Python's zipfile refuses them (scanner evasion trick).",
    ),
    (
        "GG206",
        "zip-header-mismatch",
        _H,
        "A member's declared sizes or local header disagree with its data or the central directory; readers differ on its bytes.",
    ),
    (
        "GG207",
        "polyglot",
        _H,
        "The file is valid as more than one format; each reading was inspected.",
    ),
    ("GG208", "data-before-archive", _H, "Bytes precede the first zip record."),
    (
        "GG209",
        "nested-archive",
        _L,
        "An archive or checkpoint is stored inside another; it was inspected recursively.",
    ),
    (
        "GG210",
        "torchscript-archive",
        _H,
        "TorchScript archive (constants.pkl / code/): torch.jit.load would run the code it carries.",
    ),
    (
        "GG211",
        "zip-multiple-roots",
        _H,
        "Members lie under more than one top-level folder: torch.load refuses the archive (getAllRecords), zipfile-based tools read every folder.",
    ),
    (
        "GG212",
        "member-unreadable",
        _H,
        "A member could not be read (bad local header, unsupported method, corrupt data) and was not inspected.",
    ),
    (
        "GG213",
        "nesting-limit",
        _H,
        "Archives nest deeper than the bound; the innermost ones were not inspected.",
    ),
    (
        "GG214",
        "extra-pickle-member",
        _L,
        "A pickle member other than data.pkl; torch does not read it, other tools may.",
    ),
    (
        "GG215",
        "archive-layout-ambiguous",
        _H,
        "The archive structures do not account for every byte exactly once (zip: gaps, overlaps, prepended or trailing bytes, entries beyond the declared count, a second end record, a directory torch refuses; tar: bytes after the header where tarfile stops): readers can list different members.",
    ),
    (
        "GG216",
        "loader-differential",
        _H,
        "torch.load would read these bytes differently from another reader or from its own other path (uninitialised memory for directory entries, compression torch cannot read or that its mmap path ignores, NUL in names, byte order, unparsable version records).",
    ),
    # formats
    (
        "GG300",
        "safetensors-invalid",
        _H,
        "The safetensors header is invalid (length, JSON, dtype, shape, offsets, metadata).",
    ),
    ("GG301", "npy-invalid", _H, "The .npy header is invalid."),
    (
        "GG302",
        "npy-object-array",
        _M,
        "An object-dtype .npy carries a pickle; numpy.load(allow_pickle=True) would run it.",
    ),
    (
        "GG303",
        "legacy-format",
        _I,
        "Legacy (pre-1.6) torch serialization: a stream of five pickles followed by raw storages.",
    ),
    (
        "GG304",
        "legacy-tar-format",
        _L,
        "Legacy tar torch serialization (before 0.4); torch refuses it with weights_only=True.",
    ),
    (
        "GG305",
        "bare-pickle",
        _I,
        "A bare pickle, not a torch container; torch.load would unpickle it as a legacy file.",
    ),
    (
        "GG306",
        "legacy-structure",
        _H,
        "The legacy torch record structure could not be followed; later pickles may be missed.",
    ),
    (
        "GG307",
        "storage-mismatch",
        _H,
        "A torch zip's pickle and its storage records disagree (missing, mis-sized or unreferenced storages): torch.load refuses a mis-sized record, torch.load(mmap=True) reads whatever bytes lie there.",
    ),
)

RULES: dict[str, Rule] = {rid: Rule(rid, name, desc, sev) for rid, name, sev, desc in _TABLE}


def finding(
    rule_id: str,
    message: str,
    *,
    path: str,
    member: str | None = None,
    offset: int | None = None,
    global_name: str | None = None,
    call: str | None = None,
    severity: Severity | None = None,
) -> Finding:
    """A finding citing `rule_id`, at the rule's default severity unless one is given."""
    rule = RULES[rule_id]
    return Finding(
        rule_id=rule_id,
        severity=rule.default_severity if severity is None else severity,
        message=message,
        path=path,
        member=member,
        offset=offset,
        global_name=global_name,
        call=call,
    )
